"""Extraction: run the model over one shard of the manifest and write the shard file.

Designed for GPU throughput: images are decoded and resized as uint8 in
data-loader workers (or on the GPU, `convscope.extract.loader`), copied to the
device from pinned memory asynchronously, normalised there, run
channels-last (optionally under autocast), and the per-channel statistics are
reduced on the device inside forward hooks (`convscope.extract.summarize`), so
only (N, C) summaries ever travel back. Results of batch i are copied back
while batch i+1 computes; out of memory lowers the batch size
(`convscope.extract.backoff`); results land at their manifest row
(`convscope.extract.buffers`).

TF32 (NVIDIA's reduced-precision fp32 matrix products and convolutions) is
used only when ``extract.tf32`` is true (`tf32_mode`), so an fp32 extraction on
a GPU matches a CPU run within about 1e-4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from convscope import __version__
from convscope.config.sections import ExtractConfig, ModelConfig, PreprocessConfig
from convscope.config.validate import config_hash
from convscope.data.images import PIXEL_ATTRIBUTE_NAMES
from convscope.data.manifest import read_manifest
from convscope.data.preprocess import input_hw, normalize
from convscope.extract.backoff import BatchBackoff
from convscope.extract.buffers import ShardBuffers
from convscope.extract.loader import (DeviceDecoder, make_loader, merge_chunks, model_batches,
                                      resolve_decode)
from convscope.extract.summarize import ActivationSummaries, summarize_activations
from convscope.nn.device import resolve_device
from convscope.nn.models import codes_module_name, load_stage_model
from convscope.extract.index import shard_identity
from convscope.store.rows import manifest_shards, n_shards, shard_rows
from convscope.store.shards import layer_key, write_shard

__all__ = ["ImageFailure", "n_shards", "shard_rows", "shard_identity", "tf32_mode",
           "extract_shard"]

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Allow (``enabled``) or forbid TF32 in CUDA matrix products and cuDNN convolutions.

    Sets ``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32`` for the ``with`` block and restores the
    previous values on the way out, also after an error. The flags have no
    effect on CPU. (Only these flags are read and written: torch refuses to
    mix them with its newer ``fp32_precision`` settings in one process.)
    """
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    cudnn_tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        torch.backends.cudnn.allow_tf32 = cudnn_tf32


class ImageFailure(RuntimeError):
    """An unreadable image with ``extract.on_error: fail``."""


class _Forward:
    """Normalise a uint8 batch on the device, run the model, return the hooks' results."""

    def __init__(self, network: nn.Module, seen: ActivationSummaries,
                 preprocess: PreprocessConfig, device: torch.device, precision: str):
        self.network, self.seen, self.preprocess, self.device = network, seen, preprocess, device
        dtype = _PRECISIONS[precision]
        self.autocast = torch.autocast(device_type=device.type, dtype=dtype,
                                       enabled=dtype != torch.float32)

    def __call__(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        x = normalize(images_uint8.to(self.device, non_blocking=True), self.preprocess)
        x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.network(x)
        return self.seen.results(logits)


def _to_host(batch: dict, device_out: dict, cuda: bool):
    """Start copying one batch's results to the host; (event to wait for or None, tensors)."""
    host = {name: value.to("cpu", non_blocking=cuda) for name, value in device_out.items()}
    host.update(index=batch["index"], label=batch["label"],
                thumbs=batch["thumb"].to("cpu", non_blocking=cuda),
                attrs=batch["attrs"].to("cpu", non_blocking=cuda))
    event = None
    if cuda:
        event = torch.cuda.Event()
        event.record()
    return event, host


class _Results:
    """Host side of the loop: failures, non-finite counts and the shard's buffers."""

    def __init__(self, buffers: ShardBuffers, layers: Sequence[str], on_error: str,
                 paths: dict[int, str]):
        self.buffers, self.layers = buffers, list(layers)
        self.on_error, self.paths = on_error, paths
        self.failed: list[tuple[int, str]] = []
        self.nonfinite = {name: 0 for name in self.layers}
        self._pending = None

    def fail(self, index: int, reason: str) -> None:
        if self.on_error == "fail":
            raise ImageFailure(f"image at manifest row {index} ({self.paths[index]}) could not "
                               f"be read: {reason} (extract.on_error is 'fail')")
        print(f"skipping manifest row {index}: {reason}", flush=True)
        self.failed.append((index, reason))

    def add(self, pending) -> None:
        """Keep this batch's copy in flight; store the previous one (its copy is done)."""
        self.flush()
        self._pending = pending

    def flush(self) -> None:
        if self._pending is None:
            return
        event, host = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        for name in self.layers:
            means = host[f"layers/{layer_key(name)}/mean"]
            self.nonfinite[name] += int((~torch.isfinite(means)).sum())
        self.buffers.put(host)

    def arrays(self) -> dict[str, np.ndarray]:
        arrays = self.buffers.finished()
        failed = sorted(self.failed)
        arrays["failed/index"] = np.array([i for i, _ in failed], np.int64)
        arrays["failed/reason"] = np.array([r for _, r in failed], dtype=object)
        return arrays


def _shard_rows_of(manifest: pd.DataFrame, extract: ExtractConfig, shard_id: int) -> pd.DataFrame:
    shards = manifest_shards(manifest["path"].tolist(), extract.shard_size)
    rows = manifest.iloc[list(shards[shard_id]) if shard_id < len(shards) else []]
    if len(rows) == 0:
        raise ValueError(f"shard {shard_id} is empty: the manifest has {len(manifest)} images "
                         f"and shard_size is {extract.shard_size}")
    return rows


def extract_shard(manifest_csv: str | Path, model_info: dict, shard_id: int,
                  out_path: str | Path, *, model: ModelConfig, preprocess: PreprocessConfig,
                  extract: ExtractConfig, layers: Sequence[str], codes_layer: str | None,
                  weights_file: str | Path | None, network: nn.Module | None = None) -> dict:
    """Extract shard ``shard_id`` of the manifest into ``out_path`` (written atomically).

    Args:
        model_info: `convscope.nn.model_info.describe_model` output for this model and layers.
        weights_file: the model's checkpoint (None: torchvision's cached weights).
        network: the model already built (else ``load_stage_model(model, weights_file, preprocess)``); the
            shard's identity is still that of ``model`` and ``weights_file``.
    Returns:
        a small dict of what was done (images, failures, seconds, images per second).
    """
    manifest, class_names = read_manifest(manifest_csv)
    rows = _shard_rows_of(manifest, extract, shard_id)
    device = resolve_device(extract.device)
    if device.type == "cuda":  # autotuned kernels may differ between runs: keep results equal
        torch.backends.cudnn.benchmark = False
    if network is None:
        network = load_stage_model(model, weights_file, preprocess)[0]
    network = network.eval().to(device).to(memory_format=torch.channels_last)
    codes = codes_module_name(network, codes_layer)
    decode = resolve_decode(extract.decode, device)
    started = time.perf_counter()
    with tf32_mode(extract.tf32):
        results, batch_size = _extract_rows(network, rows, list(layers), codes, model_info,
                                            preprocess, extract, device, decode, shard_id)
    seconds = time.perf_counter() - started
    identity = shard_identity(manifest_csv, model=model, weights_file=weights_file,
                              preprocess=preprocess, layers=layers, codes_layer=codes_layer,
                              shard_size=extract.shard_size)
    attrs = _shard_attrs(identity, model_info, rows, class_names, codes, results.nonfinite,
                         model=model, preprocess=preprocess, extract=extract, layers=list(layers),
                         codes_layer=codes_layer, shard_id=shard_id, device=device, decode=decode)
    write_shard(out_path, results.arrays(), attrs)
    n_images = results.buffers.n_filled
    summary = {"shard": shard_id, "images": n_images, "failed": len(results.failed),
               "seconds": round(seconds, 2),
               "images_per_second": round(n_images / max(seconds, 1e-9), 1),
               "device": str(device), "decode": decode, "batch_size": batch_size,
               "nonfinite_maps": results.nonfinite}
    print(json.dumps(summary), flush=True)
    return summary


def _extract_rows(network: nn.Module, rows: pd.DataFrame, layers: list[str],
                  codes: tuple[str, str], model_info: dict, preprocess: PreprocessConfig,
                  extract: ExtractConfig, device: torch.device, decode: str,
                  shard_id: int) -> tuple[_Results, int]:
    """The loop over the shard's model batches; the filled results and the final batch size."""
    cuda = device.type == "cuda"
    paths = dict(zip(rows["index"].astype(int), rows["path"].astype(str)))
    layer_shapes = {name: model_info["layers"][name]["shape"] for name in layers}
    buffers = ShardBuffers(rows["index"], layer_shapes, model_info["codes"]["dim"],
                           extract.thumb_px)
    results = _Results(buffers, layers, extract.on_error, paths)
    loader, per_batch = make_loader(rows, preprocess, extract, pin_memory=cuda,
                                    jpeg_bytes=decode == "gpu")
    decoder = DeviceDecoder(device, preprocess, extract.thumb_px, paths)
    backoff = BatchBackoff(extract.batch_size, cuda=cuda)
    progress = tqdm(total=len(rows), desc=f"shard {shard_id}", unit="img", mininterval=10)
    with torch.inference_mode(), summarize_activations(network, layers, *codes) as seen:
        forward = _Forward(network, seen, preprocess, device, extract.precision)
        for chunks_of_batch in model_batches(loader, per_batch):
            batch = merge_chunks(chunks_of_batch, device, decoder)
            for index, reason in batch["failed"]:
                results.fail(index, reason)
            if len(batch["index"]):
                results.add(_to_host(batch, backoff.run(forward, batch["image"]), cuda))
            progress.update(len(batch["index"]) + len(batch["failed"]))
        results.flush()
    progress.close()
    return results, backoff.batch_size


def _shard_attrs(identity: dict, model_info: dict, rows: pd.DataFrame, class_names: list,
                 codes: tuple[str, str], nonfinite: dict, *, model: ModelConfig,
                 preprocess: PreprocessConfig, extract: ExtractConfig, layers: list[str],
                 codes_layer: str | None, shard_id: int, device: torch.device,
                 decode: str) -> dict:
    """The shard file's attributes (see `convscope.store.shards`)."""
    settings = {"model": model.to_dict(), "preprocess": preprocess.to_dict(), "layers": layers,
                "codes_layer": codes_layer, "extract": extract.to_dict()}
    return {
        "identity": identity,
        "convscope_version": __version__,
        "config_hash": config_hash(settings),
        "shard_id": int(shard_id),
        "row_range": [int(rows["index"].iloc[0]), int(rows["index"].iloc[-1]) + 1],
        "layer_names": layers,
        "layer_shapes": {name: model_info["layers"][name]["shape"] for name in layers},
        "receptive_fields": {name: model_info["layers"][name]["receptive_field"]
                             for name in layers},
        "codes_layer": f"{codes[0]} ({codes[1]})",
        "class_names": class_names,
        "input_size": list(input_hw(preprocess)),
        "preprocess": preprocess.to_dict(),
        "model": identity["model"],
        "precision": extract.precision,
        "tf32": bool(extract.tf32),
        "device": str(device),
        "decode": decode,
        "nonfinite_maps": nonfinite,
        "image_attr_names": list(PIXEL_ATTRIBUTE_NAMES),
    }
