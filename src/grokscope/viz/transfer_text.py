"""The printed summary of a transfer, from its plain result data (``results.json``).

Steps are the unit of budgets and thresholds; every comparison states n per group, the smallest effect it could
detect, and whether a test left censored runs out; an interval is printed only where :mod:`grokscope.stats` gave
one (never a percentile bootstrap on a handful of runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grokscope.viz.text import MISSING, interval, mean, mean_sd, number, percent, ratio_interval

SPECIALIZATION = (
    "residual_distinct_dominant_frequencies",
    "residual_mean_dominant_share",
    "residual_dims_specialized",
    "mean_max_fve",
    "n_above_half",
)
ATTENTION = ("attention_to_a", "attention_to_b", "attention_a_variance", "score_top_fve")
GRADIENTS = ("grad_norm", "update_ratio_total_per_step", "grad_cosine_previous")


def speed_label(statistics: Mapping[str, Any]) -> str:
    """What the steps-to-threshold were read on, as the text names it."""
    if statistics.get("speed_on") == "train_acc":
        return "train acc (test acc is chance by construction)"
    return "test acc"


def describe(result: Mapping[str, Any]) -> list[str]:
    """Per condition, steps to 99.9% and what was kept of the source; the comparisons and speed-ups; then, when
    measured, retention against chance, relearning, agreement, the learning pattern, specialization, attention and
    gradient summaries, outliers and normality flags."""
    statistics = result["statistics"]
    on = speed_label(statistics)
    lines = [
        f"condition | runs | reached 99.9% {on} | steps to 99.9% (mean ± sd over reached) | 95% t-interval | "
        "test acc at early epoch | source retention"
    ]
    described = statistics["describe"]["0.999"]
    for condition in result["conditions"]:
        runs = [t for t in result["targets"] if t["condition"] == condition]
        trained = [t for t in runs if t["run_dir"] is not None]
        d = described.get(condition)
        if d is None or not trained:
            lines.append(f"{condition} | 0/{len(runs)} trained ({runs[0]['source_reason'] if runs else ''})")
            continue
        kept = [t["source_retention"][-1] for t in trained if t["source_retention"]]
        lines.append(
            f"{condition} | {len(trained)}/{len(runs)} | {d['n_reached']}/{d['n']} | "
            f"{mean_sd(d, '.0f', with_n=False)} | {interval(d['ci_low'], d['ci_high'], '.0f')} | "
            f"{percent(mean(t['early_test_acc'] for t in trained), 1)} | {percent(mean(kept), 1)}"
        )
    lines += comparison_lines(statistics.get("compare", {}).get("0.999", []), statistics.get("compare_budget"))
    return lines + _speedup_lines(statistics, on) + _more_lines(statistics)


def comparison_lines(pairs: list[Mapping[str, Any]], budget: int | None) -> list[str]:
    """One line per comparison (n per group, Holm-adjusted p-values, the smallest detectable effect), and a line
    of its own when Welch's test left censored runs out."""
    lines = []
    for pair in pairs:
        flag = " (normality rejected: read Mann–Whitney)" if pair.get("normality_rejected") else ""
        floor = pair.get("min_mann_whitney_p")
        reachable = "" if floor is None else f", smallest possible p {number(floor, '.2g')}"
        detectable = pair.get("min_detectable_d")
        lines.append(
            f"{pair['a']} (n={pair['n_a']}) vs {pair['b']} (n={pair['n_b']}), censored at {budget} steps: "
            f"Mann–Whitney p (Holm) = {number(pair['mann_whitney_p_adjusted'])}{reachable}; "
            f"Welch p (Holm) = {number(pair['welch_p_adjusted'])}{flag}"
            + (
                f"; smallest detectable effect |d| = {number(detectable, '.2g')} (80% power)"
                if detectable is not None
                else "; too few reached runs to detect any effect"
            )
        )
        dropped = pair.get("welch_dropped_censored")
        if dropped and pair.get("welch_p") is not None:
            lines.append(
                f"  Welch's test left out the {dropped} censored run(s) of {pair['a']} vs {pair['b']} "
                "(Mann–Whitney counts them as slowest)"
            )
    return lines


def _speedup_lines(statistics: Mapping[str, Any], on: str) -> list[str]:
    lines = []
    for s in statistics.get("speedup", {}).get("0.999", []):
        ratio = MISSING if s["ratio"] is None else f"{s['ratio']:.2f}x"
        bounds = ratio_interval(s)
        shown = f" {bounds}" if bounds else ""
        lines.append(
            f"speed-up to 99.9% {on} of {s['name']} over {s['reference']}: {ratio}{shown} "
            f"(n = {s['n_reached'] + s['n_censored']} and {s['reference_n_reached'] + s['reference_n_censored']}; "
            f"reached {s['n_reached']} and {s['reference_n_reached']})" + (f"; {s['note']}" if s["note"] else "")
        )
    return lines


def _more_lines(statistics: Mapping[str, Any]) -> list[str]:
    lines = []
    final = statistics.get("final", {})
    if final:
        lines.append(
            "final test acc: " + "; ".join(f"{c} {mean_sd(m.get('test_acc'), '.1%')}" for c, m in final.items())
        )
    for r in statistics.get("retention_vs_chance", []):
        flag = " (normality rejected: read Wilcoxon)" if r["normality_rejected"] else ""
        lines.append(
            f"retention of {r['condition']}: {percent(r['mean'], 1)} vs chance {r['chance']:.1%} (n={r['n']}): "
            f"one-sided t = {number(r['t'])}, p = {number(r['p'])}; "
            f"Wilcoxon W+ = {number(r['wilcoxon_w'], 'g')}, p = {number(r['wilcoxon_p'])}{flag}"
        )
    relearn = statistics.get("relearn")
    if relearn:
        parts = [
            f"{c} {number(d['mean'], '.0f')} ({d['n_reached']}/{d['n']} reached)"
            for c, d in relearn["describe"].get("0.99", {}).items()
        ]
        lines.append(f"relearn the source, steps to 99% within {relearn['budget']}: " + "; ".join(parts))
    for a in statistics.get("agreement", []):
        lines.append(
            f"agreement {a['a']} vs {a['b']} (test inputs, seeds {a['matched_seeds']}): "
            f"{mean_sd(a, '.1%') if a['n'] else MISSING + ' (no common seed)'}"
        )
    pattern = statistics.get("learning_pattern", {})
    if pattern:
        window = statistics.get("settings", {}).get("learning_pattern", {})
        lines.append(
            f"test acc gained over epochs 0–{window.get('early', '?')} / over the last {window.get('late', '?')} "
            "epochs: "
            + "; ".join(
                f"{c} {mean_sd(m.get('gain_early'), '+.1%', with_n=False)} / {mean_sd(m.get('gain_late'), '+.1%')}"
                for c, m in pattern.items()
            )
        )
    for title, key, measures in (
        ("specialization", "specialization", SPECIALIZATION),
        ("attention", "attention", ATTENTION),
        ("gradients", "gradients", GRADIENTS),
    ):
        table = statistics.get(key, {})
        if table:
            lines.append(f"{title}: condition | " + " | ".join(measures))
            lines += [
                f"  {c} | " + " | ".join(mean_sd(m.get(k), with_n=False) for k in measures) for c, m in table.items()
            ]
    rule = statistics.get("outlier_rule")
    if rule:
        blind = [r["condition"] for r in rule if r["n"] and not r["can_flag"]]
        text = ", ".join(f"{r['condition']} seeds {r['flagged_seeds']}" for r in rule if r["flagged_seeds"]) or "none"
        lines.append(
            f"outliers (|z| > {rule[0]['z']:g} in {rule[0]['metric']}): {text}"
            + (f"; cannot flag any with so few runs: {', '.join(blind)}" if blind else "")
        )
    rejected = [f"{r['condition']} {r['metric']}" for r in statistics.get("normality", []) if r["rejected"]]
    if statistics.get("normality"):
        lines.append("normality (Shapiro–Wilk) rejected for: " + (", ".join(rejected) if rejected else "none"))
    return lines
