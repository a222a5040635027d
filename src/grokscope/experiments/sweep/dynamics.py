"""The sweep's DMD comparison: each run's recorded fingerprints fitted by DMD, the spectra compared per condition.

Every finished run's fingerprint recording is fitted with the same settings
(:func:`~grokscope.analysis.dynamics.fit_recording`); per condition, the mean and sample sd over its seeds of the
spectral radius and the one-step error, with n. What ``dmd.json`` holds. A run reused from before
``record: [fingerprint]`` was set has no recording: it is listed under ``skipped`` with the reason, not retrained.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from grokscope.analysis.dmd import complex_dict
from grokscope.analysis.dynamics import fit_recording
from grokscope.analysis.fingerprint import load_recording, recording_path
from grokscope.errors import UserError
from grokscope.experiments.sweep.config import DMDOptions
from grokscope.experiments.sweep.results import RunResult
from grokscope.store import Run

NO_RECORDING = (
    "no fingerprint recording (finished before record: [fingerprint] was set; delete the run to retrain it with "
    "recorders)"
)


def spread(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sample sd (ddof 1; None for one value) and n of the finite values."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "sd": None, "n": 0}
    mean = sum(finite) / len(finite)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else None
    return {"mean": mean, "sd": sd, "n": len(finite)}


def _fit(result: RunResult, settings: dict[str, Any]) -> dict[str, Any]:
    run = Run.open(Path(result.run_dir))
    if not recording_path(run).is_file():
        raise UserError(NO_RECORDING)
    recording = load_recording(run)
    fit = fit_recording(recording, **settings)
    return {
        "name": result.name,
        "condition": result.condition,
        "values": result.values,
        "seed": result.seed,
        "eigenvalues": complex_dict(fit.eigenvalues),
        "moduli": [float(abs(v)) for v in fit.eigenvalues],
        "spectral_radius": fit.spectral_radius,
        "reconstruction_error": fit.reconstruction_error,
        "rank": fit.rank,
        "center": fit.center,
        "snapshots": fit.n_snapshots,
        "every": recording.every,
        "probe": {"spec": asdict(recording.spec), "rows_saved": recording.probe_rows_saved},
    }


def compare_dynamics(runs: list[RunResult], options: DMDOptions) -> dict[str, Any]:
    """DMD of every finished run's fingerprint recording with the same settings, and per condition the mean and
    sample sd over its seeds of the spectral radius and the one-step error. Runs that cannot be fitted (no
    recording, too few snapshots) are listed under ``skipped`` with the reason."""
    settings = options.model_dump()
    entries, skipped = [], []
    for result in runs:
        if result.status != "ok":
            continue
        try:
            entries.append(_fit(result, settings))
        except UserError as err:
            skipped.append({"name": result.name, "reason": str(err)})
    by_condition = []
    for condition in dict.fromkeys(r.condition for r in runs):
        group = [e for e in entries if e["condition"] == condition]
        by_condition.append(
            {
                "condition": condition,
                "n": len(group),
                "spectral_radius": spread([e["spectral_radius"] for e in group]),
                "reconstruction_error": spread([e["reconstruction_error"] for e in group]),
            }
        )
    return {"settings": settings, "runs": entries, "by_condition": by_condition, "skipped": skipped}
