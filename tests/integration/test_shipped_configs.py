"""Every shipped config in configs/ runs end to end at a smoke size, through the command line (issue 23, item 3).

Each config runs as a user runs it (``grokscope train CONFIG`` or ``grokscope experiment CONFIG``) with its budgets
cut by ``--set``: a few steps, one or two seeds, the smallest grids. What is checked is that the whole pipeline goes
through (exit code 0, a printed summary, the files the command promises); nothing that depends on the numbers a
particular CPU computes. A config added to configs/ without an entry in :data:`SMOKE` fails here, so that no shipped
config can break unnoticed.

Transfer-like experiments loosen their checkpoint criteria (a source trained for ten steps has grokked nothing), so
that every condition's target runs train, are measured and relearn the source, instead of being reported as skipped.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from grokscope.cli import app

# Trains models like the other `slow` tests (still run by `make test`): 1-14 s of CPU a config, about 80 s in all.
pytestmark = pytest.mark.slow

CONFIGS_DIR = Path(__file__).parents[2] / "configs"
SHIPPED = sorted(CONFIGS_DIR.glob("*.yaml"))

Override = str | Callable[[dict[str, Any]], str]
"""A ``--set`` argument, or a function of the config's data that builds one (to edit a list the config holds)."""


def extend(field: str, *items: str) -> Callable[[dict[str, Any]], str]:
    """``--set field=[...]``: the config's list ``field`` with ``items`` appended (a later ``key=value`` wins)."""
    return lambda data: f"{field}={json.dumps([*data.get(field, []), *items])}"


def every_budget(steps: int) -> Callable[[dict[str, Any]], str]:
    """``--set budgets={...}``: every condition's budget the config gives, cut to ``steps``."""
    return lambda data: f"budgets={json.dumps(dict.fromkeys(data['budgets'], steps))}"


def own_runs(steps: int, seeds: list[int]) -> Callable[[dict[str, Any]], str]:
    """``--set conditions=[...]``: the config's conditions, those with their own budget or seeds cut to these."""

    def cut(condition: Any) -> Any:
        if not isinstance(condition, dict):
            return condition
        return condition | {k: v for k, v in (("budget", steps), ("seeds", seeds)) if k in condition}

    return lambda data: f"conditions={json.dumps([cut(c) for c in data['conditions']])}"


# Short runs: ten steps, evaluated at the start and the end only (the final step is always evaluated and saved).
TINY_RUN = ("train.steps=10", "train.eval_every=10")
# Any checkpoint qualifies as grokked (the first) and as memorized (the last): every condition's runs train.
LOOSE_CRITERIA = (
    'criteria={"grokked_test_acc": 1.0e-9, "memorized_train_acc": 1.0e-9, "memorized_test_acc": 1, '
    '"memorized_pick": "last"}'
)
TINY_LLC = ("llc.num_draws=5", "llc.num_burnin=5")


def tiny_sweep(grid: dict[str, list[Any]] | None, seed: int) -> list[Override]:
    """A sweep of tiny runs, one seed, over ``grid`` (None: the config's own conditions)."""
    return [extend("set", *TINY_RUN), *([f"grid={json.dumps(grid)}"] if grid else []), f"seeds=[{seed}]"]


def transfer_smoke(*more: Override) -> list[Override]:
    """Tiny source runs, one seed, five steps a condition, criteria every checkpoint meets, and ``more``."""
    return [extend("source_set", *TINY_RUN), "seeds=[0]", every_budget(5), *more, LOOSE_CRITERIA]


SMOKE: dict[str, list[Override]] = {
    # run configs: grokscope train
    "quickstart.yaml": ["train.steps=20"],
    "multitask_quick.yaml": ["train.steps=20"],
    "nanda_p113.yaml": [*TINY_RUN],
    "power_p97.yaml": [*TINY_RUN],
    # sweeps, one seed: every swept field kept, with one value each on the 2-layer model (whose evaluations on all
    # 9,409 sequences take seconds) and four conditions (loss on answer or all x full batch or minibatches) on the
    # small one
    "conditions_sweep.yaml": tiny_sweep(
        {"task.loss_on": ["all"], "optim.weight_decay": [1], "train.batch_size": [512]}, seed=0
    ),
    "conditions_sweep_quick.yaml": tiny_sweep(
        {"task.loss_on": ["answer", "all"], "optim.weight_decay": [1], "train.batch_size": [None, 128]}, seed=0
    ),
    # the forecast's calibration and held-out sweeps: one cell (or every control), one seed, a few steps
    "forecast_calibration.yaml": tiny_sweep(
        {"task.modulus": [53], "task.train_fraction": [0.45], "optim.lr": [0.01], "optim.weight_decay": [1]}, seed=0
    ),
    "forecast_heldout.yaml": tiny_sweep(
        {"task.modulus": [59], "task.train_fraction": [0.4], "optim.lr": [0.007], "optim.weight_decay": [0.7]}, seed=100
    ),
    "forecast_calibration_controls.yaml": tiny_sweep(None, seed=0),
    "forecast_controls.yaml": tiny_sweep(None, seed=100),
    # 41 fingerprints a run, enough for the shipped DMD settings (16 delays, rank 8)
    "fingerprint_sweep_quick.yaml": [extend("set", "train.steps=40"), "record_every=1", "seeds=[0]"],
    # staged experiments: every stage, a few steps each; the quick ones keep the LLC (short chains), and one of them
    # both seeds (the LLC's last stage against the direct run across seeds)
    "curriculum_mod64.yaml": ["stage_steps=5", "seeds=[0]"],
    "curriculum_mod64_quick.yaml": ["stage_steps=5", *TINY_LLC],
    "finetune_moduli.yaml": ["stage_steps=5", "seeds=[0]"],
    "finetune_moduli_quick.yaml": ["stage_steps=5", *TINY_LLC, "seeds=[0]"],
    "perturbation.yaml": [extend("set", "train.steps=10")],
    # transfer-like: every condition (replay twins and own-seed baselines included) and relearning, one seed
    "transfer_quick.yaml": transfer_smoke(own_runs(5, [0]), "relearn_steps=5"),
    "transfer_add_to_sub.yaml": transfer_smoke("relearn_steps=5"),
    "transfer_study_plan.yaml": transfer_smoke(own_runs(5, [0]), "relearn_steps=5"),
    "similarity_quick.yaml": transfer_smoke(),
}

runner = CliRunner()


def effective(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """The config's data as the command sees it after ``sets`` (for counting the runs it should make)."""
    from grokscope.config import apply_overrides

    return apply_overrides(copy.deepcopy(data), sets)


def test_every_table_entry_is_a_shipped_config():
    assert SHIPPED, f"no configs found in {CONFIGS_DIR}"
    stale = sorted(set(SMOKE) - {p.name for p in SHIPPED})
    assert not stale, f"smoke overrides for configs that are not shipped (remove them): {stale}"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_config_runs_at_smoke_size(path: Path, tmp_path: Path):
    if path.name not in SMOKE:
        pytest.fail(f"add smoke overrides for configs/{path.name} in this table (SMOKE in {Path(__file__).name})")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    sets = [o if isinstance(o, str) else o(data) for o in SMOKE[path.name]]
    kind = data.get("kind")
    command = "train" if kind is None else "experiment"
    out = tmp_path / "out"
    args = [command, str(path), "--out", str(out), "--device", "cpu", "--quiet"]
    for item in sets:
        args += ["--set", item]

    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"grokscope {' '.join(args)}\n{result.output}" + (
        "" if result.exception is None or isinstance(result.exception, SystemExit) else f"\n{result.exception!r}"
    )
    assert result.stdout.strip(), "printed no summary"
    data = effective(data, sets)
    root = out / data.get("name", path.stem if kind is None else kind)
    CHECKS[kind or "run"](root, data)


# What each command writes -------------------------------------------------------------------------------------
def _json(path: Path) -> Any:
    assert path.is_file(), f"missing {path}"
    return json.loads(path.read_text(encoding="utf-8"))


def _csv(path: Path) -> list[dict[str, str]]:
    assert path.is_file(), f"missing {path}"
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _figures(root: Path) -> None:
    assert any((root / "figures").iterdir()), f"no figures under {root}"


def check_run(run: Path, data: dict[str, Any] | None = None) -> None:
    """A finished run directory: its config, metrics, summary and checkpoints."""
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "split.safetensors"):
        assert (run / name).is_file(), f"missing {run / name}"
    assert (run / "metrics.jsonl").read_text().strip(), f"{run}: no metrics"
    assert "final" in _json(run / "summary.json")
    assert sorted((run / "checkpoints").glob("step_*.safetensors")), f"{run}: no checkpoint"


def check_sweep(root: Path, data: dict[str, Any]) -> None:
    conditions = len(data["runs"]) if data.get("runs") else math.prod(len(v) for v in data["grid"].values())
    n = conditions * len(data["seeds"])
    runs = _json(root / "results.json")["runs"]
    assert len(runs) == n and len(_csv(root / "results.csv")) == n
    assert not (root / "failures.json").exists() or _json(root / "failures.json") == []  # written when runs fail
    assert "table" in _json(root / "regimes.json")
    for r in runs:
        check_run(root / r["name"])
    if "fingerprint" in data.get("record", []):
        dmd = _json(root / "dmd.json")
        assert dmd["skipped"] == [] and len(dmd["runs"]) == n
    _figures(root)


def check_stages(root: Path, data: dict[str, Any]) -> None:
    stages = data.get("stages") or data["moduli"]
    results = _json(root / "results.json")
    assert len(results["stages"]) == len(data["seeds"]) * (len(stages) + 1)
    if data.get("llc"):
        assert len(results["llc"]["stages"]) == len(stages) + 1
        assert all(row["llc"] is not None for row in results["stages"])
    for seed in data["seeds"]:
        check_run(root / f"seed{seed}" / "direct")
    _figures(root)


def check_perturbation(root: Path, data: dict[str, Any]) -> None:
    pairs = _json(root / "perturbation.json")["pairs"]
    assert len(pairs) == len(data["seeds"]) * len(data["epsilons"])
    _figures(root)


def check_transfer(root: Path, data: dict[str, Any], source_root: Path | None = None) -> None:
    source_root = root / "source" if source_root is None else source_root
    rows = _csv(root / "results.csv")
    assert rows, "no target runs"
    skipped = [(r["condition"], r["seed"], r["note"]) for r in rows if not r["run_dir"]]
    assert not skipped, f"target runs not trained: {skipped}"
    for r in rows:
        check_run(Path(r["run_dir"]))
        if data.get("relearn_steps"):
            check_run(Path(r["run_dir"] + "_relearn"))
    for seed in {int(r["seed"]) for r in rows}:
        check_run(source_root / f"seed{seed}")
    _json(root / "results.json")
    assert "describe" in _json(root / "stats.json")
    _figures(root)


def check_similarity(root: Path, data: dict[str, Any]) -> None:
    assert [t["target"] for t in _json(root / "results.json")["targets"]] == list(data["targets"])
    for target in data["targets"]:
        check_transfer(root / target, data, source_root=root / "source")
    _figures(root)


CHECKS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "run": check_run,
    "sweep": check_sweep,
    "curriculum": check_stages,
    "finetune": check_stages,
    "perturbation": check_perturbation,
    "transfer": check_transfer,
    "similarity": check_similarity,
}
