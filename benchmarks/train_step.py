"""Time one full-batch training step of grokscope's trainer against a plain TransformerLens loop, side by side.

Both variants run in this process on the same data, interleaved in rounds so that machine noise hits them alike;
the table reports the median ms per step and the ratio plain / grokscope (> 1 means grokscope is faster).

    python benchmarks/train_step.py [--rounds 5] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from grokscope.config import load_config
from grokscope.models import build_model
from grokscope.tasks import ModularTask, make_split
from grokscope.training.loop import reproducible, train_step

CONFIGS = Path(__file__).parents[1] / "configs"


def plain_tl_step(model, optimizer, tokens, answers) -> None:
    """The loop every grokking notebook has: full forward, last-position cross-entropy, AdamW."""
    logits = model(tokens)[:, -1].to(torch.float64)
    loss = F.cross_entropy(logits, answers)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def timed(fn, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def bench(config_name: str, rounds: int, steps: int, device: torch.device) -> tuple[float, float]:
    cfg = load_config(CONFIGS / f"{config_name}.yaml")
    task = ModularTask.from_config(cfg.task)
    split = make_split(task.n_pairs, cfg.task.train_fraction, seed=cfg.seed)
    batch = task.dataset().subset(split.train).to(device)
    loss_dtype = getattr(torch, cfg.train.loss_dtype)

    def fresh():
        model = build_model(cfg.model, task, seed=cfg.seed, device=device)
        o = cfg.optim
        opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        return model, opt

    plain_model, plain_opt = fresh()
    ours_model, ours_opt = fresh()

    def plain():
        plain_tl_step(plain_model, plain_opt, batch.tokens, batch.answers)

    def ours():
        with reproducible(device):  # as train() runs it: deterministic kernels on the CPU
            train_step(ours_model, ours_opt, batch, task, loss_dtype)

    for fn in (plain, ours):  # warm up allocators and kernels
        timed(fn, 2, device)
    plain_ms, ours_ms = [], []
    for _ in range(rounds):
        plain_ms.append(timed(plain, steps, device))
        ours_ms.append(timed(ours, steps, device))
    return statistics.median(plain_ms), statistics.median(ours_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({where}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'model':<12} {'train rows':>10} {'plain TL ms/step':>17} {'grokscope ms/step':>18} {'ratio':>6}")
    for name in ("quickstart", "nanda_p113"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        task = ModularTask.from_config(cfg.task)
        rows = round(cfg.task.train_fraction * task.n_pairs)
        plain_ms, ours_ms = bench(name, args.rounds, args.steps, device)
        print(f"{name:<12} {rows:>10} {plain_ms:>17.1f} {ours_ms:>18.1f} {plain_ms / ours_ms:>6.2f}")


if __name__ == "__main__":
    main()
