"""``grokscope train``: train a run config (or several seeds of it) into run directories and say where each grokked."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from grokscope.cli.common import complete_config, config_file
from grokscope.cli.guard import EXIT_DIVERGED, guard
from grokscope.errors import UserError

MAX_SEEDS = 10_000  # in one command: each seed is a run directory, and the list itself is built up front
MAX_SEED = 2**32 - 1  # what every generator seeding accepts (config.seed's bound)


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
    forecast: Annotated[
        bool,
        typer.Option(
            "--forecast",
            help="Forecast the generalization step at every evaluation after memorization: on the progress line, "
            "in RUN/forecast.jsonl and through --log.",
        ),
    ] = False,
    pack: Annotated[
        int | None,
        typer.Option(
            min=1,
            metavar="N",
            help="With --seeds: train this many seeds at once (default 1 on the CPU, what fits on a GPU).",
        ),
    ] = None,
) -> None:
    """Train a model (or several seeds) on a modular-arithmetic task; writes runs/<name>/ and prints where it
    grokked."""

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
        predictor = None
        if forecast:
            from grokscope.forecast import shipped_predictor
            from grokscope.forecast.live import LiveForecast

            predictor = shipped_predictor()
        if resume:  # a CPU run continued on another CPU kind, thread count or torch: one line saying so
            from grokscope.training.loop import resolve_device, resume_notes

            for note in resume_notes([run_dir for _, run_dir in jobs], resolve_device(device)):
                typer.echo(note, err=True)
        options = dict(device=device, resume=resume, overwrite=overwrite, progress=not quiet)
        if record or log or forecast:  # callbacks watch one GrokTransformer each: seeds train one after another
            from grokscope.rundir import check_claimable

            check_claimable([run_dir for _, run_dir in jobs], resume=resume, overwrite=overwrite)
            results = [
                train_run(
                    cfg,
                    run_dir,
                    callbacks=[
                        *([LiveForecast(predictor)] if forecast else []),  # first: the loggers log its numbers
                        *make_recorders(record or [], record_every),
                        *make_loggers(log or []),
                    ],
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
                typer.echo(f"  {op}: {operation_accuracy(final, op)}; {describe(per_op)}")
        if diverged:
            raise typer.Exit(EXIT_DIVERGED)

    guard(work, "interrupted before a checkpoint could be saved; continue with the same command and --resume")


def operation_accuracy(final: dict, op: str) -> str:
    """``train acc 98.00%, test acc 12.50%`` of one operation in the last metrics row; a part without that operation's
    pairs (the loop logs no accuracy over no examples) reads ``no training pairs`` or ``no test pairs``."""
    parts = []
    for key, what in (("train", "training"), ("test", "test")):
        value = final.get(f"{key}_acc_{op}")
        parts.append(f"{key} acc {value:.2%}" if value is not None else f"no {what} pairs")
    return ", ".join(parts)


def describe_divergence(diverged: dict) -> str:
    """One line for ``summary["diverged"]``."""
    what = "the weights" if diverged["metric"] == "weights" else diverged["metric"]
    kept = diverged.get("last_checkpoint")
    tail = f"kept the checkpoints up to step {kept}" if kept is not None else "no finite checkpoint was saved"
    return f"diverged: {what} became non-finite (NaN or inf) by step {diverged['step']}; stopped and {tail}"
