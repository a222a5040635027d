"""One line of the most telling numbers of an analysis row, for the command line and the report."""

from __future__ import annotations

from typing import Any


def describe_row(name: str, row: dict[str, Any]) -> str:
    """One line of the most telling numbers of an analysis result."""

    if name == "fourier":
        rules = "; ".join(f"{rule} {found}" for rule, found in row["rules"].items())
        return f"key frequencies {row['key_frequencies']} ({rules})"
    if name == "neurons":
        return (
            f"{row['fraction_clustered']:.0%} of neurons clustered (FVE >= {row['cluster_threshold']}) on "
            f"{row['n_cluster_frequencies']} frequencies; mean max FVE {row['mean_max_fve']:.2f}"
        )
    if name == "progress":
        train = "train" if "train" in row["excluded"]["loss"] else "all"
        return (
            f"key frequencies {row['key_frequencies']} ({row.get('key_reference', 'given')}): restricted loss (all) "
            f"{row['restricted']['loss']['all']:.3g}, excluded loss ({train}) {row['excluded']['loss'][train]:.3g} "
            f"vs full {row['full']['loss'][train]:.3g}; Gini W_E {row['gini_embed']:.2f}"
        )
    if name == "attention":
        return "; ".join(
            f"{h['label']} attends " + " ".join(f"{k} {v:.2f}" for k, v in h["mean_attention"].items())
            for h in row["heads"]
        )
    if name == "ablation":
        roles = {r["role"]: r for r in row["ablations"] if r["role"] and r["component"] == "embed_frequencies"}
        clean = f"clean test acc {row['clean']['test_acc']:.1%}"
        if "key" in roles and "control" in roles:
            return (
                f"{clean}; key frequencies ablated {roles['key']['test_acc']:.1%}, "
                f"as many others {roles['control']['test_acc']:.1%}"
            )
        worst = min(row["ablations"], key=lambda r: r["test_acc"], default=None)
        return clean + (f"; most damaging {worst['label']} -> {worst['test_acc']:.1%}" if worst else "")
    if name == "llc":
        state = "converged" if row["converged"] else "NOT converged (see r_hat, spread, drift)"
        return f"LLC {row['llc_mean']:.1f} ± {row['llc_std']:.1f} over {len(row['llc_per_chain'])} chains, {state}"
    if name == "fingerprint":
        median = row["log_prob"][len(row["log_prob"]) // 2]
        return f"median log p(answer) {median:.3g}, q0.05 {row['log_prob'][0]:.3g}"
    if name == "gradients":
        moved = row.get("update_ratio_total_per_step")
        extra = f", moved {moved:.3g} of its norm per step since the previous checkpoint" if moved is not None else ""
        return f"training loss {row['loss']:.3g}, gradient norm {row['grad_norm']:.3g}{extra}"
    return ""


def describe_phases(phases: dict[str, Any]) -> str:
    """The phase boundaries of a run (``analysis/progress.summary.json``) in one line."""
    parts = [
        f"{label} until step {phases[key]}" if phases.get(key) is not None else f"{label}: not reached"
        for key, label in (
            ("memorization_end", "memorization"),
            ("circuit_formation_end", "circuit formation"),
            ("cleanup_end", "cleanup"),
        )
    ]
    return "phases: " + "; ".join(parts)
