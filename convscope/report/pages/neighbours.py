"""Neighbours: the panel of query images and their nearest neighbours in code space and in
pixel space, the leave-one-out k-NN accuracies, and the query table."""

from __future__ import annotations

import pandas as pd

from convscope.report.pages.tables import table
from convscope.report.readers import read_json
from convscope.store.tables import read_table

__all__ = ["write_neighbours_page"]

_MAX_ROWS = 500


def with_class_names(queries: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """``queries.csv`` with ``query_class`` and ``neighbour_class`` (names) after the label ids
    ("" for an unknown label, the id itself for an id the class list does not cover)."""
    out = queries.copy()
    for kind in ("query", "neighbour"):
        column = f"{kind}_label"
        if column not in out.columns:
            continue
        names = [("" if int(v) < 0 else class_names[int(v)] if int(v) < len(class_names)
                  else str(int(v))) for v in out[column]]
        out.insert(out.columns.get_loc(column) + 1, f"{kind}_class", names)
    return out


def write_neighbours_page(renderer, inputs, class_names: list[str]) -> None:
    """``pages/neighbours.html``."""
    knn = read_json(inputs.knn_accuracy)
    results = pd.DataFrame(knn.get("results", []))
    panels = renderer.writer.copy(inputs.panels, "assets/neighbours/panels.png")
    queries = with_class_names(read_table(inputs.queries), class_names)
    queries_csv = "assets/neighbours/queries.csv"
    queries.to_csv(renderer.writer.path(queries_csv), index=False)
    renderer.page("neighbours.html.j2", "pages/neighbours.html", "Nearest neighbours",
                  panels=panels, knn=knn, results=table(results),
                  queries=table(queries, _MAX_ROWS), queries_csv=queries_csv)
