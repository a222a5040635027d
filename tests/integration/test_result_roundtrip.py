"""Every analysis's typed results are whole: computed, read back from the cache, or rebuilt from ``to_dict`` and
``arrays``, they equal what ``compute`` returned, field by field (sidecar arrays included).

The analyses come from the registry, so a new analysis is covered by adding it; one the tiny task does not support
is skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors import safe_open

from conftest import assert_same_result, tiny_config
from grokscope.analysis import over_checkpoints, sidecar
from grokscope.analysis.runner import analyze, not_applicable, registry
from grokscope.store import Run, finite

# Options that keep an analysis fast on the tiny run (short SGLD chains for the LLC).
TINY_OPTIONS: dict[str, dict[str, Any]] = {"llc": {"num_chains": 2, "num_draws": 6, "num_burnin": 2}}
# Analyses that need an optional extra, by the module that extra installs.
EXTRAS = {"llc": "devinterp"}
STEPS = [20, 40, 60]  # three checkpoints, so that the previous checkpoint feeds the later ones (gradients)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Run:
    """The tiny run ((a + b) mod 13, checkpoints at 0, 20, 40 and 60), trained once for the module."""
    from grokscope.training import train

    return train(tiny_config(), tmp_path_factory.mktemp("roundtrip") / "tiny", device="cpu", progress=False).run


@pytest.fixture
def run(tmp_path, trained) -> Run:
    """A copy of the trained run with no analysis yet."""
    shutil.copytree(trained.root, tmp_path / "tiny")
    return Run.open(tmp_path / "tiny")


@pytest.fixture
def computed(monkeypatch) -> list[Any]:
    """What ``compute`` returned for each checkpoint the runner analysed, in order (the runner hands each result to
    ``sidecar.write``, whatever its analysis)."""
    seen: list[Any] = []
    write = sidecar.write

    def recording(cache, row, result):
        seen.append(result)
        return write(cache, row, result)

    monkeypatch.setattr(sidecar, "write", recording)
    return seen


def json_trip(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` as it comes back from the JSON cache file."""
    return json.loads(json.dumps(finite(row), allow_nan=False))


@pytest.mark.parametrize("name", list(registry()))
def test_results_are_whole_computed_cached_and_rebuilt(name, run, computed):
    reason = not_applicable(name, run.task)
    if reason is not None:
        pytest.skip(reason)
    if name in EXTRAS and importlib.util.find_spec(EXTRAS[name]) is None:
        pytest.skip(f"needs {EXTRAS[name]}")
    spec, options = registry()[name], TINY_OPTIONS.get(name, {})

    fresh = over_checkpoints(run, name, STEPS, **options)
    assert [type(r) for r in fresh] == [spec.result] * len(STEPS)
    assert len(computed) == len(STEPS)
    cached = over_checkpoints(run, name, STEPS, **options)
    assert len(computed) == len(STEPS), "the second call must read the cache, not compute again"
    cache = run.analysis_dir / f"{name}.json"

    rows = {row["step"]: row for row in json.loads(cache.read_text())}
    for step, want, got_fresh, got_cached in zip(STEPS, computed, fresh, cached, strict=True):
        if hasattr(want, "key_reference"):
            # The runner feeds the reference key set as given keys and records where it came from (final:<step>).
            want = dataclasses.replace(want, key_reference=rows[step]["key_reference"])
        assert_same_result(got_fresh, want, f"{name} step {step} (computed)")
        assert_same_result(got_cached, want, f"{name} step {step} (cached)")
        frame = got_cached.to_frame()
        assert isinstance(frame, pd.DataFrame) and frame.shape[0] == 1 and frame.shape[1] > 0
        assert json_trip(got_cached.to_dict()) == json_trip(want.to_dict())
        # The round trip of the contract, through JSON text as on disk: the row, and the arrays beside it.
        again = spec.result.from_dict(json_trip(want.to_dict()), want.arrays())
        assert_same_result(again, want, f"{name} step {step} (from_dict)")
        if spec.result.ARRAYS:
            assert sidecar.sidecar_path(cache, step).is_file()


def test_a_damaged_stale_or_missing_sidecar_is_set_aside_and_recomputed(run):
    steps = [20, 40, 60]
    first = over_checkpoints(run, "neurons", steps)
    cache = run.analysis_dir / "neurons.json"
    rows = json.loads(cache.read_text())
    damaged, stale, missing = (sidecar.sidecar_path(cache, step) for step in steps)
    data = bytearray(damaged.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the last tensor's data: still a readable safetensors file
    damaged.write_bytes(bytes(data))
    stale.write_bytes(damaged.read_bytes())  # another step's arrays: written for another row
    missing.unlink()
    result = registry()["neurons"].result
    assert "damaged (its arrays do not match their digest)" in sidecar.problem(cache, rows[0], result)
    assert "written for another row of step 40" in sidecar.problem(cache, rows[1], result)
    assert sidecar.problem(cache, rows[2], result) == f"{missing}: missing"

    report = analyze(run, ["neurons"], steps=steps, progress=False)
    assert report.computed["neurons"] == steps
    assert report.notes == [
        f"{damaged}: damaged (its arrays do not match their digest) (and 2 more step(s) of neurons); recomputed"
    ]
    assert json.loads(cache.read_text()) == rows  # the same rows again, now with their sidecars
    assert all(sidecar.problem(cache, row, result) is None for row in rows)
    for got, want in zip(over_checkpoints(run, "neurons", steps), first, strict=True):
        assert_same_result(got, want)

    damaged.write_bytes(b"not a safetensors file")
    assert "not a readable safetensors file" in sidecar.problem(cache, rows[0], result)


def test_a_cached_row_without_its_sidecar_cannot_be_read_as_a_result(run):
    over_checkpoints(run, "attention", [60])
    cache = run.analysis_dir / "attention.json"
    row = json.loads(cache.read_text())[-1]
    sidecar.sidecar_path(cache, 60).unlink()
    assert "missing" in sidecar.problem(cache, row, registry()["attention"].result)
    with pytest.raises(ValueError, match="pattern, scores live outside the JSON row"):
        registry()["attention"].result.from_dict(row)


def test_float64_arrays_of_float32_values_are_stored_as_float32(run):
    (result,) = over_checkpoints(run, "attention", [60])
    path = sidecar.sidecar_path(run.analysis_dir / "attention.json", 60)
    with safe_open(str(path), framework="pt") as f:
        stored = {key: f.get_tensor(key).dtype for key in f.keys()}  # noqa: SIM118
    assert stored == {"pattern": torch.float32, "scores": torch.float32}  # a float32 model's values, in half the bytes
    assert result.pattern.dtype == torch.float64 and result.scores.dtype == torch.float64
