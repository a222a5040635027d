"""What the analyses find on a model grokked inside the test suite (the quickstart config)."""

import pytest

from grokscope.analysis.runner import analyze


@pytest.fixture(scope="module")
def report(grokked_run, tmp_path_factory):
    run = grokked_run.run
    steps = [0, run.steps()[-1]]
    return analyze(
        run,
        ["fourier", "neurons", "progress", "ablation"],
        steps=steps,
        out_dir=tmp_path_factory.mktemp("analysis"),
        progress=False,
    )


@pytest.mark.slow
def test_a_few_key_frequencies_appear_only_after_grokking(report):
    at_init, grokked = report.rows["fourier"]
    assert at_init["key_frequencies"] == []
    keys = grokked["key_frequencies"]
    assert 1 <= len(keys) <= 8
    assert all(1 <= k <= 29 for k in keys)
    # The neurons cluster on exactly those frequencies.
    neurons = report.rows["neurons"][-1]
    clustered = [k + 1 for k, size in enumerate(neurons["cluster_sizes"]) if size >= 3]
    assert clustered == keys
    assert neurons["fraction_clustered"] > 0.3


@pytest.mark.slow
def test_restricted_loss_is_low_and_excluded_loss_high(report):
    grokked = report.rows["progress"][-1]
    full, restricted, excluded = (grokked[k]["loss"] for k in ("full", "restricted", "excluded"))
    assert restricted["test"] < 0.1  # the key frequencies alone carry the answer
    assert excluded["test"] > 2.0 and excluded["test"] > 100 * full["test"]  # without them the model is lost
    assert grokked["excluded"]["acc"]["test"] < 0.2
    at_init = report.rows["progress"][0]
    assert at_init["excluded"]["loss"]["test"] == pytest.approx(at_init["full"]["loss"]["test"], rel=0.05)


@pytest.mark.slow
def test_ablating_key_frequencies_breaks_the_model_and_as_many_others_do_not(report):
    grokked = report.rows["ablation"][-1]
    by_role = {(r["role"], r["component"]): r for r in grokked["ablations"] if r["role"]}
    chance = 1 / 59
    for component in ("embed_frequencies", "neuron_frequencies"):
        key, control = by_role[("key", component)], by_role[("control", component)]
        assert len(key["target"]) == len(control["target"])
        assert key["test_acc"] < chance + 0.15
        assert control["test_acc"] > 0.9
    assert grokked["single_frequency_sweep"]  # the latest checkpoint carries the per-frequency sweep
