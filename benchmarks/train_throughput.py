"""Training throughput: a plain TransformerLens loop against grokscope's step, one seed and N seeds at once.

Every variant runs in this process on the same training split, interleaved in rounds so that machine noise hits
them alike. The table reports the median ms per optimizer step, model-steps per second (N models updated in one
step count N) and the ratio to the plain loop. The grokscope rows run the trainer's own pieces: the fast forward,
its objective, AdamW and :func:`apply_update`, over one model's parameters or a stack of N.

    python benchmarks/train_throughput.py [--configs quickstart nanda_p113] [--seeds 1 2 4 8] [--rounds 3]
        [--steps 5] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from grokscope import forward
from grokscope.config import load_config
from grokscope.errors import UserError
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split
from grokscope.training.loop import Objective, adamw, apply_update, model_forward, reproducible, resolve_device

CONFIGS = Path(__file__).parents[1] / "configs"


def plain_tl_step(model, optimizer, tokens, answers, loss_dtype) -> Callable[[], None]:
    """The loop every grokking notebook has: full forward, last-position cross-entropy, AdamW."""

    def step() -> None:
        loss = F.cross_entropy(model(tokens)[:, -1].to(loss_dtype), answers)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def variants(config_name: str, seed_counts: list[int], device: torch.device) -> dict[str, tuple[int, Callable]]:
    """name -> (models per step, step function)."""
    cfg = load_config(CONFIGS / f"{config_name}.yaml")
    task = ModularTask.from_config(cfg.task)
    train = task.dataset().subset(make_split(task.n_pairs, cfg.task.train_fraction, seed=cfg.seed).train).to(device)
    objective = Objective.of(cfg, task)
    out: dict[str, tuple[int, Callable]] = {}

    model = build_model(cfg.model, task, seed=0, device=device)
    try:  # the baseline is TransformerLens's own HookedTransformer where it still exists (3.x)
        model, label = model.to_hooked_transformer(), "plain TransformerLens loop"
    except UserError:  # TransformerLens 4: the plain loop over grokscope's model, every position
        label = "plain loop, GrokTransformer forward"
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=1.0)
    out[label] = (1, plain_tl_step(model, opt, train.tokens, train.answers, objective.dtype))

    # grokscope's step before token tables: the general forward (loss window, batched GEMMs), for the side-by-side
    general = build_model(cfg.model, task, seed=0, device=device)
    arch = general.cfg.architecture()
    general_params = forward.parameter_views(general)
    general_opt = adamw(list(general.parameters()), cfg.optim, device)

    def general_step() -> None:
        logits = forward.logits(general_params, train.tokens[None], arch, objective.window, tables=False)
        objective.loss(logits, train.labels[None]).sum().backward()
        apply_update(general_opt, list(general.parameters()), None)

    out["grokscope, 1 seed, general forward (no tables)"] = (1, general_step)

    for n in seed_counts:
        models = [build_model(cfg.model, task, seed=s, device=device) for s in range(n)]
        if n == 1:
            params = list(models[0].parameters())
            model_logits = model_forward(models[0], objective)
        else:
            stacked = forward.stack_parameters(models)
            params = list(stacked.values())
            arch = models[0].cfg.architecture()
            model_logits = lambda t, s=stacked, a=arch: forward.logits(s, t, a, objective.window)  # noqa: E731
        optimizer = adamw(params, cfg.optim, device)
        tokens, labels = train.tokens.expand(n, -1, -1), train.labels.expand(n, -1, -1)

        def step(model_logits=model_logits, optimizer=optimizer, params=params, tokens=tokens, labels=labels):
            objective.loss(model_logits(tokens), labels).sum().backward()
            apply_update(optimizer, params, None)

        out["grokscope, 1 seed" if n == 1 else f"grokscope, {n} seeds stacked"] = (n, step)
    return out


def timed(fn: Callable[[], None], steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["quickstart", "nanda_p113"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{platform.machine()}, {where}, torch {torch.__version__}")
    for name in args.configs:
        with reproducible(device):
            runs = variants(name, args.seeds, device)
            times: dict[str, list[float]] = {k: [] for k in runs}
            for _, step in runs.values():
                step()  # warm up: allocations, kernels, AdamW state
            for _ in range(args.rounds):
                for k, (_, step) in runs.items():
                    times[k].append(timed(step, args.steps, device))
        base = statistics.median(next(iter(times.values())))  # the plain loop comes first
        print(f"\n{name}\n| variant | ms/step | model-steps/s | vs plain loop (per model-step) |\n|---|---:|---:|---:|")
        for k, (n, _) in runs.items():
            ms = statistics.median(times[k])
            print(f"| {k} | {ms:.1f} | {1000 * n / ms:.1f} | {base * n / ms:.2f}x |")


if __name__ == "__main__":
    main()
