import importlib.util
import inspect
import json
import math
import random
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import stablemax_loss_by_hand, tiny_config
from grokscope.analysis import llc
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split
from grokscope.viz.llc import figures

needs_devinterp = pytest.mark.skipif(importlib.util.find_spec("devinterp") is None, reason="the llc extra")

# Short full-batch chains for the tiny model: enough for the diagnostics to settle, about 2 s per estimate.
TINY = {"lr": 1e-3, "localization": 100.0, "num_chains": 3, "num_draws": 100, "num_burnin": 50, "batch_size": None}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are far too small to gain from intra-op threads, and on a busy machine the threads lose time."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _least_squares_fit(d_in: int, n: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    """An nn.Linear set to the exact least-squares optimum of noisy synthetic data: a regular, non-degenerate minimum."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = x @ torch.randn(d_in, 1, generator=g, dtype=torch.float64) + 0.5
    y = y + 0.1 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y).solution
    model = nn.Linear(d_in, 1).double()
    with torch.no_grad():
        model.weight.copy_(solution[:d_in].T)
        model.bias.copy_(solution[d_in])
    return model, x, y


@needs_devinterp
def test_linear_regression_llc_is_half_the_parameter_count():
    # A regular model at a non-degenerate minimum has LLC d / 2. Full-batch SGLD with no localization samples the
    # quadratic basin; the step (lr * n_beta * curvature / 2 = 0.08) inflates the stationary variance by about 4 %,
    # and the Monte Carlo error of 4 x 300 draws is about 4 % (seeds 0-7 gave 0.96-1.09 x d / 2): a 15 % tolerance
    # is several standard errors wide.
    model, x, y = _least_squares_fit(d_in=9, n=200)
    d = sum(p.numel() for p in model.parameters())
    result = llc.estimate_llc(
        model,
        (x, y),
        lambda m, x, y: ((m(x) - y) ** 2).mean(),
        lr=2e-3,
        num_chains=4,
        num_draws=300,
        num_burnin=30,
    )
    assert d == 10
    assert result.llc_mean == pytest.approx(d / 2, rel=0.15)
    assert result.n_beta == pytest.approx(200 / math.log(200))
    assert result.loss_trace.shape == (4, 300)
    assert not result.divergent


@pytest.fixture(scope="module")
def tiny_setup():
    cfg = tiny_config()
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    split = make_split(task.n_pairs, 0.5, seed=0)
    # A few full-batch Adam steps towards a minimum, so the sampler starts near one.
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    train = task.dataset().subset(split.train)
    for _ in range(100):
        optimizer.zero_grad()
        task.loss(model(train.tokens), train.labels).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, task, split


@needs_devinterp
def test_tiny_transformer_llc_is_seeded_and_leaves_the_caller_alone(tiny_setup):
    model, task, split = tiny_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen, kept = [], []
    model.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))  # a caller's capture hook
    model.add_perma_hook("blocks.0.hook_resid_pre", lambda x, hook: kept.append(1))  # part of the model: kept
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()

    first = llc.compute(model, task, split=split, seed=1, **TINY)
    second = llc.compute(model, task, split=split, seed=1, **TINY)

    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.random.get_state()[1].tolist() == np_state[1].tolist()
    assert random.getstate() == py_state
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert seen == []  # the hook stayed out of the chains' deep copies ...
    model(task.dataset().tokens[:2])
    assert seen == [1]  # ... and still fires on the caller's model
    assert len(kept) > 2 * 3 * 150  # the permanent hook ran in every chain's copy
    model.reset_hooks(including_permanent=True)

    assert math.isfinite(first.llc_mean) and first.llc_mean > 0
    assert first.spread < llc.SPREAD_MAX  # chains agree
    assert first.r_hat < llc.R_HAT_MAX
    assert first.converged
    assert first.llc_per_chain == second.llc_per_chain
    np.testing.assert_array_equal(first.loss_trace, second.loss_trace)
    brief = {**TINY, "num_chains": 1, "num_draws": 5, "num_burnin": 0}
    a, b = (llc.compute(model, task, split=split, seed=seed, **brief) for seed in (1, 2))
    assert not np.array_equal(a.loss_trace, b.loss_trace)  # the seed does reach the sampler


@needs_devinterp
def test_sampled_loss_is_exactly_the_training_objective(tiny_setup):
    # With lr = 0 the chain never moves (no drift, no noise), so every draw must record L(w*) itself: the loss devinterp
    # averages is task.loss on the batch, not a per-token average diluted over the sequence, and no mini-batch proxy.
    model, task, split = tiny_setup
    result = llc.compute(model, task, split=split, lr=0.0, num_chains=2, num_draws=5, num_burnin=0, batch_size=None)
    np.testing.assert_allclose(result.loss_trace, result.init_loss, rtol=1e-5)
    assert result.llc_mean == pytest.approx(0.0, abs=1e-3)


@needs_devinterp
def test_stablemax_run_is_sampled_under_stablemax(tiny_setup):
    # lr = 0 again: every draw and L(w*) are the objective at the checkpoint, which must be StableMax's.
    model, task, split = tiny_setup
    train = task.dataset().subset(split.train)
    with torch.no_grad():
        logits = model(train.tokens)[:, task.answer_position]
    by_hand = stablemax_loss_by_hand(logits, train.answers).item()
    softmax = torch.nn.functional.cross_entropy(logits.double(), train.answers).item()
    brief = {"lr": 0.0, "num_chains": 1, "num_draws": 3, "num_burnin": 0, "batch_size": None}
    result = llc.compute(model, task, split=split, loss_fn="stablemax", **brief)
    assert result.init_loss == pytest.approx(by_hand, rel=1e-9)
    np.testing.assert_allclose(result.loss_trace, by_hand, rtol=1e-5)
    assert abs(by_hand - softmax) > 1e-2  # the two objectives are told apart
    assert llc.compute(model, task, split=split, **brief).init_loss == pytest.approx(softmax, rel=1e-9)
    assert result.settings["loss_fn"] == "stablemax" and result.settings["loss_dtype"] == "float64"


def test_unknown_loss_is_a_user_error_before_sampling(tiny_setup):
    model, task, split = tiny_setup
    with pytest.raises(UserError, match="loss_fn: unknown loss 'hinge'"):
        llc.compute(model, task, split=split, loss_fn="hinge")


@needs_devinterp
def test_result_is_json_ready_and_plots(tiny_setup):
    model, task, split = tiny_setup
    result = llc.compute(model, task, split=split, **{**TINY, "num_chains": 2, "num_draws": 150, "num_burnin": 10})
    row = result.to_dict()
    json.dumps(row)
    assert len(row["llc_per_chain"]) == 2
    assert row["loss_trace_block"] == 3 and len(row["loss_trace"][0]) == 50  # at most 50 block means per chain
    train = task.dataset().subset(split.train)
    with torch.no_grad():
        # L(w*) is the training objective over the whole training split, not a mini-batch estimate.
        assert row["init_loss"] == pytest.approx(task.loss(model(train.tokens), train.labels, torch.float64).item())
    metrics = [{"step": s, "train_loss": 1.0 / (s + 1), "test_loss": 2.0 / (s + 1)} for s in range(0, 40, 10)]
    figs = figures([{**row, "step": 0}, {**row, "step": 30}], metrics)
    assert set(figs) == {"llc_over_training", "llc_chains"}
    assert len(figs["llc_chains"].data) == 2
    assert set(figures([{**row, "step": 0, "loss_trace": None}], metrics)) == {"llc_over_training"}


@needs_devinterp
def test_calibration_flags_a_divergent_step_size_and_recommends_the_largest_converged(monkeypatch):
    # The rule runs on a planted, well-conditioned problem whose chains settle on every machine: a least-squares fit
    # with 50 parameters at its exact optimum (LLC about 25), in float64. A trained transformer is no such problem:
    # its cross-entropy minimum is not a minimum (the chains keep descending) and how sharp it is depends on the
    # machine's floating-point trajectory, so whether a given step size converges there is not the same everywhere.
    # Here lr 2e-3 and 4e-3 converge with room (seeds 0-3: R-hat <= 1.04, |drift| <= 0.05, spread <= 0.04 against
    # the 1.1 / 0.1 / 0.1 thresholds; lr * n_beta * largest curvature / 2 is about 0.5), and lr 1.0 overflows.
    fit, x, y = _least_squares_fit(d_in=49, n=400)

    def planted(model: nn.Module, task: object, *, split: object, lr: float, n_beta: float | None, **sampler):
        # compute()'s place in calibrate: the same sampler with the same settings, on the planted problem.
        mse = lambda m, x, y: ((m(x) - y) ** 2).mean()  # noqa: E731
        return llc.estimate_llc(model, (x, y), mse, lr=lr, n_beta=n_beta, escape_loss=1.0, **sampler)

    monkeypatch.setattr(llc, "compute", planted)
    sampler = {"num_chains": 3, "num_draws": 400, "num_burnin": 100}
    sweep = llc.calibrate(fit, None, lrs=(2e-3, 4e-3, 1.0), **sampler)
    small, larger, huge = sweep.results
    assert huge.divergent and not huge.converged
    assert small.converged and larger.converged
    assert sweep.recommended == {"lr": 4e-3, "n_beta": pytest.approx(400 / math.log(400))}  # the largest usable
    points = sweep.to_dict()["points"]
    assert [p["divergent"] for p in points] == [False, False, True]
    # Without a usable step size there is nothing to recommend.
    assert llc.calibrate(fit, None, lrs=(1.0,), **sampler).recommended is None


@needs_devinterp
def test_calibration_of_a_checkpoint_flags_a_huge_step_size(tiny_setup):
    # Through compute() on a real checkpoint: a step size far past stability leaves the basin (non-finite loss), one
    # far below it stays within log(p) of L(w*) (its largest excursion was a third of that here). Whether the small
    # one also converges depends on the machine's trajectory (see the test above), so only divergence is asserted.
    model, task, split = tiny_setup
    sampler = {k: v for k, v in TINY.items() if k != "lr"}
    sweep = llc.calibrate(model, task, split=split, lrs=(3e-5, 1.0), **sampler)
    small, huge = sweep.results
    assert huge.divergent and not huge.converged
    assert not small.divergent and math.isfinite(small.llc_mean)
    assert sweep.recommended is None or sweep.recommended["lr"] == 3e-5
    assert [p["divergent"] for p in sweep.to_dict()["points"]] == [False, True]


def test_split_r_hat_sees_disagreement_and_trends():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(4, 400))
    assert llc.split_r_hat(noise) == pytest.approx(1.0, abs=0.02)
    assert llc.split_r_hat(noise + np.arange(4)[:, None]) > 1.5  # chains disagree
    assert llc.split_r_hat(noise + np.linspace(0, 3, 400)) > llc.R_HAT_MAX  # every chain trends


def test_missing_devinterp_is_a_user_error(monkeypatch, tiny_setup):
    model, task, split = tiny_setup
    for name in [m for m in sys.modules if m == "devinterp" or m.startswith("devinterp.")] + ["devinterp"]:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes `import` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'grokscope\[llc\]'"):
        llc.compute(model, task, split=split)


def test_sampler_settings_default_to_computes():
    defaults = {
        name: p.default
        for name, p in inspect.signature(llc.compute).parameters.items()
        if name in llc.SamplerSettings.model_fields
    }
    assert llc.SamplerSettings().model_dump() == defaults
    assert set(defaults) == set(
        ["lr", "n_beta", "localization", "num_chains", "num_draws", "num_burnin", "batch_size", "seed"]
    )
    assert llc.SamplerSettings(lr=llc.DEFAULTS["lr"], seed=2).options() == {"seed": 2}  # defaults are left out
