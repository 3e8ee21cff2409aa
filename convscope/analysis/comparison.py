"""The model's top-1 side by side with other predictions of the same images.

Other predictions (``performance.compare_columns``: manifest columns holding
a human labeler's answers or a second model's top-1, as class ids or class
names) are compared with the model's top-1 on the images both answered (a
missing value = no answer): accuracy of each, overall, per class and per
attribute, with Wilson intervals (`compare_tables`), the agreement counts
and a few example images of each disagreement kind, drawn with their
thumbnails in one figure (`render_comparison_panel`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from convscope.analysis.accuracy import per_attribute_table, wilson_interval
from convscope.analysis.common import class_name, save_placeholder
from convscope.render.grids import caption_font, upscale_nearest
from convscope.render.mosaic import gather_thumbs
from convscope.store.atomic import save_image
from convscope.store.shards import read_concat

__all__ = [
    "EXAMPLES_PER_KIND",
    "EXAMPLE_KINDS",
    "other_predictions",
    "compare_tables",
    "panel_geometry",
    "render_comparison_panel",
    "write_comparison_panel",
]

#: Example images per disagreement kind in ``comparison_examples``.
EXAMPLES_PER_KIND = 5
AGREEMENT = ("both_right", "only_model", "only_other", "both_wrong")
#: The disagreement kinds with example images, in the order of the panel's rows.
EXAMPLE_KINDS = AGREEMENT[1:]


def other_predictions(values: pd.Series, column: str, class_names: Sequence[str]) -> np.ndarray:
    """Class ids (n,) int64 of another labeler's answers; -1 where there is no answer.

    ``values`` holds class ids (integers) or class names (text, mapped through
    ``class_names``); a missing value is "no answer". Anything else (an
    unknown name, a fraction, an id outside the classes) raises ``ValueError``
    naming the ``performance.compare_columns`` column, the values and what is valid.
    """
    key = f"performance.compare_columns: column {column!r}"
    ids = np.full(len(values), -1, dtype=np.int64)
    known = values.notna().to_numpy()
    present = values[known]
    n_names = len(class_names)
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        numbers = present.to_numpy(dtype=np.float64)
        bad = sorted(set(numbers[(numbers != np.round(numbers)) | (numbers < 0)
                                 | ((numbers >= n_names) if n_names else False)].tolist()))
        if bad:
            raise ValueError(f"{key} holds {bad[:10]}, which are not class ids; valid: "
                             f"integers 0..{n_names - 1} or the class names "
                             f"{list(class_names)[:10]}")
        ids[known] = numbers.astype(np.int64)
        return ids
    id_of_name = {str(name): i for i, name in enumerate(class_names)}
    text = present.astype(str).str.strip()
    mapped = text.map(lambda v: id_of_name.get(v, int(v) if v.isdigit() and
                                               (not n_names or int(v) < n_names) else None))
    unknown = sorted(set(text[mapped.isna()]))
    if unknown:
        raise ValueError(f"{key} holds {unknown[:10]}, which are not class names of the manifest; "
                         f"valid: {list(class_names)[:20]} (or class ids 0..{n_names - 1})")
    ids[known] = mapped.to_numpy(dtype=np.int64)
    return ids


def compare_tables(frame: pd.DataFrame, others: dict[str, np.ndarray],
                   class_names: Sequence[str], attributes: Sequence[str] = (),
                   n_bins: int = 5, max_categories: int = 50) -> dict[str, pd.DataFrame]:
    """The model's top-1 side by side with other predictions of the same images.

    ``others`` maps a name to (len(frame),) class ids (-1 = no answer, from
    `other_predictions`). Each comparison uses the rows the other answered.
    Returns ``comparison`` (per other: overall, per class and per value or
    bin of each of ``attributes``, grouped as `per_attribute_table` does;
    n, model_top1 and other_top1 with Wilson 95% bounds), ``agreement`` (per other: n,
    both_right, only_model, only_other, both_wrong) and ``examples`` (up to
    `EXAMPLES_PER_KIND` rows per other and disagreement kind, by manifest row).
    """
    comparison, agreement, examples = [], [], []
    for other, ids in others.items():
        answered = ids >= 0
        sub = frame.loc[answered, ["index", "path", "label", "pred", "top1"]].copy()
        sub["other_pred"] = ids[answered]
        sub["other_top1"] = sub["other_pred"] == sub["label"]
        groups = [("overall", None, sub)] + [("class", int(c), g) for c, g in
                                              sub.groupby("label", sort=True)]
        for scope, cls, rows in groups:
            entry = {"other": other, "scope": scope, "class": -1 if cls is None else cls,
                     "class_name": "" if cls is None else class_name(class_names, cls),
                     "attribute": "", "value": "", "n": len(rows)}
            for who, hits in (("model", rows["top1"]), ("other", rows["other_top1"])):
                lo, hi = wilson_interval(int(hits.sum()), len(rows))
                entry[f"{who}_top1"] = float(hits.mean()) if len(rows) else float("nan")
                entry[f"{who}_top1_lo"], entry[f"{who}_top1_hi"] = float(lo), float(hi)
            comparison.append(entry)
        comparison += _compare_by_attribute(other, sub, frame.loc[answered, list(attributes)],
                                            n_bins, max_categories)
        kind = np.select([sub["top1"] & sub["other_top1"], sub["top1"] & ~sub["other_top1"],
                          ~sub["top1"] & sub["other_top1"]], list(AGREEMENT[:3]), AGREEMENT[3])
        sub["kind"] = kind
        agreement.append({"other": other, "n": len(sub),
                          **{k: int((kind == k).sum()) for k in AGREEMENT}})
        for k in EXAMPLE_KINDS:
            picked = sub[sub["kind"] == k].sort_values("index").head(EXAMPLES_PER_KIND)
            for row in picked.to_dict("records"):
                examples.append({
                    "other": other, "kind": k, "index": int(row["index"]), "path": row["path"],
                    "label": class_name(class_names, row["label"]),
                    "model_pred": class_name(class_names, row["pred"]),
                    "other_pred": class_name(class_names, row["other_pred"])})
    columns = {
        "comparison": ["other", "scope", "class", "class_name", "attribute", "value", "n"] + [
            f"{w}_top1{s}" for w in ("model", "other") for s in ("", "_lo", "_hi")],
        "agreement": ["other", "n", *AGREEMENT],
        "examples": ["other", "kind", "index", "path", "label", "model_pred", "other_pred"],
    }
    rows = {"comparison": comparison, "agreement": agreement, "examples": examples}
    return {name: pd.DataFrame(rows[name], columns=cols) for name, cols in columns.items()}


def _compare_by_attribute(other: str, paired: pd.DataFrame, attrs: pd.DataFrame, n_bins: int,
                          max_categories: int) -> list[dict]:
    """Comparison rows per attribute value or bin, on the images ``other`` answered."""
    if attrs.empty or not len(attrs.columns):
        return []
    # per_attribute_table groups two boolean columns: the model's hits go in as
    # "top1" and the other's as "top5", so both share the same bins.
    both = attrs.assign(top1=paired["top1"].to_numpy(), top5=paired["other_top1"].to_numpy())
    table, _, _ = per_attribute_table(both, list(attrs.columns), n_bins, max_categories)
    rows = []
    for row in table.to_dict("records"):
        entry = {"other": other, "scope": "attribute", "class": -1, "class_name": "",
                 "attribute": row["attribute"], "value": row["value"], "n": int(row["n"])}
        for who, metric in (("model", "top1"), ("other", "top5")):
            for suffix in ("", "_lo", "_hi"):
                entry[f"{who}_top1{suffix}"] = float(row[metric + suffix])
        rows.append(entry)
    return rows


#: Geometry of the comparison panel, in pixels (see `render_comparison_panel`).
PANEL_MIN_TILE_PX = 80
PANEL_PAD = 4
PANEL_LABEL_W = 150
PANEL_TITLE_H = 24
PANEL_LINE_H = 12
PANEL_CAPTION_LINES = 3
_KIND_TEXT = {"only_model": "only the model right", "only_other": "only {other} right",
              "both_wrong": "both wrong"}
_RIGHT_RGB, _WRONG_RGB = (0, 120, 0), (190, 0, 0)


def panel_geometry(thumb_px: int) -> dict[str, int]:
    """Sizes in the comparison panel for thumbnails of side ``thumb_px``.

    ``factor``: the thumbnails are enlarged by pixel repetition with the
    smallest integer factor that reaches `PANEL_MIN_TILE_PX` (1 for large
    thumbnails); ``tile`` = thumb_px * factor; ``cell_w`` = tile + 2 pad;
    ``cell_h`` = tile + 3 pad + `PANEL_CAPTION_LINES` * `PANEL_LINE_H`;
    ``block_h`` = `PANEL_TITLE_H` + one ``cell_h`` per kind of
    `EXAMPLE_KINDS`; ``width`` = `PANEL_LABEL_W` + `EXAMPLES_PER_KIND` cells.
    """
    factor = max(1, math.ceil(PANEL_MIN_TILE_PX / thumb_px))
    tile = thumb_px * factor
    cell_w = tile + 2 * PANEL_PAD
    cell_h = tile + 3 * PANEL_PAD + PANEL_CAPTION_LINES * PANEL_LINE_H
    return {"factor": factor, "tile": tile, "cell_w": cell_w, "cell_h": cell_h,
            "block_h": PANEL_TITLE_H + len(EXAMPLE_KINDS) * cell_h,
            "width": PANEL_LABEL_W + EXAMPLES_PER_KIND * cell_w}


def _fit(draw, text: str, font, width: int) -> str:
    """``text`` cut (with an ellipsis) to fit ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_comparison_panel(examples: pd.DataFrame, agreement: pd.DataFrame,
                            thumbs: dict[int, np.ndarray]):
    """The example images of each disagreement kind, one block per compared column.

    ``examples`` and ``agreement`` are `compare_tables`' tables (``examples``
    may be read back from its CSV: ``label``, ``model_pred`` and
    ``other_pred`` are class names); ``thumbs`` maps a manifest index to its
    (t, t, 3) uint8 thumbnail (all of one size). Layout (sizes from
    `panel_geometry`): block ``b`` (the ``b``-th row of ``agreement``) starts
    at y = b * block_h with a title line of `PANEL_TITLE_H`; its row ``k``
    (kind ``EXAMPLE_KINDS[k]``, named at the left with its count) starts at
    y = b * block_h + `PANEL_TITLE_H` + k * cell_h; its ``j``-th example (in
    the order of ``examples``) is the thumbnail enlarged by pixel repetition
    at (x, y) = (`PANEL_LABEL_W` + j * cell_w + pad, row top + pad), captioned
    below with the true class, the model's answer and the other's (named
    "other" when the column's name is longer than 8 characters; an answer
    in green when right, red when wrong); cells without an example stay
    white. Returns an RGB PIL image on white.
    """
    if not thumbs:
        raise ValueError("render_comparison_panel: no thumbnails to draw")
    geo = panel_geometry(int(next(iter(thumbs.values())).shape[0]))
    tile, cell_w, cell_h, block_h = geo["tile"], geo["cell_w"], geo["cell_h"], geo["block_h"]
    canvas = Image.new("RGB", (geo["width"], max(1, len(agreement)) * block_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font, title_font = caption_font(10), caption_font(13)
    for b, row in enumerate(agreement.to_dict("records")):
        other, top = str(row["other"]), b * block_h
        if b:
            draw.line([(0, top), (geo["width"], top)], fill=(160, 160, 160))
        draw.text((PANEL_PAD, top + 5),
                  _fit(draw, f"model vs {other} ({row['n']} image(s) both answered)",
                       title_font, geo["width"] - 2 * PANEL_PAD),
                  fill=(0, 0, 0), font=title_font)
        mine = examples[examples["other"].astype(str) == other]
        who_other = other if len(other) <= 8 else "other"  # room for the answer
        for k, kind in enumerate(EXAMPLE_KINDS):
            y = top + PANEL_TITLE_H + k * cell_h
            label = _KIND_TEXT[kind].format(other=other)
            lines = [_fit(draw, label, font, PANEL_LABEL_W - 2 * PANEL_PAD),
                     f"{row[kind]} of {row['n']} images"]
            draw.multiline_text((PANEL_PAD, y + PANEL_PAD), "\n".join(lines), fill=(0, 0, 0),
                                font=font, spacing=3)
            shown = mine[mine["kind"] == kind].head(EXAMPLES_PER_KIND)
            for j, ex in enumerate(shown.to_dict("records")):
                left = PANEL_LABEL_W + j * cell_w + PANEL_PAD
                draw.rectangle([left - 1, y + PANEL_PAD - 1, left + tile, y + PANEL_PAD + tile],
                               outline=(60, 60, 60))
                image = upscale_nearest(np.asarray(thumbs[int(ex["index"])], np.uint8),
                                        geo["factor"])
                canvas.paste(Image.fromarray(np.ascontiguousarray(image)),
                             (left, y + PANEL_PAD))
                truth = str(ex["label"])
                caption = [(f"true: {truth}", (0, 0, 0))] + [
                    (f"{who}: {answer}", _RIGHT_RGB if str(answer) == truth else _WRONG_RGB)
                    for who, answer in (("model", ex["model_pred"]), (who_other, ex["other_pred"]))]
                for i, (text, colour) in enumerate(caption):
                    draw.text((left, y + 2 * PANEL_PAD + tile + i * PANEL_LINE_H),
                              _fit(draw, text, font, cell_w - PANEL_PAD), fill=colour, font=font)
    return canvas


def _thumbs_by_index(shard_paths: Sequence, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """Thumbnails of the given manifest indices (each must be in a shard), by index."""
    wanted = sorted({int(i) for i in indices})
    if not wanted:
        return {}
    shard_index = read_concat(shard_paths, "index").astype(np.int64)
    position = pd.Series(np.arange(len(shard_index)), index=shard_index)
    position = position[~position.index.duplicated()]
    rows = position.loc[wanted].to_numpy(dtype=np.int64)
    return dict(zip(wanted, gather_thumbs(shard_paths, rows)))


def write_comparison_panel(path, shard_paths: Sequence, compare_columns: Sequence[str],
                            compared: dict[str, pd.DataFrame]) -> None:
    """The comparison panel at ``path``, or a small placeholder saying why there is none."""
    examples, agreement = compared["examples"], compared["agreement"]
    if not len(compare_columns):
        save_placeholder(path, "No comparison columns configured (performance.compare_columns)")
    elif examples.empty:
        save_placeholder(path, f"No disagreement to show: on the images they answered, "
                               f"{', '.join(map(str, compare_columns))} and the model are both "
                               "right, or no labelled image was answered")
    else:
        save_image(path, render_comparison_panel(
            examples, agreement, _thumbs_by_index(shard_paths, examples["index"])))

