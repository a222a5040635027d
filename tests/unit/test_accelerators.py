import io
import math

import pytest
import torch
import torch.nn.functional as F

from grokscope.losses import stablemax_cross_entropy
from grokscope.training.accelerators import (
    GradientFilter,
    GrokfastEMA,
    GrokfastMA,
    OrthoGrad,
    chain,
)

D = torch.float64


def param(value, grad=None):
    p = torch.as_tensor(value, dtype=D).clone().requires_grad_(True)
    if grad is not None:
        p.grad = torch.as_tensor(grad, dtype=D).clone()
    return p


def run_scalar(f: GradientFilter, grads: list[float]) -> list[float]:
    p, out = param(0.0), []
    for g in grads:
        p.grad = torch.tensor(g, dtype=D)
        f.apply([p])
        out.append(p.grad.item())
    return out


def test_ema_matches_hand_computation():
    # mu: 1, 0.5*1 + 0.5*2 = 1.5, 0.5*1.5 + 0.5*4 = 2.75
    assert run_scalar(GrokfastEMA(alpha=0.5, lamb=2.0), [1.0, 2.0, 4.0]) == pytest.approx([3.0, 5.0, 9.5])


def test_ema_of_constant_gradient_is_scaled_by_one_plus_lamb():
    out = run_scalar(GrokfastEMA(alpha=0.98, lamb=2.0), [0.3] * 20)
    assert out == pytest.approx([0.9] * 20, rel=1e-12)


def test_ma_leaves_gradients_until_window_full_then_adds_mean():
    grads = [1.0, 2.0, 4.0, 8.0, 16.0]
    out = run_scalar(GrokfastMA(window=3, lamb=2.0), grads)
    assert out[:2] == grads[:2]
    assert out[2:] == pytest.approx([4 + 2 * 7 / 3, 8 + 2 * 14 / 3, 16 + 2 * 28 / 3])


def test_ma_ring_buffer_wraps_over_many_windows():
    torch.manual_seed(0)
    grads = torch.randn(23, dtype=D).tolist()
    out = run_scalar(GrokfastMA(window=4, lamb=5.0), grads)
    for t in range(3, 23):
        assert out[t] == pytest.approx(grads[t] + 5.0 * sum(grads[t - 3 : t + 1]) / 4, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("f", [GrokfastEMA(alpha=0.98, lamb=2.0), GrokfastMA(window=100, lamb=5.0)])
def test_slow_component_is_amplified_relative_to_fast(f):
    steps, period = 600, 4
    t = torch.arange(steps, dtype=D)
    fast = torch.sin(2 * math.pi * t / period)
    out = torch.tensor(run_scalar(f, (1.0 + fast).tolist()), dtype=D)
    tail = slice(steps - 200, steps)  # past the EMA transient and the MA warmup
    slow_amp = out[tail].mean()
    fast_amp = 2 * (out[tail] - slow_amp).mul(fast[tail]).mean()  # projection onto the sinusoid
    assert slow_amp > 2.5  # about 1 + lamb
    assert slow_amp / fast_amp.abs() > 2.0  # the ratio was 1 before filtering


def test_orthograd_output_is_orthogonal_with_the_gradient_norm():
    torch.manual_seed(0)
    w, g = torch.randn(7, 5, dtype=D), torch.randn(7, 5, dtype=D)
    out = OrthoGrad().project(w, g)
    assert abs((out * w).sum()) < 1e-12 * out.norm() * w.norm()
    assert out.norm() == pytest.approx(g.norm().item(), rel=1e-12)


def test_orthograd_model_axis_equals_per_slice():
    torch.manual_seed(1)
    p = param(torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    slices = [param(p[i].detach(), p.grad[i]) for i in range(4)]
    OrthoGrad(model_axis=True).apply([p])
    OrthoGrad().apply(slices)
    torch.testing.assert_close(p.grad, torch.stack([s.grad for s in slices]), rtol=1e-12, atol=1e-14)


def test_orthograd_scalar_per_model_becomes_zero_unless_weight_is_zero():
    p = param([2.0, -1.0, 0.0], [0.5, 3.0, 7.0])
    OrthoGrad(model_axis=True).apply([p])
    assert p.grad.tolist() == [0.0, 0.0, 7.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["parallel", "zero_weight", "zero_grad"])
def test_orthograd_degenerate_cases_are_finite(case, dtype):
    torch.manual_seed(2)
    w = torch.randn(64, 32, dtype=dtype)
    g = {"parallel": 3.0 * w, "zero_weight": torch.randn(64, 32, dtype=dtype), "zero_grad": torch.zeros_like(w)}[case]
    if case == "zero_weight":
        w = torch.zeros_like(w)
    out = OrthoGrad().project(w, g)
    assert torch.isfinite(out).all()
    expected = g if case == "zero_weight" else torch.zeros_like(g)
    torch.testing.assert_close(out, expected)


def test_stablemax_matches_hand_formula():
    logits = torch.tensor([[1.0, -1.0, 0.0], [2.0, 3.0, -3.0]], dtype=D)
    labels = torch.tensor([0, 2])
    # s = [2, 1/2, 1] (sum 3.5) and [3, 4, 1/4] (sum 7.25)
    expected = (-math.log(2.0 / 3.5) - math.log(0.25 / 7.25)) / 2
    assert stablemax_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-14)


def test_stablemax_gradient_is_finite_for_large_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 5e3, 1e4]], requires_grad=True)
    loss = stablemax_cross_entropy(logits, torch.tensor([1, 0]))
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_stablemax_ignore_index_and_reductions_follow_cross_entropy(reduction):
    torch.manual_seed(3)
    logits, labels = torch.randn(6, 5, dtype=D), torch.tensor([0, -100, 4, 2, -100, 1])
    s = torch.where(logits >= 0, logits + 1, 1 / (1 - logits))
    # nll_loss has exactly F.cross_entropy's ignore_index/reduction semantics, given log-probabilities.
    expected = F.nll_loss((s / s.sum(1, keepdim=True)).log(), labels, reduction=reduction)
    torch.testing.assert_close(stablemax_cross_entropy(logits, labels, reduction=reduction), expected)
    other = labels.masked_fill(labels == -100, 3)
    expected = F.nll_loss((s / s.sum(1, keepdim=True)).log(), other, ignore_index=3, reduction=reduction)
    torch.testing.assert_close(stablemax_cross_entropy(logits, other, ignore_index=3, reduction=reduction), expected)


def test_stablemax_all_ignored_mean_is_nan_like_cross_entropy():
    logits, labels = torch.randn(2, 3), torch.tensor([-100, -100])
    assert torch.isnan(F.cross_entropy(logits, labels)) and torch.isnan(stablemax_cross_entropy(logits, labels))


def test_stablemax_gradcheck():
    torch.manual_seed(4)
    logits = (3 * torch.randn(5, 4, dtype=D)).requires_grad_(True)
    labels = torch.tensor([0, 3, -100, 1, 2])
    assert torch.autograd.gradcheck(lambda x: stablemax_cross_entropy(x, labels), (logits,))


def make_filters():
    return {
        "ema": lambda: GrokfastEMA(alpha=0.9, lamb=2.0),
        "ma": lambda: GrokfastMA(window=3, lamb=5.0),
        "ortho": lambda: OrthoGrad(model_axis=True),
        "chain": lambda: chain(OrthoGrad(model_axis=True), GrokfastEMA(alpha=0.9), GrokfastMA(window=4)),
    }


@pytest.mark.parametrize("name", list(make_filters()))
def test_resume_from_saved_state_is_bitwise(name):
    build = make_filters()[name]
    torch.manual_seed(5)
    shapes = [(3, 4, 5), (3,), (3, 6)]
    weights = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(12)]

    def step(f, t):
        params = [w.clone().requires_grad_(True) for w in weights]
        for p, g in zip(params, grads[t], strict=True):
            p.grad = g.clone()
        if t == 6:
            params[2].grad = None  # a parameter may miss a gradient on some step
        f.apply(params)
        return [p.grad for p in params]

    straight = build()
    expected = [step(straight, t) for t in range(12)]

    first = build()
    for t in range(5):
        step(first, t)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    from_file, from_live = build(), build()
    from_file.load_state_dict(torch.load(buf, weights_only=True))
    from_live.load_state_dict(first.state_dict())
    step(first, 5)  # a loaded filter must not share storage with the one it was loaded from
    for resumed in (from_file, from_live):
        for t in range(5, 12):
            for a, b in zip(step(resumed, t), expected[t], strict=True):
                assert (a is None and b is None) or torch.equal(a, b)


def test_ma_state_with_another_window_is_refused():
    f = GrokfastMA(window=3)
    run_scalar(f, [1.0])
    with pytest.raises(ValueError, match="window"):
        GrokfastMA(window=4).load_state_dict(f.state_dict())
