"""`build_report`: the report as a static, offline site.

The site is ``index.html`` (the overview) beside ``pages/`` (every other page)
and ``assets/`` (every figure, image, script and data file it shows), so the
folder holding them can be copied anywhere, opened from ``file://`` or served
by any static server; no page loads anything from outside it. The pages are
built by `convscope.report.pages` from the stages' files only: regenerating
the report (a new title, a template change) recomputes no analysis.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
from markupsafe import Markup

from convscope import __version__
from convscope.config.sections import DatasetConfig, ReportConfig
from convscope.data.manifest import read_manifest
from convscope.report.assets import SiteWriter
from convscope.report.glossary import anchor, link_terms
from convscope.report.inputs import ReportInputs
from convscope.report.navigation import FIXED_PAGES, NavPage, navigation

__all__ = ["Renderer", "build_report"]


@dataclass
class Renderer:
    """Renders templates into the site: each page gets the navigation bar and ``root``, the
    relative path from its folder to the site's root (every link in a page starts with it)."""

    writer: SiteWriter
    title: str
    nav: list[dict] = field(default_factory=list)
    generated: str = ""

    def __post_init__(self):
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("convscope.report", "templates"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.globals.update(glossary_anchor=anchor, link_terms=link_terms,
                                hidpi=self._hidpi)

    def _hidpi(self, href: str, root: str = "") -> Markup:
        """`` srcset="href 2x"`` for a figure drawn at 2x (`SiteWriter.density`), else ""."""
        rel = href[len(root):] if root and href.startswith(root) else href.lstrip("./")
        if self.writer.density(rel) == 2:
            return Markup(' srcset="{} 2x"').format(href)
        return Markup("")

    def page(self, template: str, rel: str, heading: str, **context) -> str:
        """Render ``template`` to the site path ``rel`` (e.g. ``pages/embedding.html``)."""
        root = "../" * rel.count("/")
        html = self.env.get_template(template).render(
            root=root, nav=self.nav, current=rel, site_title=self.title, heading=heading,
            generated=self.generated, version=__version__, **context)
        return self.writer.write_text(rel, html)


def _navigation(stage_pages: list[dict]) -> list[dict]:
    """The grouped navigation bar: the fixed pages and each stage's page in its group."""
    return navigation([*FIXED_PAGES, *(NavPage(p["title"], p["href"], p["group"])
                                       for p in stage_pages)])


def _check_layout(index_html: Path, pages_dir: Path, assets_dir: Path) -> None:
    """The pages and assets folders must sit beside index.html (links are relative)."""
    for name, folder, expected in (("pages", pages_dir, "pages"), ("assets", assets_dir, "assets")):
        if folder.parent != index_html.parent or folder.name != expected:
            raise ValueError(f"report: the {name} folder must be {index_html.parent / expected} "
                             f"(beside index.html), not {folder}")


def _write_pages(writer: SiteWriter, cfg: ReportConfig, dataset: DatasetConfig,
                 inputs: ReportInputs) -> None:
    """Every page of the site, into ``writer``'s staging folder."""
    from convscope.report import pages

    writer.copy_static()
    manifest, class_names = read_manifest(inputs.manifest)
    stage_pages, unit_extras = pages.stages.stage_pages(inputs.stage_summaries, writer,
                                                             cfg.max_figures)
    renderer = Renderer(writer, cfg.title, _navigation(stage_pages),
                        dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    pages.stages.write_stage_pages(renderer, stage_pages)
    pages.units.write_unit_pages(renderer, inputs, manifest, class_names, cfg, unit_extras)
    pages.embedding.write_embedding_page(renderer, inputs, manifest, class_names, cfg)
    pages.neighbours.write_neighbours_page(renderer, inputs, class_names)
    pages.performance.write_performance_page(renderer, inputs)
    pages.filters.write_filters_page(renderer, inputs)
    pages.overview.write_overview(renderer, inputs, dataset, manifest, class_names)
    pages.glossary.write_glossary_page(renderer)


def build_report(cfg: ReportConfig, dataset: DatasetConfig, inputs: ReportInputs, *,
                 index_html: str | os.PathLike, pages_dir: str | os.PathLike,
                 assets_dir: str | os.PathLike) -> None:
    """Write the site: ``index_html``, and the folders ``pages_dir`` and ``assets_dir`` beside it.

    ``cfg`` is the ``report`` section (title, picture sizes, limits), ``dataset``
    the ``dataset`` section (its kind is shown). The site is built in a hidden
    staging folder and moved into place at the end, ``index.html`` last.
    """
    index_html, pages_dir, assets_dir = Path(index_html), Path(pages_dir), Path(assets_dir)
    _check_layout(index_html, pages_dir, assets_dir)
    index_html.parent.mkdir(parents=True, exist_ok=True)
    writer = SiteWriter(tempfile.mkdtemp(dir=index_html.parent, prefix=".site.tmp-"))
    try:
        _write_pages(writer, cfg, dataset, inputs)
        writer.publish(index_html, {"pages": pages_dir, "assets": assets_dir})
    finally:
        shutil.rmtree(writer.root, ignore_errors=True)
    print(f"report written to {index_html.parent} ({len(list(pages_dir.rglob('*.html'))) + 1} "
          "pages)")
