"""Unit images (stages ``synthesis_units_chunk`` and ``synthesis_units``), each judged
against the unit's dataset best.

The chosen units of every layer are cut into batches (`unit_batches`: batch ``b`` of a
layer holds its channels ``b * batch_size`` onwards and starts from ``seed + b``), except
units that never fire on the dataset (``dead`` in ``units/stats.csv``): those are not
optimised and are listed as dead. `run_unit_chunk` draws the batches of one chunk (the
workflow's ``synthesis_units_chunk`` jobs, ``synthesis.chunk_size`` units each) and scores
each stored image; `merge_unit_visualisation` joins the chunks in order and writes the
stage's files, so the result does not depend on the chunking. `run_unit_visualisation`
is both in one call. Every image is then judged *as stored* (uint8) by the
quality gate (`convscope.synthesis.quality`, rule ``unit``): the unit's objective on the
stored image, without random transforms, against the highest value of the same objective
over the dataset's images (`dataset_best`, from the feature shards).

Chunk files: ``images.h5`` (``images``, ``curves``, ``layer``, ``channel``, ``achieved``;
file attribute ``dead``: the chosen dead units as JSON) and ``<layer>/unit-NNN.png``.
Stage files: ``images.h5`` (``images`` (N, H, W, C) uint8, ``curves`` (N, steps), ``layer``,
``channel``, ``quality/...`` of every optimised unit, ``dead/layer``, ``dead/channel``), one
``<layer>/unit-NNN.png`` per optimised unit and a ``<layer>/grid.png`` in ``png_dir``, the
curves figure and ``summary.json`` (its ``units`` entry puts each image on the unit's page,
captioned with its verdict; its ``quality`` entry lists every verdict).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence

import h5py
import numpy as np
import torch
from torch import nn

from convscope.analysis.layer_names import layer_file_names
from convscope.config.sections import ModelConfig, PreprocessConfig, VisualisationConfig
from convscope.nn.hooks import capture_tensors
from convscope.nn.models import load_stage_model
from convscope.render.grids import to_uint8
from convscope.store.chunks import chunk_items, merge_folders
from convscope.store.h5 import write_h5
from convscope.store.shards import iter_shards, layer_key
from convscope.store.summary import figure_entry, write_summary
from convscope.store.tables import read_table
from convscope.synthesis.common import render_settings
from convscope.synthesis.objectives import channel
from convscope.synthesis.outputs import save_picture, upscaled
from convscope.synthesis.quality import (DEAD, RULES, Verdict, count_line, h5_arrays, judge,
                                         stored01, summary_entry)
from convscope.synthesis.render import render, to_model_space
from convscope.synthesis.visualise import image_grid, plot_curves, resolve_units, unit_objective

__all__ = ["SHARD_COLUMN", "dead_units", "dataset_best", "unit_scores", "unit_batches",
           "run_unit_chunk", "merge_unit_visualisation", "run_unit_visualisation"]

#: The shard column whose maximum over images is the dataset best of each objective.
SHARD_COLUMN = {"mean": "mean", "centre": "max"}


def dead_units(stats_csv: str | os.PathLike | None) -> set[tuple[str, int]]:
    """(layer, channel) of every unit that never fires on the dataset (``dead`` in stats.csv)."""
    if stats_csv is None:
        return set()
    stats = read_table(stats_csv)
    dead = stats[stats["dead"].astype(str).str.lower().isin(["true", "1"])]
    return {(str(layer), int(c)) for layer, c in zip(dead["layer"], dead["channel"])}


def dataset_best(shard_paths: Sequence[str | os.PathLike], layers: Sequence[str],
                 objective: str) -> dict[str, np.ndarray]:
    """Layer -> (C,) highest value of the unit objective over the dataset's images, from the
    shards' ``layers/<name>/mean`` (objective ``mean``) or ``max`` (``centre``: the spatial
    maximum bounds the centre value from above). Layers the shards lack are left out."""
    if not shard_paths:
        return {}
    from convscope.store.shards import shard_layers

    stored = set(shard_layers(shard_paths[0]))
    names = {layer: f"layers/{layer_key(layer)}/{SHARD_COLUMN[objective]}"
             for layer in layers if layer in stored}
    best = {layer: None for layer in names}
    for chunk in iter_shards(list(shard_paths), list(names.values())):
        for layer, name in names.items():
            values = np.nanmax(chunk[name], axis=0) if len(chunk[name]) else None
            if values is not None:
                best[layer] = values if best[layer] is None else np.fmax(best[layer], values)
    return {layer: values for layer, values in best.items() if values is not None}


@torch.no_grad()
def unit_scores(model: nn.Module, layer: str, channels: Sequence[int], images_uint8: np.ndarray,
                objective: str, preprocess: PreprocessConfig, device) -> np.ndarray:
    """(n,) the objective of unit ``channels[i]`` on stored image ``i`` (uint8, no transform)."""
    x = stored01(images_uint8).to(device)
    score = channel(layer, list(channels), objective)
    with capture_tensors(model, [layer], key="synthesis.visualisation.units") as acts:
        model(to_model_space(x, preprocess))
    return score(acts).float().cpu().numpy().astype(np.float64)


def unit_batches(chosen: Mapping[str, Sequence[int]],
                 batch_size: int) -> list[tuple[str, int, list[int]]]:
    """``(layer, b, channels)`` of every batch of the units ``chosen`` (layer -> channels), in
    layer order: batch ``b`` of a layer holds its channels ``b * batch_size`` onwards and
    starts from ``seed + b``, whatever the chunks (`convscope.store.chunks.batches_per_chunk`)."""
    return [(layer, b, list(channels[start:start + batch_size]))
            for layer, channels in chosen.items()
            for b, start in enumerate(range(0, len(channels), batch_size))]


def _render_batches(model: nn.Module, cfg: VisualisationConfig, batches, preprocess, seed: int,
                    device) -> dict[str, np.ndarray]:
    """The unit images (uint8), curves and objective on the stored image of ``batches``
    (`unit_batches`), with their layer and channel: the datasets of a chunk's file."""
    settings = render_settings(cfg)
    images, curves, achieved, layers, channels = [], [], [], [], []
    for layer, b, batch in batches:
        rendered = render(model, unit_objective(cfg, layer)(batch), len(batch), settings,
                          preprocess=preprocess, seed=seed + b, device=device,
                          desc=f"units {layer} {batch[0]}-{batch[-1]}")
        stored = to_uint8(rendered.images)
        images.append(stored)
        curves.append(rendered.curves)
        achieved.append(unit_scores(model, layer, batch, stored, cfg.objective, preprocess,
                                    device))
        layers += [layer] * len(batch)
        channels += batch
    if not batches:  # an empty chunk: zero rows
        from convscope.data.preprocess import input_hw

        height, width = input_hw(preprocess)
        images = [np.zeros((0, height, width, int(preprocess.channels)), np.uint8)]
        curves, achieved = [np.zeros((0, cfg.steps), np.float32)], [np.zeros(0)]
    return {"images": np.concatenate(images), "curves": np.concatenate(curves),
            "achieved": np.concatenate(achieved), "layer": np.asarray(layers, dtype=object),
            "channel": np.asarray(channels, np.int64)}


def run_unit_chunk(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                   preprocess: PreprocessConfig, cfg: VisualisationConfig, device_name: str,
                   seed: int, layers: Sequence[str] | None, *, stats_csv, images_h5, png_dir,
                   chunk: int = 0, chunks_of: int | None = None) -> None:
    """Chunk ``chunk`` (``chunks_of`` batches per chunk; None: every batch) of the firing
    units of ``cfg.units`` (empty: the first ``cfg.units_per_layer`` channels of each of
    ``layers``): its ``images.h5`` (with each image's objective as stored) and unit PNGs."""
    model, device = load_stage_model(model_cfg, weights, preprocess, device_name,
                                     key="synthesis.device")
    chosen = resolve_units(model, cfg.units, layers, cfg.units_per_layer, preprocess)
    dead = dead_units(stats_csv)
    alive = {layer: [c for c in channels if (layer, c) not in dead]
             for layer, channels in chosen.items()}
    batches = unit_batches(alive, cfg.batch_size)
    if chunks_of is not None:
        batches = chunk_items(batches, chunk, chunks_of)
    data = _render_batches(model, cfg, batches, preprocess, seed, device)
    chosen_dead = [[layer, c] for layer, channels in chosen.items() for c in channels
                   if (layer, c) in dead]
    write_h5(images_h5, data, {"dead": json.dumps(chosen_dead)})
    files = layer_file_names(list(chosen))
    os.makedirs(png_dir, exist_ok=True)
    for image, layer, c in zip(data["images"], data["layer"], data["channel"]):
        save_picture(os.path.join(png_dir, files[layer], f"unit-{int(c):03d}.png"),
                     upscaled(image))


def _read_chunks(chunk_images: Sequence[str | os.PathLike]) -> tuple[dict, list]:
    """The chunks' datasets joined in order, and the dead units (the first chunk's)."""
    parts, dead = [], []
    for i, path in enumerate(chunk_images):
        with h5py.File(path, "r") as f:
            parts.append({name: f[name][()] for name in
                          ("images", "curves", "achieved", "layer", "channel")})
            if i == 0:
                dead = [(str(layer), int(c)) for layer, c in json.loads(f.attrs["dead"])]
    data = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    data["layer"] = np.asarray([v.decode() if isinstance(v, bytes) else str(v)
                                for v in data["layer"]], dtype=object)
    return data, dead


def merge_unit_visualisation(cfg: VisualisationConfig, preprocess: PreprocessConfig, *,
                             chunk_images, chunk_png,
                             shard_paths: Sequence[str | os.PathLike], images_h5, curves_png,
                             png_dir, summary_json) -> dict:
    """The synthesis_units files from its chunks (`run_unit_chunk`, in chunk order): each
    image judged against the unit's dataset best (`dataset_best`); ``images.h5``, the unit
    PNGs and grids, the curves figure and summary.json (returned)."""
    data, dead = _read_chunks(chunk_images)
    os.makedirs(png_dir, exist_ok=True)
    merge_folders(chunk_png, png_dir)
    layers = [str(v) for v in data["layer"]]
    order = list(dict.fromkeys(layers + [layer for layer, _ in dead]))
    best = dataset_best(shard_paths, order, cfg.objective)
    files, folder = layer_file_names(order), os.path.dirname(os.path.abspath(summary_json))
    out = {"images": [], "curves": [], "layer": [], "channel": [], "verdicts": [],
           "dead": dead, "figures": [], "units": {}, "panels": {}}
    for layer in order:
        rows = [i for i, name in enumerate(layers) if name == layer]
        if not rows:
            continue
        channels = [int(c) for c in data["channel"][rows]]
        reference = best.get(layer)
        ref = np.full(len(rows), np.nan) if reference is None else reference[channels]
        verdicts = judge([f"{layer} channel {c}" for c in channels], data["achieved"][rows],
                         ref)
        images = data["images"][rows]
        entries, grid = _save_layer(png_dir, files[layer], folder, cfg, layer, channels,
                                    images, verdicts)
        out["units"][layer], out["panels"][layer] = entries, data["curves"][rows]
        out["figures"].append(grid)
        for key, value in (("images", images), ("curves", data["curves"][rows]),
                           ("verdicts", verdicts)):
            out[key].append(value)
        out["layer"] += [layer] * len(rows)
        out["channel"] += channels
    return _write_units(out, cfg, preprocess, images_h5, curves_png, summary_json, folder)


def run_unit_visualisation(model_cfg: ModelConfig, weights: str | os.PathLike | None,
                           preprocess: PreprocessConfig, cfg: VisualisationConfig,
                           device_name: str, seed: int, layers: Sequence[str] | None, *,
                           stats_csv, shard_paths: Sequence[str | os.PathLike], images_h5,
                           curves_png, png_dir, summary_json) -> dict:
    """One image per firing unit, judged by the quality gate, in one call: `run_unit_chunk`
    over every batch, then `merge_unit_visualisation`; writes the stage's files."""
    os.makedirs(os.path.dirname(os.path.abspath(images_h5)), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(images_h5))) as tmp:
        chunk_h5, chunk_png = os.path.join(tmp, "images.h5"), os.path.join(tmp, "png")
        run_unit_chunk(model_cfg, weights, preprocess, cfg, device_name, seed, layers,
                       stats_csv=stats_csv, images_h5=chunk_h5, png_dir=chunk_png)
        return merge_unit_visualisation(cfg, preprocess, chunk_images=[chunk_h5],
                                        chunk_png=[chunk_png],
                                        shard_paths=shard_paths, images_h5=images_h5,
                                        curves_png=curves_png, png_dir=png_dir,
                                        summary_json=summary_json)


def _caption(cfg: VisualisationConfig, layer: str, c: int, verdict: Verdict) -> str:
    what = f"image maximising the {cfg.objective} of {layer} channel {c}"
    numbers = (f"objective {verdict.achieved:.4g} on the stored image vs the dataset best "
               f"{verdict.reference:.4g}")
    if verdict.converged:
        return f"{what}; converged: {numbers}"
    return f"optimisation did not converge ({numbers}); the image is not what the unit detects"


def _save_layer(png_dir, file_name, folder, cfg, layer, channels, images, verdicts):
    """The layer's PNGs; returns the unit entries (channel -> entries) and the grid entry."""
    entries = {}
    for image, c, verdict in zip(images, channels, verdicts):
        path = os.path.join(png_dir, file_name, f"unit-{c:03d}.png")  # written by the chunk
        title = "unit image (gradient ascent)" if verdict.converged else \
            "unit image: optimisation did not converge"
        entries[str(c)] = [figure_entry(path, folder, title, _caption(cfg, layer, c, verdict))]
    grid = os.path.join(png_dir, file_name, "grid.png")
    save_picture(grid, image_grid(images))
    failed = [c for c, v in zip(channels, verdicts) if not v.converged]
    note = f"; did not converge: {', '.join(map(str, failed))}" if failed else ""
    return entries, figure_entry(grid, folder, layer,
                                 f"channels {', '.join(map(str, channels))}, row by row{note}")


def _write_units(out: Mapping, cfg: VisualisationConfig, preprocess, images_h5, curves_png,
                 summary_json, folder) -> dict:
    """The stage's HDF5 file, curves figure and summary."""
    from convscope.data.preprocess import input_hw

    height, width = input_hw(preprocess)
    verdicts = [v for part in out["verdicts"] for v in part]
    dead = [Verdict(f"{layer} channel {c}", float("nan"), float("nan"), DEAD)
            for layer, c in out["dead"]]
    images = np.concatenate(out["images"]) if out["images"] else \
        np.zeros((0, height, width, int(preprocess.channels)), np.uint8)
    curves = np.concatenate(out["curves"]) if out["curves"] else np.zeros((0, cfg.steps))
    write_h5(images_h5, {"images": images, "curves": curves, "layer": out["layer"],
                         "channel": np.asarray(out["channel"], np.int64), **h5_arrays(verdicts),
                         "dead/layer": [layer for layer, _ in out["dead"]],
                         "dead/channel": np.asarray([c for _, c in out["dead"]], np.int64)},
             {"rule": RULES["unit"], "objective": cfg.objective})
    figures = list(out["figures"])
    if out["panels"]:
        plot_curves(curves_png, out["panels"])
        figures.append(figure_entry(curves_png, folder, "objective per step",
                                    "each unit's objective at each step, per layer"))
    else:
        plot_curves(curves_png, {"no unit optimised": np.zeros((0, 1))})
    ordered = [v for v in verdicts if v.converged] + \
        [v for v in verdicts if not v.converged] + dead
    reference = (f"the highest {cfg.objective} of the unit over the dataset's images"
                 if cfg.objective == "mean" else
                 "the highest value of the unit anywhere on a dataset image (an upper bound of "
                 "its best centre value)")
    return write_summary(
        summary_json, "synthesis_units", "Unit images",
        "For each unit (a channel of a layer) that fires on the dataset, an image made by "
        f"gradient ascent on the unit's {cfg.objective} activation ({cfg.parametrisation} "
        "parametrisation), each judged on the stored 8-bit image against the unit's best "
        f"dataset image: {RULES['unit']}. Units that never fire on the dataset are dead and "
        "are not optimised.",
        numbers=[("units", len(verdicts) + len(dead)), ("steps", cfg.steps),
                 ("unit images", count_line(verdicts + dead))],
        figures=figures, units=out["units"] or None,
        quality=[summary_entry("unit", ordered, f"{cfg.objective} objective on the stored "
                               "image", reference)])
