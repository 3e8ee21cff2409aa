"""Which images are explained: the ``explain.images`` choice as a table.

Four kinds (``explain.images.kind``):

- ``rows``: the manifest rows listed in ``rows``, in that order;
- ``per_class``: a seeded sample of ``per_class`` images of each class
  (fewer when a class has fewer), ordered in turns across the classes;
- ``misclassified``: the ``misclassified`` images whose predicted class is
  not their label, the most confident first;
- ``topk``: the ``top_k_images`` best images of each unit of ``top_k_units``,
  read from ``results/units/topk.csv`` (`convscope.analysis.topk_units`).

Predictions come from the shards' ``topk/class`` and ``topk/prob`` (the
top-1 class and its softmax probability), so images that failed extraction
are never chosen. At most ``max_images`` images are kept (the first ones).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from convscope.config.sections import ExplainImagesConfig
from convscope.store.atomic import write_text
from convscope.store.shards import iter_shards
from convscope.store.tables import read_table

__all__ = ["IMAGE_SET_COLUMNS", "read_predictions", "select_images", "run_explain_images"]

logger = logging.getLogger(__name__)

#: Columns of ``results/explain/images.csv``.
IMAGE_SET_COLUMNS = ["index", "path", "slot", "label", "predicted", "probability", "reason"]


def read_predictions(shard_paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Every extracted image's ``index``, ``label``, ``predicted`` (top-1 class) and ``probability``.

    Streams the shards one at a time; returns one row per image, sorted by ``index``.
    """
    frames = []
    for chunk in iter_shards(shard_paths, ["index", "label", "topk/class", "topk/prob"]):
        frames.append(pd.DataFrame({
            "index": chunk["index"].astype(np.int64),
            "label": chunk["label"].astype(np.int64),
            "predicted": chunk["topk/class"][:, 0].astype(np.int64),
            "probability": chunk["topk/prob"][:, 0].astype(np.float64),
        }))
    if not frames:
        return pd.DataFrame(columns=["index", "label", "predicted", "probability"])
    return pd.concat(frames, ignore_index=True).sort_values("index", ignore_index=True)


def _by_rows(predictions: pd.DataFrame, rows: Sequence[int]) -> pd.DataFrame:
    if not rows:
        raise ValueError("explain.images.kind is 'rows' but explain.images.rows is empty; "
                         "list manifest rows, or choose per_class, misclassified or topk")
    known = predictions.set_index("index")
    missing = [int(r) for r in rows if int(r) not in known.index]
    if missing:
        raise ValueError(f"explain.images.rows: rows {missing[:10]} are not among the extracted "
                         f"images (rows 0..{int(known.index.max()) if len(known) else -1}; "
                         "images that failed extraction are left out)")
    chosen = known.loc[list(dict.fromkeys(int(r) for r in rows))].reset_index()
    return chosen.assign(reason="listed in explain.images.rows")


def _per_class(predictions: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    labelled = predictions[predictions["label"] >= 0]
    if labelled.empty:
        raise ValueError("explain.images.kind is 'per_class' but no image has a label; "
                         "choose rows, misclassified or topk")
    rng = np.random.default_rng(seed)
    parts = []
    for label, group in labelled.groupby("label", sort=True):
        take = rng.choice(len(group), size=min(count, len(group)), replace=False)
        parts.append(group.iloc[np.sort(take)].assign(reason=f"sample of class {label}",
                                                      _turn=np.arange(len(take))))
    # class by class in turns (first image of every class, then the second...), so that
    # max_images cuts evenly across the classes
    chosen = pd.concat(parts, ignore_index=True)
    return chosen.sort_values(["_turn", "label"], kind="stable").drop(columns="_turn")


def _misclassified(predictions: pd.DataFrame, count: int) -> pd.DataFrame:
    labels = predictions["label"]
    wrong = predictions[(labels >= 0) & (labels != predictions["predicted"])]
    wrong = wrong.sort_values(["probability", "index"], ascending=[False, True], kind="stable")
    return wrong.head(count).assign(reason="misclassified, most confident first")


def _topk(predictions: pd.DataFrame, topk: pd.DataFrame, units: Sequence[dict],
          per_unit: int) -> pd.DataFrame:
    if not units:
        units = [{"layer": layer, "channels": [0]} for layer in dict.fromkeys(topk["layer"])]
    layers = set(topk["layer"])
    reasons: dict[int, list[str]] = {}
    for unit in units:
        if unit["layer"] not in layers:
            raise ValueError(f"explain.images.top_k_units: layer {unit['layer']!r} is not in "
                             f"results/units/topk.csv; valid: {', '.join(sorted(layers))}")
        rows = topk[(topk["layer"] == unit["layer"]) & topk["channel"].isin(unit["channels"])
                    & (topk["rank"] < per_unit)]
        rows = rows[np.isfinite(rows["value"]) & (rows["value"] > 0)]  # a unit that fires
        for row in rows.sort_values(["channel", "rank"]).itertuples(index=False):
            reasons.setdefault(int(row.index), []).append(
                f"top {int(row.rank) + 1} of {row.layer}:{int(row.channel)}")
    known = predictions.set_index("index")
    chosen = [i for i in reasons if i in known.index]
    frame = known.loc[chosen].reset_index()
    return frame.assign(reason=["; ".join(reasons[i]) for i in chosen])


def select_images(images: ExplainImagesConfig, predictions: pd.DataFrame, manifest: pd.DataFrame,
                  topk: pd.DataFrame | None = None) -> pd.DataFrame:
    """The images to explain, as a table with `IMAGE_SET_COLUMNS`.

    Args:
        images: the ``explain.images`` section.
        predictions: `read_predictions` of the shards.
        manifest: the manifest (``index``, ``path``, optional ``slot``).
        topk: ``results/units/topk.csv`` (needed for kind ``topk``).
    Returns:
        one row per image (no repeats), at most ``images.max_images``, in the
        order the kind defines; ``reason`` says why each was chosen.
    """
    if images.kind == "rows":
        chosen = _by_rows(predictions, images.rows)
    elif images.kind == "per_class":
        chosen = _per_class(predictions, images.per_class, images.seed)
    elif images.kind == "misclassified":
        chosen = _misclassified(predictions, images.misclassified)
    elif images.kind == "topk":
        if topk is None:
            raise ValueError("explain.images.kind is 'topk' but no results/units/topk.csv was given")
        chosen = _topk(predictions, topk, images.top_k_units, images.top_k_images)
    else:
        raise ValueError(f"explain.images.kind {images.kind!r} is unknown; valid: rows, per_class, "
                         "misclassified, topk")
    if len(chosen) > images.max_images:
        logger.info("explain.images: %d images chosen, keeping the first %d "
                    "(explain.images.max_images)",
                    len(chosen), images.max_images)
        chosen = chosen.head(images.max_images)
    lookup = manifest.set_index("index")
    chosen = chosen.reset_index(drop=True)
    chosen["path"] = lookup.loc[chosen["index"], "path"].to_numpy()
    chosen["slot"] = (lookup.loc[chosen["index"], "slot"].to_numpy().astype(np.int64)
                      if "slot" in lookup.columns else -1)
    return chosen[IMAGE_SET_COLUMNS]


def run_explain_images(shard_paths: Sequence[str | os.PathLike], manifest_csv: str | os.PathLike,
                       images: ExplainImagesConfig, *, images_csv: str | os.PathLike,
                       topk_csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """The ``explain_images`` stage: write ``images.csv``, the images ``images`` chooses.

    ``images`` is the ``explain.images`` section (`select_images`); returns the table written.
    Its ``path`` is as the manifest stores it: relative to the results folder (the
    manifest's folder) for a file inside it, else absolute (`convscope.store.paths`).
    """
    manifest = read_table(manifest_csv)
    topk = read_table(topk_csv) if topk_csv else None
    table = select_images(images, read_predictions(shard_paths), manifest, topk)
    logger.info("explain: %d images chosen (%s)", len(table), images.kind)
    write_text(images_csv, table.to_csv(index=False))
    return table
