"""The quality gate's rules and the summary's ``quality`` entry (no model needed)."""

import numpy as np
import pytest

from convscope.store.summary import SummaryError, check_summary, stage_summary
from convscope.synthesis.quality import (CONVERGED, DEAD, NOT_CONVERGED, Verdict, count_line,
                                         h5_arrays, judge, ordered, stored01, summary_entry)


def test_judge_compares_as_each_rule_says():
    # higher is better, strict: a fooling image at p 0.98996 with goal 0.99 did not converge
    up = judge(["a", "b", "c", "d"], [0.98996, 0.99, 0.995, np.nan], 0.99, inclusive=True)
    assert [v.status for v in up] == [NOT_CONVERGED, CONVERGED, CONVERGED, NOT_CONVERGED]
    strict = judge(["a", "b"], [1.0, 1.5], [1.0, 1.0])
    assert [v.converged for v in strict] == [False, True]
    # lower is better with a factor: texture loss at least 10x below the noise's
    down = judge(["t1", "t2"], [0.5, 0.1], [2.0, 1.0], higher_is_better=False, factor=0.1)
    assert [v.converged for v in down] == [False, True]
    assert down[0].achieved == 0.5 and down[0].reference == 2.0


def test_order_counts_arrays_and_summary_entry():
    verdicts = judge(["x", "y", "z"], [0.0, 2.0, 3.0], 1.0) + [
        Verdict("w", float("nan"), float("nan"), DEAD)]
    assert [v.item for v in ordered(verdicts)] == ["y", "z", "x", "w"]
    assert count_line(verdicts) == "2 of 3 converged; 1 dead (not optimised)"
    arrays = h5_arrays(verdicts[:3])
    assert arrays["quality/converged"].tolist() == [False, True, True]
    entry = summary_entry("unit", ordered(verdicts), "objective", "dataset best")
    assert [r["status"] for r in entry["results"]] == [CONVERGED, CONVERGED, NOT_CONVERGED, DEAD]
    assert entry["results"][2] == {"item": "x", "status": NOT_CONVERGED, "achieved": "0",
                                   "reference": "1"}
    summary = check_summary(stage_summary("s", "t", "c", quality=[entry]))
    assert summary["quality"][0]["kind"] == "unit"
    with pytest.raises(SummaryError, match="quality\\[0\\] lacks rule"):
        check_summary({**summary, "quality": [{"kind": "unit"}]})


def test_stored01_reads_the_uint8_image_back():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3) * 10
    x = stored01(images)
    assert tuple(x.shape) == (2, 3, 2, 2)
    np.testing.assert_allclose(x[1, 2, 1, 0].item(), images[1, 1, 0, 2] / 255.0, rtol=1e-6)
    assert tuple(stored01(images, 1).shape) == (2, 1, 2, 2)
