"""Filters and activation maps: the filters stage's images as its ``index.csv`` lists them."""

from __future__ import annotations

from pathlib import Path

from convscope.store.tables import read_table

__all__ = ["write_filters_page"]


def write_filters_page(renderer, inputs) -> None:
    """``pages/filters.html``: first-layer weights and activation maps, grouped by kind."""
    folder = Path(inputs.filters)
    index = read_table(folder / "index.csv")
    groups: dict[str, list[dict]] = {}
    for row in index.itertuples(index=False):
        href = renderer.writer.copy(folder / row.file, f"assets/filters/{row.file}")
        groups.setdefault(str(row.kind), []).append({
            "href": href, "layer": str(row.layer), "analysed_layer": str(row.analysed_layer),
            "image_index": int(row.image_index)})
    renderer.page("filters.html.j2", "pages/filters.html", "Filters and activation maps",
                  groups=groups)
