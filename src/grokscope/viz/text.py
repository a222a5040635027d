"""Numbers as the printed summaries show them: one place for the formatting every experiment's text shares.

Every function takes plain data (floats, ``{"mean", "sd", "n"}`` dicts as :mod:`grokscope.stats` and the
experiments' ``results.json`` hold them) and returns a string; a missing value (None) is always :data:`MISSING`, so
a table never prints ``None`` or mixes ``-`` with ``n/a``. A mean ± sd states its n whenever the data carries it,
so that a spread over two runs does not read like one over twenty.

>>> number(0.012345), number(None), percent(0.987), duration(65)
('0.0123', '—', '99%', '1m05s')
>>> mean_sd({"mean": 1.5, "sd": 0.25, "n": 3}, ".2f")
'1.50 ± 0.25 (n=3)'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MISSING = "—"
"""What every function prints for a value that is not there (None)."""


def number(x: float | None, form: str = ".3g") -> str:
    """``x`` in the format spec ``form`` (``.3g``, ``.4f``, ``,d`` ...); :data:`MISSING` for None."""
    return MISSING if x is None else format(x, form)


def significant(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, but thousands written out (``1170``, not ``1.17e+03``); :data:`MISSING` for
    None."""
    if x is None:
        return MISSING
    return f"{x:.0f}" if math.isfinite(x) and 1e3 <= abs(x) < 1e6 else f"{x:.{digits}g}"


def percent(x: float | None, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage with ``digits`` decimals (``0.987`` -> ``99%``); :data:`MISSING` for None."""
    return MISSING if x is None else f"{x:.{digits}%}"


def mean(values: Iterable[float | None]) -> float | None:
    """The mean of the values that are there (None and non-finite left out); None when none is."""
    got = [v for v in values if v is not None and math.isfinite(v)]
    return sum(got) / len(got) if got else None


def mean_sd(stat: Mapping[str, Any] | None, form: str = ".3g", *, with_n: bool = True) -> str:
    """``mean ± sd (n=k)`` from a dict with ``mean``, ``sd`` and ``n`` (sd and n optional; ``with_n=False`` when the
    line states n once for all); :data:`MISSING` when there is no mean."""
    if not stat or stat.get("mean") is None:
        return MISSING
    text = number(stat["mean"], form)
    if stat.get("sd") is not None:
        text += f" ± {number(stat['sd'], form)}"
    if with_n and stat.get("n") is not None:
        text += f" (n={stat['n']})"
    return text


def interval(low: float | None, high: float | None, form: str = ".3g") -> str:
    """A confidence interval ``[low, high]``; :data:`MISSING` when either end is missing."""
    if low is None or high is None:
        return MISSING
    return f"[{number(low, form)}, {number(high, form)}]"


def duration(seconds: float | None) -> str:
    """Wall time as ``5s`` or ``1m05s`` (whole seconds); :data:`MISSING` for None."""
    if seconds is None:
        return MISSING
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def plural(n: int, word: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def aligned(rows: Sequence[Sequence[str]], sep: str = "  ") -> list[str]:
    """Rows of cells as text lines with every column padded to its widest cell (trailing spaces stripped)."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(max(map(len, rows)))]
    return [sep.join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
