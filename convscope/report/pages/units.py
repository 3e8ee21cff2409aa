"""Layers and units: a gallery per layer (every channel, sortable and filterable, drawn in
pages by ``gallery.js``) and a page per unit (top-k patches and context crops, activation
histogram, classes of its top images, class selectivity, other stages' images)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from convscope.analysis.layer_names import layer_file_names
from convscope.report.pages.histogram import histogram_svg
from convscope.report.pages.tables import csv_table
from convscope.report.readers import read_json, read_unit_histograms, read_unit_stats
from convscope.report.unit_images import render_layer_units
from convscope.store.tables import read_table

__all__ = ["gallery_pages", "gallery_units", "write_gallery_page", "write_unit_pages"]


def _number(value) -> float | None:
    """A finite float, or None."""
    value = float(value)
    return value if np.isfinite(value) else None


def gallery_pages(stats: pd.DataFrame) -> dict[str, str]:
    """Layer -> site path of its gallery page, for the layers of ``stats.csv`` in its order."""
    files = layer_file_names(list(dict.fromkeys(stats["layer"])))
    return {layer: f"pages/layer-{name}.html" for layer, name in files.items()}


def gallery_units(stats: pd.DataFrame, images: dict[int, dict], unit_href: str,
                  majority: dict[int, str] | None = None) -> list[dict]:
    """The gallery's data for one layer's ``stats`` rows: per channel its number ``c``,
    ``rate`` (firing rate), ``max``, ``sel`` (class selectivity), ``cls`` (preferred
    class: highest mean activation), ``maj`` (majority class of the top-k, "name (n/k)",
    only when ``majority`` is given), ``dead``, ``img`` (top patch: a path or a sprite
    dict) and ``href`` (its page; ``unit_href`` with ``{c:04d}`` formatted)."""
    units = [{"c": int(row.channel), "rate": _number(row.firing_rate),
              "max": _number(row.max_activation), "sel": _number(row.class_selectivity),
              "cls": str(row.preferred_class), "dead": bool(row.dead),
              "img": images.get(int(row.channel), {}).get("top"),
              "href": unit_href.format(c=int(row.channel))}
             for row in stats.itertuples(index=False)]
    if majority is not None:
        for unit in units:
            unit["maj"] = majority.get(unit["c"], "")
    return units


def write_gallery_page(renderer, layer: str, file_name: str, units: Sequence[dict],
                       page_size: int, figure_pages: Sequence[dict] = ()) -> str:
    """The gallery page ``pages/layer-<file_name>.html`` of ``units`` (`gallery_units` rows,
    image and unit paths relative to the site root); data in ``assets/data/``.
    ``figure_pages`` (``{"name", "href"}``) are the top-k stage's figures of the layer."""
    data = f"assets/data/layer-{file_name}.js"
    classes = sorted({u["cls"] for u in units if u["cls"]})
    renderer.writer.write_data(data, "gallery", {"layer": layer, "units": list(units),
                                                 "pageSize": int(page_size), "classes": classes})
    return renderer.page("layer.html.j2", f"pages/layer-{file_name}.html", f"Layer {layer}",
                         layer=layer, data_js=data, n_units=len(units), units=list(units),
                         figure_pages=list(figure_pages),
                         n_dead=sum(bool(u["dead"]) for u in units), classes=classes)


def _top_images(rows: pd.DataFrame, labels: pd.Series, class_names: list[str]) -> list[dict]:
    """The unit's top-k rows with the class of each image."""
    out = []
    for row in rows.sort_values("rank").itertuples(index=False):
        label = int(labels.get(int(row.index), -1))
        out.append({"rank": int(row.rank), "index": int(row.index), "value": float(row.value),
                    "cls": class_names[label] if 0 <= label < len(class_names) else "",
                    "box": [round(float(v), 1) for v in (row.x0, row.y0, row.x1, row.y1)]})
    return out


def _class_counts(top: list[dict]) -> list[dict]:
    """How many of the top images belong to each class, most first (ties by name)."""
    counts = pd.Series([t["cls"] or "(unlabelled)" for t in top], dtype=object).value_counts()
    rows = [{"cls": str(k), "n": int(v)} for k, v in counts.items()]
    return sorted(rows, key=lambda row: (-row["n"], row["cls"]))


def _majority(classes: list[dict]) -> dict | None:
    """The majority class of the top-k (`_class_counts`' first labelled row) with ``tie``:
    how many classes share its count (1: a true majority); None without labels."""
    labelled = [row for row in classes if row["cls"] != "(unlabelled)"]
    if not labelled:
        return None
    return {**labelled[0], "tie": sum(row["n"] == labelled[0]["n"] for row in labelled)}


def _unit_page(renderer, layer, file_name, stat, rows, images, hist, extras, labels,
               class_names, neighbours) -> None:
    """One unit's page."""
    channel = int(stat.channel)
    top = _top_images(rows, labels, class_names)
    classes = _class_counts(top)
    majority = _majority(classes)
    renderer.page("unit.html.j2", f"pages/units/{file_name}/c{channel:04d}.html",
                  f"{layer} · channel {channel}", layer=layer, channel=channel, stat=stat,
                  gallery=f"pages/layer-{file_name}.html", images=images, top=top,
                  classes=classes, majority=majority, hist=hist, extras=extras,
                  neighbours=neighbours)
    if not majority:
        return ""
    if majority["tie"] > 1:
        return f"none ({majority['tie']} classes tie at {majority['n']}/{len(top)})"
    return f"{majority['cls']} ({majority['n']}/{len(top)})"


def _layer(renderer, inputs, layer, file_name, stats, topk, manifest, class_names, cfg, hists,
           extras) -> dict:
    """A layer's unit pictures, unit pages and gallery; returns its row of the index page."""
    rows = topk[topk["layer"] == layer]
    images = render_layer_units(rows, manifest, cfg.patch_px, renderer.writer.save_image,
                                f"assets/units/{file_name}")
    labels = manifest.set_index("index")["label"]
    counts, edges = hists.get(layer, (None, None))
    channels = stats["channel"].astype(int).tolist()
    by_channel = {int(c): group for c, group in rows.groupby("channel")}
    majority = {}
    for i, stat in enumerate(stats.itertuples(index=False)):
        c = int(stat.channel)
        hist = histogram_svg(counts[c], edges[c]) if counts is not None else None
        neighbours = {"prev": channels[i - 1] if i else None,
                      "next": channels[i + 1] if i + 1 < len(channels) else None}
        majority[c] = _unit_page(renderer, layer, file_name, stat, by_channel.get(c, rows[:0]),
                                 images.get(c, {}), hist, extras.get(layer, {}).get(c, []),
                                 labels, class_names, neighbours)
    units = gallery_units(stats, images, f"pages/units/{file_name}/c{{c:04d}}.html", majority)
    # the top-k stage's own figure pages (results/units/topk/) hold the same crops as the
    # sprite sheets: they are named, not copied (tens of MB at ResNet-50 size)
    figure_pages = [{"name": page} for page in read_json(inputs.topk_index).get(layer, [])]
    href = write_gallery_page(renderer, layer, file_name, units, cfg.gallery_page_size,
                              figure_pages)
    return {"layer": layer, "href": href, "channels": len(units),
            "dead": sum(u["dead"] for u in units)}


def write_unit_pages(renderer, inputs, manifest: pd.DataFrame, class_names: list[str], cfg,
                     extras: dict) -> None:
    """Every layer's gallery and unit pages, and the index ``pages/units.html``."""
    stats = read_unit_stats(inputs.unit_stats)
    topk = read_table(inputs.topk_table)
    hists = read_unit_histograms(inputs.unit_histograms)
    layers = list(dict.fromkeys(stats["layer"]))
    files = layer_file_names(layers)
    index = [_layer(renderer, inputs, layer, files[layer], stats[stats["layer"] == layer], topk,
                    manifest, class_names, cfg, hists, extras) for layer in layers]
    firing = renderer.writer.copy(inputs.firing_rate, "assets/units/firing_rate.png")
    renderer.page("units.html.j2", "pages/units.html", "Layers and units", layers=index,
                  summary=csv_table(inputs.unit_summary), firing_rate=firing)
