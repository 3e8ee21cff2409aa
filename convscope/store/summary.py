"""A stage's ``summary.json``: its one schema, its writer and its reader.

Every explanation and synthesis stage writes one (docs/design.md, "Stage
summaries"); the report reads only this file to show the stage. Writer and
reader check the same schema, so a summary the report refuses cannot be
written. Paths inside are relative to the folder holding the summary.
Standard library only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from convscope.store.atomic import write_json

__all__ = ["REQUIRED_KEYS", "LIST_KEYS", "ENTRY_KEYS", "QUALITY_KEYS", "SummaryError", "figure_entry",
           "stage_summary", "check_summary", "write_summary", "read_summary"]

#: Keys every summary must have, each a non-empty text.
REQUIRED_KEYS = ("stage", "title", "caption")
#: Keys holding lists (optional when read; always written, maybe empty).
LIST_KEYS = ("numbers", "figures", "tables")
#: Keys of one ``figures``/``tables``/``units`` entry (``path`` required).
ENTRY_KEYS = ("path", "title", "caption")
#: Keys of one ``quality`` group (the optimisation verdicts of a synthesis stage).
QUALITY_KEYS = ("kind", "rule", "measure", "reference", "results")


class SummaryError(ValueError):
    """A summary that does not follow the schema; the message names the file and the key."""


def figure_entry(path: str | os.PathLike, folder: str | os.PathLike, title: str,
                 caption: str = "") -> dict:
    """One ``figures``/``tables``/``units`` entry, its path relative to ``folder``."""
    return {"path": Path(os.path.relpath(path, folder)).as_posix(), "title": title,
            "caption": caption}


def _numbers(numbers: Mapping[str, object] | Sequence[tuple[str, object]]) -> list[dict]:
    items = numbers.items() if isinstance(numbers, Mapping) else numbers
    return [{"label": str(label), "value": str(value)} for label, value in items]


def stage_summary(stage: str, title: str, caption: str, *,
                  numbers: Mapping[str, object] | Sequence[tuple[str, object]] = (),
                  figures: Sequence[dict] = (), tables: Sequence[dict] = (),
                  units: Mapping | None = None, group: str | None = None,
                  quality: Sequence[dict] = ()) -> dict:
    """The summary as a dict, keys in schema order (``units``, ``group`` only when not None,
    ``quality`` only when not empty).

    ``numbers``: label -> value (or (label, value) pairs), values written as text;
    ``figures``, ``tables``: `figure_entry` dicts; ``units``: layer -> channel -> entries;
    ``group``: the report navigation group of the stage's page (default: from its name,
    `convscope.report.navigation.group_of_stage`);
    ``quality``: the optimisation verdicts, one group per kind
    (`convscope.synthesis.quality.summary_entry`: ``kind``, ``rule``, ``measure``,
    ``reference`` and ``results``, each with ``item``, ``status``, ``achieved``,
    ``reference``, ``image``).
    """
    summary = {"stage": stage, "title": title, "caption": caption, "numbers": _numbers(numbers),
               "figures": list(figures), "tables": list(tables)}
    if units is not None:
        summary["units"] = units
    if group is not None:
        summary["group"] = str(group)
    if quality:
        summary["quality"] = list(quality)
    return summary


def _check_entries(entries, where: str) -> None:
    if not isinstance(entries, list):
        raise SummaryError(f"{where} must be a list")
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not entry.get("path"):
            raise SummaryError(f"{where}[{i}] must be an object with a 'path' "
                               f"(keys: {', '.join(ENTRY_KEYS)})")


def check_summary(summary: Mapping, source: str | os.PathLike = "summary") -> Mapping:
    """``summary`` if it follows the schema; else `SummaryError` naming ``source`` and the key."""
    missing = [key for key in REQUIRED_KEYS if not summary.get(key)]
    if missing:
        raise SummaryError(f"{source}: stage summary without {', '.join(missing)} (needs "
                           f"{', '.join(REQUIRED_KEYS)}; see docs/design.md 'Stage summaries')")
    for i, number in enumerate(summary.get("numbers") or []):
        if not isinstance(number, Mapping) or "label" not in number or "value" not in number:
            raise SummaryError(f"{source}: numbers[{i}] must be an object with 'label' and "
                               "'value'")
    for key in ("figures", "tables"):
        _check_entries(summary.get(key) or [], f"{source}: {key}")
    for layer, channels in (summary.get("units") or {}).items():
        for channel, entries in channels.items():
            _check_entries(entries, f"{source}: units[{layer!r}][{channel!r}]")
    _check_quality(summary.get("quality") or [], source)
    return summary


def _check_quality(groups, source) -> None:
    if not isinstance(groups, list):
        raise SummaryError(f"{source}: quality must be a list")
    for i, group in enumerate(groups):
        missing = [k for k in QUALITY_KEYS if not isinstance(group, Mapping) or k not in group]
        if missing:
            raise SummaryError(f"{source}: quality[{i}] lacks {', '.join(missing)} (needs "
                               f"{', '.join(QUALITY_KEYS)})")
        for j, result in enumerate(group["results"]):
            if not isinstance(result, Mapping) or not {"item", "status"} <= set(result):
                raise SummaryError(f"{source}: quality[{i}].results[{j}] must be an object "
                                   "with 'item' and 'status'")


def write_summary(path: str | os.PathLike, stage: str, title: str, caption: str,
                  **parts) -> dict:
    """Write `stage_summary` (``parts``: its keyword arguments) to ``path``, atomically."""
    summary = check_summary(stage_summary(stage, title, caption, **parts), path)
    write_json(path, summary)
    return summary


def read_summary(path: str | os.PathLike) -> dict:
    """The summary at ``path``, checked against the schema."""
    with open(path) as fh:
        return check_summary(json.load(fh), path)
