"""The last bad inputs of issue 26, through the command line: each is one ``error:`` line on stderr and exit code 2,
no traceback, and nothing created or lost; and the summaries never call a run generalized that did not end so."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config
from grokscope.cli import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, expected: str) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert result.stderr.splitlines() == [f"error: {expected}"], result.stderr
    assert result.exit_code == 2


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config().to_yaml())
    return path


def test_train_refuses_a_boolean_step_count(tmp_path, tiny):
    out = tmp_path / "runs"
    result = invoke("train", tiny, "--out", out, "--set", "train.steps=true", "--quiet", "--device", "cpu")
    assert_one_line_error(result, f"{tiny}: train.steps: expected an integer, got true")
    assert not out.exists()


def test_experiment_refuses_boolean_seeds(tmp_path, tiny):
    path = tmp_path / "e.yaml"
    sweep = dict(kind="sweep", name="sw", base="tiny.yaml", grid={"optim.weight_decay": [0, 1]}, seeds=[True])
    path.write_text(yaml.safe_dump(sweep))
    out = tmp_path / "out"
    result = invoke("experiment", path, "--out", out, "--quiet", "--device", "cpu")
    assert_one_line_error(result, f"{path}: seeds: item 0: expected an integer, got true")
    assert not out.exists() or not any(out.iterdir())


NOT_AN_OPTION = "must not start with '-' (a folder named so reads as a command-line option), got '-rf'"


def test_a_run_name_starting_with_a_dash_is_refused(tmp_path, tiny):
    out = tmp_path / "runs"
    result = invoke("train", tiny, "--out", out, "--name=-rf", "--quiet", "--device", "cpu")
    assert_one_line_error(result, f"--name: name: {NOT_AN_OPTION}")
    assert not out.exists()
    named = tmp_path / "named.yaml"
    named.write_text(tiny.read_text().replace("name: tiny", "name: -rf"))
    result = invoke("train", named, "--out", out, "--quiet", "--device", "cpu")
    assert_one_line_error(result, f"{named}: name: {NOT_AN_OPTION}")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["sweep", "curriculum"])
def test_an_experiment_name_starting_with_a_dash_is_refused(tmp_path, tiny, kind):
    path = tmp_path / "e.yaml"
    specs = {
        "sweep": dict(kind="sweep", name="-rf", base="tiny.yaml", grid={"optim.weight_decay": [0, 1]}),
        "curriculum": dict(kind="curriculum", name="-rf", base="tiny.yaml", stages=[7, 13], stage_steps=20, seeds=[0]),
    }
    path.write_text(yaml.safe_dump(specs[kind]))
    out = tmp_path / "out"
    result = invoke("experiment", path, "--out", out, "--quiet", "--device", "cpu")
    assert_one_line_error(result, f"{path}: name: {NOT_AN_OPTION}")
    assert not out.exists() or not any(out.iterdir())


def test_a_sweep_config_name_never_starts_with_a_dash():
    from grokscope.experiments.sweep.plan import _config_name

    assert _config_name("-x=1", "base") == "x-1"
    assert _config_name("--", "base") == "base"


def test_a_modulus_2_division_run_is_not_called_generalized(tmp_path):
    """The real tiny run: its one test pair is right by chance at step 0 and wrong once training has fit the one
    training pair; the summary and the printed sentence must not call that generalization."""
    task = {"operation": "div", "modulus": 2, "train_fraction": 0.5}
    config = tiny_config(seed=2, task=task, train={"steps": 60})  # seed 2: the untrained model gets the test pair
    path = tmp_path / "div2.yaml"
    path.write_text(config.to_yaml())
    result = invoke("train", path, "--out", tmp_path / "runs", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    # The premise: the test pair was right at some step (at step 0, by chance), and the run ends with it wrong.
    assert rows[0]["test_acc"] == 1.0 and rows[-1]["test_acc"] < 0.99
    assert summary["generalization_step"] is None
    assert summary["regime"] in ("memorized_only", "not_learned")
    assert "generalized at once" not in result.output and "-> grokked" not in result.output

    from grokscope.experiments.regimes import classify_run

    assert classify_run(rows).underlying in ("memorization_only", "not_learned")


HUGE = "task.modulus: training would need about 3.78e+06 GiB (the dataset of 10,000,600,009 pairs: 894.1 GiB), but "


@pytest.fixture
def no_training(monkeypatch):
    """Any training is a failure: the refusal must come before the first run starts."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("grokscope.experiments.runs.train_many", refuse)
    monkeypatch.setattr("grokscope.experiments.runs.train", refuse)
    monkeypatch.setattr("grokscope.memory.available_bytes", lambda device: 16 << 30)  # the same on every machine


@pytest.mark.parametrize(
    ("kind", "spec", "where"),
    [
        ("sweep", dict(set=["task.modulus=100003"], grid={"optim.weight_decay": [0, 1]}), "run 0 (wd=0): "),
        ("finetune", dict(moduli=[7, 100003], stage_steps=20, seeds=[0]), "stage mod100003: "),
        ("perturbation", dict(set=["task.modulus=100003"], epsilons=[0.01], seeds=[0]), "base tiny.yaml: "),
    ],
)
def test_an_experiment_too_big_for_memory_is_refused_like_train(tmp_path, tiny, no_training, kind, spec, where):
    """The plan used to build the split (80 GB for a modulus of 100003) before any memory estimate."""
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(dict(kind=kind, name="big", base="tiny.yaml", **spec)))
    out = tmp_path / "out"
    result = invoke("experiment", path, "--out", out, "--quiet", "--device", "cpu")
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert lines == [f"error: {path}: {where}{HUGE}this machine has 16.0 GiB available"], lines
    assert result.exit_code == 2
    assert not out.exists() or not any(out.iterdir())
    # grokscope train gives the same refusal.
    train = invoke("train", tiny, "--out", out, "--set", "task.modulus=100003", "--quiet", "--device", "cpu")
    assert train.exit_code == 2 and train.stderr == f"error: {HUGE}this machine has 16.0 GiB available\n", train.stderr


def test_a_curriculum_whose_nested_split_spans_a_huge_modulus_is_refused(tmp_path, tiny, no_training):
    """A nested split ranks every pair of the modulus grid, whatever the stage's input range: 49 pairs of range 7
    still allocate 10^10 priorities."""
    path = tmp_path / "e.yaml"
    spec = dict(kind="curriculum", name="cur", base="tiny.yaml", stages=[7, 100003], stage_steps=20, seeds=[0])
    path.write_text(yaml.safe_dump({**spec, "set": ["task.modulus=100003"]}))
    result = invoke("experiment", path, "--out", tmp_path / "out", "--quiet", "--device", "cpu")
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0] == (
        f"error: {path}: stage range7: task.modulus: training would need about 223.7 GiB (the dataset of 49 pairs and "
        "its nested split over all 10,000,600,009 pairs of the modulus: 223.5 GiB), but this machine has 16.0 GiB available"
    ), lines


def test_a_replay_share_that_rounds_to_no_pair_is_refused(tmp_path):
    out = tmp_path / "runs"
    result = invoke("train", "multitask_quick", "--out", out, "--set", "task.replay=1e-9", "--quiet", "--device", "cpu")
    assert_one_line_error(
        result,
        "task.replay: 1e-09 of the training set rounds to no earlier-task training pair (beside 1392 of sub); "
        "the smallest share that replays one pair is 0.00036",
    )
    assert not out.exists()


def test_the_smallest_replay_share_named_replays_one_pair():
    from grokscope.config import TaskConfig
    from grokscope.tasks import ModularTask, task_split

    task = dict(operation=["add", "sub"], modulus=59, train_fraction=0.4)
    split = task_split(TaskConfig(**task, replay=0.00036), 0)
    operation = ModularTask.from_config(TaskConfig(**task)).operation_index()[split.train]
    assert int((operation == 0).sum()) == 1  # one add pair replayed beside sub's
    with pytest.raises(Exception, match="rounds to no earlier-task training pair"):
        task_split(TaskConfig(**task, replay=0.000359), 0)


def test_no_accuracy_is_printed_over_no_examples():
    from grokscope.cli.train import operation_accuracy

    final = {"train_acc_sub": 1.0, "test_acc_sub": 0.5, "test_acc_add": 0.25}
    assert operation_accuracy(final, "sub") == "train acc 100.00%, test acc 50.00%"
    assert operation_accuracy(final, "add") == "no training pairs, test acc 25.00%"


def snapshot(root):
    """Every file under ``root`` (but the lock, which a command may create) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".grokscope.lock"
    }


@pytest.fixture
def read_only():
    """Make a folder read-only, for root too (``chattr +i``); skipped where neither way works."""
    import os
    import subprocess

    made: list = []

    def make(folder):
        if os.geteuid() != 0:
            folder.chmod(0o555)
        elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("cannot make a folder read-only for root here (no chattr)")
        made.append(folder)

    yield make
    for folder in made:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        else:
            folder.chmod(0o755)


@pytest.fixture
def stopped_run(tmp_path, tiny):
    """A run trained with --log tensorboard whose summary is gone: a --resume continues it."""
    pytest.importorskip("tensorboard")
    out = tmp_path / "runs"
    result = invoke("train", tiny, "--out", out, "--quiet", "--device", "cpu", "--log", "tensorboard")
    assert result.exit_code == 0, result.output
    (out / "tiny" / "summary.json").unlink()
    return out / "tiny"


def test_resume_with_a_read_only_tensorboard_folder_is_one_line(tiny, stopped_run, read_only):
    folder = stopped_run / "tensorboard"
    before = snapshot(stopped_run)
    read_only(folder)
    result = invoke(
        "train", tiny, "--out", stopped_run.parent, "--resume", "--quiet", "--device", "cpu", "--log", "tensorboard"
    )
    assert "Traceback" not in result.stdout + result.stderr and "b'" not in result.stderr, result.stderr
    assert result.stderr.splitlines() in (
        [f"error: {folder}: cannot write TensorBoard's event files there (operation not permitted)"],
        [f"error: {folder}: cannot write TensorBoard's event files there (permission denied)"],
    ), result.stderr
    assert result.exit_code == 2
    assert snapshot(stopped_run) == before


def test_a_file_where_the_tensorboard_folder_goes_is_one_line(tiny, stopped_run):
    folder = stopped_run / "tensorboard"
    for event_file in folder.iterdir():
        event_file.unlink()
    folder.rmdir()
    folder.write_text("not a folder")
    before = snapshot(stopped_run)
    result = invoke(
        "train", tiny, "--out", stopped_run.parent, "--resume", "--quiet", "--device", "cpu", "--log", "tensorboard"
    )
    assert_one_line_error(result, f"{folder}: is not a folder, so TensorBoard's event files cannot be written there")
    assert snapshot(stopped_run) == before


def test_a_file_name_given_as_bytes_is_printed_as_text(capsys):
    import typer

    from grokscope.cli.guard import guard

    def fail():
        raise PermissionError(1, "Operation not permitted", b"runs/x/tensorboard/events")

    with pytest.raises(typer.Exit) as exit_:
        guard(fail)
    assert exit_.value.exit_code == 2
    assert capsys.readouterr().err == "error: runs/x/tensorboard/events: Operation not permitted\n"


@pytest.fixture
def fourier_run(tmp_path, tiny):
    out = tmp_path / "runs"
    assert invoke("train", tiny, "--out", out, "--quiet", "--device", "cpu").exit_code == 0
    run = out / "tiny"
    result = invoke("analyze", run, "--fourier", "--quiet")
    assert result.exit_code == 0, result.output
    return run


def test_a_fourier_row_with_a_key_frequencies_of_the_wrong_type_is_recomputed(fourier_run):
    from grokscope.analysis.runner import analyze
    from grokscope.store import Run

    path = fourier_run / "analysis" / "fourier.json"
    rows = json.loads(path.read_text())
    rows[1]["key_frequencies"] = "not a list"
    path.write_text(json.dumps(rows))
    report = analyze(Run.open(fourier_run), ["fourier"], progress=False)
    assert report.computed["fourier"] == [20]
    assert report.notes == [
        f'{path}: row 1 (step 20): key_frequencies: expected a list, got "not a list"; set aside, recomputed where '
        "selected"
    ]
    assert all(isinstance(row["key_frequencies"], list) for row in json.loads(path.read_text()))


@pytest.mark.parametrize(
    "damaged",
    [
        [{"step": 0, "key_frequencies": {"a": 1}}, 5, None],
        [{"step": 0, "key_frequencies": [1]}],  # the right type, but none of the norms the figures read
    ],
)
def test_fourier_rows_without_what_the_figures_read_are_recomputed(fourier_run, damaged):
    path = fourier_run / "analysis" / "fourier.json"
    path.write_text(json.dumps(damaged))
    result = invoke("analyze", fourier_run, "--fourier", "--quiet")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "fourier: 4 checkpoint(s) analysed, 0 from cache" in result.output
    notes = [line for line in result.output.splitlines() if line.startswith(str(path))]
    assert len(notes) == 1 and "row 0 (step 0): " in notes[0], result.output
    assert [row["step"] for row in json.loads(path.read_text())] == [0, 20, 40, 60]
    path.write_text(json.dumps(damaged))
    report = invoke("report", fourier_run)
    assert report.exit_code == 0 and "Traceback" not in report.output, report.output


def test_a_property_the_row_holds_is_checked_like_a_field():
    from grokscope.analysis.fourier import FourierResult
    from grokscope.analysis.runner import _result_problem

    # A wrong type is named before the fields that are missing.
    assert (
        _result_problem(FourierResult, {"key_frequencies": {"a": 1}})
        == 'key_frequencies: expected a list, got {"a": 1}'
    )
    assert _result_problem(FourierResult, {"key_frequencies": [1]}).startswith('no "modulus"')
    row = {f: [] for f in FourierResult.__dataclass_fields__ if f != "embedding_coefficients"}
    row.update(modulus=13, rules={}, parameters={}, logit_norms=None, mlp_input_norms=None)
    assert _result_problem(FourierResult, row) is None
    assert _result_problem(FourierResult, {**row, "key_frequencies": {"a": 1}}) == (
        'key_frequencies: expected a list, got {"a": 1}'
    )
    assert _result_problem(FourierResult, {**row, "rule_jaccard": {"a/b": "x"}}) == (
        'rule_jaccard.a/b: expected a number, got "x"'
    )
