"""Bad experiment configs and options through the CLI: exit 2, one ``error:`` line naming the file and the field, no
traceback, and nothing trained or written (every experiment validates all its runs before the first one trains)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.analysis.common import jsonable
from grokscope.cli import app
from grokscope.experiments.perturbation import PairResult
from grokscope.viz.perturbation_text import pair_line

PERT = dict(kind="perturbation", name="pert", base="tiny.yaml", set=["train.steps=20"], epsilons=[0.01], seeds=[0])
CUR = dict(kind="curriculum", name="cur", base="tiny.yaml", stages=[7, 13], stage_steps=20, seeds=[0])
FT = dict(kind="finetune", name="ft", base="tiny.yaml", moduli=[7, 13], stage_steps=20, seeds=[0])
SW = dict(kind="sweep", name="sw", base="tiny.yaml", set=["train.steps=20"], grid={"optim.weight_decay": [0, 1]})
TR = dict(
    kind="transfer",
    name="tr",
    source="tiny.yaml",
    target_set=["task.operation=sub"],
    seeds=[0],
    conditions=["memorized"],
    budgets={"memorized": 20},
)
EVERY_COMPONENT = ["embed", "pos_embed", "attn", "mlp", "unembed"]
BIG_GRID = {"optim.lr": [round(1e-3 * (i + 1), 6) for i in range(1000)], "optim.weight_decay": list(range(1000))}


def spec(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


# (experiment config, extra CLI options, the error line after "error: <experiment file>: ", or None for an exact
# line that does not start with the file)
CASES = {
    # perturbation
    "eps inf": (spec(PERT, epsilons=[float("inf")]), (), "epsilons.0: Input should be a finite number (got inf)"),
    "eps nan": (spec(PERT, epsilons=[float("nan")]), (), "epsilons.0: Input should be a finite number (got nan)"),
    "eps 1e300": (
        spec(PERT, epsilons=[1e300]),
        (),
        "epsilons.0: Input should be less than or equal to 100 (got 1e+300)",
    ),
    "eps zero": (spec(PERT, epsilons=[0.0]), (), "epsilons.0: Input should be greater than 0 (got 0.0)"),
    "eps same folder": (
        spec(PERT, epsilons=[0.01, 0.010000001]),
        (),
        "epsilons: 0.01 and 0.010000001 would share the run folder 'seed0_eps0.01'; give distinct values",
    ),
    "pert seeds -1": (
        spec(PERT, seeds=[-1]),
        (),
        "seeds.0: Input should be greater than or equal to 0 (got -1)",
    ),
    "pert seeds twice": (spec(PERT, seeds=[1, 1]), (), "seeds: each seed once, got [1, 1]"),
    "pert set entry": (
        spec(PERT, set=["train.steps=20", "optim.lr"]),
        (),
        "set.1: 'optim.lr': expected key=value, e.g. optim.lr=1e-3",
    ),
    "pert set value": (
        spec(PERT, set=["optim.lr=-1"]),
        (),
        "set: optim.lr: Input should be greater than 0 (got -1)",
    ),
    "pert name too long": (
        spec(PERT, name="p" * 300),
        (),
        "name: String should have at most 100 characters (got 'ppppppppppppppppppppppppppp...pppppppppppppppppppppppppppp')",
    ),
    # launchers
    "pert --address": (
        PERT,
        ("--address", "auto"),
        "!--address auto: a Ray address needs --launcher ray",  # every kind runs on Ray now
    ),
    "cur --address": (
        CUR,
        ("--address", "auto"),
        "!--address auto: a Ray address needs --launcher ray",
    ),
    "transfer --address": (TR, ("--address", "auto"), "!--address auto: a Ray address needs --launcher ray"),
    "sweep --launcher bogus": (SW, ("--launcher", "bogus"), "!--launcher bogus: expected local or ray"),
    "sweep --address local": (SW, ("--address", "auto"), "!--address auto: a Ray address needs --launcher ray"),
    # curriculum
    "cur steps 0": (spec(CUR, stage_steps=0), (), "stage_steps: every stage needs at least 1 step, got 0"),
    "cur steps -5": (spec(CUR, stage_steps=-5), (), "stage_steps: every stage needs at least 1 step, got -5"),
    "cur steps [0, 10]": (
        spec(CUR, stage_steps=[0, 10]),
        (),
        "stage_steps: every stage needs at least 1 step, got [0, 10]",
    ),
    "cur stages [0, 13]": (
        spec(CUR, stages=[0, 13]),
        (),
        "stages.0: Input should be greater than or equal to 1 (got 0)",
    ),
    "cur stages [-3, 13]": (
        spec(CUR, stages=[-3, 13]),
        (),
        "stages.0: Input should be greater than or equal to 1 (got -3)",
    ),
    "cur stage of one pair": (
        spec(CUR, stages=[1, 13]),
        (),
        "stage range1: task.train_fraction: 0.5 of 1 examples leaves an empty train or test set",
    ),
    "cur seeds -1": (spec(CUR, seeds=[-1]), (), "seeds.0: Input should be greater than or equal to 0 (got -1)"),
    "cur seeds twice": (spec(CUR, seeds=[0, 0]), (), "seeds: each seed once, got [0, 0]"),
    # finetune
    "ft moduli [1, 13]": (
        spec(FT, moduli=[1, 13]),
        (),
        "moduli.0: Input should be greater than or equal to 2 (got 1)",
    ),
    "ft input_range above a modulus": (
        spec(FT, moduli=[5, 13], set=["task.input_range=7"]),
        (),
        "stage mod5: task.input_range: 7 exceeds the modulus 5",
    ),
    "ft div composite": (
        spec(FT, moduli=[4, 13], set=["task.operation=div"]),
        (),
        "stage mod4: task.modulus: div needs a prime modulus, got 4",
    ),
    "ft steps 0": (spec(FT, stage_steps=0), (), "stage_steps: every stage needs at least 1 step, got 0"),
    "ft set entry": (spec(FT, set=["=3"]), (), "set.0: '=3': expected key=value, e.g. optim.lr=1e-3"),
    # transfer
    "tr freeze all": (
        spec(TR, freeze=EVERY_COMPONENT),
        (),
        "freeze: optim.freeze: freezes every component of this model (embed, pos_embed, attn, mlp, unembed); "
        "nothing would train",
    ),
    "tr budget 0": (
        spec(TR, budgets={"memorized": 0}),
        (),
        "budgets.memorized: Input should be greater than or equal to 1 (got 0)",
    ),
    "tr budget -5": (
        spec(TR, budgets={"memorized": -5}),
        (),
        "budgets.memorized: Input should be greater than or equal to 1 (got -5)",
    ),
    "tr seeds -1": (spec(TR, seeds=[-1]), (), "seeds.0: Input should be greater than or equal to 0 (got -1)"),
    "tr target_set entry": (
        spec(TR, target_set=["nope"]),
        (),
        "target_set.0: 'nope': expected key=value, e.g. optim.lr=1e-3",
    ),
    "tr other d_model": (
        spec(TR, target_set=["model.d_model=64", "model.d_head=32"]),
        (),
        "target_set: model.d_model is 64 in the target but 32 in the source; a checkpoint carries over only to "
        "the same architecture (the task's vocabulary may differ)",
    ),
    "tr other format": (
        spec(TR, target_set=["task.format=power"]),
        (),
        "target_set: task.format: cannot map tokens between the nanda and power formats",
    ),
    "tr criteria nan": (
        spec(TR, criteria={"grokked_test_acc": float("nan")}),
        (),
        "criteria.grokked_test_acc: Input should be a finite number (got nan)",
    ),
    # sweep
    "sweep 1000 x 1000": (
        spec(SW, grid=BIG_GRID),
        (),
        "grid: 1,000,000 runs (1000 x 1000 values x 1 seed); an experiment plans at most 10,000",
    ),
    "sweep seeds x grid": (
        spec(SW, grid={"optim.lr": [0.1, 0.01]}, seeds=list(range(5001))),
        (),
        "grid: 10,002 runs (2 values x 5001 seeds); an experiment plans at most 10,000",
    ),
    "sweep rules nan": (
        spec(SW, rules={"grok_ratio": float("nan")}),
        (),
        "rules.grok_ratio: Input should be a finite number (got nan)",
    ),
    "sweep seeds -1": (spec(SW, seeds=[-1]), (), "seeds.0: Input should be greater than or equal to 0 (got -1)"),
    "sweep set entry": (spec(SW, set=["optim.lr"]), (), "set.0: 'optim.lr': expected key=value, e.g. optim.lr=1e-3"),
}


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Any training is a failure here: every mistake must be caught before the first run starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the config was fully validated")

    monkeypatch.setattr("grokscope.experiments.runs.train_many", refuse)
    monkeypatch.setattr("grokscope.experiments.runs.train", refuse)  # runs with recorders train one by one


@pytest.mark.parametrize("case", list(CASES))
def test_bad_experiment_is_one_line_before_anything_trains(tmp_path, case):
    experiment, options, expected = CASES[case]
    (tmp_path / "tiny.yaml").write_text(tiny_config().to_yaml())
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["experiment", str(path), "--out", str(out), "--quiet", "--device", "cpu", *options]
    )
    line = expected[1:] if expected.startswith("!") else f"{path}: {expected}"
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"error: {line}"], result.stderr
    assert result.exit_code == 2
    assert not out.exists() or not any(out.iterdir())  # nothing created, let alone trained


def test_a_diverged_pair_is_described_without_crashing():
    pair = PairResult(
        seed=0,
        epsilon=50.0,
        steps=[],
        parameter_distance=[],
        prediction_disagreement=[],
        fingerprint_steps=[0],
        fingerprint_distance=[float("nan")],
        base_generalization_step=None,
        perturbed_generalization_step=None,
        both_grokked=False,
        perturbed_diverged_step=0,
    )
    assert pair_line(jsonable(pair)) == (
        "seed 0, eps 50: no common checkpoints, generalized at step — vs —, perturbed run diverged at step 0"
    )
    # Non-finite distances are null in perturbation.json, which is what the text is printed from.
    pair.steps, pair.parameter_distance, pair.prediction_disagreement = [0, 10], [0.5, float("nan")], [0.0, 0.25]
    assert pair_line(jsonable(pair)).startswith("seed 0, eps 50: parameter distance 0.5 -> —, final disagreement 25.0%")
    failed = PairResult(seed=1, epsilon=0.1, status="failed", error="seed1_base: RuntimeError: boom")
    assert pair_line(jsonable(failed)) == "seed 1, eps 0.1: failed: seed1_base: RuntimeError: boom"
