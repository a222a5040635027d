"""What the analyses find on a model grokked inside the test suite (the quickstart config)."""

import pytest
import torch

from grokscope.analysis import ablation, progress
from grokscope.analysis.ablation import Ablation
from grokscope.analysis.common import answer_activations
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


@pytest.mark.slow
def test_ablating_the_key_directions_from_the_neurons_is_the_excluded_neuron_measure(grokked_run, report):
    # "Key frequencies ablated" from the neurons and the neuron-level excluded loss remove the same thing: the
    # directions cos/sin(w_k (a + b)) of every key frequency from the answer position's neurons. Without a
    # LayerNorm they are one computation; in float64 they agree to round-off.
    run = grokked_run.run
    task, split = run.task, run.split()
    keys = report.rows["progress"][-1]["key_frequencies"]
    model = run.load_model().double()
    spec = Ablation("neuron_frequencies", tuple(keys), "zero")
    ablated = ablation.ablated_logits(model, task, spec)[:, : task.modulus].double()
    _, excluded = progress.neuron_level_logits(model, task, answer_activations(model, task), keys)
    assert torch.allclose(ablated, excluded, rtol=0, atol=1e-8)
    scores = ablation.compute(model, task, split=split, specs=[spec]).outcomes[0].scores
    measure = progress.compute(model, task, split=split, key_frequencies=keys, single_frequencies=False)
    for name in ("train", "test"):
        assert getattr(scores, f"{name}_loss") == pytest.approx(measure.neuron_excluded.loss[name], rel=0, abs=1e-8)
        assert getattr(scores, f"{name}_acc") == measure.neuron_excluded.acc[name]
    # The rows the runner wrote (the float32 model) tell the same story.
    key = next(
        row
        for row in report.rows["ablation"][-1]["ablations"]
        if row["role"] == "key" and row["component"] == "neuron_frequencies"
    )
    assert key["target"] == keys
    assert key["test_loss"] == pytest.approx(report.rows["progress"][-1]["neuron_excluded"]["loss"]["test"], rel=1e-4)
