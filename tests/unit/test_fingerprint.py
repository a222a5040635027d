import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import tiny_config
from grokscope.analysis.fingerprint import (
    OBSERVABLES,
    FingerprintRecorder,
    FingerprintSpec,
    compute,
    fingerprint,
    load_recording,
    recording_path,
)
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.store import Run
from grokscope.tasks import ModularTask, task_split
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


def quickstart_task_config(seed: int = 0):
    """The quickstart's task ((a + b) mod 59, 40% of pairs for training) in a run config of this seed."""
    cfg = tiny_config(task={"operation": "add", "modulus": 59, "train_fraction": 0.4}, seed=seed)
    return cfg, ModularTask.from_config(cfg.task)


def test_the_probe_has_its_own_random_stream():
    # The generator seed, recomputed by hand: SHA-256 of the domain tag and the seed, mapped above every run seed.
    from grokscope.analysis.fingerprint import probe_generator_seed

    for probe_seed in (0, 1, 2, 12345, 2**32 - 1):
        digest = hashlib.sha256(f"grokscope.fingerprint.probe:{probe_seed}".encode()).digest()
        expected = 2**32 + int.from_bytes(digest[:8], "little") % (2**63 - 2**32)
        assert probe_generator_seed(probe_seed) == expected
        assert 2**32 <= expected < 2**63  # a split seed is at most 2**32 - 1: never the same stream
    _, task = quickstart_task_config()
    rows = FingerprintSpec().probe_rows(task)
    order = torch.randperm(task.n_pairs, generator=torch.Generator().manual_seed(probe_generator_seed(0)))
    assert torch.equal(rows, order[:100].sort().values)
    with pytest.raises(UserError, match="probe_seed"):
        FingerprintSpec(probe_seed=2**32)


def test_a_seed_0_probe_is_no_longer_the_seed_0_training_set():
    """The bug: probe and split drew the same permutation under seed 0, so the probe was 100 training pairs."""
    for seed in (0, 1, 2):
        cfg, task = quickstart_task_config(seed)
        split = task_split(cfg.task, cfg.split_seed)
        train_rows, test_rows = set(split.train.tolist()), set(split.test.tolist())
        old = torch.randperm(task.n_pairs, generator=torch.Generator().manual_seed(seed))[:100]
        new = set(FingerprintSpec(probe_seed=seed).probe_rows(task).tolist())
        if seed == 0:
            assert set(old.tolist()) <= train_rows  # what the old draw gave on a seed-0 run
        assert len(new) == 100 and new <= train_rows | test_rows
        # Drawn from all 3481 pairs, 40% of them training pairs: some of each, nowhere near all training pairs.
        assert 20 <= len(new & train_rows) <= 60, len(new & train_rows)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_probe_from_train_or_test_draws_only_from_that_set(seed):
    cfg, task = quickstart_task_config(seed)
    split = task_split(cfg.task, cfg.split_seed)
    for where, rows in (("train", split.train), ("test", split.test)):
        allowed = set(rows.tolist())
        for probe_seed in range(5):
            probe = FingerprintSpec(probe_seed=probe_seed, probe_from=where).probe_rows(task, split)
            drawn = probe.tolist()
            assert drawn == sorted(set(drawn)) and len(drawn) == 100
            assert set(drawn) <= allowed, f"{where}: {sorted(set(drawn) - allowed)[:5]} are not {where} rows"
        everything = FingerprintSpec(probe_size=10_000, probe_from=where).probe_rows(task, split)
        assert set(everything.tolist()) == allowed  # fewer rows than probe_size: all of them
    with pytest.raises(UserError, match="probe_from=train needs the run's train/test split"):
        FingerprintSpec(probe_from="train").probe_rows(task)
    with pytest.raises(UserError, match="probe_from must be one of all, train, test"):
        FingerprintSpec(probe_from="val")


def test_compute_reports_its_probe_rows_and_checks_the_position(tmp_path):
    cfg = tiny_config()
    result = train(cfg, tmp_path / "r", device="cpu", progress=False)
    run = result.run
    split = run.split()
    row = compute(run.load_model(), run.task, split=split, probe_from="test", probe_size=20, probe_seed=3)
    assert (
        row.probe_rows
        == FingerprintSpec(probe_from="test", probe_size=20, probe_seed=3).probe_rows(run.task, split).tolist()
    )
    assert set(row.probe_rows) <= set(split.test.tolist())
    assert json.loads(json.dumps(row.to_dict()))["probe_rows"] == row.probe_rows
    with pytest.raises(UserError, match="token_index 3 is outside the task's 3 positions"):
        compute(run.load_model(), run.task, split=split, token_index=3)


def test_recording_saves_its_probe_rows(tmp_path):
    cfg = tiny_config(train={"steps": 20})
    spec = FingerprintSpec(probe_size=30, probe_from="train", probe_seed=4)
    whole = train(cfg, tmp_path / "r", device="cpu", progress=False, callbacks=[FingerprintRecorder(2, spec)])
    recording = load_recording(whole.run)
    assert recording.probe_rows_saved and recording.spec == spec
    assert torch.equal(recording.probe_rows, spec.probe_rows(whole.run.task, whole.run.split()))
    assert set(recording.probe_rows.tolist()) <= set(whole.run.split().train.tolist())


def _make_old_style(path):
    """Rewrite a recording as grokscope wrote it before probe rows and probe_from existed."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    spec = json.loads(meta["spec"])
    del spec["probe_from"]
    del tensors["probe_rows"]
    save_file(tensors, str(path), metadata={**meta, "spec": json.dumps(spec)})


def test_old_recordings_without_probe_rows_are_read_and_resumed_on_their_own_rows(tmp_path):
    cfg = tiny_config()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", device="cpu", progress=False, callbacks=[FingerprintRecorder(2), InterruptAt(50)])
    run = Run.open(tmp_path / "cut")
    _make_old_style(recording_path(run))
    old = load_recording(run)
    # The old draw, by hand: the first 100 rows of the split's permutation under probe_seed 0 (all 169 rows here).
    by_hand = torch.randperm(run.task.n_pairs, generator=torch.Generator().manual_seed(0))[:100].sort().values
    assert not old.probe_rows_saved and torch.equal(old.probe_rows, by_hand)
    assert old.spec == FingerprintSpec()

    train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True, callbacks=[FingerprintRecorder(2)])
    resumed = load_recording(run)
    assert resumed.probe_rows_saved and torch.equal(resumed.probe_rows, by_hand)  # continued on the old rows
    last = resumed.steps.tolist().index(60)
    probe = run.task.dataset().subset(by_hand)
    expected = fingerprint(run.load_model(60), run.task, probe, FingerprintSpec())
    for i, name in enumerate(OBSERVABLES):
        np.testing.assert_allclose(resumed.values[name][last].numpy(), expected[i].numpy(), atol=1e-12)


def test_resuming_with_another_probe_is_refused(tmp_path):
    cfg = tiny_config()
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", device="cpu", progress=False, callbacks=[FingerprintRecorder(2), InterruptAt(30)])
    other = FingerprintRecorder(2, FingerprintSpec(probe_seed=1))
    with pytest.raises(UserError, match="would mix two probes in one recording") as error:
        train(cfg, tmp_path / "cut", device="cpu", progress=False, resume=True, callbacks=[other])
    assert "\n" not in str(error.value)
