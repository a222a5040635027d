"""The p = 113 reproduction on the progress-measures page: analyse a trained ``nanda_p113`` run and draw its figures.

Run after ``grokscope train configs/nanda_p113.yaml`` (about 100 ms per step on one CPU thread)::

    python docs/figures/p113_reproduction.py runs/nanda_p113

Writes ``docs/figures/p113_*.json`` (with the phases marked) and prints the phases and the measures at a few steps.
"""

from __future__ import annotations

import json
import sys

from make_figures import save

from grokscope.analysis.runner import analyze
from grokscope.store import Run
from grokscope.viz.write import analysis_figures


def main(path: str) -> None:
    run = Run.open(path)
    report = analyze(run, ["fourier", "neurons", "progress"], progress=True)
    phases = report.summaries["progress"]
    print(json.dumps(phases, indent=1))
    metrics = {m["step"]: m for m in run.metrics()}
    print("step | train loss | test loss | test acc | restricted (all) | excluded (train) | weight norm^2")
    for row in report.rows["progress"]:
        m = metrics.get(row["step"], {})
        print(
            f"{row['step']} | {row['full']['loss']['train']:.3g} | {row['full']['loss']['test']:.3g} | "
            f"{m.get('test_acc', float('nan')):.3f} | {row['restricted']['loss']['all']:.3g} | "
            f"{row['excluded']['loss']['train']:.3g} | {row['weight_norm_sq']:.1f}"
        )
    for name, figure in analysis_figures("progress", report.rows["progress"], run.metrics(), phases).items():
        save(f"p113_{name}", figure)


if __name__ == "__main__":
    main(sys.argv[1])
