"""The ``grokscope`` command line: thin typer commands that parse, wire the library together and print.

Heavy imports (torch, TransformerLens) happen inside the commands so ``grokscope --help`` answers at once.
A :class:`~grokscope.errors.UserError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import glob
import re
import shutil
import signal
import sys
import threading
import typing
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

try:  # typer >= 0.22 carries its own copy of click; earlier versions use click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer
    from click.exceptions import NoArgsIsHelpError, UsageError

from grokscope import __version__
from grokscope.errors import UserError


class OneLineUsageErrors(TyperGroup):
    """Usage mistakes (an unknown flag, a bad value, a missing argument) as one ``error:`` line and exit code 2, like
    every other user error, instead of click's boxed usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as err:
            typer.echo(err.ctx.get_help() if err.ctx else str(err))
            result = 0
        except UsageError as err:
            where = f"{err.ctx.command_path}: " if err.ctx else ""
            typer.echo(f"error: {where}{err.format_message()}", err=True)
            result = err.exit_code
        except typer.Abort:
            typer.echo("interrupted", err=True)
            result = 130
        if not standalone_mode:
            return result
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    cls=OneLineUsageErrors,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish and PowerShell
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train, analyze and compare grokking transformers on modular arithmetic.",
)
T = TypeVar("T")


EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_RUNS_FAILED = 1  # an experiment finished, but some of its runs failed
MAX_SEEDS = 10_000  # in one command: each seed is a run directory, and the list itself is built up front
MAX_SEED = 2**32 - 1  # what every generator seeding accepts (config.seed's bound)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which handles it itself): stop like Ctrl-C, with the shell's exit code."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _guard(work: Callable[[], T], interrupted: str = "interrupted") -> T:
    """Run a command body: user errors become one line and exit code 2; an interrupt (Ctrl-C, SIGTERM) says how
    to continue (``interrupted``) and exits 130 or 143."""
    previous = (
        signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        return work()
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except OSError as err:  # a path the user gave: missing, read-only, full, a file where a folder should be
        where = f"{err.filename}: " if err.filename else ""
        typer.echo(f"error: {where}{err.strerror or err}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except KeyboardInterrupt as err:
        # Duck-typed, importing nothing: an interrupt may land while torch is half imported.
        if hasattr(err, "signal_name") and hasattr(err, "run_dirs"):
            dirs = ", ".join(str(d) for d in err.run_dirs)
            typer.echo(
                f"interrupted by {err.signal_name} at step {err.step}: saved a checkpoint and the resume state of "
                f"{dirs}; continue with the same command and --resume",
                err=True,
            )
            raise typer.Exit(err.exit_code) from None
        term = isinstance(err, Terminated) or getattr(err, "signal_name", None) == "SIGTERM"
        typer.echo(f"{interrupted} ({'SIGTERM' if term else 'SIGINT'})", err=True)
        raise typer.Exit(143 if term else 130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"1,3,7"`` or ``"0-3,8"`` -> a sorted list of distinct seeds (at most :data:`MAX_SEEDS`)."""
    ranges = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise UserError(f"--seeds {text!r}: expected seeds like 0-4 or 1,3,7")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi > MAX_SEED:
            raise UserError(f"--seeds {text!r}: seed {hi} is out of range (seeds are 0..{MAX_SEED})")
        ranges.append((lo, hi))
    merged: list[list[int]] = []  # counted before any list is built: "0-1000000" is refused at once
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    count = sum(hi - lo + 1 for lo, hi in merged)
    if count > MAX_SEEDS:
        raise UserError(f"--seeds {text!r}: {count:,} seeds; at most {MAX_SEEDS:,} in one command")
    return [s for lo, hi in merged for s in range(lo, hi + 1)]


def config_file(config: Path, command: str) -> Path:
    """The file a CONFIG argument names (a path that exists, else a preset), checked to be the kind ``command``
    runs: ``train`` a run config, ``experiment`` one with a ``kind``."""
    from grokscope.presets import RUN, config_kind, resolve

    path = resolve(config)
    kind = config_kind(path)
    if command == "train" and kind != RUN:
        raise UserError(f"{config}: an experiment config (kind: {kind}); run it with grokscope experiment {config}")
    if command == "experiment" and kind == RUN:
        raise UserError(f"{config}: a run config (it has no kind:); train it with grokscope train {config}")
    return path


def complete_config(incomplete: str) -> list[str]:
    """Shell completion of CONFIG: the presets starting with what was typed, and the config files and folders here
    that do. Nothing once a folder is typed, so that the shell completes the path itself."""
    if "/" in incomplete or "\\" in incomplete:
        return []
    from grokscope.presets import SUFFIXES, names

    here = sorted(
        p.name + ("/" if p.is_dir() else "")
        for p in Path.cwd().glob(f"{glob.escape(incomplete)}*")
        if p.is_dir() or p.suffix in SUFFIXES
    )
    return [n for n in names() if n.startswith(incomplete)] + here


def _version(value: bool) -> None:
    if value:
        typer.echo(f"grokscope {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train, analyze and compare grokking transformers on modular arithmetic."""


@app.command()
def train(
    config: Annotated[
        Path,
        typer.Argument(
            help="A YAML or TOML run config, or a preset's name (grokscope configs lists them): "
            "quickstart, configs/quickstart.yaml.",
            autocompletion=complete_config,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder in which run directories are created.")] = Path("runs"),
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config field: --set optim.lr=3e-3 (repeatable).")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="Run name: the run directory under --out (default: the config's name, else its file name). "
            "--set does not rename a run: give runs that differ a --name of their own."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Train these seeds (0-4, 1,3,7) into OUT/NAME_seedK, one folder each.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its last checkpoint.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Delete an existing run directory and start over.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    record: Annotated[
        list[str] | None,
        typer.Option(help="Record into recordings/: gradients (per-component norms), fingerprint (quantiles)."),
    ] = None,
    record_every: Annotated[int, typer.Option(min=1, metavar="N", help="Record every N steps.")] = 10,
    log: Annotated[
        list[str] | None,
        typer.Option(
            help="Also log every evaluation's metrics to tensorboard (into RUN/tensorboard/; extra "
            "grokscope\\[tensorboard]) or wandb (RUN/wandb/, offline unless WANDB_MODE says otherwise; extra "
            "grokscope\\[wandb]). Repeatable."
        ),
    ] = None,
    pack: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="With --seeds: train this many seeds at once (default 1 on the CPU, what fits on a GPU).",
        ),
    ] = None,
) -> None:
    """Train a model (or several seeds) on a modular-arithmetic task; writes runs/<name>/ and prints where it grokked."""

    def work() -> None:
        from grokscope.config import load_config, parse_config
        from grokscope.training import describe, describe_final
        from grokscope.training import train as train_run

        if resume and overwrite:
            raise UserError("--resume and --overwrite contradict each other; pick one")
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out}: is a file, not a folder")
        base = load_config(config_file(config, "train"), set_ or [])
        if name is not None:
            base = parse_config({**base.to_dict(), "name": name}, source="--name")
        jobs = (
            [(base, out / base.name)]
            if seeds is None
            else [(base.with_seed(s), out / f"{base.name}_seed{s}") for s in parse_seeds(seeds)]
        )
        from grokscope.loggers import make_loggers
        from grokscope.recorders import make_recorders

        make_recorders(record or [], record_every)  # a bad name (or a logger not installed) fails before any run
        make_loggers(log or [])
        if resume:  # a CPU run continued on another CPU kind, thread count or torch: one line saying so
            from grokscope.training.loop import resolve_device, resume_notes

            for note in resume_notes([run_dir for _, run_dir in jobs], resolve_device(device)):
                typer.echo(note, err=True)
        options = dict(device=device, resume=resume, overwrite=overwrite, progress=not quiet)
        if record or log:  # callbacks watch one GrokTransformer each: seeds then train one after another
            from grokscope.rundir import check_claimable

            check_claimable([run_dir for _, run_dir in jobs], resume=resume, overwrite=overwrite)
            results = [
                train_run(
                    cfg,
                    run_dir,
                    callbacks=[*make_recorders(record or [], record_every), *make_loggers(log or [])],
                    **options,
                )
                for cfg, run_dir in jobs
            ]
        else:
            from grokscope.training.many import train_many

            results = train_many([cfg for cfg, _ in jobs], [run_dir for _, run_dir in jobs], pack=pack, **options)
        diverged = 0
        for (_, run_dir), result in zip(jobs, results, strict=True):
            s = result.summary
            if result.resumed_from is not None:
                typer.echo(f"{run_dir}: resumed from step {result.resumed_from}")
            if result.diverged is not None:
                diverged += 1
                typer.echo(f"{run_dir}: {describe_divergence(result.diverged)}", err=True)
                continue
            final = s["final"]
            typer.echo(f"{run_dir}: {describe(s)}")
            typer.echo(f"  {describe_final(s)}")
            for op, per_op in (s.get("operations") or {}).items():
                accuracy = (
                    f"train acc {final.get(f'train_acc_{op}', 0):.2%}, test acc {final.get(f'test_acc_{op}', 0):.2%}"
                )
                typer.echo(f"  {op}: {accuracy}; {describe(per_op)}")
        if diverged:
            raise typer.Exit(EXIT_DIVERGED)

    _guard(work, "interrupted before a checkpoint could be saved; continue with the same command and --resume")


def describe_divergence(diverged: dict) -> str:
    """One line for ``summary["diverged"]``."""
    what = "the weights" if diverged["metric"] == "weights" else diverged["metric"]
    kept = diverged.get("last_checkpoint")
    tail = f"kept the checkpoints up to step {kept}" if kept is not None else "no finite checkpoint was saved"
    return f"diverged: {what} became non-finite (NaN or inf) by step {diverged['step']}; stopped and {tail}"


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


@app.command()
def analyze(
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
    llc_lr: Annotated[float | None, typer.Option(help="LLC: SGLD step size. \\[default: 2e-4]")] = None,
    llc_n_beta: Annotated[float | None, typer.Option(help="LLC: inverse temperature. \\[default: n / ln n]")] = None,
    llc_localization: Annotated[float | None, typer.Option(help="LLC: localization strength. \\[default: 100]")] = None,
    llc_num_chains: Annotated[int | None, typer.Option(help="LLC: SGLD chains. \\[default: 4]")] = None,
    llc_num_draws: Annotated[int | None, typer.Option(help="LLC: draws per chain. \\[default: 150]")] = None,
    llc_num_burnin: Annotated[int | None, typer.Option(help="LLC: burn-in steps per chain. \\[default: 150]")] = None,
    llc_batch_size: Annotated[
        str | None, typer.Option(help="LLC: mini-batch rows, or full for the full batch. \\[default: 128]")
    ] = None,
    llc_seed: Annotated[int | None, typer.Option(help="LLC: sampler seed. \\[default: 0]")] = None,
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
    dmd_method: Annotated[
        str | None,
        typer.Option(
            help="DMD estimator: rrr (reduced-rank regression) or projected (POD-projected DMD). \\[default: rrr]"
        ),
    ] = None,
    dmd_delays: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="DMD delay-embedding depth. \\[default: 32]")
    ] = None,
    dmd_rank: Annotated[int | None, typer.Option(min=1, metavar="N", help="DMD rank. \\[default: 10]")] = None,
    dmd_center: Annotated[
        str | None,
        typer.Option(
            help="Centering before the DMD fit: per_snapshot_mean, time_mean, relative_to_t0 or none. "
            "\\[default: per_snapshot_mean for rrr, time_mean for projected]"
        ),
    ] = None,
    dmd_observable: Annotated[
        str | None,
        typer.Option(help="Fingerprint observable for DMD: log_prob, margin or entropy. \\[default: log_prob]"),
    ] = None,
    dmd_window: Annotated[
        int | None,
        typer.Option(
            min=1, metavar="N", help="Snapshots per sliding DMD window. \\[default: max(2 (delays + rank), T/8)]"
        ),
    ] = None,
    probe_seed: Annotated[
        int | None,
        typer.Option(min=0, metavar="N", help="Fingerprint probe seed (--fingerprint; --dmd checks the recording's)."),
    ] = None,
    probe_from: Annotated[
        str | None,
        typer.Option(
            help="Draw the fingerprint probe from all inputs, the train set or the test set. \\[default: all]"
        ),
    ] = None,
    probe_size: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Fingerprint probe size. \\[default: 100]")
    ] = None,
    token_index: Annotated[
        int | None, typer.Option(help="Fingerprint token position. \\[default: the answer position]")
    ] = None,
) -> None:
    """Analyze a run's checkpoints through TransformerLens hooks; writes analysis/<name>.json, tables and figures.

    --all (the default) runs every checkpoint analysis the task supports except the slow LLC; --dmd and --llc run only when named. A flag and --only name the same analyses (--ablate is --only ablation).

    DMD reads the fingerprints recorded by `grokscope train --record fingerprint`; the --probe-* and --token-index settings choose the probe of --fingerprint, and with --dmd they must match the recording's.

    Measures that use key frequencies (progress, ablation) use one reference key set for the whole run: by default the run's final checkpoint's, whatever --steps select, as Nanda et al. (2023) do. --key-from each|STEP and --key-frequencies write under analysis/key_from_*/ or analysis/key_frequencies_*/, never over the default's results.
    """
    # The paragraphs above are one line each: typer's help keeps a docstring's line breaks where they are.

    def work() -> None:
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
        want_dmd = "dmd" in names
        names = [n for n in names if n != "dmd"]
        everything = all_ or not (names or want_dmd)
        if everything:
            names = default_analyses()
        names = list(dict.fromkeys(names))  # in the order asked for (flags first), once each
        if steps and every:
            raise UserError("--steps and --every contradict each other; pick one")
        keys = parse_key_frequencies(key_frequencies) if key_frequencies is not None else None
        if keys is not None and key_from != "final":
            raise UserError("--key-frequencies and --key-from contradict each other; pick one")
        probe = fingerprint_options(probe_seed, probe_from, probe_size, token_index)
        if probe and not ("fingerprint" in names or want_dmd):
            raise UserError(f"--{next(iter(probe)).replace('_', '-')}: applies to --fingerprint and --dmd")
        dmd_settings = dmd_options(dmd_method, dmd_delays, dmd_rank, dmd_center, dmd_observable, dmd_window)
        if dmd_settings and not want_dmd:
            raise UserError(f"{DMD_FLAGS[next(iter(dmd_settings))]}: needs --dmd")
        llc_settings = llc_options(
            "llc" in names,
            lr=llc_lr,
            n_beta=llc_n_beta,
            localization=llc_localization,
            num_chains=llc_num_chains,
            num_draws=llc_num_draws,
            num_burnin=llc_num_burnin,
            batch_size=llc_batch_size,
            seed=llc_seed,
        )
        whole = Run.open(path)
        # A run of several operations: each analysis reads one operation's examples; without --operation, every
        # operation in turn, each into analysis/<operation>/ (or --out/<operation>/).
        operations = [operation] if operation or not whole.full_task.is_multi else whole.full_task.operation_names
        files = 0
        for name_of_op in operations if names else []:
            run = whole.for_operation(name_of_op)
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
                options={name: o for name, o in (("fingerprint", probe), ("llc", llc_settings)) if o} or None,
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

            dynamics = analyze_dynamics(run, out_dir=out, probe=probe, **dmd_settings)
            if figures:
                phases = analysis_summary(run, "progress")
                drawn = dmd_figures(dynamics.result, dynamics.windowed, run.metrics(), phases=phases)
                files += len(write_figures(drawn, base / "figures"))
                images, why_not = write_images(drawn["dmd_spectrum"], base / "figures", "dmd_spectrum")
                files += len(images)
                if why_not:
                    typer.echo(why_not)
            radius = max((abs(complex(r, i)) for r, i in _complex_pairs(dynamics.result["eigenvalues"])), default=0)
            typer.echo(
                f"dmd ({dynamics.result['method']}, center {dynamics.result['center']}): {dynamics.result['rank']} "
                f"modes over {dynamics.result['n_snapshots']} fingerprints; "
                f"spectral radius {radius:.4f}, one-step error {dynamics.result['reconstruction_error']:.3g}"
            )
            files += len(dynamics.files)
        typer.echo(f"wrote {files} file(s) under {folder}")

    _guard(work, "interrupted: the checkpoints analysed so far are cached; run the same command again to continue")


# --only takes the analyses' names and, like the flags, ``ablate`` for ``ablation``.
ANALYSIS_ALIASES = {"ablate": "ablation"}


def only_names(only: str | None) -> list[str]:
    """``--only fourier,ablate`` -> ``["fourier", "ablation"]``; an unknown name is a one-line error."""
    names = [n.strip() for n in (only or "").split(",") if n.strip()]
    if not names:
        return []
    from grokscope.analysis.runner import registry

    known = [*registry(), "dmd"]
    for name in names:
        if ANALYSIS_ALIASES.get(name, name) not in known:
            raise UserError(f"--only: unknown analysis {name!r} (known: {', '.join(known)}; ablate for ablation)")
    return [ANALYSIS_ALIASES.get(n, n) for n in names]


def fingerprint_options(
    probe_seed: int | None, probe_from: str | None, probe_size: int | None, token_index: int | None
) -> dict[str, Any]:
    """The fingerprint probe settings given on the command line (FingerprintSpec fields), checked."""
    from grokscope.analysis.fingerprint import PROBE_FROM

    if probe_from is not None and probe_from not in PROBE_FROM:
        raise UserError(f"--probe-from {probe_from}: expected one of {', '.join(PROBE_FROM)}")
    given = dict(probe_seed=probe_seed, probe_from=probe_from, probe_size=probe_size, token_index=token_index)
    return {k: v for k, v in given.items() if v is not None}


DMD_FLAGS = {
    "method": "--dmd-method",
    "n_delays": "--dmd-delays",
    "rank": "--dmd-rank",
    "center": "--dmd-center",
    "observable": "--dmd-observable",
    "window": "--dmd-window",
}


def dmd_options(
    method: str | None,
    delays: int | None,
    rank: int | None,
    center: str | None,
    observable: str | None,
    window: int | None,
) -> dict[str, Any]:
    """The ``analyze_dynamics`` keywords given as --dmd-* flags, checked (unset ones keep the defaults)."""
    from grokscope.analysis.dmd import METHODS, Centering
    from grokscope.analysis.fingerprint import OBSERVABLES

    for flag, value, known in (
        ("--dmd-method", method, METHODS),
        ("--dmd-center", center, typing.get_args(Centering)),
        ("--dmd-observable", observable, OBSERVABLES),
    ):
        if value is not None and value not in known:
            raise UserError(f"{flag} {value}: expected one of {', '.join(known)}")
    given = dict(method=method, n_delays=delays, rank=rank, center=center, observable=observable, window=window)
    return {k: v for k, v in given.items() if v is not None}


def llc_options(wanted: bool, **given: Any) -> dict[str, Any]:
    """The ``--llc-*`` flags given (None: not given) as ``llc.compute`` keywords, checked by
    :class:`~grokscope.analysis.llc.SamplerSettings`; those equal to compute's defaults are left out, so that the
    cached rows of a default estimate are found again. A flag without ``--llc`` is a one-line error."""
    given = {name: value for name, value in given.items() if value is not None}
    flag = {name: f"--llc-{name.replace('_', '-')}" for name in given}
    if given and not wanted:
        raise UserError(f"{flag[next(iter(given))]}: needs --llc")
    if not given:
        return {}
    from pydantic import ValidationError

    from grokscope.analysis.llc import SamplerSettings

    if "batch_size" in given:
        size = given["batch_size"]
        if size == "full":
            given["batch_size"] = None
        elif re.fullmatch(r"\s*[0-9]{1,12}\s*", size):
            given["batch_size"] = int(size)
        else:
            raise UserError(f"--llc-batch-size {size}: expected a number of rows or full")
    try:
        return SamplerSettings.model_validate(given).options()
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        name = str(first["loc"][0]) if first["loc"] else next(iter(given))
        raise UserError(f"{flag.get(name, name)} {given.get(name)}: {first['msg']}") from None


def _complex_pairs(values: dict) -> list[tuple[float, float]]:
    """``{"re": [...], "im": [...]}`` (how results store complex numbers) as (re, im) pairs."""
    return [(r, i) for r, i in zip(values["re"], values["im"], strict=True) if r is not None and i is not None]


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A run directory or an experiment directory.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the page (default: PATH/report.html).")] = None,
) -> None:
    """One self-contained HTML page of a run or an experiment: summary, curves, analyses, figures (works offline)."""

    def work() -> None:
        from grokscope.viz.report import write_report

        typer.echo(f"wrote {write_report(path, out)}")

    _guard(work, "interrupted: no page was written")


@app.command()
def experiment(
    config: Annotated[
        Path,
        typer.Argument(
            help="An experiment config (it has a kind:), or a preset's name (grokscope configs lists them): "
            "transfer_quick, configs/perturbation.yaml.",
            autocompletion=complete_config,
        ),
    ],
    out: Annotated[Path, typer.Option(help="Folder in which the experiment's directory is created.")] = Path("runs"),
    launcher: Annotated[
        str, typer.Option(help="Where runs execute: local, or ray (sweeps; extra grokscope\\[ray]).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster: auto or HOST:PORT (default: start a local Ray instance).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field of the experiment config: --set budgets.grokked=100."),
    ] = None,
    log: Annotated[
        list[str] | None,
        typer.Option(
            help="Log every run the experiment trains to tensorboard or wandb (as train --log; also the config's "
            "log:). Repeatable."
        ),
    ] = None,
) -> None:
    """Run an experiment (perturbation, transfer, similarity, sweep, curriculum, finetune); finished runs are reused."""

    def work() -> None:
        from grokscope.experiments import run as run_experiment

        path = config_file(config, "experiment")
        options = dict(
            device=device, progress=not quiet, launcher=launcher, address=address, log=log or (), overrides=set_ or ()
        )
        report = run_experiment(path, out, **options)
        for line in report.lines:
            typer.echo(line)
        for failure in report.failures:
            typer.echo(f"error: run failed: {failure.run_dir}: {failure.error}", err=True)
        if report.failures:
            typer.echo(f"error: {len(report.failures)} run(s) failed (their tracebacks: failures.json)", err=True)
            raise typer.Exit(EXIT_RUNS_FAILED)

    _guard(work, "interrupted: run the same command again; finished runs are reused and interrupted ones resumed")


configs_app = typer.Typer(
    help="The presets: configs shipped with grokscope, usable by name wherever a config path goes.",
    no_args_is_help=False,
)
app.add_typer(configs_app, name="configs")


@configs_app.callback(invoke_without_command=True)
def configs(ctx: typer.Context) -> None:
    """List the presets (name, kind, first comment line): grokscope train NAME or grokscope experiment NAME runs one
    from any folder, grokscope configs show NAME prints it. A file of the same name in the current folder wins."""
    if ctx.invoked_subcommand is not None:
        return

    def work() -> None:
        from grokscope.presets import available

        presets = available()
        wide = max(len(p.name) for p in presets)
        kinds = max(len(p.kind) for p in presets)
        # In a terminal, one line each (`configs show` has the whole text); piped, nothing is cut.
        width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
        for p in presets:
            line = f"{p.name:<{wide}}  {p.kind:<{kinds}}  {p.description}"
            typer.echo(line if width is None or len(line) <= width else line[: width - 1] + "…")

    _guard(work)


def complete_preset(incomplete: str) -> list[str]:
    """Shell completion of a preset's name."""
    from grokscope.presets import names

    return [n for n in names() if n.startswith(incomplete)]


@configs_app.command("show")
def configs_show(
    name: Annotated[str, typer.Argument(help="A preset's name, e.g. quickstart.", autocompletion=complete_preset)],
) -> None:
    """Print a preset's file as shipped; grokscope configs show quickstart > mine.yaml starts a config of your own."""

    def work() -> None:
        from grokscope.presets import find

        typer.echo(find(name).path.read_text(encoding="utf-8"), nl=False)

    _guard(work)
