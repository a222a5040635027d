"""Training dynamics of a run: DMD of its recorded fingerprints, whole-run and in sliding windows.

Reads ``recordings/fingerprints.safetensors`` (``grokscope train --record fingerprint``), fits DMD
(:func:`~grokscope.analysis.dmd.dmd_rrr` or :func:`~grokscope.analysis.dmd.dmd_projected`, by ``method``) to the
quantile sequence of one observable, repeats the fit in sliding windows (the early-warning score), and writes
``analysis/dmd.json`` (with the probe the recording used), ``analysis/eigenvalues.npy`` and figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from grokscope.analysis.dmd import (
    Centering,
    DMDResult,
    Method,
    fit_dmd,
    method_defaults,
    method_settings,
    windowed_dmd,
)
from grokscope.analysis.fingerprint import OBSERVABLES, ProbeOptions, Recording, load_recording
from grokscope.analysis.options import AnalysisOptions, Flag
from grokscope.errors import UserError
from grokscope.store import ANALYSIS_DIR, Run, atomic_write, write_json

NAME = "dmd"
PROBE_FIELDS = ("probe_seed", "probe_from", "probe_size", "token_index")
"""The fingerprint settings a DMD caller may name to check that the recording was made with them."""
Observable = Literal[OBSERVABLES]  # type: ignore[valid-type]


class DMDOptions(AnalysisOptions):
    """:func:`analyze_dynamics`'s settings as ``grokscope analyze --dmd-*`` flags; unset ones keep its defaults."""

    FLAG_PREFIX: ClassVar[str] = "--dmd-"

    method: Annotated[
        Method, Flag("DMD estimator: rrr (reduced-rank regression) or projected (POD-projected DMD).", default="rrr")
    ] = "rrr"
    n_delays: Annotated[int, Flag("DMD delay-embedding depth.", flag="--dmd-delays", default="32", metavar="N")] = (
        Field(32, ge=1)
    )
    rank: Annotated[int, Flag("DMD rank.", default="10", metavar="N")] = Field(10, ge=1)
    center: Annotated[
        Centering | None,
        Flag(
            "Centering before the DMD fit: per_snapshot_mean, time_mean, relative_to_t0 or none.",
            default="per_snapshot_mean for rrr, time_mean for projected",
        ),
    ] = None
    observable: Annotated[
        Observable, Flag("Fingerprint observable for DMD: log_prob, margin or entropy.", default="log_prob")
    ] = "log_prob"
    window: Annotated[
        int | None, Flag("Snapshots per sliding DMD window.", default="max(2 (delays + rank), T/8)", metavar="N")
    ] = Field(None, ge=1)


OPTIONS: tuple[type[AnalysisOptions], ...] = (DMDOptions, ProbeOptions)
"""The options DMD reads: its own, and the fingerprint probe's (checked against the recording's)."""


@dataclass
class DynamicsReport:
    result: dict[str, Any]
    windowed: dict[str, Any] | None
    files: list[Path]
    probe: dict[str, Any] | None = None


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a file handle: given a path, np.save would append ".npy" and miss the temporary file.
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def default_window(n_snapshots: int, n_delays: int, rank: int) -> int:
    """Windows long enough for a well-posed fit (twice the minimum) and short enough to localise change in time."""
    return min(n_snapshots, max(2 * (n_delays + rank), n_snapshots // 8))


def check_probe(recording: Recording, where: str, **expected: Any) -> None:
    """A one-line error when the recording was not made with the named fingerprint settings (``probe_seed``,
    ``probe_from``, ``probe_size``, ``token_index``; None: not checked). DMD reads the recording as it was recorded;
    the probe is chosen when recording (``record`` settings), not afterwards."""
    recorded = asdict(recording.spec)
    for name in PROBE_FIELDS:
        want = expected.get(name)
        if want is not None and recorded[name] != want:
            raise UserError(
                f"{where}: {name} {want}: the fingerprint recording was made with {name} {recorded[name]!r}; DMD "
                "reads the recording as recorded (choose the probe when recording)"
            )


def probe_summary(run: Run, recording: Recording) -> dict[str, Any]:
    """Which rows the recording watched: its spec, the rows, whether they were saved in the recording or re-derived
    (recordings made before grokscope saved them), and how many are training and test rows of the run's split."""
    rows = recording.probe_rows.tolist()
    out: dict[str, Any] = {"spec": asdict(recording.spec), "rows": rows, "rows_saved": recording.probe_rows_saved}
    split = run.split()
    for name in ("train", "test"):
        out[f"in_{name}"] = len(set(rows) & set(getattr(split, name).tolist()))
    return out


def fit_recording(
    recording: Recording,
    *,
    observable: str = "log_prob",
    method: Method = "rrr",
    n_delays: int = 32,
    rank: int = 10,
    center: str | None = None,
    ridge: float = 0.0,
) -> DMDResult:
    """The whole-run DMD of one observable of a recording; ``dt`` is the recording interval, so continuous-time
    eigenvalues are per training step. ``center=None``: the method's default."""
    snapshots = recording.snapshots(observable).double().numpy()
    settings = {"n_delays": n_delays, "rank": rank, "center": center, "dt": float(recording.every), "ridge": ridge}
    return fit_dmd(snapshots, method, **settings)


def flag(field: str) -> str:
    """The command-line flag of a DMD setting, for messages that tell the user what to change."""
    return DMDOptions.flag(field)


def check_fit(snapshots: np.ndarray, n_delays: int, rank: int) -> None:
    """The conditions of a DMD fit that the settings decide, refused in one line naming the flags to change (the
    estimators' own checks speak of their parameters, which a command-line user never sees)."""
    n_snapshots, n_features = snapshots.shape if snapshots.ndim == 2 else (len(snapshots), 1)
    if n_snapshots < n_delays + rank:
        raise UserError(
            f"{flag('n_delays')} {n_delays} + {flag('rank')} {rank}: the fit needs at least {n_delays + rank} "
            f"fingerprints and the recording has {n_snapshots}; lower them, or record more often "
            "(grokscope train --record fingerprint --record-every N)"
        )
    if rank > n_features * n_delays:
        raise UserError(
            f"{flag('rank')} {rank}: at most {flag('n_delays')} x features = {n_features * n_delays} "
            f"({n_features} features per fingerprint); lower {flag('rank')} or raise {flag('n_delays')}"
        )


def analyze_dynamics(
    run: Run,
    *,
    observable: str = "log_prob",
    method: Method = "rrr",
    n_delays: int = 32,
    rank: int = 10,
    center: str | None = None,
    ridge: float = 0.0,
    window: int | None = None,
    stride: int | None = None,
    out_dir: Path | None = None,
    probe: dict[str, Any] | None = None,
) -> DynamicsReport:
    """Fit DMD to the run's fingerprint recording and write the results (see the module docstring).

    ``method``: ``rrr`` (reduced-rank regression, centering ``per_snapshot_mean`` by default) or ``projected``
    (POD-projected DMD, centering ``time_mean`` by default); ``center=None`` takes the method's default. ``probe``:
    fingerprint settings the recording must have been made with (:func:`check_probe`).
    """
    recording = load_recording(run)
    check_probe(recording, "--dmd", **(probe or {}))
    snapshots = recording.snapshots(observable).double().numpy()
    check_fit(snapshots, n_delays, rank)
    steps = recording.steps.tolist()
    dt = float(recording.every)  # continuous-time eigenvalues per training step
    settings = method_settings(method, {"n_delays": n_delays, "rank": rank, "center": center, "dt": dt, "ridge": ridge})
    settings = {**method_defaults(method), **settings}
    result = fit_dmd(snapshots, method, **settings)
    if window is not None and window < n_delays + rank:
        raise UserError(
            f"{flag('window')} {window}: must be at least n_delays + rank = {n_delays + rank} "
            f"({flag('n_delays')} {n_delays} + {flag('rank')} {rank})"
        )
    if window is not None and window > len(snapshots):
        raise UserError(f"{flag('window')} {window}: the recording has only {len(snapshots)} fingerprints")
    window = window or default_window(len(snapshots), n_delays, rank)
    windowed = None
    if window >= n_delays + rank and len(snapshots) >= window:
        windowed = windowed_dmd(snapshots, steps, window, stride or max(1, window // 4), method, **settings).to_dict()
    out_dir = Path(out_dir) if out_dir is not None else run.root / ANALYSIS_DIR
    probe_info = probe_summary(run, recording)
    summary = {"observable": observable, "snapshots": len(snapshots), "steps": [steps[0], steps[-1]]}
    result_dict = result.to_dict()
    write_json(out_dir / "dmd.json", {**summary, "probe": probe_info, "result": result_dict, "windows": windowed})
    eigenvalues = np.asarray(result.eigenvalues, dtype=np.complex128)
    atomic_write(out_dir / "eigenvalues.npy", lambda tmp: _save_array(tmp, eigenvalues))
    files = [out_dir / "dmd.json", out_dir / "eigenvalues.npy"]
    return DynamicsReport(result_dict, windowed, files, probe_info)
