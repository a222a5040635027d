"""`grokscope import`: TransformerLens state dicts (one, or the grokking demo's dict of several) become a run
directory that `grokscope analyze` reads; files that need unpickling, wrong shapes and missing files are one line."""

import argparse
import json
from pathlib import Path

import torch
from typer.testing import CliRunner

from conftest import assert_one_line_error
from grokscope.cli import app
from grokscope.store import Run

runner = CliRunner()
QUICKSTART = Path(__file__).parents[2] / "configs" / "quickstart.yaml"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def tl_state(run: Run, step: int | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint as TransformerLens saves it: its parameters plus the attention buffers grokscope rebuilds."""
    state = dict(run.load_state_dict(step))
    n_ctx = run.task.n_ctx
    state["blocks.0.attn.mask"] = torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool))
    state["blocks.0.attn.IGNORE"] = torch.tensor(-1e5)
    return state


def test_import_one_state_dict_and_analyze_it(grokked_run, tmp_path):
    source = grokked_run.run
    path = tmp_path / "final.pth"
    torch.save(tl_state(source), path)
    result = invoke("import", path, "--config", QUICKSTART, "--name", "imported", "--out", tmp_path, "--step", 470)
    assert result.exit_code == 0, result.output
    assert "imported 1 checkpoint(s) (step 470)" in result.output and "the split the config implies" in result.output
    run = Run.open(tmp_path / "imported")
    assert run.steps() == [470] and (tmp_path / "imported" / ".grokscope-run").is_file()
    for key, tensor in source.load_state_dict().items():
        assert torch.equal(run.load_state_dict(470)[key], tensor), key
    assert torch.equal(run.split().train, source.split().train)  # quickstart's split: same config, same seed
    analysed = invoke("analyze", tmp_path / "imported", "--fourier", "--quiet", "--no-figures")
    assert analysed.exit_code == 0, analysed.output
    row = json.loads((tmp_path / "imported" / "analysis" / "fourier.json").read_text())[-1]
    from grokscope.analysis import fourier

    assert row["key_frequencies"] == fourier.compute(source.load_model(), source.task).key_frequencies


def test_import_the_demo_layout_with_its_split(grokked_run, tmp_path):
    source = grokked_run.run
    steps = source.steps()
    split = source.split()
    p = source.task.modulus
    pairs = source.task.pairs()
    demo_index = lambda rows: (pairs[rows, 0] * p + pairs[rows, 1]).tolist()  # noqa: E731 - the demo's a * p + b
    data = {
        "model": tl_state(source, steps[-1]),
        "checkpoints": [tl_state(source, s) for s in steps[:3]],
        "checkpoint_epochs": steps[:3],
        "train_losses": [1.0] * (steps[-1] + 1),
        "test_losses": [1.0] * (steps[-1] + 1),
        "train_indices": demo_index(split.train),
        "test_indices": torch.tensor(demo_index(split.test)),
    }
    path = tmp_path / "demo.pth"
    torch.save(data, path)
    result = invoke("import", path, "--config", QUICKSTART, "--name", "demo", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    assert "the source's train/test indices" in result.output
    run = Run.open(tmp_path / "demo")
    assert run.steps() == [*steps[:3], steps[-1]]
    assert torch.equal(run.split().train.sort().values, split.train.sort().values)
    assert torch.equal(run.split().test.sort().values, split.test.sort().values)
    analysed = invoke("analyze", tmp_path / "demo", "--fourier", "--progress", "--quiet", "--no-figures")
    assert analysed.exit_code == 0, analysed.output
    assert "progress: 4 checkpoint(s) analysed" in analysed.output


def test_import_refuses_bad_inputs_in_one_line_and_writes_nothing(grokked_run, tmp_path):
    source = grokked_run.run
    out = tmp_path / "runs"
    args = ["--config", QUICKSTART, "--out", out, "--name", "bad"]
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": tl_state(source), "config": argparse.Namespace(d_model=128)}, pickled)
    assert_one_line_error(invoke("import", pickled, *args), "argparse.Namespace", "weights_only=True", "re-save")
    assert_one_line_error(invoke("import", tmp_path / "missing.pth", *args), "missing.pth", "no such file")
    plain = tmp_path / "final.pth"
    torch.save(tl_state(source), plain)
    assert_one_line_error(invoke("import", plain, *args, "--modulus", 61), "embed.W_E has shape", "[60, 128]")
    wrong = tl_state(source)
    wrong["blocks.0.mlp.W_in"] = wrong["blocks.0.mlp.W_in"][:, :10]
    torch.save(wrong, plain)
    assert_one_line_error(invoke("import", plain, *args), "blocks.0.mlp.W_in has shape")
    missing = tl_state(source)
    del missing["unembed.W_U"]
    torch.save(missing, plain)
    assert_one_line_error(invoke("import", plain, *args), "missing key unembed.W_U")
    (tmp_path / "text.pth").write_text("not a torch file")
    assert_one_line_error(invoke("import", tmp_path / "text.pth", *args), "text.pth")
    assert not (out / "bad").exists()
