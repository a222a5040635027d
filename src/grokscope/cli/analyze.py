"""``grokscope analyze``: run analyses over a run's checkpoints (and DMD over its recording), print a line each.

The analyses' own settings (``--probe-*``, ``--llc-*``, ``--dmd-*``) are not spelled out here: each analysis declares
them as an options model (:mod:`grokscope.analysis.options`), and :func:`command` turns those models into flags when
the command is first needed (building them imports the analyses, and with them torch, which ``grokscope --help`` and
the other commands should not wait for).
"""

from __future__ import annotations

import inspect
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from grokscope.cli.guard import guard
from grokscope.errors import UserError

if TYPE_CHECKING:
    import click

    from grokscope.analysis.options import AnalysisOptions, OptionGroup

HELP = (
    "Analyze a run's checkpoints through TransformerLens hooks; writes analysis/<name>.json, tables and figures.\n\n"
    "--all (the default) runs every checkpoint analysis the task supports except the slow LLC; --dmd and --llc run "
    "only when named. A flag and --only name the same analyses (--ablate is --only ablation).\n\n"
    "DMD reads the fingerprints recorded by `grokscope train --record fingerprint`; the --probe-* and --token-index "
    "settings choose the probe of --fingerprint, and with --dmd they must match the recording's.\n\n"
    "Measures that use key frequencies (progress, ablation) use one reference key set for the whole run: by default "
    "the run's final checkpoint's, whatever --steps select, as Nanda et al. (2023) do. --key-from each|STEP and "
    "--key-frequencies write under analysis/key_from_*/ or analysis/key_frequencies_*/, never over the default's "
    "results."
)
SHORT_HELP = "Analyze a run's checkpoints through TransformerLens hooks; writes analysis/<name>.json, tables and..."

# --only takes the analyses' names and, like the flags, ``ablate`` for ``ablation``.
ANALYSIS_ALIASES = {"ablate": "ablation"}
# The flag that selects an analysis, for messages (``--llc-seed: needs --llc``).
ANALYSIS_FLAGS = {"ablation": "--ablate"}


def parse_steps(text: str) -> list[int]:
    """``"1000,2000"`` -> ``[1000, 2000]``."""
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--steps {text!r}: expected checkpoint steps like 1000,2000") from None


def parse_key_frequencies(text: str) -> list[int]:
    """``"1,21,49"`` -> ``[1, 21, 49]``."""
    try:
        keys = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--key-frequencies {text!r}: expected frequencies like 1,21,49") from None
    if not keys:
        raise UserError(f"--key-frequencies {text!r}: no frequency given (e.g. 1,21,49)")
    return keys


def only_names(only: str | None) -> list[str]:
    """``--only fourier,ablate`` -> ``["fourier", "ablation"]``; an unknown name is a one-line error."""
    names = [n.strip() for n in (only or "").split(",") if n.strip()]
    if not names:
        return []
    from grokscope.analysis.dynamics import NAME as DMD
    from grokscope.analysis.runner import registry

    known = [*registry(), DMD]
    for name in names:
        if ANALYSIS_ALIASES.get(name, name) not in known:
            raise UserError(f"--only: unknown analysis {name!r} (known: {', '.join(known)}; ablate for ablation)")
    return [ANALYSIS_ALIASES.get(n, n) for n in names]


def _parameter(options: type[AnalysisOptions], field: str) -> str:
    """The Python name typer gives a flag's value (``--dmd-delays`` -> ``dmd_delays``)."""
    return options.flag(field).lstrip("-").replace("-", "_")


def option_parameters(groups: list[OptionGroup]) -> list[inspect.Parameter]:
    """The keyword parameters (typer options, None when not given) of every analysis option."""
    params = []
    for group in groups:
        model = group.options
        for field, flag in model.flags().items():
            shown = f" \\[default: {flag.default}]" if flag.default else ""
            option = typer.Option(
                model.flag(field), help=f"{model.HELP_PREFIX}{flag.help}{shown}", metavar=flag.metavar
            )
            annotation = Annotated[model.flag_type(field) | None, option]  # type: ignore[operator]
            params.append(
                inspect.Parameter(
                    _parameter(model, field), inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation
                )
            )
    return params


def chosen_options(
    groups: list[OptionGroup], values: dict[str, Any], selected: list[str]
) -> dict[type[AnalysisOptions], AnalysisOptions]:
    """The options given on the command line, validated, by model. An option of an analysis that is not selected
    is a one-line error naming the flag and the analysis (or analyses) that take it."""
    chosen = {}
    for group in groups:
        model = group.options
        given = {f: values[_parameter(model, f)] for f in model.flags() if values.get(_parameter(model, f)) is not None}
        if not given:
            continue
        if not set(group.analyses) & set(selected):
            flags = [ANALYSIS_FLAGS.get(name, f"--{name}") for name in group.analyses]
            first = model.flag(next(iter(given)))
            needs = f"needs {flags[0]}" if len(flags) == 1 else f"applies to {' and '.join(flags)}"
            raise UserError(f"{first}: {needs}")
        from grokscope.analysis.options import validate

        chosen[model] = validate(model, given)
    return chosen


def keywords_for(groups: list[OptionGroup], chosen: dict[Any, AnalysisOptions], analysis: str) -> dict[str, Any]:
    """The keywords analysis ``analysis`` receives from the options given (only those given)."""
    out: dict[str, Any] = {}
    for group in groups:
        if analysis in group.analyses and group.options in chosen:
            out.update(chosen[group.options].keywords())
    return out


def run_analyses(
    path: Path,
    *,
    fourier: bool,
    neurons: bool,
    progress: bool,
    attention: bool,
    ablate: bool,
    gradients: bool,
    fingerprint: bool,
    dmd: bool,
    llc: bool,
    all_: bool,
    only: str | None,
    steps: str | None,
    every: int | None,
    key_frequencies: str | None,
    key_from: str,
    operation: str | None,
    out: Path | None,
    device: str,
    figures: bool,
    quiet: bool,
    groups: list[OptionGroup],
    option_values: dict[str, Any],
) -> None:
    """The body of ``grokscope analyze`` (see :data:`HELP`)."""
    from grokscope.analysis.dynamics import NAME as DMD
    from grokscope.analysis.dynamics import PROBE_FIELDS
    from grokscope.analysis.reference import variant_folder
    from grokscope.analysis.runner import analysis_summary, default_analyses
    from grokscope.analysis.runner import analyze as analyze_run
    from grokscope.store import Run
    from grokscope.training.loop import resolve_device
    from grokscope.viz.describe import describe_phases, describe_row
    from grokscope.viz.write import write_analysis_figures, write_figures

    flags = dict(
        fourier=fourier,
        neurons=neurons,
        progress=progress,
        attention=attention,
        ablation=ablate,
        gradients=gradients,
        fingerprint=fingerprint,
        llc=llc,
        dmd=dmd,
    )
    names = [name for name, on in flags.items() if on]
    names += only_names(only)
    want_dmd = DMD in names
    names = [n for n in names if n != DMD]
    everything = all_ or not (names or want_dmd)
    if everything:
        names = default_analyses()
    names = list(dict.fromkeys(names))  # in the order asked for (flags first), once each
    if steps and every:
        raise UserError("--steps and --every contradict each other; pick one")
    keys = parse_key_frequencies(key_frequencies) if key_frequencies is not None else None
    if keys is not None and key_from != "final":
        raise UserError("--key-frequencies and --key-from contradict each other; pick one")
    chosen = chosen_options(groups, option_values, [*names, *([DMD] if want_dmd else [])])
    whole = Run.open(path)
    # A run of several operations: each analysis reads one operation's examples; without --operation, every
    # operation in turn, each into analysis/<operation>/ (or --out/<operation>/).
    operations = [operation] if operation or not whole.full_task.is_multi else whole.full_task.operation_names
    files = 0
    for name_of_op in operations if names else []:
        run = whole.for_operation(name_of_op)
        for model, given in chosen.items():  # e.g. a probe larger than the inputs it is drawn from
            if any(name in names for group in groups if group.options is model for name in group.analyses):
                given.check_run(run)
        options = {name: o for name in names if (o := keywords_for(groups, chosen, name))}
        folder = run.analysis_dir if out is None else out / (name_of_op if len(operations) > 1 else "")
        if len(operations) > 1:
            typer.echo(f"operation {name_of_op}:")
        report = analyze_run(
            run,
            names,
            steps=parse_steps(steps) if steps else None,
            every=every,
            out_dir=folder,
            device=str(resolve_device(device)),
            progress=not quiet,
            skip_inapplicable=everything,
            key_frequencies=keys,
            key_from=key_from,
            options=options or None,
        )
        for line in report.notes:
            typer.echo(line)
        for name, reason in report.skipped.items():
            typer.echo(f"{name}: skipped ({reason})")
        for name in [n for n in names if n in report.computed]:
            new = report.computed[name]
            typer.echo(f"{name}: {len(new)} checkpoint(s) analysed, {report.from_cache(name)} from cache")
            latest = report.latest(name)
            if latest is not None:
                with suppress(KeyError, TypeError, ValueError, AttributeError, IndexError):  # a damaged cached row
                    typer.echo(f"  step {latest['step']}: {describe_row(name, latest)}")
            if name == "progress" and "progress" in report.summaries:  # under the progress lines it comes from
                typer.echo(f"  {describe_phases(report.summaries['progress'])}")
        # A variant key set's results (and their figures) live in a subfolder of their own.
        folder = report.out_dir or folder
        phases = report.summaries.get("progress") or analysis_summary(run, "progress")
        files += len(report.files)
        if figures:
            files += len(write_analysis_figures(report.rows, run.metrics(), folder / "figures", phases))
    # DMD reads the whole run's recording (its probe spans every operation's examples).
    run = whole.for_operation(operation) if operation else whole
    variant = variant_folder(keys, key_from) if names and len(operations) == 1 else None
    base = out or run.analysis_dir  # DMD uses no key set: its results stay in the analysis folder itself
    folder = base / (variant or "")
    if want_dmd:
        from grokscope.analysis.dynamics import analyze_dynamics
        from grokscope.viz.dmd import figures as dmd_figures
        from grokscope.viz.dmd import write_images

        settings = keywords_for(groups, chosen, DMD)
        probe = {name: settings.pop(name) for name in PROBE_FIELDS if name in settings}
        dynamics = analyze_dynamics(run, out_dir=out, probe=probe, **settings)
        if figures:
            phases = analysis_summary(run, "progress")
            drawn = dmd_figures(dynamics.result, dynamics.windowed, run.metrics(), phases=phases)
            files += len(write_figures(drawn, base / "figures"))
            images, why_not = write_images(drawn["dmd_spectrum"], base / "figures", "dmd_spectrum")
            files += len(images)
            if why_not:
                typer.echo(why_not)
        eigenvalues = _complex_pairs(dynamics.result["eigenvalues"])
        radius = max((abs(complex(r, i)) for r, i in eigenvalues), default=0)
        result = dynamics.result
        typer.echo(
            f"dmd ({result['method']}, center {result['center']}): {result['rank']} "
            f"modes over {result['n_snapshots']} fingerprints; "
            f"spectral radius {radius:.4f}, one-step error {result['reconstruction_error']:.3g}"
        )
        files += len(dynamics.files)
    typer.echo(f"wrote {files} file(s) under {folder}")


def _complex_pairs(values: dict) -> list[tuple[float, float]]:
    """``{"re": [...], "im": [...]}`` (how results store complex numbers) as (re, im) pairs."""
    return [(r, i) for r, i in zip(values["re"], values["im"], strict=True) if r is not None and i is not None]


def parameters(
    path: Annotated[Path, typer.Argument(help="A run directory or a bare checkpoints/ folder.")],
    fourier: Annotated[bool, typer.Option("--fourier", help="Fourier spectra and key frequencies.")] = False,
    neurons: Annotated[bool, typer.Option("--neurons", help="Neuron frequency specialization.")] = False,
    progress: Annotated[bool, typer.Option("--progress", help="Restricted/excluded loss, Gini, weight norm.")] = False,
    attention: Annotated[bool, typer.Option("--attention", help="Attention patterns and their Fourier terms.")] = False,
    ablate: Annotated[
        bool, typer.Option("--ablate", "--ablation", help="Head, neuron and frequency ablations (--only ablation).")
    ] = False,
    gradients: Annotated[bool, typer.Option("--gradients", help="Gradient norms, movement and alignment.")] = False,
    fingerprint: Annotated[bool, typer.Option("--fingerprint", help="Quantile fingerprint per checkpoint.")] = False,
    dmd: Annotated[bool, typer.Option("--dmd", help="DMD of the recorded fingerprints (--dmd-* settings).")] = False,
    llc: Annotated[bool, typer.Option("--llc", help="Local learning coefficient (extra grokscope\\[llc]).")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="Every checkpoint analysis (default when none is named).")
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            help="Analyses by name, comma-separated: the flags' names (fourier,ablate) or the analyses' "
            "(fourier,ablation), as analysis/<name>.json names them."
        ),
    ] = None,
    steps: Annotated[str | None, typer.Option(help="Only these checkpoint steps, e.g. 1000,2000.")] = None,
    every: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Only checkpoints whose step is a multiple of N.")
    ] = None,
    key_frequencies: Annotated[
        str | None, typer.Option(help="Reference key set for every checkpoint, e.g. 1,21,49 (default: --key-from).")
    ] = None,
    key_from: Annotated[
        str, typer.Option(help="Where the reference key set comes from: final (checkpoint), each, or a step.")
    ] = "final",
    operation: Annotated[
        str | None,
        typer.Option(
            help="A multi-operation run: analyse this operation's examples (default: each operation in turn, into "
            "analysis/<operation>/)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Where to write results (default: <run>/analysis).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    figures: Annotated[bool, typer.Option(help="Write plotly figures under analysis/figures/.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    **option_values: Any,
) -> None:
    """The fixed parameters of ``grokscope analyze``, as typer reads them; :func:`command` adds each analysis's
    option flags and a callback that runs :func:`run_analyses` (this function is never called)."""


def command() -> click.Command:
    """``grokscope analyze`` as a click command: the fixed parameters of :func:`parameters` and every analysis's options
    (from :func:`grokscope.analysis.options.option_groups`)."""
    from grokscope.analysis.options import option_groups

    groups = option_groups()
    fixed = [p for p in inspect.signature(parameters, eval_str=True).parameters.values() if p.kind != p.VAR_KEYWORD]
    extra = option_parameters(groups)
    names = {p.name for p in fixed}

    def callback(**values: Any) -> None:
        option_values = {k: v for k, v in values.items() if k not in names}
        arguments = {k: v for k, v in values.items() if k in names}

        def work() -> None:
            run_analyses(**arguments, groups=groups, option_values=option_values)

        guard(work, "interrupted: the checkpoints analysed so far are cached; run the same command again to continue")

    callback.__signature__ = inspect.Signature([*fixed, *extra])  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in [*fixed, *extra]}
    single = typer.Typer()
    single.command("analyze", help=HELP)(callback)
    built = typer.main.get_command(single)
    built.name = "analyze"
    return built
