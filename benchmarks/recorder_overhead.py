"""What recording a fingerprint every k steps costs a training run, measured side by side.

Trains the quickstart config for a fixed number of steps with and without ``FingerprintRecorder(every=k)``, in
alternating rounds (evaluation and checkpoints made rare in both, so the recorder's cost is not diluted), and
prints seconds per run and the relative overhead.

    python benchmarks/recorder_overhead.py [--steps 150] [--every 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grokscope.analysis.fingerprint import FingerprintRecorder
from grokscope.config import load_config
from grokscope.training import train

QUICKSTART = Path(__file__).parents[1] / "configs" / "quickstart.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    overrides = [f"train.steps={args.steps}", f"train.eval_every={args.steps}", "train.early_stop=null"]
    overrides += [f"train.checkpoints.every={args.steps}"]
    config = load_config(QUICKSTART, overrides)
    times: dict[str, list[float]] = {"plain": [], "recorded": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for variant in times:
                callbacks = [FingerprintRecorder(every=args.every)] if variant == "recorded" else []
                t0 = time.perf_counter()
                train(config, Path(tmp) / f"{variant}{round_}", device="cpu", progress=False, callbacks=callbacks)
                times[variant].append(time.perf_counter() - t0)
    plain, recorded = statistics.median(times["plain"]), statistics.median(times["recorded"])
    print(f"CPU ({platform.machine()}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"quickstart, {args.steps} steps, fingerprint (100 probes, 19 quantiles x 3 observables) every {args.every}")
    print(f"without recorder {plain:.2f} s, with recorder {recorded:.2f} s, overhead {recorded / plain - 1:+.1%}")


if __name__ == "__main__":
    main()
