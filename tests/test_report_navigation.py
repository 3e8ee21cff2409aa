"""The report's grouped navigation (each page declares its group) and glossary links."""

import re

import pytest

from convscope.report.glossary import TERMS, anchor, link_terms
from convscope.report.navigation import FIXED_PAGES, GROUPS, NavPage, group_of_stage, navigation
from convscope.store.summary import stage_summary


def test_stage_pages_slot_into_their_group():
    assert group_of_stage("explain_attribution") == "Explanations"
    assert group_of_stage("synthesis_units") == "Synthesis"
    assert group_of_stage("dissect_concepts") == "Dissection"
    assert [group_of_stage(s) for s in ("ablation", "cka", "probes")] == ["Dissection"] * 3
    assert group_of_stage("something_new") == "Tables"
    assert group_of_stage("synthesis_units", declared="Units") == "Units"  # summary's own group
    summary = stage_summary("dissect_x", "Dissection", "c", group="Units")
    assert summary["group"] == "Units"
    assert "group" not in stage_summary("explain_x", "X", "c")


def test_navigation_keeps_group_order_and_page_order():
    pages = [*FIXED_PAGES, NavPage("Dream", "pages/stage-dream.html", "Synthesis"),
             NavPage("Concepts", "pages/stage-dissect.html", "Units"),
             NavPage("Extra", "pages/extra.html", "Other")]
    bar = navigation(pages)
    names = [g["group"] for g in bar]
    assert names == [g for g in GROUPS if g in names[:-1]] + ["Other"]
    units = next(g for g in bar if g["group"] == "Units")["links"]
    assert [link["title"] for link in units] == ["Layers and units",
                                                 "Filters and activation maps", "Concepts"]
    hrefs = [link["href"] for g in bar for link in g["links"]]
    assert sorted(hrefs) == sorted(p.href for p in pages)  # every page once


def test_glossary_anchors_are_unique_and_checked():
    anchors = [t.anchor for t in TERMS]
    assert len(anchors) == len(set(anchors))
    assert anchor("firing-rate") == "firing-rate"
    with pytest.raises(KeyError, match="no term with anchor 'nope'"):
        anchor("nope")


def test_link_terms_links_each_term_once_and_escapes():
    html = str(link_terms("Grad-CAM and guided Grad-CAM <b>; Grad-CAM again", "../"))
    links = re.findall(r'href="\.\./pages/glossary\.html#([\w-]+)">([^<]+)</a>', html)
    assert links == [("gradcam", "Grad-CAM"), ("guided-gradcam", "guided Grad-CAM")]
    assert "&lt;b&gt;" in html and html.endswith("; Grad-CAM again")
