"""The ``cka`` stage: how similar are the analysed layers, and each layer across checkpoints?

Representation: the per-channel spatial **mean** of each analysed layer, (n, C)
per image: the ``layers/<name>/mean`` dataset of the shards for the layer pairs
(no forward pass; streamed shard by shard in minibatches of ``batch_size``
images, `convscope.analysis.cka`), and the same pooling computed by a forward
pass for the checkpoint comparison (a seeded sample of ``n_images`` images through
the analysed model and through each checkpoint of ``synthesis.evolution``). Spatial
maps are not compared (they would need a forward pass over the whole dataset).

``cka.csv``: ``model_a, layer_a, model_b, layer_b, cka``; ``model`` is the analysed
model, a checkpoint is named after its file (``epoch-001``). Rows: every pair of
analysed layers of the model (both orders and the diagonal), then each layer of the
model with the same layer of each checkpoint. ``cka.png``: the layer heatmap and the
checkpoint curves.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from convscope.analysis.cka import MIN_BATCH, MinibatchCKA, rebatch
from convscope.analysis.common import save_figure
from convscope.analysis.layer_names import select_shard_layers
from convscope.config.sections import CkaConfig, ModelConfig, PreprocessConfig
from convscope.data.manifest import read_manifest
from convscope.data.preprocess import to_model_input
from convscope.data.sample import readable_sample
from convscope.nn.hooks import capture_tensors
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.shards import iter_shards, layer_key, read_attrs
from convscope.store.summary import figure_entry, write_summary

__all__ = ["CKA_COLUMNS", "MODEL", "layer_cka", "pooled_features", "checkpoint_cka", "run_cka"]

logger = logging.getLogger(__name__)

CKA_COLUMNS = ["model_a", "layer_a", "model_b", "layer_b", "cka"]
#: the name of the analysed model in cka.csv
MODEL = "model"


def _finite_rows(chunk: dict) -> dict:
    keep = np.all([np.isfinite(v).all(axis=1) for v in chunk.values()], axis=0)
    return {name: values[keep] for name, values in chunk.items()}


def layer_cka(shard_paths: Sequence[str | os.PathLike], layers: Sequence[str],
              batch_size: int) -> tuple[pd.DataFrame, int]:
    """CKA of every pair of ``layers`` from the shards' pooled means: (rows, images used).

    Images whose features are not finite (none when extraction succeeded) are left out.
    """
    names = {layer: f"layers/{layer_key(layer)}/mean" for layer in layers}
    pairs = [(a, b) for a in layers for b in layers]
    acc = MinibatchCKA(pairs)
    used = 0
    chunks = ({layer: chunk[name] for layer, name in names.items()}
              for chunk in iter_shards([os.fspath(p) for p in shard_paths], list(names.values())))
    for batch in rebatch(map(_finite_rows, chunks), batch_size):
        acc.add(batch)
        used += len(next(iter(batch.values())))
    values = acc.result()
    rows = [(MODEL, a, MODEL, b, values[(a, b)]) for a, b in pairs]
    return pd.DataFrame(rows, columns=CKA_COLUMNS), used


@torch.no_grad()
def pooled_features(model: torch.nn.Module, inputs: torch.Tensor, layers: Sequence[str],
                    batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """layer -> (N, C) float64: each layer's output averaged over its spatial positions."""
    kept: dict[str, list] = {name: [] for name in layers}
    with capture_tensors(model, list(layers)) as captured:
        for start in range(0, len(inputs), batch_size):
            model(inputs[start:start + batch_size].to(device))
            for name in layers:
                out = captured[name].double()
                kept[name].append((out.flatten(2).mean(-1) if out.dim() > 2
                                   else out.flatten(1)).cpu().numpy())
    return {name: np.concatenate(parts) for name, parts in kept.items()}


def checkpoint_cka(reference: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]],
                   batch_size: int) -> pd.DataFrame:
    """CKA of each layer of ``reference`` with the same layer of each of ``others``
    (name -> layer -> features of the same images), minibatches of ``batch_size``."""
    rows = []
    for other, features in others.items():
        layers = list(reference)
        pairs = [((MODEL, layer), (other, layer)) for layer in layers]
        acc = MinibatchCKA(pairs)
        both = {**{(MODEL, n): v for n, v in reference.items()},
                **{(other, n): v for n, v in features.items()}}
        for batch in rebatch([both], batch_size):
            acc.add(batch)
        values = acc.result()
        rows += [(MODEL, layer, other, layer, values[pair]) for layer, pair in zip(layers, pairs)]
    return pd.DataFrame(rows, columns=CKA_COLUMNS)


def _checkpoint_table(model_cfg, preprocess, weights_file, checkpoints, manifest_csv, layers,
                      cfg: CkaConfig, device, batch_size) -> tuple[pd.DataFrame, int]:
    manifest, _ = read_manifest(manifest_csv)
    rows, images = readable_sample(manifest, cfg.n_images, cfg.seed)
    if len(images) < MIN_BATCH:
        raise ValueError(f"similarity.cka.n_images: {len(images)} readable images, the "
                         f"estimator needs at least {MIN_BATCH}")
    inputs = to_model_input(images, preprocess)
    model, where = load_stage_model(model_cfg, weights_file, preprocess, device)
    reference = pooled_features(model, inputs, layers, batch_size, where)
    others = {}
    for path in checkpoints:
        other = load_stage_model(model_cfg, path, preprocess, where)[0]
        others[Path(path).stem] = pooled_features(other, inputs, layers, batch_size, where)
    return checkpoint_cka(reference, others, cfg.batch_size), len(images)


def _plot(table: pd.DataFrame, layers: Sequence[str], path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    within = table[(table["model_a"] == MODEL) & (table["model_b"] == MODEL)]
    across = table[table["model_b"] != MODEL]
    fig = Figure(figsize=(9 if len(across) else 4.5, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if len(across) else 1, squeeze=False)[0]
    matrix = within.pivot(index="layer_a", columns="layer_b", values="cka").loc[layers, layers]
    image = axes[0].imshow(matrix.to_numpy(float), vmin=0, vmax=1, cmap="viridis")
    for i in range(len(layers)):
        for j in range(len(layers)):
            axes[0].text(j, i, f"{matrix.iloc[i, j]:.2f}", ha="center", va="center",
                         fontsize=7, color="w")
    axes[0].set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
    axes[0].set_yticks(range(len(layers)), layers, fontsize=7)
    axes[0].set_title("linear CKA between layers", fontsize=9)
    fig.colorbar(image, ax=axes[0], shrink=0.8)
    if len(across):
        names = list(dict.fromkeys(across["model_b"]))
        for layer, rows in across.groupby("layer_a", sort=False):
            axes[1].plot(range(len(rows)), rows["cka"], marker="o", label=layer)
        axes[1].set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        axes[1].set(ylim=(0, 1.05), ylabel="CKA with the final model")
        axes[1].set_title("each layer across checkpoints", fontsize=9)
        axes[1].legend(fontsize=7)
    save_figure(fig, path)


def run_cka(shard_paths: Sequence[str | os.PathLike], layers: Sequence[str] | None,
            cfg: CkaConfig, model_cfg: ModelConfig, weights_file, preprocess: PreprocessConfig,
            checkpoints: Sequence[str], manifest_csv, *, device: str, batch_size: int, cka_csv,
            heatmap_png, summary_json) -> None:
    """The stage: layer-pair CKA from the shards, checkpoint CKA by forward passes; the
    table, the figure and ``summary.json``. ``device`` and ``batch_size`` (images per
    forward pass) are speed settings."""
    shard_paths = [os.fspath(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("run_cka: no shards given")
    layers = select_shard_layers(read_attrs(shard_paths[0]), layers, key="layers",
                                 source=f"shard {shard_paths[0]}")
    table, used = layer_cka(shard_paths, layers, cfg.batch_size)
    sampled = 0
    if checkpoints:
        across, sampled = _checkpoint_table(model_cfg, preprocess, weights_file, checkpoints,
                                            manifest_csv, layers, cfg, device, batch_size)
        table = pd.concat([table, across], ignore_index=True)
    write_text(cka_csv, table.to_csv(index=False, float_format="%.6g"))
    _plot(table, layers, heatmap_png)
    logger.info("cka: %d layers over %d images, %d checkpoints", len(layers), used,
                len(checkpoints))
    root = Path(summary_json).parent
    write_summary(
        summary_json, "cka", "Layer similarity (CKA)",
        ("Linear CKA (Kornblith et al. 2019) between the analysed layers, from each layer's "
         "per-channel spatial mean over the images (read from the shards), with the unbiased "
         "minibatch HSIC estimator (Nguyen et al. 2021): 1 = the layers represent the images "
         "alike up to a rotation and scale, 0 = unrelated. "
         + ("Right: each layer of the final model against the same layer of every training "
            "checkpoint, on a sample of images." if checkpoints else
            "No checkpoints to compare (synthesis.evolution.checkpoints is empty and the model "
            "is not the demo model the workflow trains, or similarity.cka.checkpoints is off).")),
        numbers=[("layers", ", ".join(layers)), ("images (layer pairs)", used),
                 ("minibatch size", cfg.batch_size), ("checkpoints", len(checkpoints)),
                 ("images (checkpoints)", sampled)],
        figures=[figure_entry(heatmap_png, root, "CKA between layers and across checkpoints")],
        tables=[figure_entry(cka_csv, root, "CKA table", "model_a, layer_a, model_b, layer_b, "
                             "cka")])
