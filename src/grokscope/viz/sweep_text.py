"""The printed summary of a condition sweep, from its plain result data (what the sweep's ``summarize`` returns).

A headline (runs, failures, trained now or reused), the regime table over the first two swept fields, one line per
condition (regime counts, the Kaplan–Meier median step to generalization, mean final metrics over n runs), the
failed runs and, with fingerprints recorded, the DMD comparison. Steps are optimizer steps.
"""

from __future__ import annotations

from typing import Any

from grokscope.viz.text import aligned, duration, mean, mean_sd, number, percent, plural, significant

# The regimes' short names, in the order the table explains them (grokscope.experiments.regimes.SHORT; repeated
# here because viz turns results into text and does not import the experiments).
SHORT = {
    "instant_generalization": "instant",
    "grokking": "grok",
    "memorization_only": "memo",
    "unstable": "unstable",
    "not_learned": "none",
}


def cell_text(counts: dict[str, int]) -> str:
    """Regime counts as ``2 grok, 1 memo`` (``-`` for an empty cell)."""
    if not counts:
        return "-"
    return ", ".join(f"{n} {SHORT.get(regime, regime)}" for regime, n in counts.items())


def regime_table(table: dict[str, Any]) -> list[str]:
    """The regime table as aligned text lines (a header, then one line per row value)."""
    header = ["", *table["column_labels"]]
    body = [
        [label, *(cell_text(c) for c in row)] for label, row in zip(table["row_labels"], table["counts"], strict=True)
    ]
    return aligned([header, *body])


def _condition_line(entry: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    ok = [r for r in runs if r["status"] == "ok"]
    median = entry["median_generalization_step"]
    text = (
        f"  {entry['condition'] or 'base'}: {cell_text(entry['regimes'])}; "
        f"median step to 99% test acc {significant(median)} ({entry['generalized']}/{len(ok)} generalized); "
        f"final acc train {percent(mean(r['final_train_acc'] for r in ok))} "
        f"test {percent(mean(r['final_test_acc'] for r in ok))}; "
        f"loss train {number(mean(r['final_train_loss'] for r in ok))} "
        f"test {number(mean(r['final_test_loss'] for r in ok))} (n={len(ok)})"
    )
    bound = next((r for r in ok if r.get("loss_bound") is not None), None)
    if bound is not None:
        text += f" (all-position bound {bound['loss_bound']:.3g}, memorization floor {bound['loss_floor']:.3g})"
    return text


def describe(result: dict[str, Any]) -> list[str]:
    """Printable lines: a headline, the regime table, one line per condition, the failures and the DMD comparison."""
    runs = result["runs"]
    failed = [r for r in runs if r["status"] != "ok"]
    n_trained = len(result.get("trained", []))
    lines = [
        f"sweep {result['name']}: {len(runs)} runs ({len(runs) - len(failed)} ok, {len(failed)} failed; "
        f"{n_trained} trained now, {len(runs) - n_trained} reused) "
        f"in {duration(result.get('wall_time_s'))} -> {result['root']}"
    ]
    grid = result["regimes"]
    table = grid["table"]
    axes = " x ".join(f for f in (table["rows"], table["columns"]) if f) or "all runs"
    lines.append(f"regimes by {axes} (instant / grok / memo / unstable / none; cells pool seeds and other fields):")
    lines += [f"  {line}" for line in regime_table(table)]
    lines.append(
        "conditions (median: Kaplan–Meier, runs that never generalized censored at the step budget; "
        "mean final metrics over the n finished seeds; accuracy is answer accuracy):"
    )
    for entry in grid["by_condition"]:
        lines.append(_condition_line(entry, [r for r in runs if r["condition"] == entry["condition"]]))
    if failed:
        lines.append("failed runs (see failures.json):")
        lines += [f"  {r['name']}: {r['error']}" for r in failed]
    lines += describe_dynamics(result.get("dmd"))
    lines += result.get("notes", [])
    return lines


def describe_dynamics(dynamics: dict[str, Any] | None) -> list[str]:
    """Printable lines for ``dmd.json``: the settings, then per condition the spectral radius and one-step error."""
    if dynamics is None:
        return []
    s = dynamics["settings"]
    lines = [
        f"DMD of the recorded fingerprints ({s['method']}, {s['observable']}, {s['n_delays']} delays, rank "
        f"{s['rank']}; mean ± sd over seeds; figure dmd_spectra):"
    ]
    for entry in dynamics["by_condition"]:
        lines.append(
            f"  {entry['condition'] or 'base'}: "
            f"spectral radius {mean_sd(entry['spectral_radius'], '.4f', with_n=False)}"
            f", one-step error {mean_sd(entry['reconstruction_error'], '.3g', with_n=False)} "
            f"({plural(entry['n'], 'run')})"
        )
    lines += [f"  skipped {skip['name']}: {skip['reason']}" for skip in dynamics["skipped"]]
    return lines
