import numpy as np
import pytest
import torch

from conftest import tiny_config
from grokscope.analysis.fingerprint import (
    OBSERVABLES,
    FingerprintRecorder,
    FingerprintSpec,
    compute,
    fingerprint,
    load_recording,
)
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.store import Run
from grokscope.tasks import ModularTask
from grokscope.training import Callback, train


def test_quantiles_of_a_planted_model():
    # With W_U = 0 every input gets the logits b_U, so each observable is known in closed form.
    cfg = tiny_config(model={"dtype": "float64"})
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    bias = torch.linspace(-2.0, 2.0, task.d_vocab_out, dtype=torch.float64)
    with torch.no_grad():
        model.unembed.W_U.zero_()
        model.unembed.b_U.copy_(bias)
    spec = FingerprintSpec(probe_size=50, probe_seed=3)
    probe = task.dataset().subset(spec.probe_rows(task))
    table = fingerprint(model, task, probe, spec)
    log_probs = bias.log_softmax(0)
    correct = log_probs[probe.answers].numpy()
    margin = (bias[probe.answers] - torch.where(probe.answers == len(bias) - 1, bias[-2], bias[-1])).numpy()
    entropy = -(log_probs.exp() * log_probs).sum().item()
    levels = np.array(spec.quantiles)
    np.testing.assert_allclose(table[0].numpy(), np.quantile(correct, levels), atol=1e-12)
    np.testing.assert_allclose(table[1].numpy(), np.quantile(margin, levels), atol=1e-12)
    np.testing.assert_allclose(table[2].numpy(), np.full(len(levels), entropy), atol=1e-12)


def test_probe_set_is_seeded_and_bounded():
    task = ModularTask.from_config(tiny_config().task)
    a, b = FingerprintSpec(probe_seed=1).probe_rows(task), FingerprintSpec(probe_seed=1).probe_rows(task)
    assert torch.equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert len(FingerprintSpec(probe_size=10_000).probe_rows(task)) == task.n_pairs
    with pytest.raises(UserError, match="probe_size"):
        FingerprintSpec(probe_size=0)


class InterruptAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, step, model):
        if step == self.step:
            raise KeyboardInterrupt


def test_recording_matches_checkpoints_and_survives_resume(tmp_path):
    cfg = tiny_config()
    whole = train(cfg, tmp_path / "whole", device="cpu", progress=False, callbacks=[FingerprintRecorder(every=2)])
    recording = load_recording(whole.run)
    assert recording.steps.tolist() == list(range(0, 61, 2))
    # The recorder sees exactly the model that the checkpoint at step 40 holds.
    at_40 = compute(whole.run.load_model(40), whole.run.task)
    row = recording.steps.tolist().index(40)
    for name in OBSERVABLES:
        np.testing.assert_allclose(recording.values[name][row].numpy(), at_40.values[name], atol=1e-12)

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", device="cpu", progress=False, callbacks=[FingerprintRecorder(2), InterruptAt(50)])
    train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True, callbacks=[FingerprintRecorder(2)])
    resumed = load_recording(Run.open(tmp_path / "cut"))
    assert torch.equal(resumed.steps, recording.steps)
    for name in OBSERVABLES:
        assert torch.equal(resumed.values[name], recording.values[name])


def test_missing_recording_is_a_clear_error(tmp_path, tiny):
    result = train(tiny, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(UserError, match="no fingerprint recording"):
        load_recording(result.run)
