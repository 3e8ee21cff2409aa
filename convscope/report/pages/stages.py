"""One page per explanation/synthesis stage, from its ``summary.json`` (docs/design.md,
"Stage summaries"; read and checked by `convscope.store.summary`, the schema the stages
write with), and the per-unit images those stages list for the unit pages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from convscope.report.assets import SiteWriter
from convscope.report.navigation import group_of_stage
from convscope.report.pages.tables import csv_table
from convscope.store.summary import read_summary

__all__ = ["quality_groups", "stage_pages", "write_stage_pages"]

#: Rows of a stage's table put in its page (paged there); the CSV holds them all.
_MAX_TABLE_ROWS = 5000


def _safe(name: str) -> str:
    """A file-name-safe version of a stage name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


#: PNG figures larger than this are put in the site as JPEG (quality `JPEG_QUALITY`): big
#: grids of synthesised pictures, where lossless costs tens of MB and shows nothing more.
REENCODE_BYTES = 2_000_000


def _copy(writer: SiteWriter, summary: Path, stage: str, rel: str) -> str:
    """Copy a file named in ``summary`` (relative to its folder) into the site; its site path
    (``.jpg`` instead of ``.png`` for a PNG over `REENCODE_BYTES`)."""
    source = summary.parent / rel
    if not source.is_file():
        raise ValueError(f"{summary}: names {rel!r}, but {source} does not exist")
    target = f"assets/stages/{_safe(stage)}/{rel}"
    if target.endswith(".png") and source.stat().st_size > REENCODE_BYTES:
        from PIL import Image

        with Image.open(source) as image:
            return writer.save_image(image, target[:-4] + ".jpg")
    return writer.copy(source, target)


def _entries(writer, path, stage, items, with_table=False) -> list[dict]:
    """Figures or tables of a summary: copied, with title, caption (and rows for tables)."""
    entries = []
    for item in items or []:
        entry = {"href": _copy(writer, path, stage, item["path"]), "name": item["path"],
                 "title": item.get("title", item["path"]), "caption": item.get("caption", "")}
        if with_table and item["path"].endswith(".csv"):
            entry["table"] = csv_table(path.parent / item["path"], _MAX_TABLE_ROWS)
        entries.append(entry)
    return entries


def quality_groups(group: dict) -> dict:
    """A summary's ``quality`` group split for the page: ``converged``, then ``failed`` (did
    not converge), then ``dead`` (not optimised), each a list of results."""
    from convscope.synthesis.quality import CONVERGED, NOT_CONVERGED

    results = group["results"]
    return {**group, "converged": [r for r in results if r["status"] == CONVERGED],
            "failed": [r for r in results if r["status"] == NOT_CONVERGED],
            "dead": [r for r in results if r["status"] not in (CONVERGED, NOT_CONVERGED)]}


def stage_pages(summaries: Sequence[str], writer: SiteWriter,
                max_figures: int | None = None) -> tuple[list[dict], dict]:
    """Read every summary and copy its files; returns the pages to write and the unit images
    (layer -> channel (int) -> list of ``{"href", "title", "caption", "stage"}``).

    A page shows (and the site holds) the first ``max_figures`` figures of its stage;
    ``n_figures`` is how many the stage listed, so the page can say what it left out.
    """
    pages, unit_images = [], {}
    for path in map(Path, summaries):
        summary = read_summary(path)
        stage = str(summary["stage"])
        figures = list(summary.get("figures") or [])
        pages.append({
            "stage": stage, "title": summary["title"], "caption": summary["caption"],
            "href": f"pages/stage-{_safe(stage)}.html", "numbers": summary.get("numbers", []),
            "quality": [quality_groups(group) for group in summary.get("quality") or []],
            "group": group_of_stage(stage, summary.get("group")), "n_figures": len(figures),
            "figures": _entries(writer, path, stage, figures[:max_figures]),
            "tables": _entries(writer, path, stage, summary.get("tables"), with_table=True)})
        for layer, channels in (summary.get("units") or {}).items():
            for channel, images in channels.items():
                unit_images.setdefault(layer, {}).setdefault(int(channel), []).extend(
                    {"href": _copy(writer, path, stage, image["path"]), "stage": summary["title"],
                     "title": image.get("title", ""), "caption": image.get("caption", "")}
                    for image in images)
    return pages, unit_images


def write_stage_pages(renderer, pages: list[dict]) -> None:
    """One page per stage: caption, numbers, figures and tables."""
    for page in pages:
        renderer.page("stage.html.j2", page["href"], page["title"], stage=page)
