"""Train the demo CNN on the demo dataset (CPU, a couple of minutes).

`train_demo_model` takes the manifest, the ``model.train`` and ``preprocess``
sections and the two output paths the workflow's ``train_demo_model`` rule
declares. Everything random (initialisation, batch order, augmentation) comes
from ``train.seed``, so the same settings give the same weights.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from convscope.config.sections import PreprocessConfig, TrainConfig
from convscope.data.images import read_prepared
from convscope.data.manifest import read_manifest
from convscope.data.preprocess import normalize
from convscope.nn.models import DemoCNN
from convscope.store.atomic import atomic_path, write_text

__all__ = ["load_split", "train_demo_model"]

_WEIGHT_DECAY = 1e-4


def load_split(manifest: pd.DataFrame, preprocess: PreprocessConfig, split: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed uint8 images (N, H, W, C) and int64 labels (N,) of the rows of one split."""
    rows = manifest[manifest["split"] == split]
    images = read_prepared(rows["path"], rows["slot"], preprocess)
    return images, rows["label"].to_numpy(np.int64)


def _check_trainable(manifest: pd.DataFrame, manifest_csv) -> None:
    """The demo model needs labelled ``train`` and ``test`` rows; say so instead of crashing."""
    splits = {split: int(((manifest["split"] == split) & (manifest["label"] >= 0)).sum())
              for split in ("train", "test")}
    if min(splits.values()) == 0:
        present = sorted(map(str, manifest["split"].dropna().unique()))
        raise ValueError(
            f"the demo model (model.kind 'demo' without model.weights) is trained on the "
            f"labelled 'train' rows and tested on the 'test' rows of {manifest_csv}, which has "
            f"{splits['train']} and {splits['test']} (splits present: {', '.join(present)}); "
            "give model.weights (a checkpoint of your model), or a manifest with a split column")


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the side, (N, H, W, C) uint8."""
    flip = torch.rand(batch.shape[0], generator=generator) < 0.5
    batch = batch.clone()
    batch[flip] = batch[flip].flip(2)
    limit = max(1, batch.shape[1] // 8)
    dy, dx = torch.randint(-limit, limit + 1, (2,), generator=generator).tolist()
    return torch.roll(batch, shifts=(dy, dx), dims=(1, 2))


@torch.no_grad()
def _accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray,
              preprocess: PreprocessConfig, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] of ``model`` (put in eval mode) on uint8 (N, H, W, C) images."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(images[start:start + batch_size]), preprocess)
        pred = model(x.contiguous()).argmax(1).numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def _optimiser(model: nn.Module, train: TrainConfig, n_train: int
               ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with a one-cycle learning-rate schedule over all steps of training."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.learning_rate,
                                  weight_decay=_WEIGHT_DECAY)
    steps = train.epochs * int(np.ceil(n_train / train.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, train.learning_rate,
                                                    total_steps=steps)
    return optimizer, scheduler


def _train_epoch(model: nn.Module, images: np.ndarray, labels: np.ndarray, train: TrainConfig,
                 preprocess: PreprocessConfig, optimizer, scheduler,
                 generator: torch.Generator, desc: str) -> float:
    """One pass over the training images in a random order; returns the mean batch loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(len(images), generator=generator).numpy()
    losses = []
    for start in tqdm(range(0, len(order), train.batch_size), desc=desc, mininterval=5):
        idx = order[start:start + train.batch_size]
        batch = _augment(torch.from_numpy(images[idx]), generator)
        x = normalize(batch, preprocess).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(x), torch.from_numpy(labels[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def _save_state_dict(model: nn.Module, weights_out: str | os.PathLike) -> None:
    """``torch.save`` the state dict to ``weights_out`` atomically.

    The file is written under its own name in a temporary folder beside the
    target and then renamed: torch names the archive inside the file after
    the file, so the bytes (and the weights hash in every shard) do not
    depend on a temporary name.
    """
    with atomic_path(weights_out, keep_name=True) as staged:
        torch.save(model.state_dict(), staged)


def _save_checkpoint(model: nn.Module, path: str | os.PathLike) -> None:
    """Save the weights in the middle of training without touching the model (no mode or
    memory-format change, so the rest of training and the final weights are unchanged)."""
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(path, keep_name=True) as staged:
        torch.save(state, staged)


def train_demo_model(manifest_csv: str | os.PathLike, train: TrainConfig,
                     preprocess: PreprocessConfig, weights_out: str | os.PathLike,
                     metrics_out: str | os.PathLike,
                     checkpoints_out: Mapping[int, str | os.PathLike] | None = None) -> dict:
    """Train `DemoCNN` on the ``train`` split, evaluate on ``test``; save weights and metrics.

    Writes the state dict to ``weights_out`` and the metrics as JSON to
    ``metrics_out`` (train/test accuracy in [0, 1], image counts, epochs,
    mean training loss per epoch, class names; no wall-clock time, which lives in the rule's
    benchmark file), and returns the metrics.
    ``checkpoints_out`` maps epochs (1-based) to files that get the weights after that
    epoch (for `convscope.synthesis.evolution`).
    """
    checkpoints_out = dict(checkpoints_out or {})
    beyond = sorted(e for e in checkpoints_out if not 1 <= e <= train.epochs)
    if beyond:
        raise ValueError(f"checkpoint epochs {beyond} are outside 1..{train.epochs} "
                         "(model.train.epochs)")
    torch.manual_seed(train.seed)
    generator = torch.Generator().manual_seed(train.seed)
    manifest, class_names = read_manifest(manifest_csv)
    _check_trainable(manifest, manifest_csv)
    train_x, train_y = load_split(manifest, preprocess, "train")
    test_x, test_y = load_split(manifest, preprocess, "test")
    model = DemoCNN(num_classes=len(class_names), in_channels=int(preprocess.channels))
    model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = _optimiser(model, train, len(train_x))
    started = time.perf_counter()
    history = []
    for epoch in range(train.epochs):
        history.append(_train_epoch(model, train_x, train_y, train, preprocess, optimizer,
                                    scheduler, generator, f"epoch {epoch + 1}/{train.epochs}"))
        print(f"epoch {epoch + 1}: mean training loss {history[-1]:.4f}", flush=True)
        if epoch + 1 in checkpoints_out:
            _save_checkpoint(model, checkpoints_out[epoch + 1])
    metrics = {
        "train_accuracy": _accuracy(model, train_x, train_y, preprocess),
        "test_accuracy": _accuracy(model, test_x, test_y, preprocess),
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "epochs": train.epochs,
        "loss_history": history,
        "class_names": class_names,
    }
    print(f"test accuracy {metrics['test_accuracy']:.3f}; trained in "
          f"{time.perf_counter() - started:.1f} s", flush=True)
    _save_state_dict(model.to(memory_format=torch.contiguous_format).eval(), weights_out)
    write_text(metrics_out, json.dumps(metrics, indent=2))
    return metrics
