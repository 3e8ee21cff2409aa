"""Neighbours: the panel of query images and their nearest neighbours in code space and in
pixel space, the leave-one-out k-NN accuracies, and the query table."""

from __future__ import annotations

import pandas as pd

from convscope.report.pages.tables import csv_table, table
from convscope.report.readers import read_json

__all__ = ["write_neighbours_page"]

_MAX_ROWS = 500


def write_neighbours_page(renderer, inputs) -> None:
    """``pages/neighbours.html``."""
    knn = read_json(inputs.knn_accuracy)
    results = pd.DataFrame(knn.get("results", []))
    panels = renderer.writer.copy(inputs.panels, "assets/neighbours/panels.png")
    renderer.page("neighbours.html.j2", "pages/neighbours.html", "Nearest neighbours",
                  panels=panels, knn=knn, results=table(results),
                  queries=csv_table(inputs.queries, _MAX_ROWS))
