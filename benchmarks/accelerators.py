"""Steps to 99% test accuracy with and without grokking accelerators, over several seeds of one config.

Each setting trains the same seeds (init, split and batch order shared with the baseline) with early stopping at
the threshold, and the table gives mean ± sd over the seeds that reached it, the count that did not (censored at
the step budget, never averaged in), the median and a Mann–Whitney p against the baseline (censored runs ranked last).

    python benchmarks/accelerators.py [--config quickstart] [--seeds 0-4] [--steps 1500] [--threshold 0.99]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from grokscope.cli import parse_seeds
from grokscope.config import RunConfig, load_config
from grokscope.stats import Sample, compare, describe
from grokscope.training.many import train_many

CONFIGS = Path(__file__).parents[1] / "configs"

SETTINGS: dict[str, list[str]] = {
    "baseline (AdamW)": [],
    "Grokfast EMA a=0.98 l=2": ["optim.grokfast.filter=ema", "optim.grokfast.alpha=0.98", "optim.grokfast.lamb=2"],
    "Grokfast EMA a=0.98 l=5": ["optim.grokfast.filter=ema", "optim.grokfast.alpha=0.98", "optim.grokfast.lamb=5"],
    "Grokfast MA w=100 l=5": ["optim.grokfast.filter=ma", "optim.grokfast.window=100", "optim.grokfast.lamb=5"],
    "Grokfast MA w=20 l=5": ["optim.grokfast.filter=ma", "optim.grokfast.window=20", "optim.grokfast.lamb=5"],
    "OrthoGrad": ["optim.orthograd=true"],
    "StableMax": ["train.loss_fn=stablemax"],
}


def steps_to(config: RunConfig, seeds: list[int], out: Path, threshold: float) -> Sample:
    configs = [config.with_seed(s) for s in seeds]
    results = train_many(configs, [out / f"seed{s}" for s in seeds], device="cpu", progress=False)
    reached = [next((r["step"] for r in r_.run.metrics() if r["test_acc"] >= threshold), None) for r_ in results]
    return Sample.from_values(reached, budget=config.train.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threshold", type=float, default=0.99)
    parser.add_argument("--only", nargs="*", help="setting names to run (default: all)")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    stop = [
        f"train.steps={args.steps}",
        "train.early_stop.metric=test_acc",
        f"train.early_stop.threshold={args.threshold}",
        "train.early_stop.patience=0",
    ]
    samples: dict[str, Sample] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, overrides) in enumerate(SETTINGS.items()):
            if args.only and name not in args.only:
                continue
            config = load_config(CONFIGS / f"{args.config}.yaml", stop + overrides)
            samples[name] = steps_to(config, seeds, Path(tmp) / str(i), args.threshold)
            print(f"{name}: {samples[name]}", flush=True)
    base = next(iter(samples.values()))
    print(f"\n{args.config}, seeds {args.seeds}, steps to test acc >= {args.threshold} (budget {args.steps})")
    print(
        "| setting | reached | mean ± sd | median | vs baseline (mean) | Mann–Whitney p |\n|---|---:|---:|---:|---:|---:|"
    )
    for name, sample in samples.items():
        d = describe(sample)
        speedup = f"{describe(base).mean / d.mean:.2f}x" if d.mean and describe(base).mean else "—"
        sd = f" ± {d.sd:.0f}" if d.sd is not None else ""
        mean = f"{d.mean:.0f}{sd}" if d.mean is not None else "—"
        p = compare(sample, base).mann_whitney_p if sample is not base else None
        print(
            f"| {name} | {d.n_reached}/{d.n} | {mean} | {d.median if d.median is not None else '—'} | {speedup} | "
            f"{'—' if p is None else f'{p:.3f}'} |"
        )


if __name__ == "__main__":
    main()
