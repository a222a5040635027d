"""The sweep's config model: what ``kind: sweep`` YAML may say, checked before anything is planned.

See :mod:`grokscope.experiments.sweep` for the fields in context. Run counts are checked from the axis lengths, so
a typo in a grid is refused before a single combination is built.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, model_validator

from grokscope.experiments.regimes import RegimeRules
from grokscope.experiments.runs import ExperimentModel, Name, RecordedExperiment, Seed, check_run_count, check_seeds
from grokscope.recorders import RecordPlan

RESERVED = {"seed": "sweep seeds with `seeds:`", "name": "run names are made from the swept values"}


class DMDOptions(ExperimentModel):
    """How each run's fingerprints are fitted for the comparison (:func:`~grokscope.analysis.dynamics.fit_recording`;
    ``center`` null: the method's default, per_snapshot_mean for rrr and time_mean for projected)."""

    method: Literal["rrr", "projected"] = "rrr"
    n_delays: int = Field(32, ge=1)
    rank: int = Field(10, ge=1)
    center: Literal["per_snapshot_mean", "time_mean", "relative_to_t0", "none"] | None = None
    observable: Literal["log_prob", "margin", "entropy"] = "log_prob"


class SweepConfig(RecordedExperiment):
    """``grokscope experiment`` config of kind ``sweep`` (see :mod:`grokscope.experiments.sweep`)."""

    kind: Literal["sweep"]
    name: Name = "sweep"
    base: str
    set: list[str] = Field(default_factory=list, description="--set overrides applied to the base config")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="field path -> values (every combination)")
    runs: list[dict[str, Any]] = Field(default_factory=list, description="explicit overrides, one run each")
    seeds: list[Seed] = Field(default_factory=lambda: [0], min_length=1)
    rules: RegimeRules = Field(default_factory=RegimeRules)
    dmd: DMDOptions | None = Field(None, description="DMD settings for comparing the recorded fingerprints")
    forecast_stop: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="stop a run once the live forecast gives it less than this probability of generalizing "
        "within its budget (grokscope.forecast.live); off by default",
    )

    def record_plan(self) -> RecordPlan | None:
        plan = super().record_plan()
        if self.forecast_stop is None:
            return plan
        return replace(plan or RecordPlan((), where="record"), forecast_stop=self.forecast_stop)

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        if self.dmd is not None and "fingerprint" not in self.record:
            raise ValueError("dmd: compares recorded fingerprints; needs record: [fingerprint]")
        if self.grid and self.runs:
            raise ValueError("grid, runs: give one of them, not both")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid.{key}: needs at least one value")
        for i, point in enumerate(self.runs):
            for key in point:
                _check_key(key, f"runs.{i}.{key}")
        for key in self.grid:
            _check_key(key, f"grid.{key}")
        check_seeds(self.seeds)
        # Counted from the axis lengths, before a single combination is built.
        seeds = f"{len(self.seeds)} seed{'s' if len(self.seeds) > 1 else ''}"
        if self.grid:
            n = math.prod(len(values) for values in self.grid.values()) * len(self.seeds)
            check_run_count(n, "grid", " x ".join(str(len(v)) for v in self.grid.values()) + f" values x {seeds}")
        else:
            n = max(len(self.runs), 1) * len(self.seeds)
            check_run_count(n, "runs" if self.runs else "seeds", f"{max(len(self.runs), 1)} runs x {seeds}")
        return self


def _check_key(key: str, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"{where}: not a field path (expected e.g. optim.weight_decay)")
    if parts[0] in RESERVED:
        raise ValueError(f"{where}: cannot be swept ({RESERVED[parts[0]]})")
