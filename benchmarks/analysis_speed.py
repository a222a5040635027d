"""Time Fourier + neurons + progress measures on one p=113 nanda checkpoint against a straightforward loop.

The straightforward version is how notebooks do it: a full ``run_with_cache`` forward, then Python loops over
neurons and frequencies (each neuron's 2-D DFT and per-frequency sums), per-frequency projections of the logits,
and a hooked forward pass for each neuron-level variant. Both compute the same numbers; the script checks that they
agree before it prints the table (median of ``--rounds`` for grokscope, one round for the loop).

    python benchmarks/analysis_speed.py [--rounds 3] [--modulus 113]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from grokscope.analysis import basis, fourier, neurons, progress
from grokscope.analysis.common import answer_activations
from grokscope.config import parse_config
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def grokscope_path(model, task, split, keys, sweeps: bool):
    acts = answer_activations(model, task)  # as the runner does: one forward, neurons reused by the Fourier rule
    neuron_result = neurons.compute(model, task, split=split, activations=acts)
    spectrum = fourier.compute(model, task, split=split, activations=acts, neurons_result=neuron_result)
    measures = progress.compute(
        model, task, split=split, key_frequencies=keys, activations=acts, single_frequencies=sweeps
    )
    return spectrum, neuron_result, measures


@torch.no_grad()
def straightforward_path(model, task, keys):
    """Loops over neurons and frequencies, one hooked forward per neuron-level variant (the notebook way)."""
    p = task.modulus
    n_freq = p // 2
    B = basis.fourier_basis(p)
    cells = basis.frequency_cells(p)
    tokens = task.dataset().tokens
    logits, cache = model.run_with_cache(tokens)
    logits = logits[:, -1].double()
    post = cache["blocks.0.mlp.hook_post"][:, -1].double()
    answers = task.dataset().answers

    # Embedding spectrum, one frequency at a time.
    coeffs = B @ model.W_E[:p].double()
    embed_norms = [coeffs[basis.basis_frequencies(p) == k].norm().item() for k in range(1, n_freq + 1)]

    # Neuron FVE, one neuron and one frequency at a time.
    fve = torch.zeros(n_freq, post.shape[1], dtype=torch.float64)
    for n in range(post.shape[1]):
        table = B @ post[:, n].reshape(p, p) @ B.T
        energy = table.pow(2)
        variance = energy.sum() - energy[0, 0]
        for k in range(n_freq):
            fve[k, n] = energy[cells[k]].sum() / variance if variance > 1e-12 * energy.sum() else 0.0

    def ce(lg):
        return F.cross_entropy(lg, answers).item()

    # The paper's measures the notebook way: one explicit cos/sin(w_k(a+b)) vector per frequency, one at a time.
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    total = (a + b).flatten().double()

    def trig(x, freqs):
        part = torch.zeros_like(x)
        for k in freqs:
            for wave in (torch.cos, torch.sin):
                u = wave(2 * math.pi * k * total / p)
                if u.norm() < 1e-9:
                    continue
                u = u / u.norm()
                part += torch.outer(u, u @ x)
        return part

    def restricted(freqs):
        t = trig(logits[:, :p], freqs)
        return ce(t + (logits[:, :p] - t).mean(0))

    def excluded(freqs):
        return ce(logits[:, :p] - trig(logits[:, :p], freqs))

    w_l = (model.W_out[0] @ model.W_U[:, :p]).detach().double()

    def neuron_restricted(freqs):
        out = (post.mean(0) + trig(post, freqs)) @ w_l
        return ce(out + logits[:, :p].mean(0) - out.mean(0))

    def neuron_excluded(freqs):
        new_post = post - trig(post, freqs)

        def hook(act, hook):
            act[:, -1] = new_post.to(act.dtype)
            return act

        out = model.run_with_hooks(tokens, fwd_hooks=[("blocks.0.mlp.hook_post", hook)])
        return ce(out[:, -1, :p].double())

    measures = {
        "restricted": restricted(keys),
        "excluded": excluded(keys),
        "neuron_restricted": neuron_restricted(keys),
        "neuron_excluded": neuron_excluded(keys),
    }
    sweeps = {
        "restricted": [restricted([k]) for k in range(1, n_freq + 1)],
        "excluded": [excluded([k]) for k in range(1, n_freq + 1)],
    }
    return embed_norms, fve, measures, sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modulus", type=int, default=113)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = parse_config({"task": {"modulus": args.modulus, "train_fraction": 0.3}})
    task = ModularTask.from_config(cfg.task)
    model = build_model(cfg.model, task, seed=0)
    split = make_split(task.n_pairs, 0.3, seed=0)
    keys = [4, 11, 14, 35, 41]
    print(f"CPU ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads; p={args.modulus}")

    grokscope_path(model, task, split, keys, sweeps=True)  # warm up
    core = [timed(lambda: grokscope_path(model, task, split, keys, sweeps=False))[0] for _ in range(args.rounds)]
    full_times, outputs = zip(
        *[timed(lambda: grokscope_path(model, task, split, keys, sweeps=True)) for _ in range(args.rounds)],
        strict=True,
    )
    loop_time, (embed_norms, fve, measures, sweeps) = timed(lambda: straightforward_path(model, task, keys))

    spectrum, neuron_result, ours = outputs[-1]
    mine = ours.to_dict()
    assert torch.allclose(neuron_result.fve, fve, atol=1e-9), "neuron FVE differs"
    assert torch.allclose(spectrum.embedding_norms, torch.tensor(embed_norms, dtype=torch.float64), rtol=1e-9)
    for name, value in measures.items():
        assert math.isclose(mine[name]["loss"]["all"], value, rel_tol=1e-6), name
    for name, values in sweeps.items():
        ours_sweep = mine[f"single_{name}"]["loss"]["all"]
        assert all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(ours_sweep, values, strict=True)), name

    full = statistics.median(full_times)
    print(f"{'variant':<58} {'seconds':>8} {'vs loop':>8}")
    rows = [
        ("straightforward loop (neurons, frequencies, hooked forwards)", loop_time),
        ("grokscope: Fourier + neurons + progress, with sweeps", full),
        ("grokscope: same without per-frequency sweeps", statistics.median(core)),
    ]
    for label, seconds in rows:
        print(f"{label:<58} {seconds:>8.2f} {loop_time / seconds:>7.1f}x")
    print("results agree: neuron FVE (1e-9), embedding spectrum, key-set and per-frequency losses (1e-6)")


if __name__ == "__main__":
    main()
