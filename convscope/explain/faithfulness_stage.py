"""The ``explain_faithfulness`` stage: how faithful is each attribution method's map?

Reads the maps of ``explain_attribution`` (``maps.h5``; the predicted class's maps,
or the true class's when only those were made) and the images they explain, and
scores every class map with the metrics of `convscope.explain.faithfulness`:

- ``faithfulness.csv``: one row per method and image: ``method, image_id`` (the
  manifest row), ``deletion_auc, insertion_auc`` (area under the probability
  curves, fraction of pixels 0..1 on x), ``road_morf, road_lerf`` (the class
  probability after ROAD's removal, averaged over ``road_fractions``).
- ``mprt.csv``: ``method, layer, spearman``: the mean over the first
  ``mprt_images`` images of the rank correlation between the trained model's map
  and the map after randomising every layer down to ``layer`` (empty: undefined,
  a constant map on every image).
- ``faithfulness/ranking.csv`` (means per method and their ranks),
  ``faithfulness/curves.png`` (mean deletion / insertion curves, MPRT),
  ``faithfulness/summary.json``.

``zf_occlusion`` explains a feature map, not a class: it is not scored.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from convscope.analysis.common import save_figure
from convscope.config.sections import (ExplainAttributionConfig, FaithfulnessConfig, ModelConfig,
                                       PreprocessConfig)
from convscope.data.images import read_prepared
from convscope.explain import attribution as attr
from convscope.explain import faithfulness as faith
from convscope.explain.attribution_stage import attribution_batch
from convscope.explain.inputs import occluder_fill, to_input
from convscope.nn.device import resolve_device
from convscope.nn.models import load_stage_model
from convscope.store.atomic import write_text
from convscope.store.paths import resolved_paths
from convscope.store.tables import read_table
from convscope.store.summary import figure_entry, write_summary

__all__ = ["SCORE_COLUMNS", "MPRT_COLUMNS", "scored_maps", "ranking", "run_explain_faithfulness"]

logger = logging.getLogger(__name__)

SCORE_COLUMNS = ["method", "image_id", "deletion_auc", "insertion_auc", "road_morf", "road_lerf"]
MPRT_COLUMNS = ["method", "layer", "spearman"]
_NEEDS_READY = {"deconvnet", "guided_backprop", "guided_gradcam"}


def scored_maps(methods, targets) -> tuple[list[str], str]:
    """(methods scored, target kind): every class map of ``maps.h5``, predicted class first."""
    kind = "predicted" if "predicted" in targets else "true"
    return [m for m in methods if m != "zf_occlusion"], kind


def _score_batch(model, x, target, maps_by_method, rows, cfg: FaithfulnessConfig, fill,
                 batch_size, curves) -> list[dict]:
    records = []
    n_pixels = x.shape[2] * x.shape[3]
    for method, maps in maps_by_method.items():
        maps = torch.from_numpy(maps).to(x)
        deletion, insertion = faith.deletion_insertion(
            model, x, target, maps, steps=cfg.steps, fill=fill, sigma=cfg.insertion_sigma,
            batch_size=batch_size)
        road = faith.road_scores(model, x, target, maps, fractions=cfg.road_fractions,
                                 noise=cfg.road_noise, keys=rows, seed=cfg.seed,
                                 batch_size=batch_size)
        total = curves.setdefault(method, [0.0, 0.0, 0])
        total[0] = total[0] + deletion.double().sum(0).numpy()
        total[1] = total[1] + insertion.double().sum(0).numpy()
        total[2] += len(rows)
        del_auc = faith.curve_auc(deletion, n_pixels, cfg.steps)
        ins_auc = faith.curve_auc(insertion, n_pixels, cfg.steps)
        for i, row in enumerate(rows):
            records.append({"method": method, "image_id": int(row),
                            "deletion_auc": del_auc[i], "insertion_auc": ins_auc[i],
                            "road_morf": float(road["morf"][i].mean()),
                            "road_lerf": float(road["lerf"][i].mean())})
    return records


def _mprt_rows(model, x, target, methods, kind, attribution, layers_hw, fill, cfg,
               device) -> list[dict]:
    """MPRT of every method on the images ``x``: rows of `MPRT_COLUMNS`."""
    layers = faith.cascade_layers(model)[:cfg.mprt_layers or None]
    records = []
    for method in methods:
        one = dataclasses.replace(attribution, methods=[method])

        def explain(m, method=method, one=one):
            ready = attr.backprop_ready(m) if method in _NEEDS_READY else m
            return attribution_batch(m, ready, x, {kind: target}, one, layers_hw,
                                     fill)[f"{method}/{kind}"]

        rho = faith.mprt(model, explain, layers=layers, seed=cfg.seed)
        for name, values in zip(layers, rho):
            valid = values[np.isfinite(values)]
            records.append({"method": method, "layer": name,
                            "spearman": float(valid.mean()) if len(valid) else np.nan})
    return records


def ranking(scores: pd.DataFrame, mprt: pd.DataFrame) -> pd.DataFrame:
    """Per method: the mean of each score, the MPRT correlation once every layer is random
    (``mprt_last``), each metric's rank (1 = most faithful) and their mean (``mean_rank``)."""
    means = scores.groupby("method", sort=False)[SCORE_COLUMNS[2:]].mean()
    if len(mprt):
        means["mprt_last"] = mprt.groupby("method", sort=False)["spearman"].last()
    lower_better = {"deletion_auc": True, "insertion_auc": False, "road_morf": True,
                    "road_lerf": False, "mprt_last": True}
    ranks = pd.DataFrame({f"rank_{c}": means[c].rank(ascending=lower_better[c])
                          for c in means.columns})
    table = means.join(ranks)
    table["mean_rank"] = ranks.mean(axis=1)
    return table.sort_values(["mean_rank"], kind="stable").reset_index()


def _plot(curves: dict, mprt: pd.DataFrame, steps: int, path) -> None:
    """Mean deletion and insertion curves per method, and the MPRT correlation per layer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    x = np.arange(steps + 1) / steps
    for method, (deletion, insertion, count) in curves.items():
        axes[0].plot(x, deletion / count, label=method)
        axes[1].plot(x, insertion / count, label=method)
    for ax, title in zip(axes[:2], ("deletion (lower = faithful)", "insertion (higher = faithful)")):
        ax.set(title=title, xlabel="fraction of pixels", ylabel="class probability", ylim=(0, 1))
    for method, rows in mprt.groupby("method", sort=False):
        axes[2].plot(range(len(rows)), rows["spearman"], marker="o", label=method)
        axes[2].set_xticks(range(len(rows)), rows["layer"], rotation=60, fontsize=7)
    axes[2].set(ylabel="Spearman with trained map", xlabel="randomised down to")
    axes[2].set_title("randomisation test (lower = model-dependent)", fontsize=10)
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def _read_maps(maps_h5) -> dict:
    with h5py.File(maps_h5, "r") as f:
        methods, kind = scored_maps(list(f.attrs["methods"]), list(f.attrs["targets"]))
        return {"index": f["index"][:], "target": f[f"target/{kind}"][:], "kind": kind,
                "predicted": f["target/predicted"][:],
                "methods": methods, "layers": (str(f.attrs["gradcam_layer"]),
                                               str(f.attrs["zf_layer"])),
                "maps": {m: f[f"{m}/{kind}"][:] for m in methods}}


def run_explain_faithfulness(model_cfg: ModelConfig, weights_file, preprocess: PreprocessConfig,
                             attribution: ExplainAttributionConfig, cfg: FaithfulnessConfig, *,
                             device: str, batch_size: int, images_csv, maps_h5,
                             faithfulness_csv, mprt_csv, ranking_csv, curves_png,
                             summary_json) -> None:
    """The stage: score every class map of ``maps_h5``; write the tables, figure and summary.

    ``batch_size`` (``explain.batch_size``) counts images; the perturbed copies go through
    the model 16 times that many per pass.
    """
    table = read_table(images_csv)
    table["path"] = resolved_paths(table["path"].astype(str), Path(images_csv).parent.parent)
    stored = _read_maps(maps_h5)
    table = table.set_index("index").loc[stored["index"]].reset_index()
    valid = stored["target"] >= 0  # true class unknown: its map is NaN, not scored
    torch_device = resolve_device(device, "explain.device")
    model = load_stage_model(model_cfg, weights_file, preprocess, torch_device)[0]
    fill = occluder_fill(attribution.occlusion_fill, preprocess).to(torch_device)
    copies = 16 * batch_size
    records, curves, mprt_records = [], {}, []
    chosen = np.flatnonzero(valid)
    for start in tqdm(range(0, len(chosen), batch_size), desc="faithfulness", unit="batch",
                      file=sys.stderr):
        rows = chosen[start:start + batch_size]
        batch = table.iloc[rows]
        x = to_input(read_prepared(batch["path"], batch["slot"], preprocess), preprocess,
                     torch_device)
        target = torch.from_numpy(stored["target"][rows]).to(torch_device)
        maps = {m: stored["maps"][m][rows] for m in stored["methods"]}
        records += _score_batch(model, x, target, maps, stored["index"][rows], cfg, fill, copies,
                                curves)
        if start == 0 and cfg.mprt_images:
            few = slice(0, cfg.mprt_images)
            mprt_records = _mprt_rows(model, x[few], target[few], stored["methods"],
                                      stored["kind"], attribution, stored["layers"], fill, cfg,
                                      torch_device)
    scores = pd.DataFrame.from_records(records, columns=SCORE_COLUMNS)
    mprt = pd.DataFrame.from_records(mprt_records, columns=MPRT_COLUMNS)
    ranked = ranking(scores, mprt)
    write_text(faithfulness_csv, scores.to_csv(index=False, float_format="%.6g"))
    write_text(mprt_csv, mprt.to_csv(index=False, float_format="%.6g"))
    write_text(ranking_csv, ranked.to_csv(index=False, float_format="%.4g"))
    _plot(curves, mprt, cfg.steps, curves_png)
    logger.info("faithfulness: %d methods x %d images scored, MPRT on %d images",
                len(stored["methods"]), len(chosen), min(cfg.mprt_images, batch_size, len(chosen)))
    n_mprt = min(cfg.mprt_images, batch_size, len(chosen))
    _write_summary(summary_json, ranked, stored, cfg, (len(chosen), len(valid) - len(chosen),
                                                       n_mprt),
                   {"curves": curves_png, "ranking": ranking_csv})


def _write_summary(summary_json, ranked, stored, cfg, counts, files) -> None:
    n_scored, n_skipped, n_mprt = counts
    root = Path(summary_json).parent
    best = ranked["method"].iloc[0] if len(ranked) else "none"
    write_summary(
        summary_json, "explain_faithfulness", "Faithfulness of the attribution maps",
        ("Are the maps faithful to the model? Deletion: the class probability as the pixels "
         "the map ranks first are greyed out (a faithful map makes it fall fast: low AUC); "
         "insertion: as they are put back into a blurred image (high AUC); ROAD: the "
         "probability after removing the most (MoRF, low is faithful) or least (LeRF, high) "
         "relevant pixels and imputing them from their neighbours; the randomisation test: "
         "the rank correlation of each map with the map of a model whose layers are "
         "randomised from the top down (a map that explains the model falls towards 0). "
         f"Maps of the {stored['kind']} class; per-image scores in "
         "explain/faithfulness.csv, per layer in explain/mprt.csv."),
        numbers=[("images scored", n_scored), ("images without a known class (not scored)",
                                                n_skipped),
                 ("methods", ", ".join(stored["methods"])),
                 ("most faithful (mean rank)", best),
                 ("deletion/insertion steps", cfg.steps),
                 ("ROAD fractions", ", ".join(f"{p:g}" for p in cfg.road_fractions)),
                 ("MPRT images (at most explain.batch_size)", n_mprt)],
        figures=[figure_entry(files["curves"], root, "Deletion, insertion, randomisation",
                              "Mean curves per method; the MPRT correlation per randomised "
                              "layer (the first is the output layer).")],
        tables=[figure_entry(files["ranking"], root, "Methods ranked",
                             "Mean scores per method, each metric's rank (1 = most faithful) "
                             "and the mean rank.")])
