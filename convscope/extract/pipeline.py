"""Extraction: run the model over one shard of the manifest and write the shard file.

Designed for GPU throughput: images are decoded and resized as uint8 in
data-loader workers, copied to the device from pinned memory asynchronously,
normalised there, run channels-last (optionally under autocast), and the
per-channel statistics are reduced on the device inside forward hooks, so
only (N, C) summaries ever travel back. Results of batch i are copied back
while batch i+1 computes.

Workers decode small chunks of a model batch (so that all of them are busy
even on a small shard) and the main loop merges the chunks of one model batch
again: the model sees the same batches whatever the chunk size. With
``extract.decode: gpu`` (``auto`` on a CUDA device where nvJPEG works) workers
only read JPEG bytes; decoding, resizing, thumbnails and pixel attributes run
on the GPU (`convscope.data.gpu_decode`). Files the GPU path cannot take exactly
(not JPEG, CMYK, EXIF-rotated, truncated, array rows) are still decoded by
Pillow in the workers, and a JPEG that nvJPEG rejects is decoded by Pillow in
the main process, so the failed table is the CPU path's.
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

from convscope import __version__
from convscope.data import gpu_decode
from convscope.config.sections import ModelConfig
from convscope.config.validate import config_hash
from convscope.data.images import PIXEL_ATTRIBUTE_NAMES, ImageReadError, load_image, make_thumbnail, pixel_attributes
from convscope.data.manifest import read_manifest
from convscope.nn.models import codes_module_name, file_sha256, load_model, model_identity
from convscope.data.preprocess import input_hw, normalize, prepare_uint8
from convscope.store.shards import layer_key, write_shard

__all__ = ["ImageFailure", "shard_rows", "n_shards", "resolve_device", "resolve_decode",
           "shard_identity", "extract_shard", "ActivationSummarizer"]

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


def resolve_decode(name: str, device: torch.device) -> str:
    """``extract.decode`` (auto | cpu | gpu) -> where images are decoded: 'cpu' or 'gpu'."""
    if name not in ("auto", "cpu", "gpu"):
        raise ValueError(f"extract.decode is {name!r}; choose one of auto, cpu, gpu")
    if name == "cpu":
        return "cpu"
    usable = device.type == "cuda" and gpu_decode.jpeg_decode_available(device)
    if name == "gpu" and not usable:
        raise RuntimeError(f"extract.decode is 'gpu' but JPEG decoding on {device} is not "
                           "available here (needs a CUDA device and torchvision with nvJPEG); "
                           "use 'auto' or 'cpu'")
    return "gpu" if usable else "cpu"


def shard_identity(config: dict, manifest_csv: str | Path, weights_file=None) -> dict:
    """What must match for shards to be combined: model, layers, preprocessing, manifest."""
    return {
        "model": model_identity(ModelConfig.from_dict(config["model"]),
                                weights_file or config["model"]["weights"]),
        "layers": list(config["layers"]),
        "codes_layer": config.get("codes_layer"),
        "preprocess": config_hash(config, ["preprocess"]),
        "manifest_sha256": file_sha256(manifest_csv),
        "shard_size": int(config["extract"]["shard_size"]),
    }


class _ShardImages(torch.utils.data.Dataset):
    """Decoded, preprocessed uint8 images of some manifest rows (runs in workers)."""

    def __init__(self, rows: pd.DataFrame, preprocess_cfg: dict, thumb_size: int,
                 jpeg_bytes: bool = False):
        self.jpeg_bytes = jpeg_bytes  # JPEG files the GPU can decode come back as bytes
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
        if self.jpeg_bytes and int(self.slots[i]) < 0:
            data = gpu_decode.read_jpeg_for_device(self.paths[i])
            if data is not None:
                item["jpeg"] = data
                return item
        item.update(_decode_on_cpu(self.paths[i], int(self.slots[i]), self.preprocess_cfg,
                                   self.thumb_size))
        return item


def _decode_on_cpu(path: str, slot: int, preprocess_cfg: dict, thumb_size: int) -> dict:
    """``image``, ``thumb`` and ``attrs`` arrays of one image, or ``failed`` with the reason."""
    try:
        image = load_image(path, slot)
        attrs = pixel_attributes(image)
        return {"image": prepare_uint8(image, preprocess_cfg),
                "thumb": make_thumbnail(image, thumb_size),
                "attrs": np.array([attrs[k] for k in PIXEL_ATTRIBUTE_NAMES], np.float32)}
    except ImageReadError as exc:
        return {"failed": str(exc) or type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - a bad image must never crash a shard
        return {"failed": f"{type(exc).__name__}: {exc}"}


def _collate(items: list[dict]) -> dict:
    """Items -> one chunk: decoded images stacked, JPEG bytes listed, failures listed.

    ``index``/``label`` hold the decoded images' rows, in order; ``jpeg`` holds
    ``(index, label, bytes)`` of the images left to decode on the GPU.
    """
    ok = [it for it in items if "image" in it]
    batch = {"failed": [(it["index"], it["failed"]) for it in items if "failed" in it],
             "jpeg": [(it["index"], it["label"], it["jpeg"]) for it in items if "jpeg" in it]}
    batch["index"] = torch.tensor([it["index"] for it in ok], dtype=torch.int64)
    batch["label"] = torch.tensor([it["label"] for it in ok], dtype=torch.int64)
    if ok:
        batch["image"] = torch.from_numpy(np.stack([it["image"] for it in ok]))
        batch["thumb"] = torch.from_numpy(np.stack([it["thumb"] for it in ok]))
        batch["attrs"] = torch.from_numpy(np.stack([it["attrs"] for it in ok]))
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)  # many workers: one thread each beats oversubscribed cores


def _chunk_size(n_rows: int, batch_size: int, num_workers: int) -> int:
    """Images per worker task: small enough that every worker has work on a small shard."""
    if num_workers <= 0:
        return batch_size
    return max(1, min(batch_size, 32, math.ceil(n_rows / (4 * num_workers))))


def _chunks(n_rows: int, batch_size: int, size: int) -> tuple[list[list[int]], list[int]]:
    """Row positions of each loader task, and how many tasks make each model batch."""
    chunks, per_batch = [], []
    for start in range(0, n_rows, batch_size):
        stop = min(n_rows, start + batch_size)
        parts = [list(range(s, min(stop, s + size))) for s in range(start, stop, size)]
        chunks += parts
        per_batch.append(len(parts))
    return chunks, per_batch


def _make_loader(rows: pd.DataFrame, preprocess_cfg: dict, extract_cfg: dict, pin_memory: bool,
                jpeg_bytes: bool = False):
    """Extraction's DataLoader over ``rows`` and the number of its chunks in each model batch."""
    workers = int(extract_cfg["num_workers"])
    size = _chunk_size(len(rows), int(extract_cfg["batch_size"]), workers)
    chunks, per_batch = _chunks(len(rows), int(extract_cfg["batch_size"]), size)
    loader = torch.utils.data.DataLoader(
        _ShardImages(rows, preprocess_cfg, extract_cfg["thumb_size"], jpeg_bytes),
        batch_sampler=chunks, num_workers=workers, collate_fn=_collate, pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
        worker_init_fn=_worker_init if workers > 0 else None)
    return loader, per_batch


def _model_batches(loader, per_batch: list[int]):
    """Merge the loader's chunks back into model batches (lists of chunks)."""
    chunks = iter(loader)
    for count in per_batch:
        yield [next(chunks) for _ in range(count)]


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
        model_info: `convscope.nn.model_info.describe_model` output for this config.
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
    model = load_model(ModelConfig.from_dict(config["model"]), weights_file or config["model"]["weights"],
                       in_channels=int(config["preprocess"]["channels"]), device=torch_device)
    model = model.to(memory_format=torch.channels_last)
    layers = list(config["layers"])
    layer_shapes = {name: model_info["layers"][name]["shape"] for name in layers}
    codes_module, codes_where = codes_module_name(model, config.get("codes_layer"))
    buffers = _ShardBuffers(len(rows), layer_shapes, model_info["codes"]["dim"],
                            extract_cfg["thumb_size"])
    failed: list[tuple[int, str]] = []
    nonfinite = {name: 0 for name in layers}
    decode = resolve_decode(extract_cfg.get("decode", "auto"), torch_device)
    loader, per_batch = _make_loader(rows, preprocess_cfg, extract_cfg, pin_memory=use_cuda,
                                     jpeg_bytes=decode == "gpu")
    position = {int(index): p for p, index in enumerate(rows["index"])}
    autocast = torch.autocast(device_type=torch_device.type, dtype=dtype,
                              enabled=dtype != torch.float32)
    batch_size_now = extract_cfg["batch_size"]

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(torch_device, non_blocking=True)

    def decode_jpegs(jpegs: list, failed_now: list) -> list[dict]:
        """Decode (index, label, bytes) on the GPU; Pillow in this process where nvJPEG fails."""
        data = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for _, _, raw in jpegs]
        decoded = gpu_decode.decode_jpegs(data, torch_device)
        images, index, label, on_cpu = [], [], [], []
        for (row, row_label, _), image in zip(jpegs, decoded):
            if isinstance(image, torch.Tensor):
                images.append(image)
                index.append(row)
                label.append(row_label)
                continue
            item = _decode_on_cpu(str(manifest.loc[row, "path"]), -1, preprocess_cfg,
                                  extract_cfg["thumb_size"])
            if "failed" in item:
                failed_now.append((row, item["failed"]))
            else:
                on_cpu.append(dict(item, index=row, label=row_label))
        parts = []
        if images:
            parts.append({
                "index": torch.tensor(index, dtype=torch.int64),
                "label": torch.tensor(label, dtype=torch.int64),
                "image": gpu_decode.prepare_images(images, preprocess_cfg),
                "thumb": gpu_decode.make_thumbnails(images, extract_cfg["thumb_size"]),
                "attrs": gpu_decode.pixel_attributes(images)})
        if on_cpu:
            chunk = _collate(on_cpu)
            parts.append({k: chunk[k] for k in ("index", "label", "image", "thumb", "attrs")})
        return parts

    def merge(chunks: list[dict]) -> dict:
        """The chunks of one model batch -> one batch, images on the device, in row order."""
        failed_now = [f for chunk in chunks for f in chunk["failed"]]
        decoded = [{k: chunk[k] for k in ("index", "label", "image", "thumb", "attrs")}
                   for chunk in chunks if len(chunk["index"])]
        jpegs = [j for chunk in chunks for j in chunk["jpeg"]]
        if jpegs:
            decoded += decode_jpegs(jpegs, failed_now)
        batch = {"failed": sorted(failed_now)}
        if not decoded:
            batch["index"] = torch.zeros(0, dtype=torch.int64)
            return batch
        index = torch.cat([part["index"] for part in decoded])
        batch["label"] = torch.cat([part["label"] for part in decoded])
        if not jpegs:  # the CPU path: thumbnails and attributes stay on the host
            batch["index"] = index
            batch["image"] = torch.cat([to_device(part["image"]) for part in decoded])
            batch["thumb"] = torch.cat([part["thumb"] for part in decoded])
            batch["attrs"] = torch.cat([part["attrs"] for part in decoded])
            return batch
        order = torch.as_tensor(np.argsort([position[int(i)] for i in index], kind="stable"))
        batch["index"], batch["label"] = index[order], batch["label"][order]
        order = order.to(torch_device)
        for name in ("image", "thumb", "attrs"):
            batch[name] = torch.cat([to_device(part[name]) for part in decoded])[order]
        return batch

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
        for chunks in _model_batches(loader, per_batch):
            batch = merge(chunks)
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
            host.update(index=batch["index"], label=batch["label"],
                        thumbs=batch["thumb"].to("cpu", non_blocking=use_cuda),
                        attrs=batch["attrs"].to("cpu", non_blocking=use_cuda))
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
        "decode": decode,
        "nonfinite_maps": nonfinite,
        "image_attr_names": list(PIXEL_ATTRIBUTE_NAMES),
    }
    write_shard(out_path, arrays, attrs)
    summary = {"shard": shard_id, "images": int(buffers.n_filled), "failed": len(failed),
               "seconds": round(seconds, 2),
               "images_per_second": round(buffers.n_filled / max(seconds, 1e-9), 1),
               "device": str(torch_device), "decode": decode, "batch_size": batch_size_now,
               "nonfinite_maps": nonfinite}
    print(json.dumps(summary), flush=True)
    return summary
