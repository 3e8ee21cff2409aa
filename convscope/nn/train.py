"""Train the demo CNN on the demo dataset (CPU, a couple of minutes)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from convscope.data.images import load_image
from convscope.data.manifest import read_manifest
from convscope.nn.models import DemoCNN
from convscope.data.preprocess import normalize, prepare_uint8

__all__ = ["load_split", "train_demo_model"]


def load_split(manifest, preprocess_cfg: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed uint8 images (N, H, W, C) and labels (N,) of one split."""
    rows = manifest[manifest["split"] == split]
    images = np.stack([prepare_uint8(load_image(path, slot), preprocess_cfg)
                       for path, slot in zip(rows["path"], rows["slot"])])
    return images, rows["label"].to_numpy(np.int64)


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
              preprocess_cfg: dict, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = normalize(torch.from_numpy(images[start:start + batch_size]), preprocess_cfg)
        pred = model(x.contiguous()).argmax(1).numpy()
        correct += int((pred == labels[start:start + batch_size]).sum())
    return correct / max(1, len(images))


def train_demo_model(manifest_csv: str | Path, config: dict, weights_out: str | Path,
                     metrics_out: str | Path) -> dict:
    """Train `DemoCNN` on the ``train`` split, evaluate on ``test``; save weights and metrics.

    Returns the metrics dict (train/test accuracy, epochs, seconds).
    """
    train_cfg = config["model"]["train"]
    preprocess_cfg = config["preprocess"]
    torch.manual_seed(train_cfg["seed"])
    generator = torch.Generator().manual_seed(train_cfg["seed"])
    manifest, class_names = read_manifest(manifest_csv)
    train_x, train_y = load_split(manifest, preprocess_cfg, "train")
    test_x, test_y = load_split(manifest, preprocess_cfg, "test")
    model = DemoCNN(num_classes=len(class_names), in_channels=int(preprocess_cfg["channels"]))
    model = model.to(memory_format=torch.channels_last)
    epochs, batch_size = train_cfg["epochs"], train_cfg["batch_size"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg["learning_rate"],
                                  weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(train_x) / batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, train_cfg["learning_rate"],
                                                    total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    started = time.perf_counter()
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=generator).numpy()
        losses = []
        for start in tqdm(range(0, len(order), batch_size), desc=f"epoch {epoch + 1}/{epochs}",
                          mininterval=5):
            idx = order[start:start + batch_size]
            batch = _augment(torch.from_numpy(train_x[idx]), generator)
            x = normalize(batch, preprocess_cfg).contiguous(memory_format=torch.channels_last)
            loss = loss_fn(model(x), torch.from_numpy(train_y[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        print(f"epoch {epoch + 1}: mean training loss {history[-1]:.4f}", flush=True)
    metrics = {
        "train_accuracy": _accuracy(model, train_x, train_y, preprocess_cfg),
        "test_accuracy": _accuracy(model, test_x, test_y, preprocess_cfg),
        "n_train": int(len(train_x)),
        "n_test": int(len(test_x)),
        "epochs": epochs,
        "loss_history": history,
        "seconds": round(time.perf_counter() - started, 1),
        "class_names": class_names,
    }
    print(f"test accuracy {metrics['test_accuracy']:.3f}", flush=True)
    Path(weights_out).parent.mkdir(parents=True, exist_ok=True)
    model = model.to(memory_format=torch.contiguous_format).eval()
    torch.save(model.state_dict(), weights_out)
    Path(metrics_out).write_text(json.dumps(metrics, indent=2))
    return metrics
