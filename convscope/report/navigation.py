"""The navigation bar, grouped: every page declares the group it belongs to.

A page is a `NavPage` (title, site path, group). The fixed pages are listed in
`FIXED_PAGES`; a stage's page takes the group its ``summary.json`` names (key
``group``), else the one of its stage name's prefix (`PREFIX_GROUPS`:
``explain_...`` -> Explanations, ``synthesis_...`` -> Synthesis, ``dissect``,
``ablation``, ``cka``, ``probes`` -> Dissection), else Tables. A new stage's page therefore slots into the bar by writing
its summary; nothing here needs to change. Groups are shown in `GROUPS` order,
empty ones left out; a group not in `GROUPS` is shown after them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GROUPS", "PREFIX_GROUPS", "FIXED_PAGES", "NavPage", "group_of_stage", "navigation"]

#: The navigation's groups, in display order.
GROUPS = ("Overview", "Units", "Dissection", "Embedding", "Explanations", "Synthesis",
          "Tables")

#: Stage-name prefix -> group, for stage pages whose summary names no group.
PREFIX_GROUPS = (("explain", "Explanations"), ("synthesis", "Synthesis"),
                 ("dissect", "Dissection"), ("ablation", "Dissection"), ("cka", "Dissection"),
                 ("probes", "Dissection"), ("units", "Units"), ("embedding", "Embedding"))


@dataclass(frozen=True)
class NavPage:
    """One page of the bar: its link text, site path (root-relative) and group."""

    title: str
    href: str
    group: str


#: The pages every report has.
FIXED_PAGES = (NavPage("Overview", "index.html", "Overview"),
               NavPage("Glossary", "pages/glossary.html", "Overview"),
               NavPage("Layers and units", "pages/units.html", "Units"),
               NavPage("Filters and activation maps", "pages/filters.html", "Units"),
               NavPage("Embedding", "pages/embedding.html", "Embedding"),
               NavPage("Neighbours", "pages/neighbours.html", "Embedding"),
               NavPage("Performance", "pages/performance.html", "Tables"))


def group_of_stage(stage: str, declared: str | None = None) -> str:
    """The group of a stage's page: ``declared`` (its summary's ``group``), else by prefix."""
    if declared:
        return str(declared)
    for prefix, group in PREFIX_GROUPS:
        if stage.startswith(prefix):
            return group
    return "Tables"


def navigation(pages: Iterable[NavPage]) -> list[dict]:
    """``[{"group", "links": [{"title", "href"}]}]`` in `GROUPS` order (pages in given order)."""
    grouped: dict[str, list[dict]] = {}
    for page in pages:
        grouped.setdefault(page.group, []).append({"title": page.title, "href": page.href})
    order = [g for g in GROUPS if g in grouped] + [g for g in grouped if g not in GROUPS]
    return [{"group": g, "links": grouped[g]} for g in order]
