"""The report in a real browser: headless Chromium (Debian's package, driven by Playwright).

Over the report of the tiny end-to-end run: every page loads without console errors,
every image and link inside the site resolves, no request leaves the report folder,
the unit gallery's sorting and filtering change what is shown, and a screenshot of
each page kind is saved under the test's tmp folder. A second test builds the gallery
of a synthetic 2,048-channel layer and checks that only a bounded number of images is
requested before scrolling, and more after.

Chromium comes from `.ci/browser/install.sh` (``make test`` runs it); Playwright never
downloads a browser here.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

import numpy as np
import pandas as pd
import pytest
from PIL import Image

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser/install.sh (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


class _Links(HTMLParser):
    """Every href and src of a page."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("href", "src") and value]


def _local_targets(page: Path) -> list[Path]:
    """Files a page links or loads, resolved from its folder (fragments dropped)."""
    parser = _Links()
    parser.feed(page.read_text())
    targets = []
    for url in parser.urls:
        url = urldefrag(url)[0]
        assert not urlparse(url).scheme, f"{page}: link leaves the site: {url}"
        assert not url.startswith("/"), f"{page}: absolute link {url}"
        if url:
            targets.append((page.parent / unquote(url)).resolve())
    return targets


class Watcher:
    """Records console errors, failed requests and requests outside ``site`` of one context."""

    def __init__(self, context, site: Path):
        self.site = site.resolve().as_uri() + "/"
        self.requests: list[str] = []
        self.outside: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        context.route("**/*", self._route)
        context.on("request", lambda request: self.requests.append(request.url))
        context.on("requestfailed", lambda request: self.failed.append(
            f"{request.url}: {request.failure}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.site) or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def watch(self, page) -> None:
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))


def _open(page, path: Path) -> None:
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")


def _load_images(page) -> None:
    """Loads every image of the page now: a lazy image far from the viewport would
    otherwise wait for a scroll that never comes."""
    page.evaluate("document.querySelectorAll('img[loading=lazy]')"
                  ".forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30000)


def _broken_images(page) -> list[str]:
    """Images of the page that did not load."""
    _load_images(page)
    return page.evaluate(
        "Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.src)")


def _card_channels(page) -> list[int]:
    return [int(c) for c in page.eval_on_selector_all(
        "#gallery .card", "cards => cards.map(c => c.dataset.channel)")]


@pytest.mark.workflow
def test_tiny_report_in_chromium(tiny_run, browser, tmp_path):
    site = tiny_run / "results" / "report"
    pages = sorted(site.rglob("*.html"))
    # every link and image of every page resolves to a file inside the site
    for page_file in pages:
        for target in _local_targets(page_file):
            assert target.is_file(), f"{page_file.relative_to(site)}: {target} missing"
            assert site.resolve() in target.parents, f"{page_file}: {target} outside the site"
    # every page kind in the browser: the fixed pages, each layer's gallery, a few unit pages
    unit_pages = [p for p in pages if "units" in p.relative_to(site).parts]
    others = [p for p in pages if p not in unit_pages]
    visited = others + unit_pages[:: max(1, len(unit_pages) // 6)]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watcher = Watcher(context, site)
    shots = tmp_path / "screenshots"
    for path in visited:
        page = context.new_page()
        watcher.watch(page)
        _open(page, path)
        assert page.locator("nav.site-nav a").count() >= 6, path
        assert _broken_images(page) == [], path
        name = str(path.relative_to(site)).replace("/", "_")
        page.screenshot(path=str(shots / f"{name}.png"), full_page=path in others)
        page.close()
    assert watcher.errors == []
    assert watcher.failed == []
    assert watcher.outside == []
    assert len(list(shots.glob("*.png"))) == len(visited)
    assert all(url.startswith(watcher.site) for url in watcher.requests)
    _check_gallery_controls(context, site, tiny_run)
    context.close()


def _check_gallery_controls(context, site: Path, run: Path) -> None:
    """Sorting and filtering the relu2 gallery: the order and set of cards follow stats.csv."""
    stats = pd.read_csv(run / "results" / "units" / "stats.csv")
    layer = stats[stats["layer"] == "relu2"]
    page = context.new_page()
    _open(page, site / "pages" / "layer-relu2.html")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    assert _card_channels(page)[:10] == sorted(layer["channel"])[:10]
    page.select_option("#sort", "rate")
    page.check("#descending")
    # independent order: pandas, firing rate descending, ties by channel
    expected = layer.sort_values(["firing_rate", "channel"], ascending=[False, True])
    assert _card_channels(page)[:10] == expected["channel"].tolist()[:10]
    page.select_option("#sort", "max")
    expected = layer.sort_values(["max_activation", "channel"], ascending=[False, True])
    assert _card_channels(page)[:10] == expected["channel"].tolist()[:10]
    page.select_option("#state", "alive")
    alive = int((~layer["dead"]).sum())
    assert f"of {alive} channels" in page.inner_text("#gallery-count")
    page.select_option("#state", "dead")
    assert page.locator("#gallery .card").count() == int(layer["dead"].sum())
    assert page.locator("#gallery .card:not(.dead)").count() == 0
    page.close()


def _synthetic_gallery(root: Path, channels: int, page_size: int) -> tuple[Path, pd.DataFrame]:
    """A site with only the gallery page of a layer of ``channels`` channels (one image each)."""
    from convscope.report.assets import SiteWriter
    from convscope.report.pages.units import gallery_units, write_gallery_page
    from convscope.report.site import Renderer

    rng = np.random.default_rng(0)
    classes = np.array(["ant", "bee", "cow"])
    stats = pd.DataFrame({"channel": np.arange(channels), "firing_rate": rng.random(channels),
                          "max_activation": rng.random(channels) * 5,
                          "class_selectivity": rng.random(channels),
                          "preferred_class": classes[rng.integers(0, 3, channels)],
                          "dead": rng.random(channels) < 0.1})
    writer = SiteWriter(root)
    writer.copy_static()
    images = {}
    for c in range(channels):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        images[c] = {"top": writer.save_image(Image.new("RGB", (8, 8), colour),
                                              f"assets/units/big/c{c:04d}-top.png")}
    for c in range(channels):  # the unit pages the cards link to
        writer.write_text(f"pages/units/big/c{c:04d}.html", "<!doctype html><title>u</title>")
    units = gallery_units(stats, images, "pages/units/big/c{c:04d}.html")
    write_gallery_page(Renderer(writer, "big"), "big", "big", units, page_size)
    return root / "pages" / "layer-big.html", stats


def test_gallery_of_2048_channels_loads_images_as_it_scrolls(browser, tmp_path):
    page_size = 60
    path, stats = _synthetic_gallery(tmp_path / "site", 2048, page_size)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    watcher = Watcher(context, tmp_path / "site")
    page = context.new_page()
    watcher.watch(page)
    _open(page, path)
    page.wait_for_timeout(500)

    def top_images() -> int:
        return len({u for u in watcher.requests if re.search(r"c\d{4}-top\.png$", u)})

    before = top_images()
    assert 0 < before <= 2 * page_size, before  # a bounded number before scrolling
    assert page.locator("#gallery img").count() <= 2 * page_size
    for _ in range(5):
        page.mouse.wheel(0, 4000)
        page.wait_for_timeout(300)
    after = top_images()
    assert after > before and after < 2048, (before, after)
    # filtering by preferred class and sorting by selectivity use the unit data
    page.select_option("#cls", "bee")
    page.select_option("#sort", "sel")
    page.check("#descending")
    bee = stats[stats["preferred_class"] == "bee"].sort_values(
        ["class_selectivity", "channel"], ascending=[False, True])
    assert f"of {len(bee)} channels" in page.inner_text("#gallery-count")
    assert _card_channels(page)[:20] == bee["channel"].tolist()[:20]
    assert watcher.errors == [] and watcher.outside == [] and watcher.failed == []
    context.close()


def test_watcher_catches_requests_leaving_the_site(browser, tmp_path):
    """The checks above would see a page that loads from the network or outside its folder."""
    site = tmp_path / "site"
    site.mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    (site / "index.html").write_text(
        '<!doctype html><img src="http://example.invalid/cdn.png"><img src="../outside.png">'
        '<script>console.error("boom")</script>')
    context = browser.new_context()
    watcher = Watcher(context, site)
    page = context.new_page()
    watcher.watch(page)
    _open(page, site / "index.html")
    assert sorted(watcher.outside) == sorted(["http://example.invalid/cdn.png",
                                              (tmp_path / "outside.png").as_uri()])
    assert any("boom" in error for error in watcher.errors)
    with pytest.raises(AssertionError, match="link leaves the site"):
        _local_targets(site / "index.html")
    context.close()


def _all_links(page: Path) -> list[tuple[str, str]]:
    """(target file, fragment) of every local href of a page, as the static HTML has them
    (the content of <noscript> included: what a browser without JavaScript shows)."""
    parser = _Links()
    parser.feed(page.read_text())
    links = []
    for url in parser.urls:
        path, fragment = urldefrag(url)
        if path and not urlparse(path).scheme:
            links.append((str((page.parent / unquote(path)).resolve()), fragment))
    return links


@pytest.mark.workflow
def test_tiny_report_without_javascript_reaches_every_page(tiny_run, browser):
    """Following the links of the static HTML from index.html (navigation and <noscript>
    lists, as a browser without JavaScript shows them) reaches every page; every glossary
    anchor linked anywhere exists."""
    site = (tiny_run / "results" / "report").resolve()
    pages = {str(p.resolve()) for p in site.rglob("*.html")}
    seen, todo, anchors = set(), [str(site / "index.html")], set()
    while todo:
        page = todo.pop()
        if page in seen or not page.endswith(".html"):
            continue
        seen.add(page)
        for target, fragment in _all_links(Path(page)):
            todo.append(target)
            if target.endswith("glossary.html") and fragment:
                anchors.add(fragment)
    assert seen == pages, sorted(pages - seen)[:5]
    glossary = (site / "pages" / "glossary.html").read_text()
    ids = set(re.findall(r'\bid="([^"]+)"', glossary))
    assert anchors and anchors <= ids, sorted(anchors - ids)
    # in the browser, JavaScript off: the gallery's fallback lists every channel with its page
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    _open(page, site / "pages" / "layer-relu2.html")
    stats = pd.read_csv(tiny_run / "results" / "units" / "stats.csv")
    listed = page.locator("#noscript-units li a")
    assert listed.count() == int((stats["layer"] == "relu2").sum())
    assert listed.first.is_visible()
    # a glossary link lands on its entry
    page.goto((site / "pages" / "glossary.html").as_uri() + "#firing-rate")
    assert page.locator("#firing-rate").is_visible()
    context.close()


def _figures_too_small(page) -> list[str]:
    """Figures (not sprite crops) shown at < 60 % of their natural width though the column
    could hold 60 % of it."""
    return page.evaluate("""() => {
      const column = document.querySelector('main').clientWidth - 48;
      return Array.from(document.querySelectorAll('figure img:not(.sprite)'))
        .filter(i => i.naturalWidth > 0 && 0.6 * i.naturalWidth <= column
                     && i.getBoundingClientRect().width < 0.6 * i.naturalWidth)
        .map(i => i.src + ': ' + i.getBoundingClientRect().width + ' of ' + i.naturalWidth);
    }""")


@pytest.mark.workflow
def test_tiny_report_figures_and_paged_tables(tiny_run, browser):
    site = tiny_run / "results" / "report"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watcher = Watcher(context, site)
    for path in sorted(site.glob("pages/*.html")):
        page = context.new_page()
        watcher.watch(page)
        _open(page, path)
        _load_images(page)
        assert _figures_too_small(page) == [], path.name
        page.close()
    # the neighbours' query table (more than 25 rows): paged, searchable, sortable
    queries = pd.read_csv(site / "assets" / "neighbours" / "queries.csv")
    assert len(queries) > 25
    page = context.new_page()
    watcher.watch(page)
    _open(page, site / "pages" / "neighbours.html")
    body = "#queries tbody tr"

    def column(name: str) -> list[str]:
        index = list(queries.columns).index(name)
        return page.eval_on_selector_all(body, f"rows => rows.map(r => r.cells[{index}].textContent)")

    assert page.locator(body).count() == 25
    page.click(".table-controls button.next")
    expected = queries["neighbour_index"].iloc[25:50].astype(str).tolist()
    assert column("neighbour_index") == expected
    page.click("#queries th:has-text('distance')")  # ascending, over every row
    smallest = sorted(queries["distance"])[:25]
    np.testing.assert_allclose([float(v) for v in column("distance")], smallest, atol=6e-4)
    first = str(queries["neighbour_class"].dropna().iloc[0])
    page.fill(".table-controls input[type=search]", first)
    matching = queries.astype(str).apply(lambda r: any(first.lower() in v.lower() for v in r),
                                         axis=1).sum()
    assert page.locator(body).count() == min(25, int(matching))
    assert f"of {matching} matching" in page.inner_text(".table-controls .page-info")
    assert page.locator("a[download]").count() >= 1  # the CSV stays downloadable
    assert watcher.errors == [] and watcher.failed == [] and watcher.outside == []
def test_failed_optimisation_shows_its_failure_label(tiny_run, browser):
    """tests/data/tiny_config.yaml asks the class images for a probability of 1.0, which a
    softmax in float64 never reaches: every class image is shown as a failure, with the number
    achieved against the goal, after the (empty) successes; unit images that did not converge
    are labelled so on their unit pages, never as dead."""
    import h5py

    site = tiny_run / "results" / "report"
    with h5py.File(tiny_run / "results" / "synthesis" / "classes" / "images.h5") as f:
        achieved = f["quality/achieved"][()]
        converged = f["quality/converged"][()]
    assert not converged.any() and np.all(achieved < 1.0)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _open(page, site / "pages" / "stage-synthesis_classes.html")
    failed = page.locator("section.quality h3.failure")
    assert failed.is_visible() and "did not converge" in failed.inner_text()
    cells = page.locator("table.quality-failed td.failure")
    assert cells.count() == len(achieved)
    assert cells.first.inner_text() == "optimisation did not converge"
    rows = page.locator("table.quality-failed tbody tr")
    assert rows.first.locator("td").nth(1).inner_text() == f"{achieved[0]:.4g}"
    assert rows.first.locator("td").nth(2).inner_text() == "1"
    assert page.locator("table.quality-converged").count() == 0
    figure_titles = page.locator("figcaption strong").all_inner_texts()
    assert any(t.endswith("optimisation did not converge") for t in figure_titles)
    # the units page: failures come after the successes, and no unit is called dead there
    _open(page, site / "pages" / "stage-synthesis_units.html")
    html = page.content()
    if "quality-converged" in html and "quality-failed" in html:
        assert html.index("quality-converged") < html.index("quality-failed")
    # a quality table of more than 25 rows is paged like every long table
    summary = json.loads((tiny_run / "results" / "synthesis" / "units" / "summary.json")
                         .read_text())
    statuses = [r["status"] for q in summary["quality"] for r in q["results"]]
    for name, n in (("converged", statuses.count("converged")),
                    ("failed", statuses.count("did not converge"))):
        if n:
            assert page.locator(f"table.quality-{name} tbody tr").count() == min(25, n), name
    context.close()
