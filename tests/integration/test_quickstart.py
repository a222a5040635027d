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


@pytest.mark.slow
def test_the_readme_and_getting_started_show_this_run(grokked_run):
    """The sample output in the README and on the getting-started page is this run's (on the CPU a seed gives bitwise
    the same run), so it cannot go stale unnoticed."""
    from pathlib import Path

    from grokscope.training import describe

    root = Path(__file__).parents[2]
    s, final = grokked_run.summary, grokked_run.summary["final"]
    lines = [
        f"runs/quickstart: {describe(s)}",
        f"  final step {final['step']}: train acc {final['train_acc']:.2%}, test acc {final['test_acc']:.2%}, "
        f"test loss {final['test_loss']:.3g} (",
    ]
    for page in ("README.md", "docs/getting-started.md"):
        text = (root / page).read_text(encoding="utf-8")
        for line in lines:
            assert line in text, (page, line)
