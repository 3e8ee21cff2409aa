"""Images of one shard, from files to uint8 batches on the device.

Workers decode small chunks of a model batch (so that all of them are busy
even on a small shard) and `model_batches` merges the chunks of one model
batch again: the model sees the same batches whatever the chunk size.

Where images are decoded (`resolve_decode`):

- ``cpu``: Pillow in the workers (`decode_on_cpu`): the prepared image, the
  thumbnail and the pixel attributes come back as arrays.
- ``gpu``: workers only read the bytes of JPEG files the device decoder takes
  exactly as Pillow would (`convscope.data.gpu_decode.read_jpeg_for_device`);
  `DeviceDecoder` decodes and prepares them on the device. Anything else (not
  JPEG, CMYK, EXIF-rotated, truncated, array rows) is still decoded by Pillow
  in the workers, and a JPEG that nvJPEG rejects is decoded by Pillow in the
  main process, so the failed table is the CPU path's.

Batches keep their images in the order they were decoded, which on the GPU
path is not manifest order: `convscope.extract.buffers.ShardBuffers` places
results by manifest row.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numpy as np
import pandas as pd
import torch

from convscope.config.sections import ExtractConfig, PreprocessConfig
from convscope.data import gpu_decode
from convscope.data.bulk import decode_chunk
from convscope.data.images import (PIXEL_ATTRIBUTE_NAMES, ImageReadError, load_image,
                                   make_thumbnail, pixel_attributes)
from convscope.data.preprocess import prepare_uint8

__all__ = ["resolve_decode", "decode_on_cpu", "ShardImages", "collate", "chunk_size", "chunks",
           "make_loader", "model_batches", "DeviceDecoder", "merge_chunks"]

#: Keys of a decoded part of a batch: manifest rows, labels, prepared images, thumbnails,
#: pixel attributes.
_DECODED = ("index", "label", "image", "thumb", "attrs")


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


def decode_on_cpu(path: str, slot: int, preprocess: PreprocessConfig, thumb_px: int) -> dict:
    """One image as ``image`` (in_h, in_w, C), ``thumb`` (t, t, 3) uint8 and ``attrs`` (7,)
    float32 arrays, or ``failed`` with the reason; never raises for a bad image."""
    try:
        image = load_image(path, slot)
        attrs = pixel_attributes(image)
        return {"image": prepare_uint8(image, preprocess),
                "thumb": make_thumbnail(image, thumb_px),
                "attrs": np.array([attrs[k] for k in PIXEL_ATTRIBUTE_NAMES], np.float32)}
    except ImageReadError as exc:
        return {"failed": str(exc) or type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - a bad image must never crash a shard
        return {"failed": f"{type(exc).__name__}: {exc}"}


class ShardImages(torch.utils.data.Dataset):
    """Decoded, preprocessed uint8 images of some manifest rows (runs in workers).

    Item ``i`` is a dict with ``index`` and ``label`` and either the arrays of
    `decode_on_cpu`, ``failed``, or (``jpeg_bytes=True``) ``jpeg``: the bytes of a
    JPEG file left for the device to decode.
    """

    def __init__(self, rows: pd.DataFrame, preprocess: PreprocessConfig, thumb_px: int,
                 jpeg_bytes: bool = False, jpeg_draft: bool = False):
        self.jpeg_bytes, self.jpeg_draft = jpeg_bytes, bool(jpeg_draft)
        self.index = rows["index"].to_numpy(np.int64)
        self.paths = rows["path"].astype(str).tolist()
        self.slots = rows["slot"].to_numpy(np.int64)
        self.labels = rows["label"].to_numpy(np.int64)
        self.preprocess = preprocess
        self.thumb_px = int(thumb_px)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        item = {"index": int(self.index[i]), "label": int(self.labels[i])}
        if self.jpeg_bytes and int(self.slots[i]) < 0:
            data = gpu_decode.read_jpeg_for_device(self.paths[i])
            if data is not None:
                item["jpeg"] = data
                return item
        item.update(decode_on_cpu(self.paths[i], int(self.slots[i]), self.preprocess,
                                  self.thumb_px))
        return item

    def __getitems__(self, positions: list[int]) -> list[dict]:
        """Items of a loader task, decoded together (`convscope.data.bulk.decode_chunk`)."""
        if self.jpeg_bytes:
            return [self[i] for i in positions]
        decoded = decode_chunk([self.paths[i] for i in positions],
                               [int(self.slots[i]) for i in positions], self.preprocess,
                               self.thumb_px, self.jpeg_draft)
        return [{"index": int(self.index[i]), "label": int(self.labels[i]), **item}
                for i, item in zip(positions, decoded)]


def collate(items: list[dict]) -> dict:
    """Items -> one chunk: decoded images stacked, JPEG bytes listed, failures listed.

    ``index``/``label`` (n,) int64 hold the decoded images' rows, in order, with
    ``image`` (n, in_h, in_w, C), ``thumb`` (n, t, t, 3) uint8 and ``attrs`` (n, 7)
    float32 when n > 0; ``failed`` lists ``(index, reason)``; ``jpeg`` lists
    ``(index, label, bytes)`` of the images left to decode on the device.
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


def chunk_size(n_rows: int, batch_size: int, num_workers: int) -> int:
    """Images per worker task: small enough that every worker has work on a small shard."""
    if num_workers <= 0:
        return batch_size
    return max(1, min(batch_size, 32, math.ceil(n_rows / (4 * num_workers))))


def chunks(n_rows: int, batch_size: int, size: int) -> tuple[list[list[int]], list[int]]:
    """Row positions of each loader task (at most ``size``, never across a model batch),
    and how many tasks make each model batch of ``batch_size`` rows."""
    tasks, per_batch = [], []
    for start in range(0, n_rows, batch_size):
        stop = min(n_rows, start + batch_size)
        parts = [list(range(s, min(stop, s + size))) for s in range(start, stop, size)]
        tasks += parts
        per_batch.append(len(parts))
    return tasks, per_batch


def make_loader(rows: pd.DataFrame, preprocess: PreprocessConfig, extract: ExtractConfig,
                pin_memory: bool, jpeg_bytes: bool = False):
    """Extraction's DataLoader over ``rows`` (yielding `collate` chunks) and the number of
    its chunks in each model batch."""
    workers = int(extract.num_workers)
    size = chunk_size(len(rows), int(extract.batch_size), workers)
    tasks, per_batch = chunks(len(rows), int(extract.batch_size), size)
    loader = torch.utils.data.DataLoader(
        ShardImages(rows, preprocess, extract.thumb_px, jpeg_bytes, extract.jpeg_draft),
        batch_sampler=tasks, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
        worker_init_fn=_worker_init if workers > 0 else None)
    return loader, per_batch


def model_batches(loader, per_batch: list[int]) -> Iterator[list[dict]]:
    """Merge the loader's chunks back into model batches (lists of chunks)."""
    tasks = iter(loader)
    for count in per_batch:
        yield [next(tasks) for _ in range(count)]


class DeviceDecoder:
    """Decode ``(index, label, JPEG bytes)`` on ``device``; Pillow in this process where the
    device decoder fails.

    ``paths`` maps a manifest row to its file (for the Pillow fallback).
    """

    def __init__(self, device: torch.device, preprocess: PreprocessConfig, thumb_px: int,
                 paths: Mapping[int, str]):
        self.device, self.preprocess, self.thumb_px = device, preprocess, int(thumb_px)
        self.paths = paths

    def __call__(self, jpegs: list[tuple[int, int, bytes]]) -> tuple[list[dict], list]:
        """Decoded parts (dicts of `_DECODED` keys) and ``(index, reason)`` failures."""
        data = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for _, _, raw in jpegs]
        decoded = gpu_decode.decode_jpegs(data, self.device)
        on_device, on_cpu, failed = [], [], []
        for (row, label, _), image in zip(jpegs, decoded):
            if isinstance(image, torch.Tensor):
                on_device.append((row, label, image))
                continue
            item = decode_on_cpu(self.paths[row], -1, self.preprocess, self.thumb_px)
            if "failed" in item:
                failed.append((row, item["failed"]))
            else:
                on_cpu.append(dict(item, index=row, label=label))
        parts = [self._prepare(on_device)] if on_device else []
        if on_cpu:
            chunk = collate(on_cpu)
            parts.append({k: chunk[k] for k in _DECODED})
        return parts, failed

    def _prepare(self, decoded: list[tuple[int, int, torch.Tensor]]) -> dict:
        images = [image for _, _, image in decoded]
        return {"index": torch.tensor([row for row, _, _ in decoded], dtype=torch.int64),
                "label": torch.tensor([label for _, label, _ in decoded], dtype=torch.int64),
                "image": gpu_decode.prepare_images(images, self.preprocess),
                "thumb": gpu_decode.make_thumbnails(images, self.thumb_px),
                "attrs": gpu_decode.pixel_attributes(images)}


def merge_chunks(chunks_of_batch: list[dict], device: torch.device,
                 decoder: DeviceDecoder | None = None) -> dict:
    """The chunks of one model batch -> one batch with its images on ``device``.

    Returns ``failed`` (sorted ``(index, reason)``) and ``index`` (n,); when n > 0
    also ``label``, ``image`` (on ``device``), ``thumb`` and ``attrs`` (on the host
    when everything was decoded on the CPU, else on ``device``). Images keep the
    chunks' order; JPEG bytes (``decoder`` given) are decoded after them.
    """
    failed = [f for chunk in chunks_of_batch for f in chunk["failed"]]
    parts = [{k: chunk[k] for k in _DECODED} for chunk in chunks_of_batch if len(chunk["index"])]
    jpegs = [j for chunk in chunks_of_batch for j in chunk["jpeg"]]
    if jpegs:
        decoded, failed_now = decoder(jpegs)
        parts, failed = parts + decoded, failed + failed_now
    batch = {"failed": sorted(failed)}
    if not parts:
        batch["index"] = torch.zeros(0, dtype=torch.int64)
        return batch
    batch["index"] = torch.cat([part["index"] for part in parts])
    batch["label"] = torch.cat([part["label"] for part in parts])
    batch["image"] = torch.cat([part["image"].to(device, non_blocking=True) for part in parts])
    for name in ("thumb", "attrs"):  # the CPU path: they stay on the host
        values = [part[name].to(device, non_blocking=True) if jpegs else part[name]
                  for part in parts]
        batch[name] = torch.cat(values)
    return batch
