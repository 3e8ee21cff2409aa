"""A synthesis stage's page shows the quality gate: successes, then failures labelled
"optimisation did not converge" with the number achieved against the reference, then dead
units (the HTML as written; tests/test_browser.py checks it in Chromium)."""

from convscope.report.assets import SiteWriter
from convscope.report.pages.stages import stage_pages, write_stage_pages
from convscope.report.site import Renderer
from convscope.store.summary import write_summary
from convscope.synthesis.quality import DEAD, Verdict, judge, ordered, summary_entry


def test_stage_page_lists_failures_after_successes(tmp_path):
    verdicts = judge(["relu1 channel 0", "relu1 channel 1", "relu1 channel 2"],
                     [0.5, 3.0, 2.5], [1.25, 1.0, 1.0])
    dead = [Verdict("relu1 channel 3", float("nan"), float("nan"), DEAD)]
    summary = tmp_path / "units" / "summary.json"
    write_summary(summary, "synthesis_units", "Unit images", "caption",
                  quality=[summary_entry("unit", ordered(verdicts) + dead, "objective",
                                         "dataset best")])
    writer = SiteWriter(tmp_path / "site")
    pages, _ = stage_pages([str(summary)], writer)
    write_stage_pages(Renderer(writer, "t"), pages)
    html = (tmp_path / "site" / "pages" / "stage-synthesis_units.html").read_text()
    converged, failed = html.index("quality-converged"), html.index("quality-failed")
    assert converged < failed < html.index("Dead units, not optimised (1)")
    assert html.index("relu1 channel 1") < html.index("relu1 channel 2") < failed
    failure_row = html[failed:].split("<tr>")[2]
    assert "relu1 channel 0" in failure_row and "<td>0.5</td><td>1.25</td>" in failure_row
    assert "optimisation did not converge" in failure_row
    assert "2 of 3 converged; 1 dead" in html
