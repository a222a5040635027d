"""Recorders by name: the training callbacks that ``grokscope train --record`` and experiments' ``record:`` attach.

``gradients`` (:class:`~grokscope.analysis.gradients.GradientNormRecorder`, per-component gradient norms) and
``fingerprint`` (:class:`~grokscope.analysis.fingerprint.FingerprintRecorder`, quantile fingerprints) write into a
run's ``recordings/``. A :class:`RecordPlan` is the plain-data description (names, interval, fingerprint probe) that
can travel to another process; :meth:`RecordPlan.recorders` makes a fresh set for one run, since a recorder holds that
run's rows and watches one model (so runs with recorders train one after another, never stacked). A plan may also
name experiment loggers (:mod:`grokscope.loggers`), which are callbacks of the same kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from grokscope.callbacks import Callback
from grokscope.errors import UserError

RECORDERS = ("gradients", "fingerprint")


@dataclass(frozen=True)
class RecordPlan:
    """Which recorders every run gets: ``names`` (from :data:`RECORDERS`), ``every`` N steps, and the fingerprint
    settings (:class:`~grokscope.analysis.fingerprint.FingerprintSpec` fields; empty: its defaults)."""

    names: tuple[str, ...]
    every: int = 10
    fingerprint: dict[str, Any] = field(default_factory=dict)
    where: str = "--record"  # how the user named the recorders, for error messages
    loggers: tuple[str, ...] = ()  # experiment logging (grokscope.loggers: tensorboard, wandb) beside the recorders
    forecast_stop: float | None = None  # stop a run once the live forecast gives it less than this chance

    def __post_init__(self) -> None:
        if self.loggers:
            from grokscope.loggers import check_available

            check_available(self.loggers, "log")  # an unknown or uninstalled logger fails before any run trains
        unknown = [n for n in self.names if n not in RECORDERS]
        if unknown:
            raise UserError(f"{self.where} {unknown[0]}: unknown recorder (known: {', '.join(RECORDERS)})")
        if self.every < 1:
            raise UserError(f"{self.where}: record every N steps needs N >= 1, got {self.every}")
        if self.fingerprint:
            self.fingerprint_spec()  # a bad probe setting fails here, before any run trains

    @property
    def attaches(self) -> bool:
        """Whether runs get any callback (recorder or logger) from this plan: they then train one by one."""
        return bool(self.names or self.loggers or self.forecast_stop is not None)

    def fingerprint_spec(self) -> Any:
        from grokscope.analysis.fingerprint import FingerprintSpec

        data = dict(self.fingerprint)
        if "quantiles" in data:
            data["quantiles"] = tuple(data["quantiles"])
        try:
            return FingerprintSpec(**data)
        except TypeError as err:
            raise UserError(f"{self.where}: fingerprint settings: {err}") from None

    def recorders(self) -> list[Callback]:
        """Fresh recorder callbacks for one run."""
        made: list[Callback] = []
        if self.forecast_stop is not None:  # first: the loggers then log its numbers
            from grokscope.forecast.live import LiveForecast

            made.append(LiveForecast(stop_below=self.forecast_stop))
        for name in dict.fromkeys(self.names):
            if name == "gradients":
                from grokscope.analysis.gradients import GradientNormRecorder

                made.append(GradientNormRecorder(every=self.every))
            else:
                from grokscope.analysis.fingerprint import FingerprintRecorder

                made.append(FingerprintRecorder(every=self.every, spec=self.fingerprint_spec()))
        if self.loggers:
            from grokscope.loggers import make_loggers

            made += make_loggers(self.loggers, "log")
        return made

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordPlan:
        return cls(**{**data, "names": tuple(data["names"]), "loggers": tuple(data.get("loggers", ()))})


def make_recorders(names: Sequence[str], every: int, fingerprint: dict[str, Any] | None = None) -> list[Callback]:
    """Fresh recorder callbacks for ``--record`` names (one set per run: recorders hold that run's rows)."""
    return RecordPlan(tuple(names), every, dict(fingerprint or {})).recorders()
