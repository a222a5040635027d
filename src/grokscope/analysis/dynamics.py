"""Training dynamics of a run: DMD-RRR of its recorded fingerprints, whole-run and in sliding windows.

Reads ``recordings/fingerprints.safetensors`` (``grokscope train --record fingerprint``), fits
:func:`~grokscope.analysis.dmd.dmd_rrr` to the quantile sequence of one observable, repeats the fit in sliding
windows (the early-warning score), and writes ``analysis/dmd.json``, ``analysis/eigenvalues.npy`` and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from grokscope.analysis.dmd import dmd_rrr, windowed_dmd
from grokscope.analysis.fingerprint import load_recording
from grokscope.errors import UserError
from grokscope.store import ANALYSIS_DIR, Run, atomic_write, write_json


@dataclass
class DynamicsReport:
    result: dict[str, Any]
    windowed: dict[str, Any] | None
    files: list[Path]


def _save_array(path: Path, array: np.ndarray) -> None:
    # Through a file handle: given a path, np.save would append ".npy" and miss the temporary file.
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def default_window(n_snapshots: int, n_delays: int, rank: int) -> int:
    """Windows long enough for a well-posed fit (twice the minimum) and short enough to localise change in time."""
    return min(n_snapshots, max(2 * (n_delays + rank), n_snapshots // 8))


def analyze_dynamics(
    run: Run,
    *,
    observable: str = "log_prob",
    n_delays: int = 32,
    rank: int = 10,
    center: str = "per_snapshot_mean",
    ridge: float = 0.0,
    window: int | None = None,
    stride: int | None = None,
    out_dir: Path | None = None,
) -> DynamicsReport:
    """Fit DMD-RRR to the run's fingerprint recording and write the results (see the module docstring)."""
    recording = load_recording(run)
    snapshots = recording.snapshots(observable).double().numpy()
    steps = recording.steps.tolist()
    dt = float(recording.every)  # continuous-time eigenvalues per training step
    settings = {"n_delays": n_delays, "rank": rank, "center": center, "dt": dt, "ridge": ridge}
    result = dmd_rrr(snapshots, **settings)
    window = window or default_window(len(snapshots), n_delays, rank)
    windowed = None
    if window >= n_delays + rank and len(snapshots) >= window:
        windowed = windowed_dmd(snapshots, steps, window, stride or max(1, window // 4), **settings).to_dict()
    elif window is not None and window < n_delays + rank:
        raise UserError(f"--dmd window {window}: must be at least n_delays + rank = {n_delays + rank}")
    out_dir = Path(out_dir) if out_dir is not None else run.root / ANALYSIS_DIR
    summary = {"observable": observable, "snapshots": len(snapshots), "steps": [steps[0], steps[-1]]}
    result_dict = result.to_dict()
    write_json(out_dir / "dmd.json", {**summary, "result": result_dict, "windows": windowed})
    eigenvalues = np.asarray(result.eigenvalues, dtype=np.complex128)
    atomic_write(out_dir / "eigenvalues.npy", lambda tmp: _save_array(tmp, eigenvalues))
    files = [out_dir / "dmd.json", out_dir / "eigenvalues.npy"]
    return DynamicsReport(result_dict, windowed, files)
