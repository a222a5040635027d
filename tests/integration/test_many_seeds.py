"""Many seeds at once: a stacked run must be N single-seed runs, file for file and (in float64) number for number."""

import json

import pytest
import torch

import grokscope.training.many as many
from conftest import tiny_config
from grokscope.errors import UserError
from grokscope.store import Run
from grokscope.training import train
from grokscope.training.many import train_many

FLOAT64 = {"model": {"dtype": "float64"}, "train": {"loss_dtype": "float64"}}


def config(seed: int, **sections):
    merged = {**FLOAT64, **sections}
    merged["model"] = {**FLOAT64["model"], **sections.get("model", {})}
    merged["train"] = {**FLOAT64["train"], **sections.get("train", {})}
    return tiny_config(seed=seed, **merged)


def max_weight_difference(a: Run, b: Run, step: int | None = None) -> float:
    wa, wb = a.load_state_dict(step), b.load_state_dict(step)
    assert wa.keys() == wb.keys()
    return max((wa[k].double() - wb[k].double()).abs().max().item() for k in wa if wa[k].numel())


def files(run: Run) -> set[str]:
    return {str(p.relative_to(run.root)) for p in run.root.rglob("*") if p.is_file()}


def assert_same_runs(stacked: Run, single: Run, tolerance: float = 1e-10) -> None:
    assert files(stacked) == files(single)
    assert stacked.steps() == single.steps()
    for step in stacked.steps():
        assert max_weight_difference(stacked, single, step) <= tolerance
    rows_a, rows_b = stacked.metrics(), single.metrics()
    assert [r["step"] for r in rows_a] == [r["step"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("train_loss", "test_loss"):
            assert ra[key] == pytest.approx(rb[key], abs=1e-9)
        assert ra["test_acc"] == rb["test_acc"] and ra["train_acc"] == rb["train_acc"]


def test_stacked_seeds_match_separate_runs_in_float64(tmp_path):
    configs = [config(s, train={"steps": 200, "eval_every": 20, "checkpoints": {"every": 50}}) for s in (0, 1, 2)]
    stacked = train_many(configs, [tmp_path / f"stack{s}" for s in range(3)], device="cpu", progress=False, pack=3)
    for s, result in enumerate(stacked):
        single = train(configs[s], tmp_path / f"single{s}", device="cpu", progress=False)
        assert_same_runs(result.run, single.run)
        assert result.summary["seeds_trained_together"] == 3
        assert result.summary["memorization_step"] == single.summary["memorization_step"]
        single_params = dict(single.model.named_parameters())
        for k, p in result.model.named_parameters():
            assert (p - single_params[k]).abs().max() <= 1e-10
    # Different seeds really are different models with different splits.
    assert max_weight_difference(stacked[0].run, stacked[1].run) > 1e-3
    assert not torch.equal(stacked[0].run.split().train, stacked[1].run.split().train)


def test_minibatches_clipping_and_accelerators_match_separate_runs(tmp_path):
    sections = {
        "optim": {"grad_clip": 0.5, "orthograd": True, "grokfast": {"filter": "ma", "window": 5, "lamb": 2.0}},
        "train": {"steps": 40, "batch_size": 32, "loss_fn": "stablemax"},
    }
    configs = [config(s, **sections) for s in (3, 4)]
    stacked = train_many(configs, [tmp_path / f"stack{s}" for s in range(2)], device="cpu", progress=False, pack=2)
    for s, result in enumerate(stacked):
        single = train(configs[s], tmp_path / f"single{s}", device="cpu", progress=False)
        assert_same_runs(result.run, single.run)
        assert result.summary["accelerators"] == ["orthograd", "grokfast_ma(window=5, lamb=2.0)", "stablemax"]


def test_seeds_that_stop_early_stop_where_a_single_run_would(tmp_path):
    early = {"train": {"steps": 300, "early_stop": {"metric": "train_acc", "threshold": 1.0, "patience": 0}}}
    configs = [config(s, **early) for s in (0, 1, 2, 3)]
    stacked = train_many(configs, [tmp_path / f"stack{s}" for s in range(4)], device="cpu", progress=False, pack=4)
    stops = []
    for s, result in enumerate(stacked):
        single = train(configs[s], tmp_path / f"single{s}", device="cpu", progress=False)
        assert result.summary["steps_trained"] == single.summary["steps_trained"] < 300
        assert_same_runs(result.run, single.run)
        # The returned model is the one saved at its stop, not the stack's later weights.
        final = result.run.load_state_dict()
        assert all(torch.equal(final[k], v) for k, v in result.model.state_dict().items())
        stops.append(result.summary["steps_trained"])
    assert len(set(stops)) > 1, "the test needs seeds that stop at different steps"


def test_interrupted_stack_resumes_to_the_same_result(tmp_path, monkeypatch):
    configs = [config(s, train={"steps": 80, "checkpoints": {"every": 20}}) for s in (0, 1)]
    whole = train_many(configs, [tmp_path / f"whole{s}" for s in range(2)], device="cpu", progress=False, pack=2)

    calls = {"n": 0}
    real_evaluate = many.evaluate

    def interrupt_after_step_30(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # evaluations at 0, 10, 20, 30 succeed; the one at 40 is interrupted
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    dirs = [tmp_path / f"cut{s}" for s in range(2)]
    monkeypatch.setattr(many, "evaluate", interrupt_after_step_30)
    with pytest.raises(KeyboardInterrupt):
        train_many(configs, dirs, device="cpu", progress=False, pack=2)
    monkeypatch.setattr(many, "evaluate", real_evaluate)
    assert Run.open(dirs[0]).steps() == [0, 20]
    # Seed 0 resumes in a stack, seed 1 on its own: per-seed resume states are the single-seed format.
    resumed = train_many(configs[:1], dirs[:1], device="cpu", progress=False, pack=2, resume=True)
    resumed += [train(configs[1], dirs[1], device="cpu", progress=False, resume=True)]
    for a, b in zip(whole, resumed, strict=True):
        assert b.run.steps() == a.run.steps()
        assert max_weight_difference(a.run, b.run) <= 1e-10
        assert json.loads((a.run.root / "summary.json").read_text())["final"] == pytest.approx(b.summary["final"])


def test_seeds_trained_together_must_share_their_config(tmp_path):
    configs = [config(0), config(1, optim={"lr": 0.5})]
    with pytest.raises(UserError, match=r"optim\.lr"):
        train_many(configs, [tmp_path / "a", tmp_path / "b"], device="cpu", progress=False, pack=2)


def test_tf32_option_is_scoped_to_training(tmp_path):
    before = torch.backends.cuda.matmul.allow_tf32
    config = tiny_config(train={"steps": 5, "tf32": True})
    train(config, tmp_path / "r", device="cpu", progress=False)
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert Run.open(tmp_path / "r").config.train.tf32 is True
