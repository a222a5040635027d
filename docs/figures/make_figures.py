"""Draw the figures of the concept pages from one real quickstart run (about 5 minutes on 2 CPU cores).

    OMP_NUM_THREADS=1 .venv/bin/python docs/figures/make_figures.py            # every figure
    OMP_NUM_THREADS=1 .venv/bin/python docs/figures/make_figures.py dynamics   # the fingerprint and DMD figures only

Trains ``configs/quickstart.yaml`` (with a checkpoint every 20 steps) into ``runs/docs-figures/`` (ignored by git)
with the fingerprint recorder, analyses its checkpoints with grokscope's analysis runner (the progress measures with
one reference key set, the final checkpoint's key frequencies, as ``grokscope analyze`` does by default), and writes
each figure as plotly JSON beside this file (``docs/figures/<name>.json``), where ``docs/hooks.py`` picks them up
when the site is built. Most figures come from grokscope's figure builders (``grokscope.viz``), as ``grokscope
analyze`` draws them; the progress figures carry the run's phases (``grokscope.viz.phases.mark_phases``), which the
command also marks on its other figures over training but the concept pages explain only beside the progress
measures. ``facts.json`` holds the numbers the concept pages quote. Rerun it when an analysis or a figure builder
changes.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.analysis import fourier, neurons
from grokscope.analysis.basis import basis_labels
from grokscope.analysis.dynamics import analyze_dynamics, fit_recording
from grokscope.analysis.fingerprint import FingerprintRecorder, FingerprintSpec, load_recording
from grokscope.analysis.runner import analyze
from grokscope.config import load_config
from grokscope.errors import UserError
from grokscope.store import Run
from grokscope.training import train
from grokscope.viz import dmd as viz_dmd
from grokscope.viz import fingerprint as viz_fingerprint
from grokscope.viz import fourier as viz_fourier
from grokscope.viz import llc as viz_llc
from grokscope.viz import neurons as viz_neurons
from grokscope.viz import progress as viz_progress
from grokscope.viz.phases import mark_phases
from grokscope.viz.report import training_curves

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUN = ROOT / "runs" / "docs-figures" / "quickstart"
CHECKPOINTS = "train.checkpoints={every: 20, dense_every: 10, dense_until: 100}"
LLC_STEPS = (0, 20, 40, 100, 200, 300)  # plus the last checkpoint
# The default probe: 100 inputs drawn from every pair of the task on the probe's own random stream.
PROBE = FingerprintSpec()


def rounded(value, digits: int = 5):
    """Floats rounded to ``digits`` significant digits, so the figure files stay small."""
    if isinstance(value, float):
        return (
            value
            if value == 0 or not math.isfinite(value)
            else round(value, digits - 1 - math.floor(math.log10(abs(value))))
        )
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    return value


def tidy(data: dict) -> dict:
    """The site's look for a figure's JSON: rounded numbers; second y axes with their own ticks (plotly 6+ syncs an
    overlaying axis's ticks to the first axis's grid by default, which labels a log axis with odd values)."""
    data = rounded(data)
    for key, axis in data["layout"].items():
        if key.startswith("yaxis") and isinstance(axis, dict) and axis.get("overlaying"):
            axis["tickmode"] = "auto"
    return data


def save(name: str, figure: go.Figure) -> None:
    figure.update_layout(template="plotly_white", margin={"t": 60, "r": 20})
    data = tidy(json.loads(figure.to_json()))
    (HERE / f"{name}.json").write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {name}.json")


def recorded_with_probe(run: Run) -> bool:
    """Whether the run's recording was made with :data:`PROBE` and saved its probe rows."""
    try:
        recording = load_recording(run)
    except UserError:
        return False
    return recording.spec == PROBE and recording.probe_rows_saved


def trained_run() -> Run:
    """The quickstart run with its fingerprint recording, trained again when the recording used another probe."""
    config = load_config(ROOT / "configs" / "quickstart.yaml", [CHECKPOINTS])
    if (RUN / "summary.json").is_file() and recorded_with_probe(Run.open(RUN)):
        return Run.open(RUN)
    train(config, RUN, device="cpu", overwrite=True, callbacks=[FingerprintRecorder(every=2, spec=PROBE)])
    return Run.open(RUN)


def dynamics_figures(run: Run, metrics: list[dict]) -> dict:
    """The fingerprint recording and its DMD (the default rrr fit, and the projected fit beside it); their facts."""
    recording = load_recording(run)
    save(
        "fingerprint_recording",
        viz_fingerprint.quantile_figure(
            recording.steps.tolist(),
            list(recording.spec.quantiles),
            recording.values["log_prob"].tolist(),
            f"Fingerprint every {recording.every} steps: quantiles of log p(answer), 100 probe inputs",
        ),
    )
    dynamics = analyze_dynamics(run, out_dir=RUN / "analysis")
    for name, figure in viz_dmd.figures(dynamics.result, dynamics.windowed, metrics).items():
        save(name, figure)
    projected = fit_recording(recording, method="projected")
    save("dmd_spectrum_projected", viz_dmd.figures(projected.to_dict(), None, metrics)["dmd_spectrum"])
    keys = ("rank", "n_delays", "n_snapshots", "spectral_radius", "reconstruction_error", "center")
    return {
        "dmd": {k: dynamics.result[k] for k in keys},
        "dmd_projected": {k: projected.to_dict()[k] for k in keys},
        "probe": {k: dynamics.probe[k] for k in ("in_train", "in_test")} | {"size": len(dynamics.probe["rows"])},
    }


def main() -> None:
    run = trained_run()
    summary, metrics = run.summary(), run.metrics()
    if sys.argv[1:] == ["dynamics"]:
        facts = json.loads((HERE / "facts.json").read_text())
        facts.update(rounded(dynamics_figures(run, metrics), 4))
        (HERE / "facts.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
        return
    last = run.steps()[-1]

    # Grokking: the training curves with the memorization and generalization steps marked.
    curves = training_curves(metrics)
    m, g = summary["memorization_step"], summary["generalization_step"]
    for step in (m, g):
        curves.add_vline(x=step, line={"dash": "dash", "color": "gray"})
    curves.update_layout(
        title=f"Loss (log scale) and accuracy; dashed: memorized (step {m}), generalized (step {g})",
        legend={"orientation": "h", "y": -0.25},
        height=460,
    )
    save("grokking_curves", curves)

    # Every checkpoint; the progress measures with one reference key set for the whole run, the final checkpoint's
    # key frequencies (key_from="final", the default of `grokscope analyze`), as Nanda et al. track them.
    report = analyze(
        run, ["fourier", "neurons", "progress"], out_dir=RUN / "analysis", progress=False, key_from="final"
    )
    fourier_rows, neuron_rows = report.rows["fourier"], report.rows["neurons"]
    progress_rows, phases = report.rows["progress"], report.summaries["progress"]
    for name, figure in viz_fourier.figures(fourier_rows, metrics).items():
        save(name, figure)
    for name, figure in viz_neurons.figures(neuron_rows, metrics).items():
        save(name, figure)
    # progress_measures, logit_cos_coefficients, gini_and_weight_norm, single_frequency_excluded: phases shaded.
    for name, figure in viz_progress.figures(progress_rows, metrics).items():
        save(name, mark_phases(figure, phases))

    # The embedding in the Fourier basis, at initialisation and at the end.
    task = run.task
    labels = basis_labels(task.modulus)
    embedding = go.Figure()
    for step, color in ((0, "lightgray"), (last, "steelblue")):
        result = fourier.compute(run.load_model(step), task)
        embedding.add_bar(x=labels, y=result.embedding_basis_norms.tolist(), name=f"step {step}", marker_color=color)
    embedding.update_layout(
        title="Norm of the number embeddings along each Fourier basis vector",
        xaxis_title="basis vector",
        yaxis_title="norm over d_model",
        barmode="group",
    )
    save("embedding_basis", embedding)

    # One neuron of the largest cluster: its activation over every (a, b).
    model = run.load_model(last)
    result = neurons.compute(model, task)
    clusters = result.clusters()
    frequency = max(clusters, key=lambda k: len(clusters[k]))
    neuron = clusters[frequency][0]
    acts = neurons.neuron_activations(model, task)[:, :, neuron]
    # Relabelling every number x as k x mod p (a bijection: p is prime) turns cos(w_k (a + b)) into one slow wave.
    p = task.modulus
    order = [(pow(frequency, -1, p) * x) % p for x in range(p)]
    relabelled = acts[order][:, order]
    heatmap = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.12,
        subplot_titles=("over (a, b)", f"over ({frequency}a mod {p}, {frequency}b mod {p})"),
    )
    for col, table in ((1, acts), (2, relabelled)):
        heatmap.add_heatmap(
            z=rounded(table.tolist(), 4),
            coloraxis="coloraxis",
            hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>",
            row=1,
            col=col,
        )
        heatmap.update_yaxes(autorange="reversed", scaleanchor=f"x{col if col > 1 else ''}", row=1, col=col)
    heatmap.update_xaxes(title_text="b", row=1, col=1)
    heatmap.update_yaxes(title_text="a", row=1, col=1)
    heatmap.update_xaxes(title_text=f"{frequency}b mod {p}", row=1, col=2)
    heatmap.update_yaxes(title_text=f"{frequency}a mod {p}", row=1, col=2)
    fve = float(result.fve[frequency - 1, neuron])
    heatmap.update_layout(
        title=f"Neuron {neuron} at step {last}: FVE {fve:.2f} on frequency {frequency}",
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": "activation"}},
        height=480,
    )
    save("neuron_activation", heatmap)

    # Fingerprints recorded during training, and their DMD.
    dynamics = dynamics_figures(run, metrics)

    # The local learning coefficient at a few checkpoints (default sampler settings).
    steps = sorted({*LLC_STEPS, last} & set(run.steps()))
    llc = analyze(run, ["llc"], steps=steps, out_dir=RUN / "analysis", progress=False).rows["llc"]
    for name, figure in viz_llc.figures(llc, metrics).items():
        save(name, figure)

    facts = {
        "steps_trained": summary["steps_trained"],
        "memorization_step": summary["memorization_step"],
        "generalization_step": summary["generalization_step"],
        "generalization_ratio": summary["generalization_ratio"],
        "key_frequencies": fourier_rows[-1]["key_frequencies"],
        "rules": fourier_rows[-1]["rules"],
        "neurons": {k: neuron_rows[-1][k] for k in ("fraction_clustered", "mean_max_fve", "n_dead")},
        # Losses per split; the paper's headlines are restricted loss on "all" and excluded loss on "train".
        "progress": [
            {
                "step": r["step"],
                **{f"{k}_loss": r[k]["loss"] for k in ("full", "restricted", "excluded")},
                **{k: r[k] for k in ("gini_embed", "gini_unembed", "weight_norm_sq")},
            }
            for r in progress_rows
        ],
        "phases": phases,
        "gini": {k: [r["step"], r[k]] for r in progress_rows[-1:] for k in ("gini_embed", "gini_unembed")},
        "neuron": {"index": neuron, "frequency": frequency, "fve": fve},
        **dynamics,
        "llc": [{k: r[k] for k in ("step", "llc_mean", "llc_std", "converged", "r_hat", "drift")} for r in llc],
    }
    (HERE / "facts.json").write_text(json.dumps(rounded(facts, 4), indent=1) + "\n", encoding="utf-8")
    print(json.dumps(rounded(facts, 4), indent=1))


if __name__ == "__main__":
    main()
