"""Extraction: run the model over one shard of the manifest and write the shard file.

Designed for GPU throughput: images are decoded and resized as uint8 in
data-loader workers, copied to the device from pinned memory asynchronously,
normalised there, run channels-last (optionally under autocast), and the
per-channel statistics are reduced on the device inside forward hooks, so
only (N, C) summaries ever travel back. Results of batch i are copied back
while batch i+1 computes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from . import __version__
from .config import config_hash
from .images import PIXEL_ATTRIBUTE_NAMES, ImageReadError, load_image, make_thumbnail, pixel_attributes
from .manifest import read_manifest
from .models import codes_module_name, file_sha256, load_model, model_identity
from .preprocess import input_hw, normalize, prepare_uint8
from .shards import layer_key, write_shard

__all__ = ["ImageFailure", "shard_rows", "n_shards", "resolve_device", "shard_identity",
           "extract_shard", "ActivationSummarizer"]

_PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ImageFailure(RuntimeError):
    """An unreadable image with ``extract.on_error: fail``."""


def n_shards(n_images: int, shard_size: int) -> int:
    return max(1, math.ceil(n_images / shard_size))


def shard_rows(n_images: int, shard_size: int, shard_id: int) -> range:
    """Manifest rows of shard ``shard_id``."""
    return range(shard_id * shard_size, min(n_images, (shard_id + 1) * shard_size))


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"extract.device is {name!r} but CUDA is not available here; "
                           "use 'auto' or 'cpu'")
    return device


def shard_identity(config: dict, manifest_csv: str | Path, weights_file=None) -> dict:
    """What must match for shards to be combined: model, layers, preprocessing, manifest."""
    return {
        "model": model_identity(config, weights_file),
        "layers": list(config["layers"]),
        "codes_layer": config.get("codes_layer"),
        "preprocess": config_hash(config, ["preprocess"]),
        "manifest_sha256": file_sha256(manifest_csv),
        "shard_size": int(config["extract"]["shard_size"]),
    }


class _ShardImages(torch.utils.data.Dataset):
    """Decoded, preprocessed uint8 images of some manifest rows (runs in workers)."""

    def __init__(self, rows: pd.DataFrame, preprocess_cfg: dict, thumb_size: int):
        self.index = rows["index"].to_numpy(np.int64)
        self.paths = rows["path"].astype(str).tolist()
        self.slots = rows["slot"].to_numpy(np.int64)
        self.labels = rows["label"].to_numpy(np.int64)
        self.preprocess_cfg = preprocess_cfg
        self.thumb_size = thumb_size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        item = {"index": int(self.index[i]), "label": int(self.labels[i])}
        try:
            image = load_image(self.paths[i], int(self.slots[i]))
            item["image"] = prepare_uint8(image, self.preprocess_cfg)
            item["thumb"] = make_thumbnail(image, self.thumb_size)
            attrs = pixel_attributes(image)
            item["attrs"] = np.array([attrs[k] for k in PIXEL_ATTRIBUTE_NAMES], np.float32)
        except ImageReadError as exc:
            item["failed"] = str(exc) or type(exc).__name__
        except Exception as exc:  # noqa: BLE001 - a bad image must never crash a shard
            item["failed"] = f"{type(exc).__name__}: {exc}"
        return item


def _collate(items: list[dict]) -> dict:
    ok = [it for it in items if "failed" not in it]
    batch = {"failed": [(it["index"], it["failed"]) for it in items if "failed" in it]}
    batch["index"] = torch.tensor([it["index"] for it in ok], dtype=torch.int64)
    batch["label"] = torch.tensor([it["label"] for it in ok], dtype=torch.int64)
    if ok:
        batch["image"] = torch.from_numpy(np.stack([it["image"] for it in ok]))
        batch["thumb"] = torch.from_numpy(np.stack([it["thumb"] for it in ok]))
        batch["attrs"] = torch.from_numpy(np.stack([it["attrs"] for it in ok]))
    return batch


class ActivationSummarizer:
    """Forward hooks that reduce each chosen layer's output to per-channel statistics.

    After a forward pass, ``summaries[layer]`` holds ``(max, argmax, mean)``,
    each (N, C), computed on the output's device; ``codes`` holds (N, D).
    Use as a context manager so the hooks are removed.
    """

    def __init__(self, model: nn.Module, layer_names, codes_module: str, codes_where: str):
        self.summaries: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.codes: torch.Tensor | None = None
        modules = dict(model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._layer_hook(name))
                         for name in layer_names]
        codes = modules[codes_module]
        if codes_where == "input":
            self._handles.append(codes.register_forward_pre_hook(self._codes_pre_hook))
        else:
            self._handles.append(codes.register_forward_hook(self._codes_hook))

    def _layer_hook(self, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, (tuple, list)):
                output = output[0]
            flat = output.flatten(2) if output.ndim > 2 else output[:, :, None]
            unit_max, unit_argmax = flat.max(dim=2)
            unit_mean = flat.mean(dim=2, dtype=torch.float32)
            self.summaries[name] = (unit_max.float(), unit_argmax.int(), unit_mean)
        return hook

    def _codes_pre_hook(self, _module, inputs):
        self.codes = inputs[0].flatten(1).float()

    def _codes_hook(self, _module, _inputs, output):
        self.codes = output.flatten(1).float()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []


class _ShardBuffers:
    """Host arrays of one shard, filled batch by batch in manifest order."""

    def __init__(self, n: int, layer_shapes: dict, codes_dim: int, thumb_size: int):
        self.n_filled = 0
        self.arrays: dict[str, np.ndarray] = {
            "index": np.zeros(n, np.int64),
            "label": np.zeros(n, np.int32),
            "topk/class": np.zeros((n, 5), np.int32),
            "topk/prob": np.zeros((n, 5), np.float32),
            "codes": np.zeros((n, codes_dim), np.float32),
            "thumbs": np.zeros((n, thumb_size, thumb_size, 3), np.uint8),
        }
        for name, (channels, *_rest) in layer_shapes.items():
            key = layer_key(name)
            self.arrays[f"layers/{key}/max"] = np.zeros((n, channels), np.float32)
            self.arrays[f"layers/{key}/argmax"] = np.zeros((n, channels), np.int32)
            self.arrays[f"layers/{key}/mean"] = np.zeros((n, channels), np.float32)
        for attr in PIXEL_ATTRIBUTE_NAMES:
            self.arrays[f"image_attrs/{attr}"] = np.zeros(n, np.float32)

    def put(self, host: dict[str, torch.Tensor]) -> None:
        rows = slice(self.n_filled, self.n_filled + len(host["index"]))
        for name, value in host.items():
            if name == "attrs":
                for j, attr in enumerate(PIXEL_ATTRIBUTE_NAMES):
                    self.arrays[f"image_attrs/{attr}"][rows] = value[:, j].numpy()
            else:
                self.arrays[name][rows] = value.numpy()
        self.n_filled = rows.stop

    def finished(self) -> dict[str, np.ndarray]:
        return {name: array[:self.n_filled] for name, array in self.arrays.items()}


def _is_oom(exc: BaseException, use_cuda: bool) -> bool:
    """A CUDA out-of-memory error (on a GPU run, also one raised as a plain RuntimeError)."""
    return (isinstance(exc, torch.cuda.OutOfMemoryError)
            or (use_cuda and "out of memory" in str(exc)))


def extract_shard(config: dict, manifest_csv: str | Path, model_info: dict, shard_id: int,
                  out_path: str | Path, weights_file: str | Path | None = None,
                  device: str | None = None) -> dict:
    """Extract shard ``shard_id`` of the manifest into ``out_path`` (written atomically).

    Args:
        config: validated workflow config.
        model_info: `convscope.model_info.describe_model` output for this config.
    Returns:
        a small dict of what was done (images, failures, seconds, images per second).
    """
    extract_cfg, preprocess_cfg = config["extract"], config["preprocess"]
    manifest, class_names = read_manifest(manifest_csv)
    rows = manifest.iloc[list(shard_rows(len(manifest), extract_cfg["shard_size"], shard_id))]
    if len(rows) == 0:
        raise ValueError(f"shard {shard_id} is empty: the manifest has {len(manifest)} images "
                         f"and shard_size is {extract_cfg['shard_size']}")
    torch_device = resolve_device(device or extract_cfg["device"])
    dtype = _PRECISIONS[extract_cfg["precision"]]
    use_cuda = torch_device.type == "cuda"
    if use_cuda:  # autotuned kernels may differ between runs: keep results reproducible
        torch.backends.cudnn.benchmark = False
    model = load_model(config, torch_device, weights_file)
    model = model.to(memory_format=torch.channels_last)
    layers = list(config["layers"])
    layer_shapes = {name: model_info["layers"][name]["shape"] for name in layers}
    codes_module, codes_where = codes_module_name(model, config.get("codes_layer"))
    buffers = _ShardBuffers(len(rows), layer_shapes, model_info["codes"]["dim"],
                            extract_cfg["thumb_size"])
    failed: list[tuple[int, str]] = []
    nonfinite = {name: 0 for name in layers}
    loader = torch.utils.data.DataLoader(
        _ShardImages(rows, preprocess_cfg, extract_cfg["thumb_size"]),
        batch_size=extract_cfg["batch_size"], shuffle=False,
        num_workers=extract_cfg["num_workers"], collate_fn=_collate, pin_memory=use_cuda,
        prefetch_factor=4 if extract_cfg["num_workers"] > 0 else None,
        persistent_workers=False)
    autocast = torch.autocast(device_type=torch_device.type, dtype=dtype,
                              enabled=dtype != torch.float32)
    batch_size_now = extract_cfg["batch_size"]

    def run_batch(images_uint8: torch.Tensor, summarizer: ActivationSummarizer) -> dict:
        x = normalize(images_uint8.to(torch_device, non_blocking=True), preprocess_cfg)
        x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(x)
        probs = torch.softmax(logits.float(), dim=1)
        k = min(5, probs.shape[1])
        top_prob, top_class = probs.topk(k, dim=1)
        if k < 5:
            pad = 5 - k
            top_prob = torch.nn.functional.pad(top_prob, (0, pad), value=0.0)
            top_class = torch.nn.functional.pad(top_class, (0, pad), value=-1)
        out = {"topk/class": top_class.int(), "topk/prob": top_prob, "codes": summarizer.codes}
        for name in layers:
            unit_max, unit_argmax, unit_mean = summarizer.summaries[name]
            key = layer_key(name)
            out[f"layers/{key}/max"] = unit_max
            out[f"layers/{key}/argmax"] = unit_argmax
            out[f"layers/{key}/mean"] = unit_mean
        return out

    def run_with_backoff(images_uint8: torch.Tensor, summarizer) -> dict:
        nonlocal batch_size_now
        chunks = [images_uint8[i:i + batch_size_now]
                  for i in range(0, len(images_uint8), batch_size_now)]
        try:
            parts = [run_batch(chunk, summarizer) for chunk in chunks]
        except RuntimeError as exc:
            if not _is_oom(exc, use_cuda) or batch_size_now == 1:
                raise
            torch.cuda.empty_cache()  # a no-op where CUDA was never initialised
            print(f"out of GPU memory at batch size {batch_size_now}: lowering the batch size "
                  f"to {max(1, batch_size_now // 2)}", flush=True)
            batch_size_now = max(1, batch_size_now // 2)
            return run_with_backoff(images_uint8, summarizer)
        if len(parts) == 1:
            return parts[0]
        return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}

    def drain(pending_item) -> None:
        event, host = pending_item
        if event is not None:
            event.synchronize()
        for name in layers:
            means = host[f"layers/{layer_key(name)}/mean"]
            nonfinite[name] += int((~torch.isfinite(means)).sum())
        buffers.put(host)

    started = time.perf_counter()
    pending = None
    progress = tqdm(total=len(rows), desc=f"shard {shard_id}", unit="img", mininterval=10)
    with torch.inference_mode(), ActivationSummarizer(model, layers, codes_module,
                                                      codes_where) as summarizer:
        for batch in loader:
            for index, reason in batch["failed"]:
                if extract_cfg.get("on_error", "skip") == "fail":
                    raise ImageFailure(f"image at manifest row {index} "
                                       f"({manifest.loc[index, 'path']}) could not be read: "
                                       f"{reason} (extract.on_error is 'fail')")
                print(f"skipping manifest row {index}: {reason}", flush=True)
                failed.append((index, reason))
            if len(batch["index"]) == 0:
                progress.update(len(batch["failed"]))
                continue
            device_out = run_with_backoff(batch["image"], summarizer)
            host = {name: value.to("cpu", non_blocking=use_cuda)
                    for name, value in device_out.items()}
            host.update(index=batch["index"], label=batch["label"], thumbs=batch["thumb"],
                        attrs=batch["attrs"])
            event = None
            if use_cuda:
                event = torch.cuda.Event()
                event.record()
            if pending is not None:
                drain(pending)
            pending = (event, host)
            progress.update(len(batch["index"]) + len(batch["failed"]))
        if pending is not None:
            drain(pending)
    progress.close()
    seconds = time.perf_counter() - started
    arrays = buffers.finished()
    failed.sort()
    arrays["failed/index"] = np.array([i for i, _ in failed], np.int64)
    arrays["failed/reason"] = np.array([r for _, r in failed], dtype=object)
    identity = shard_identity(config, manifest_csv, weights_file)
    attrs = {
        "identity": identity,
        "convscope_version": __version__,
        "config_hash": config_hash(config, ["model", "preprocess", "layers", "codes_layer",
                                            "extract"]),
        "shard_id": int(shard_id),
        "row_range": [int(rows["index"].iloc[0]), int(rows["index"].iloc[-1]) + 1],
        "layer_names": layers,
        "layer_shapes": layer_shapes,
        "receptive_fields": {name: model_info["layers"][name]["receptive_field"]
                             for name in layers},
        "codes_layer": f"{codes_module} ({codes_where})",
        "class_names": class_names,
        "input_size": list(input_hw(preprocess_cfg)),
        "preprocess": dict(preprocess_cfg),
        "model": identity["model"],
        "precision": extract_cfg["precision"],
        "device": str(torch_device),
        "nonfinite_maps": nonfinite,
        "image_attr_names": list(PIXEL_ATTRIBUTE_NAMES),
    }
    write_shard(out_path, arrays, attrs)
    summary = {"shard": shard_id, "images": int(buffers.n_filled), "failed": len(failed),
               "seconds": round(seconds, 2),
               "images_per_second": round(buffers.n_filled / max(seconds, 1e-9), 1),
               "device": str(torch_device), "batch_size": batch_size_now,
               "nonfinite_maps": nonfinite}
    print(json.dumps(summary), flush=True)
    return summary
