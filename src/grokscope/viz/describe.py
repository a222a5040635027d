"""One line of the most telling numbers of an analysis row, for the command line and the report."""

from __future__ import annotations

from typing import Any

from grokscope.viz.ablation import SPACES, short_label


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
        clean = f"clean test acc {row['clean']['test_acc']:.1%}"
        # Key vs control per space: first the embedding, then the neurons (their directions, or their cells).
        pairs = []
        for component, space in SPACES.items():
            roles = {r["role"]: r["test_acc"] for r in row["ablations"] if r["role"] and r["component"] == component}
            if "key" in roles and "control" in roles:
                pairs.append((roles["key"], roles["control"], space))
        if pairs:
            (key, control, space), *others = pairs
            text = f"{clean}; key frequencies ablated {key:.1%}, as many others {control:.1%} ({space})"
            return text + "".join(f"; {key:.1%} and {control:.1%} ({space})" for key, control, space in others)
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


# One sentence per report section: what its figures show and the numbers that matter, from the analysis rows ----------
def _g(value: float) -> str:
    """Three significant digits, without an exponent for thousands (1170, not 1.17e+03)."""
    return f"{value:.0f}" if 1e3 <= abs(value) < 1e6 else f"{value:.3g}"


def _key_share(norms: list[float], keys: list[int]) -> float:
    """The share of a spectrum's squared norm on the key frequencies (``norms[k - 1]`` is frequency k's norm)."""
    total = sum(n * n for n in norms)
    return sum(norms[k - 1] ** 2 for k in keys) / total if total else 0.0


def _fourier_story(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    keys = last["key_frequencies"]
    rules = last["rules"]
    agree = all(sorted(found) == sorted(keys) for found in rules.values())
    how = "every rule agrees" if agree else "; ".join(f"{rule} {found}" for rule, found in rules.items())
    text = f"At step {last['step']} the key frequencies are {', '.join(map(str, keys)) or 'none'} ({how})"
    if keys:
        share = _key_share(last["embedding_norms"], keys)
        text += f"; they hold {share:.0%} of the embedding's squared norm"
        if first is not last:
            text += f", against {_key_share(first['embedding_norms'], keys):.0%} at step {first['step']}"
    return text + "."


def _neurons_story(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    live = last["n_neurons"] - last["n_dead"]
    text = (
        f"At step {last['step']}, {last['fraction_clustered']:.0%} of the {live} live neurons are clustered on one "
        f"frequency (FVE ≥ {last['cluster_threshold']}), on {last['n_cluster_frequencies']} frequencies; "
        "mean largest "
        f"FVE {last['mean_max_fve']:.2f}"
    )
    if first is not last:
        text += f" (step {first['step']}: {first['fraction_clustered']:.0%} clustered, {first['mean_max_fve']:.2f})"
    return text + "."


def _progress_story(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    train = "train" if "train" in last["excluded"]["loss"] else "all"
    keys = ", ".join(map(str, last["key_frequencies"])) or "none"
    return (
        f"With only the key frequencies {keys} kept, the loss on all inputs (restricted loss) is "
        f"{_g(last['restricted']['loss']['all'])} at step {last['step']} (step {first['step']}: "
        f"{_g(first['restricted']['loss']['all'])}); with them removed, the {train} loss (excluded loss) is "
        f"{_g(last['excluded']['loss'][train])} against the full model's {_g(last['full']['loss'][train])}; the "
        f"Gini coefficient of W_E's frequency norms went from {first['gini_embed']:.2f} to {last['gini_embed']:.2f} "
        f"and the sum of squared weights from {_g(first['weight_norm_sq'])} to {_g(last['weight_norm_sq'])}."
    )


def _attention_story(rows: list[dict[str, Any]]) -> str:
    last = rows[-1]
    heads = "; ".join(
        f"{h['label']} " + ", ".join(f"{k} {v:.2f}" for k, v in h["mean_attention"].items()) for h in last["heads"]
    )
    return f"Mean attention from the answer position at step {last['step']}: {heads}."


def _ablation_story(rows: list[dict[str, Any]]) -> str:
    last = rows[-1]
    text = f"At step {last['step']}, {describe_row('ablation', last)}"
    heads = [a for a in last["ablations"] if a["component"] == "head"]
    if heads:
        worst = min(heads, key=lambda a: a["test_acc"])
        text += f"; the most damaging head ablation, {short_label(worst)}, leaves {worst['test_acc']:.1%}"
    return text + "."


def _gradients_story(rows: list[dict[str, Any]]) -> str:
    last = rows[-1]
    text = (
        f"At step {last['step']} the training loss is {_g(last['loss'])} and its gradient norm {_g(last['grad_norm'])}"
    )
    moved = [r for r in rows if r.get("update_ratio_total_per_step") is not None]
    if moved:
        top = max(moved, key=lambda r: r["update_ratio_total_per_step"])
        text += (
            f"; the weights moved {_g(moved[-1]['update_ratio_total_per_step'])} of their norm per step by then, "
            f"{_g(top['update_ratio_total_per_step'])} at most (step {top['step']})"
        )
        if moved[-1].get("grad_cosine_previous") is not None:
            text += f", and consecutive gradients have cosine {moved[-1]['grad_cosine_previous']:.2f}"
    return text + "."


def _fingerprint_story(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    mid = len(last["log_prob"]) // 2
    return (
        f"The median log p(correct answer) on the probe inputs goes from {_g(first['log_prob'][mid])} at step "
        f"{first['step']} to {_g(last['log_prob'][mid])} at step {last['step']}; the {last['quantiles'][0]:.0%} "
        f"quantile from {_g(first['log_prob'][0])} to {_g(last['log_prob'][0])}."
    )


def _llc_story(rows: list[dict[str, Any]]) -> str:
    first, last = rows[0], rows[-1]
    top = max(rows, key=lambda r: r["llc_mean"])
    converged = sum(bool(r.get("converged")) for r in rows)
    return (
        f"The local learning coefficient is {first['llc_mean']:.1f} ± {first['llc_std']:.1f} at step {first['step']}, "
        f"{top['llc_mean']:.1f} at its highest (step {top['step']}) and "
        f"{last['llc_mean']:.1f} ± {last['llc_std']:.1f} "
        f"at step {last['step']}; the sampler converged at {converged} of {len(rows)} checkpoints."
    )


STORIES = {
    "progress": _progress_story,
    "fourier": _fourier_story,
    "neurons": _neurons_story,
    "attention": _attention_story,
    "ablation": _ablation_story,
    "gradients": _gradients_story,
    "fingerprint": _fingerprint_story,
    "llc": _llc_story,
}


def describe_over_training(name: str, rows: list[dict[str, Any]]) -> str:
    """One sentence of the numbers that matter in an analysis's rows (ascending steps) from first to last; empty for
    an analysis without one."""
    story = STORIES.get(name)
    return story(rows) if story and rows else ""


def describe_dmd(result: dict[str, Any], windows: dict[str, Any] | None) -> str:
    """One sentence of a DMD fit (``dmd.json``): its size, spectral radius and residual, and where the sliding
    windows fit worst."""
    text = (
        f"A rank-{result['rank']} DMD ({result.get('method', 'rrr')}, {result['n_delays']} delays) of "
        f"{result['n_snapshots']} recorded fingerprints has spectral radius {result['spectral_radius']:.4f} and a "
        f"one-step residual of {_g(result['reconstruction_error'])}"
    )
    windows = windows or {}
    steps, residuals = windows.get("step", []), windows.get("residual", [])
    scored = [(s, r) for s, r in zip(steps, residuals, strict=True) if r is not None]
    if scored:
        step, worst = max(scored, key=lambda p: p[1])
        text += f"; over windows of {windows['window']} snapshots the residual is largest ({_g(worst)}) at step {step}"
    return text + "."
