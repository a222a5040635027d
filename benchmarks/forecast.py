"""Validate the grokking forecast on held-out runs, beside the first-passage law and the median delay.

    grokscope experiment configs/forecast_calibration.yaml --out runs            # the calibration runs
    grokscope experiment configs/forecast_calibration_controls.yaml --out runs
    grokscope experiment configs/forecast_heldout.yaml --out runs                # held out: other cells, seeds
    grokscope experiment configs/forecast_controls.yaml --out runs
    python benchmarks/forecast.py [--runs runs] [--refit] [--figures docs/figures]

By default it scores the predictor that ships in the package; ``--refit`` fits one on the calibration runs first
(what ``grokscope forecast-fit`` does) and scores that. For every held-out run it forecasts from what the run had
logged by memorization and by later evaluations (a share s of the delay elapsed: the first evaluation at or after
memorization + s x delay), and prints, per method: the mean absolute percentage error of the delay (generalization
step − memorization step) over the runs that generalized, the coverage of the 80% interval, the AUROC of "generalizes
within the budget" over all held-out runs, and how many of the runs that did not generalize were flagged
(P(within budget) < 0.5). Last, a replay of "stop a run once P(within budget) < 0.05" says what that rule would
have saved and cost. ``--figures`` writes the docs' plotly figures (predicted vs actual; error over forecast time).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
from pathlib import Path

from grokscope.forecast import Predictor, fit_predictor, forecast_trajectory, labelled_runs, shipped_predictor
from grokscope.forecast.baselines import FirstPassageLaw, MedianDelay
from grokscope.forecast.calibration import LabelledRun
from grokscope.forecast.features import features
from grokscope.forecast.trajectory import Trajectory

SHARES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9)
LAW_CELL = {"task.modulus": 53, "task.train_fraction": 0.45, "optim.lr": 0.01, "optim.weight_decay": 1.0}
STOP_BELOW = 0.05


def forecast_step_at(run: LabelledRun, share: float) -> int:
    """The first evaluation at or after memorization + share x delay."""
    target = run.memorization_step + share * run.delay
    return next(r["step"] for r in run.trajectory.rows if r["step"] >= target)


def median_step(predictor: Predictor, run: Trajectory) -> float:
    """The median of the predictor's distribution of the generalization step (what ``predicted_step`` is, when it
    lies within the budget)."""
    mu, _ = predictor.distribution(features(run, predictor.ln_v_star))
    return run.at + math.exp(min(float(mu[0]), 40.0))


def auroc(scores: list[float], labels: list[bool]) -> float | None:
    """P(score of a positive > score of a negative), ties counted half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not pos or not neg:
        return None
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def mape(pairs: list[tuple[float, float]]) -> float:
    """Mean |predicted − actual| / actual, in percent, of (predicted delay, actual delay) pairs."""
    return 100 * statistics.fmean(abs(p - a) / a for p, a in pairs)


def evaluate(predictor: Predictor, laws: dict[str, object], held_out: list[LabelledRun]) -> dict:
    out: dict = {"n_runs": len(held_out), "n_generalized": sum(r.delay is not None for r in held_out)}
    # A run that generalized at memorization (delay 0) leaves nothing to forecast.
    generalized = [r for r in held_out if r.delay]
    delays = [r.delay for r in generalized]
    out["delay_range"] = [min(delays), max(delays)]
    curve = []
    points = []
    for share in SHARES:
        errors, covered, law_errors = [], 0, {name: [] for name in laws}
        for r in generalized:
            t = forecast_step_at(r, share)
            f = forecast_trajectory(r.trajectory.until(t), predictor)
            if f.status not in ("forecast", "not_expected"):
                continue
            median = median_step(predictor, r.trajectory.until(t))  # also when it lies past the budget
            errors.append((median - r.memorization_step, r.delay))
            covered += f.interval[0] <= r.generalization_step <= f.interval[1]
            for name, law in laws.items():
                predicted = max(r.memorization_step + law.delay(r.trajectory, r.memorization_step), t)
                law_errors[name].append((min(predicted, 1e9) - r.memorization_step, r.delay))
            if share == 0.0:
                points.append(
                    {
                        "run": r.path.name,
                        "actual": r.delay,
                        "predicted": median - r.memorization_step,
                        "low": f.interval[0] - r.memorization_step,
                        "high": f.interval[1] - r.memorization_step,
                    }
                )
        curve.append(
            {
                "share": share,
                "n": len(errors),
                "mape": mape(errors),
                "coverage": covered / len(errors),
                **{f"mape_{name}": mape(e) for name, e in law_errors.items()},
            }
        )
    out["curve"] = curve
    out["seed_floor_mape"] = seed_floor(generalized)
    out["points"] = points
    # "Generalizes within the budget", forecast at memorization, over every held-out run that memorized.
    scores, labels, flagged, never = [], [], 0, 0
    for r in held_out:
        if r.memorization_step is None:
            continue
        f = forecast_trajectory(r.trajectory.until(r.memorization_step), predictor)
        if f.p_generalize_within_budget is None:
            continue
        scores.append(f.p_generalize_within_budget)
        labels.append(r.generalization_step is not None)
        if r.generalization_step is None:
            never += 1
            flagged += f.p_generalize_within_budget < 0.5
    out["auroc_at_memorization"] = auroc(scores, labels)
    out["never_flagged"] = [flagged, never]
    out["stopping"] = replay_stopping(predictor, held_out)
    return out


def seed_floor(runs: list[LabelledRun]) -> float:
    """MAPE of the delay when each run is predicted by the geometric mean delay of the other seeds of its own cell:
    what knowing the cell (and nothing about the seed) gives; a reference, not a method (it reads held-out runs)."""
    cells: dict[str, list[LabelledRun]] = {}
    for r in runs:
        cells.setdefault(json.dumps(r.trajectory.settings, sort_keys=True), []).append(r)
    pairs = []
    for members in cells.values():
        for r in members:
            others = [o.delay for o in members if o is not r]
            if others:
                pairs.append((math.exp(statistics.fmean(math.log(d) for d in others)), r.delay))
    return mape(pairs)


def replay_stopping(predictor: Predictor, runs: list[LabelledRun]) -> dict:
    """Replay "stop once P(within budget) < STOP_BELOW" along each run's evaluations."""
    trained = kept = 0
    wrongly, stopped = [], []
    for r in runs:
        steps = r.trajectory.rows[-1]["step"]
        trained += steps
        stop = None
        if r.memorization_step is not None:
            for row in r.trajectory.rows:
                if row["step"] < r.memorization_step:
                    continue
                f = forecast_trajectory(r.trajectory.until(row["step"]), predictor)
                if f.status == "generalized":
                    break
                if f.p_generalize_within_budget is not None and f.p_generalize_within_budget < STOP_BELOW:
                    stop = row["step"]
                    break
        kept += steps if stop is None else stop
        if stop is not None:
            stopped.append(r.path.name)
            if r.generalization_step is not None:
                wrongly.append(r.path.name)
    return {
        "rule": f"P(within budget) < {STOP_BELOW}",
        "steps_trained": trained,
        "steps_with_rule": kept,
        "saved_share": 1 - kept / trained,
        "stopped": len(stopped),
        "wrongly_stopped": len(wrongly),
    }


def figures(result: dict, folder: Path) -> None:
    import plotly.graph_objects as go

    pts = result["points"]
    fig = go.Figure()
    fig.add_scatter(
        x=[p["actual"] for p in pts],
        y=[p["predicted"] for p in pts],
        mode="markers",
        name="forecast at memorization",
        error_y=dict(
            type="data",
            symmetric=False,
            array=[p["high"] - p["predicted"] for p in pts],
            arrayminus=[p["predicted"] - p["low"] for p in pts],
            thickness=0.6,
        ),
    )
    top = max(max(p["actual"] for p in pts), max(p["predicted"] for p in pts))
    fig.add_scatter(x=[0, top], y=[0, top], mode="lines", name="exact", line=dict(dash="dot", color="gray"))
    fig.update_layout(
        title="Held-out runs: delay forecast at memorization (80% intervals) vs actual",
        xaxis_title="actual delay (steps after memorization)",
        yaxis_title="forecast delay",
        xaxis_type="log",
        yaxis_type="log",
    )
    (folder / "forecast_predicted_vs_actual.json").write_text(fig.to_json())
    curve = result["curve"]
    fig = go.Figure()
    shares = [c["share"] for c in curve]
    fig.add_scatter(x=shares, y=[c["mape"] for c in curve], name="grokscope forecast", mode="lines+markers")
    for key in curve[0]:
        if key.startswith("mape_"):
            fig.add_scatter(x=shares, y=[c[key] for c in curve], name=key[5:].replace("_", " "), mode="lines+markers")
    fig.update_layout(
        title="Error of the delay forecast over forecast time (held-out runs)",
        xaxis_title="share of the delay elapsed when the forecast is made",
        yaxis_title="MAPE of the delay (%)",
        yaxis_type="log",
    )
    (folder / "forecast_error_over_time.json").write_text(fig.to_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--refit", action="store_true", help="fit the predictor on the calibration runs first")
    parser.add_argument("--figures", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    calibration = labelled_runs([args.runs / "forecast_calibration", args.runs / "forecast_calibration_controls"])
    held_out = labelled_runs([args.runs / "forecast_heldout", args.runs / "forecast_controls"])
    predictor = fit_predictor(calibration) if args.refit else shipped_predictor()
    cell = [r for r in calibration if all(r.trajectory.settings[k] == v for k, v in LAW_CELL.items())]
    laws = {
        "first_passage_one_cell": FirstPassageLaw.fit(cell),
        "first_passage_all_calibration": FirstPassageLaw.fit(calibration),
        "median_delay": MedianDelay.fit(calibration),
    }
    result = evaluate(predictor, laws, held_out)
    result["laws"] = {name: vars(law) for name, law in laws.items()}
    result["machine"] = platform.processor() or platform.machine()
    print(
        f"calibration runs: {len(calibration)}; held-out runs: {result['n_runs']} "
        f"({result['n_generalized']} generalized within budget, delays {result['delay_range'][0]}-"
        f"{result['delay_range'][1]} steps)"
    )
    print(
        "| share of delay elapsed | n | grokscope MAPE | 80% coverage | "
        + " | ".join(k[5:] for k in result["curve"][0] if k.startswith("mape_"))
        + " |"
    )
    for c in result["curve"]:
        laws_text = " | ".join(f"{c[k]:.1f}%" for k in c if k.startswith("mape_"))
        print(f"| {c['share']:.2f} | {c['n']} | {c['mape']:.1f}% | {c['coverage']:.0%} | {laws_text} |")
    print(
        f"reference: each run predicted by the other seeds of its own cell (geometric mean delay): "
        f"MAPE {result['seed_floor_mape']:.1f}%"
    )
    au = result["auroc_at_memorization"]
    print(f"AUROC of 'generalizes within budget' at memorization: {'n/a' if au is None else f'{au:.3f}'}")
    print(
        f"runs that did not generalize flagged at memorization (P < 0.5): "
        f"{result['never_flagged'][0]}/{result['never_flagged'][1]}"
    )
    s = result["stopping"]
    print(
        f"stopping rule {s['rule']}: {s['saved_share']:.1%} of steps saved; {s['stopped']} runs stopped, "
        f"{s['wrongly_stopped']} of them would have generalized"
    )
    if args.figures:
        figures(result, args.figures)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
