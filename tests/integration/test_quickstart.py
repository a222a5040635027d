"""The quickstart config groks on the CPU: it memorizes early and generalizes much later."""

from pathlib import Path

import pytest

from grokscope.config import load_config
from grokscope.training import train

QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


@pytest.mark.slow
def test_quickstart_groks(tmp_path):
    result = train(load_config(QUICKSTART), tmp_path / "quickstart", device="cpu", progress=False)
    s = result.summary
    assert s["regime"] == "grokked"
    assert s["memorization_step"] <= 150
    assert s["generalization_step"] >= 2 * s["memorization_step"]
    assert s["final"]["test_acc"] >= 0.99
    # Before generalizing, the model has memorized: train accuracy high while test accuracy is still low.
    rows = result.run.metrics()
    at_memorization = next(r for r in rows if r["step"] == s["memorization_step"])
    assert at_memorization["test_acc"] < 0.5
