"""Performance: accuracy tables with their Wilson 95% intervals (sortable), the confusion
matrix, the per-attribute plots and the comparison with other predictions."""

from __future__ import annotations

from pathlib import Path


from convscope.report.pages.tables import csv_table, table
from convscope.store.tables import read_table

__all__ = ["IMAGE_SUFFIXES", "write_performance_page"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")


def _attribute_plots(renderer, folder) -> list[dict]:
    """The per-attribute plots of the performance stage, by name, copied into the site."""
    plots = sorted(p for p in Path(folder).iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [{"name": p.stem, "href": renderer.writer.copy(p, f"assets/performance/attributes/"
                                                               f"{p.name}")} for p in plots]


def _comparison(renderer, inputs) -> dict | None:
    """The comparison with other predictions (None when not given or empty)."""
    if not inputs.comparison or not inputs.agreement:
        return None
    agreement = read_table(inputs.agreement)
    if agreement.empty:
        return None
    comparison = read_table(inputs.comparison, keep_default_na=False, na_values=[""])
    panel = (renderer.writer.copy(inputs.comparison_panel, "assets/performance/comparison.png")
             if inputs.comparison_panel else None)
    overall = comparison[comparison["scope"] == "overall"]
    overall = overall.drop(columns=[c for c in ("scope", "class", "class_name") if c in overall])
    return {"overall": table(overall),
            "agreement": table(agreement), "panel": panel}


#: Classes up to which the confusion matrix is shown as a table (beyond: CSV and figure only).
MAX_CONFUSION_TABLE = 50


def write_performance_page(renderer, inputs) -> None:
    """``pages/performance.html``; every table also copied as CSV (``csv`` hrefs)."""
    writer = renderer.writer
    confusion = csv_table(inputs.confusion)
    csv = {name: writer.copy(getattr(inputs, name), f"assets/performance/{name}.csv")
           for name in ("overall", "per_class", "per_attribute", "confusion")}
    renderer.page(
        "performance.html.j2", "pages/performance.html", "Performance", csv=csv,
        confusion_shown=len(confusion["columns"]) <= MAX_CONFUSION_TABLE + 1,
        overall=csv_table(inputs.overall), per_class=csv_table(inputs.per_class),
        per_attribute=csv_table(inputs.per_attribute), confusion=confusion,
        confusion_plot=writer.copy(inputs.confusion_plot, "assets/performance/confusion.png"),
        tables_md=writer.copy(inputs.performance_tables, "assets/performance/tables.md"),
        attribute_plots=_attribute_plots(renderer, inputs.attribute_plots),
        comparison=_comparison(renderer, inputs))
