"""`grokscope analyze`: caching across invocations, figures that work offline, one-line errors."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from grokscope.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def run_copy(tmp_path, grokked_run):
    target = tmp_path / "run"
    shutil.copytree(grokked_run.run.root, target)
    return target


def test_second_run_analyses_only_new_checkpoints(run_copy):
    first = invoke("analyze", run_copy, "--gradients", "--steps", "0,100,200", "--quiet")
    assert first.exit_code == 0, first.output
    assert "gradients: 3 checkpoint(s) analysed, 0 from cache" in first.output
    rows = json.loads((run_copy / "analysis" / "gradients.json").read_text())
    assert [r["step"] for r in rows] == [0, 100, 200]
    second = invoke("analyze", run_copy, "--gradients", "--steps", "0,100,200,300", "--quiet")
    assert "gradients: 1 checkpoint(s) analysed, 3 from cache" in second.output
    rows = json.loads((run_copy / "analysis" / "gradients.json").read_text())
    assert [r["step"] for r in rows] == [0, 100, 200, 300]
    figures = run_copy / "analysis" / "figures"
    html = (figures / "gradient_norms.html").read_text()
    assert (figures / "plotly.min.js").is_file() and 'src="plotly.min.js"' in html
    assert "cdn.plot.ly" not in html


def test_bare_checkpoints_folder_is_enough(tmp_path, grokked_run):
    bare = tmp_path / "checkpoints"
    shutil.copytree(grokked_run.run.checkpoint_dir, bare)
    last = grokked_run.run.steps()[-1]
    result = invoke("analyze", bare, "--gradients", "--steps", last, "--out", tmp_path / "out", "--quiet")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "gradients.json").is_file()


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda run, tmp: [tmp / "empty"], "neither a run directory"),
        (lambda run, tmp: [run, "--only", "telepathy"], "unknown analysis 'telepathy'"),
        (lambda run, tmp: [run, "--gradients", "--steps", "7"], "no checkpoint at step 7"),
        (lambda run, tmp: [run, "--gradients", "--steps", "x"], "--steps 'x'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, run_copy, make_args, message):
    (tmp_path / "empty").mkdir()
    result = invoke("analyze", *make_args(run_copy, tmp_path), "--quiet")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_incompatible_checkpoint_is_one_line_exit_2(tmp_path, run_copy):
    # A checkpoint whose weights do not fit the model its own metadata describes.
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = sorted((run_copy / "checkpoints").glob("step_*.safetensors"))[-1]
    step = int(path.stem.removeprefix("step_"))
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(path))
    tensors["blocks.0.mlp.W_in"] = tensors["blocks.0.mlp.W_in"][:, :7].contiguous()
    save_file(tensors, str(path), metadata=metadata)
    result = invoke("analyze", run_copy, "--gradients", "--steps", step, "--quiet")
    assert result.exit_code == 2
    assert "does not fit" in result.output and len(result.output.strip().splitlines()) == 1


def test_default_analysis_skips_what_the_task_does_not_support(tmp_path):
    from conftest import tiny_config
    from grokscope.training import train

    cfg = tiny_config(task={"operation": "mul"}, train={"steps": 20})
    train(cfg, tmp_path / "mul", device="cpu", progress=False)
    result = invoke("analyze", tmp_path / "mul", "--quiet", "--no-figures")
    assert result.exit_code == 0, result.output
    assert "progress: skipped (progress: defined for add, sub, not mul)" in result.output
    assert "fourier: 2 checkpoint(s) analysed" in result.output
    # Asked for by name, an analysis that does not apply is an error.
    named = invoke("analyze", tmp_path / "mul", "--progress", "--quiet")
    assert named.exit_code == 2 and "not mul" in named.output


def test_a_probe_larger_than_the_inputs_is_refused_in_one_line(run_copy):
    """The probe used to be cut to the 3,481 inputs of p = 59 while the recorded options said 10,000,000."""
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))
    result = invoke("analyze", run_copy, "--fingerprint", "--probe-size", 10_000_000, "--quiet")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --probe-size 10000000: "), result.output
    assert "3,481 inputs" in lines[0] and "at most 3481" in lines[0]
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before  # nothing written, nothing lost
    fits = invoke("analyze", run_copy, "--fingerprint", "--probe-size", 3481, "--steps", "0", "--quiet")
    assert fits.exit_code == 0, fits.output
    row = json.loads((run_copy / "analysis" / "fingerprint.json").read_text())[0]
    assert row["options"] == {"probe_size": 3481} and len(row["probe_rows"]) == 3481  # recorded as used
