"""The glossary (``pages/glossary.html``): every term, number and method of the report
defined once, one anchor each (`convscope.report.glossary`), linked from where it is used."""

from __future__ import annotations

from convscope.report.glossary import GROUPS, TERMS

__all__ = ["write_glossary_page"]


def write_glossary_page(renderer) -> None:
    """``pages/glossary.html``: the terms grouped as `GROUPS`, each with its anchor."""
    groups = [{"name": g, "terms": [t for t in TERMS if t.group == g]} for g in GROUPS]
    renderer.page("glossary.html.j2", "pages/glossary.html", "Glossary", groups=groups)
