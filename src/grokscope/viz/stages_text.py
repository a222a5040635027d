"""The printed summaries of staged experiments (curriculum, sequential finetuning), from ``results.json``'s data.

One table row per seed and stage (and the direct baseline), a failed or untrained stage with its reason; with the
LLC, each row's final estimate and, under the table, the final LLC per stage across seeds (mean ± sd, with n) and
the last stage against direct training.
"""

from __future__ import annotations

from typing import Any

from grokscope.viz.text import MISSING, mean_sd, number, percent


def llc_cell(value: dict[str, Any] | None) -> str:
    """One table cell: the final LLC, mean ± between-chain sd, flagged when the sampler did not converge and when it
    is negative (the chains found lower loss than the checkpoint's: it is not at a local minimum, where the LLC is
    defined, e.g. in a loss spike)."""
    if not value or value.get("llc_mean") is None:
        return MISSING
    text = mean_sd({"mean": value["llc_mean"], "sd": value.get("llc_std")}, ".1f")
    flags = []
    if not value.get("converged"):
        flags.append("unconverged")
    if value["llc_mean"] < 0:
        flags.append("negative: not at a minimum")
    return text + (f" ({'; '.join(flags)})" if flags else "")


def llc_lines(summary: dict[str, Any]) -> list[str]:
    """Under the table: the final LLC per stage across seeds (mean ± sd, n), and the last stage against direct."""
    parts = [f"{s['stage']} {mean_sd(s, '.1f')}" for s in summary["stages"]]
    lines = ["final LLC across seeds (mean ± sd): " + ", ".join(parts)]
    test = summary.get("last_stage_vs_direct")
    if test and test.get("welch_p") is not None:
        lines.append(
            f"final LLC {test['a']} vs direct: difference {test['mean_difference']:.1f}, "
            f"Welch p = {test['welch_p']:.3g}"
        )
    return lines


def _failed(row: dict[str, Any]) -> str | None:
    return None if row.get("status", "ok") == "ok" else f"failed: {row.get('error') or 'did not finish'}"


def _table(result: dict[str, Any], header: str, cells: Any) -> list[str]:
    rows = result["stages"]
    with_llc = "llc" in result
    lines = [header + (" | final LLC" if with_llc else "")]
    for r in rows:
        failed = _failed(r)
        line = f"{r['seed']} | {r['stage']} | " + (failed if failed else cells(r))
        lines.append(line + (f" | {llc_cell(r.get('llc'))}" if with_llc and not failed else ""))
    return lines + (llc_lines(result["llc"]) if with_llc else [])


def describe_curriculum(result: dict[str, Any]) -> list[str]:
    """The curriculum's table: per seed and stage, training pairs, steps and accuracies (stage test, every pair,
    never-trained pairs)."""
    header = "seed | stage | train pairs | steps | stage test acc | acc on every pair | acc on never-trained pairs"
    return _table(
        result,
        header,
        lambda r: (
            f"{r['train_pairs']} | {r['steps']} | {percent(r['test_acc'], 1)} | {percent(r['full_acc'], 1)} | "
            f"{percent(r['unseen_acc'], 1)}"
        ),
    )


def describe_finetune(result: dict[str, Any]) -> list[str]:
    """The finetuning table: per seed and stage, steps, test accuracy, steps to 99% and retention of earlier moduli."""
    header = "seed | stage | steps | test acc | steps to 99% | retention of earlier moduli"

    def cells(r: dict[str, Any]) -> str:
        kept = ", ".join(f"{k} {percent(v)}" for k, v in (r.get("retention") or {}).items()) or MISSING
        reached = "never" if r["steps_to_test_acc_99"] is None else number(r["steps_to_test_acc_99"], "d")
        return f"{r['steps']} | {percent(r['test_acc'], 1)} | {reached} | {kept}"

    return _table(result, header, cells)
