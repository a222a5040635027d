"""Commands on run directories with damaged files: one line on stderr and exit code 2, never a traceback, and the
files on disk left as they were; damaged analysis caches are set aside and recomputed; non-finite checkpoints are
skipped by `grokscope analyze`."""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from conftest import assert_one_line_error
from grokscope.analysis.runner import analysis_summary, analyze, read_rows, registry
from grokscope.cli import app
from grokscope.store import Run, save_checkpoint

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root):
    """Every file under ``root`` (but the lock, which a command may create) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".grokscope.lock"
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (checkpoints at 0, 20, 40, 60) and the config file it was trained from."""
    from conftest import tiny_config
    from grokscope.training import train

    config = tiny_config()
    folder = tmp_path_factory.mktemp("trained")
    (folder / "tiny.yaml").write_text(config.to_yaml())
    train(config, folder / "out" / "tiny", device="cpu", progress=False)
    return folder


@pytest.fixture
def run_dir(tmp_path, trained):
    shutil.copy(trained / "tiny.yaml", tmp_path / "tiny.yaml")
    shutil.copytree(trained / "out" / "tiny", tmp_path / "out" / "tiny")
    return tmp_path / "out" / "tiny"


def resume(run_dir):
    return invoke("train", run_dir.parents[1] / "tiny.yaml", "--out", run_dir.parent, "--resume", "--quiet")


# metrics.jsonl, summary.json, config.yaml, split, trainer state ----------------------------------------------------
BAD_METRIC_LINES = [
    ("[1, 2]", "expected a JSON object"),
    ('"x"', "expected a JSON object"),
    ('{"train_loss": 1.0}', 'no "step"'),
    ('{"step": "20"}', '"step" must be a non-negative integer'),
    ('{"step": 20.0}', '"step" must be a non-negative integer'),
    ('{"step": false}', '"step" must be a non-negative integer'),
    ('{"step": -3}', '"step" must be a non-negative integer'),
    ('{"step": 20, "test_acc": "high"}', '"test_acc" must be a number or null'),
]


@pytest.mark.parametrize(("line", "problem"), BAD_METRIC_LINES)
def test_malformed_metrics_through_every_command(run_dir, line, problem):
    path = run_dir / "metrics.jsonl"
    rows = path.read_text().splitlines()
    path.write_text("\n".join([rows[0], line, *rows[1:]]) + "\n")
    before = snapshot(run_dir)
    assert_one_line_error(resume(run_dir), str(path), "line 2:", problem)
    assert snapshot(run_dir) == before  # the failed resume changed nothing
    assert_one_line_error(invoke("report", run_dir), str(path), "line 2:", problem)
    assert_one_line_error(invoke("analyze", run_dir, "--gradients", "--steps", "60", "--quiet"), str(path), problem)


@pytest.mark.parametrize("content", ["[1, 2]", "7", '{"regime": ["grokked"]}'])
def test_malformed_summary_in_report(run_dir, content):
    path = run_dir / "summary.json"
    path.write_text(content)
    assert_one_line_error(invoke("report", run_dir), str(path))


@pytest.mark.parametrize("content", ["- a\n- b\n", "a string\n", ""])
def test_config_that_is_not_a_mapping(run_dir, content):
    path = run_dir / "config.yaml"
    path.write_text(content)
    for args in (["report", run_dir], ["analyze", run_dir, "--gradients", "--quiet"]):
        assert_one_line_error(invoke(*args), str(path), "expected a mapping of config fields")


@pytest.mark.parametrize(
    ("part", "indices", "problem"),
    [
        ("train", torch.arange(5, dtype=torch.float64), "expected integers"),
        ("test", torch.arange(6).reshape(2, 3), "expected one dimension"),
        ("test", torch.tensor([-2]), "is negative"),
        ("test", torch.tensor([1000]), "outside the task's 169 examples"),
    ],
)
def test_malformed_split(run_dir, part, indices, problem):
    from safetensors.torch import load_file, save_file

    path = run_dir / "split.safetensors"
    tensors = {**load_file(str(path)), part: indices}
    save_file(tensors, str(path))
    before = snapshot(run_dir)
    assert_one_line_error(invoke("analyze", run_dir, "--gradients", "--quiet"), str(path), problem)
    assert_one_line_error(resume(run_dir), str(path), problem)
    assert snapshot(run_dir) == before


def test_split_with_overlapping_parts(run_dir):
    from safetensors.torch import load_file, save_file

    path = run_dir / "split.safetensors"
    tensors = load_file(str(path))
    tensors["test"] = torch.cat([tensors["test"], tensors["train"][:1]])
    save_file(tensors, str(path))
    assert_one_line_error(invoke("analyze", run_dir, "--gradients", "--quiet"), str(path), 'in both "train" and "test"')


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda s: [s], "expected a dict"),
        (lambda s: {**s, "step": "60"}, '"step" must be a non-negative integer'),
        (lambda s: {**s, "step": 60.0}, '"step" must be a non-negative integer'),
        (lambda s: {**s, "wall_time_s": None}, '"wall_time_s" must be a non-negative number'),
        (lambda s: {**s, "optimizer": {"state": {}}}, '"optimizer": expected a dict with "state" and "param_groups"'),
        (
            lambda s: {**s, "optimizer": {**s["optimizer"], "param_groups": [{"params": "all"}]}},
            '"params" must be a list of parameter indices',
        ),
    ],
)
def test_malformed_trainer_state_on_resume(run_dir, damage, problem):
    path = run_dir / "trainer_state.pt"
    torch.save(damage(torch.load(path, weights_only=True)), path)
    before = snapshot(run_dir)
    assert_one_line_error(resume(run_dir), str(path), "not a grokscope trainer state", problem)
    assert snapshot(run_dir) == before


# analysis caches --------------------------------------------------------------------------------------------------
def test_every_row_the_runner_writes_is_reusable(run_dir):
    run = Run.open(run_dir)
    names = [name for name, spec in registry().items() if spec.in_all]
    first = analyze(run, names, progress=False, skip_inapplicable=True)
    assert first.notes == [] and first.skipped_steps == {}
    for name in first.computed:
        rows, problem = read_rows(run_dir / "analysis" / f"{name}.json", registry()[name])
        assert problem is None and sorted(rows) == [0, 20, 40, 60], (name, problem)
    assert analysis_summary(run, next(n for n in first.summaries)) is not None
    again = analyze(run, names, progress=False, skip_inapplicable=True)
    assert again.notes == [] and all(steps == [] for steps in again.computed.values()), again.computed


@pytest.mark.parametrize(
    "content",
    [
        "{",
        '{"rows": []}',
        "[1, 2, 3]",
        '[{"step": "0"}, {"step": 20.0}]',
        '[{"step": 0, "loss": "low"}, {"step": 20, "grad_norms": [1, 2]}]',
    ],
)
def test_damaged_analysis_file_is_recomputed(run_dir, content):
    path = run_dir / "analysis" / "gradients.json"
    path.parent.mkdir()
    path.write_text(content)
    report = analyze(Run.open(run_dir), ["gradients"], steps=[0, 20], progress=False)
    assert report.computed["gradients"] == [0, 20]
    assert len(report.notes) == 1 and report.notes[0].startswith(f"{path}: ") and "\n" not in report.notes[0]
    assert [r["step"] for r in json.loads(path.read_text())] == [0, 20]
    path.write_text(content)
    result = invoke("analyze", run_dir, "--gradients", "--steps", "0,20", "--quiet")
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "gradients: 2 checkpoint(s) analysed, 0 from cache" in result.output
    path.write_text(content)
    result = invoke("report", run_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    page = (run_dir / "report.html").read_text()
    assert "class='note'" in page and "not shown" in page


def test_damaged_rows_among_good_ones_are_dropped_and_recomputed(run_dir):
    run = Run.open(run_dir)
    analyze(run, ["gradients"], steps=[0, 20, 40], progress=False)
    path = run_dir / "analysis" / "gradients.json"
    rows = json.loads(path.read_text())
    rows[1]["loss"] = "low"
    path.write_text(json.dumps(rows))
    report = analyze(run, ["gradients"], steps=[0, 20, 40], progress=False)
    assert report.computed["gradients"] == [20]
    assert report.notes == [
        f'{path}: row 1 (step 20): loss: expected a number, got "low"; set aside, recomputed where selected'
    ]
    assert all(isinstance(r["loss"], float) for r in json.loads(path.read_text()))


def test_garbage_parquet_table_is_replaced(run_dir):
    run = Run.open(run_dir)
    first = analyze(run, ["neurons"], steps=[0, 20], progress=False)
    (table,) = [p for p in first.files if p.suffix == ".parquet"]
    table.write_bytes(b"PAR1 this is not parquet")
    report = analyze(run, ["neurons"], steps=[0, 20, 40], progress=False)
    assert report.computed["neurons"] == [40]
    assert len(report.notes) == 1 and report.notes[0].startswith(f"{table}: not a readable parquet table")
    import pandas as pd

    # The table's other steps were lost with it: the JSON no longer claims them, so they are analysed again.
    assert set(pd.read_parquet(table)["step"]) == {40}
    assert [r["step"] for r in json.loads((run_dir / "analysis" / "neurons.json").read_text())] == [40]
    again = invoke("analyze", run_dir, "--neurons", "--steps", "0,20,40", "--quiet")
    assert again.exit_code == 0 and "neurons: 2 checkpoint(s) analysed, 1 from cache" in again.output, again.output
    assert set(pd.read_parquet(table)["step"]) == {0, 20, 40}


def test_damaged_phase_summary_counts_as_none(run_dir):
    run = Run.open(run_dir)
    analyze(run, ["progress"], steps=[0, 60], progress=False)
    path = run_dir / "analysis" / "progress.summary.json"
    for content in ("[]", '{"memorization_end": "soon"}', "{"):
        path.write_text(content)
        assert analysis_summary(run, "progress") is None
        result = invoke("analyze", run_dir, "--gradients", "--steps", "60", "--quiet")
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output


# non-finite checkpoints -------------------------------------------------------------------------------------------
def poison(run_dir, step, value=float("nan"), name="blocks.0.mlp.W_in"):
    run = Run.open(run_dir)
    state = run.load_state_dict(step)
    state[name][0, 0] = value
    save_checkpoint(run.checkpoint_path(step), state, step, run.config)


def test_non_finite_checkpoints_are_skipped(run_dir):
    poison(run_dir, 40)
    poison(run_dir, 20, float("inf"), "unembed.W_U")
    report = analyze(Run.open(run_dir), ["gradients"], progress=False)
    assert report.skipped_steps == {
        20: "non-finite weights (inf in unembed.W_U)",
        40: "non-finite weights (NaN in blocks.0.mlp.W_in)",
    }
    assert report.notes == [
        "step 20: non-finite weights (inf in unembed.W_U); skipped",
        "step 40: non-finite weights (NaN in blocks.0.mlp.W_in); skipped",
    ]
    assert report.selected == [0, 60] and report.computed["gradients"] == [0, 60]
    rows = json.loads((run_dir / "analysis" / "gradients.json").read_text())
    assert [(r["step"], r["previous_step"]) for r in rows] == [(0, None), (60, 0)]
    result = invoke("analyze", run_dir, "--quiet")  # every analysis, on what is finite
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


def test_only_non_finite_checkpoints_is_one_line(run_dir):
    poison(run_dir, 40)
    result = invoke("analyze", run_dir, "--gradients", "--steps", "40", "--quiet")
    assert_one_line_error(
        result,
        "all 1 selected checkpoint(s) have non-finite weights (step 40: NaN in blocks.0.mlp.W_in); nothing to analyse",
    )
    result = invoke("analyze", run_dir, "--progress", "--key-from", "40", "--quiet")
    assert_one_line_error(result, "step_0000040.safetensors: non-finite weights (NaN in blocks.0.mlp.W_in)")


# report on folders ------------------------------------------------------------------------------------------------
def test_report_on_folders_that_are_neither_run_nor_experiment(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(invoke("report", tmp_path / "empty"), "neither a run directory")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("hello")
    (other / "data.json").write_text("[1, 2, 3]")
    (other / "broken.json").write_text("{")
    assert_one_line_error(invoke("report", other), "neither a run directory")
    assert not (other / "report.html").exists()


def test_report_on_a_run_without_metrics_or_summary(run_dir):
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "summary.json").unlink()
    result = invoke("report", run_dir)
    assert result.exit_code == 0, result.output
    assert "Training has not finished" in (run_dir / "report.html").read_text()


def test_report_on_a_partial_summary_and_broken_figures(run_dir):
    (run_dir / "summary.json").write_text('{"final": null}')
    figures = run_dir / "analysis" / "figures"
    figures.mkdir(parents=True)
    (figures / "broken.json").write_text('{"data": 5}')
    (figures / "binary.json").write_bytes(b"\xff\xfe")
    (run_dir / "analysis" / "dmd.json").write_text("{")
    result = invoke("report", run_dir)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    page = (run_dir / "report.html").read_text()
    assert "no &#x27;memorization_step&#x27; field, so no grokking sentence" in page
    assert "not a plotly figure" in page and "not UTF-8 text" in page and "dmd.json: not valid JSON" in page


def test_report_on_an_experiment_with_damaged_files(tmp_path, run_dir):
    root = tmp_path / "experiment"
    root.mkdir()
    (root / "results.json").write_text(json.dumps({"config": {"kind": "sweep", "name": "x"}}))
    (root / "stats.json").write_text("[1]")
    (root / "extra.json").write_text("{")
    shutil.copytree(run_dir, root / "runs" / "good")
    shutil.copytree(run_dir, root / "runs" / "bad")
    (root / "runs" / "bad" / "summary.json").write_text("[]")
    result = invoke("report", root)
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    page = (root / "report.html").read_text()
    assert "Runs (1)" in page and "run left out of the table" in page
    assert "not the statistics an experiment writes" in page and "extra.json: not valid JSON" in page
