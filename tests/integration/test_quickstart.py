"""The quickstart config groks on the CPU: it memorizes early and generalizes much later."""

import pytest


@pytest.mark.slow
def test_quickstart_groks(grokked_run):
    s = grokked_run.summary
    assert s["regime"] == "grokked"
    assert s["memorization_step"] <= 150
    assert s["generalization_step"] >= 2 * s["memorization_step"]
    assert s["final"]["test_acc"] >= 0.99
    # Before generalizing, the model has memorized: train accuracy high while test accuracy is still low.
    rows = grokked_run.run.metrics()
    at_memorization = next(r for r in rows if r["step"] == s["memorization_step"])
    assert at_memorization["test_acc"] < 0.5
