"""`grokscope analyze --llc` with the sampler settings as flags: they reach llc.compute, key the cache, and a bad
value is one line."""

import importlib.util
import json

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, tiny_config
from grokscope.analysis import llc
from grokscope.cli import app
from grokscope.store import Run

runner = CliRunner()
needs_devinterp = pytest.mark.skipif(importlib.util.find_spec("devinterp") is None, reason="the llc extra")

FLAGS = {
    "--llc-lr": "1e-3",
    "--llc-n-beta": "12.5",
    "--llc-localization": "50",
    "--llc-num-chains": "2",
    "--llc-num-draws": "8",
    "--llc-num-burnin": "4",
    "--llc-batch-size": "full",
    "--llc-seed": "3",
}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def trained(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny_config().to_yaml())
    assert invoke("train", path, "--out", tmp_path, "--quiet", "--device", "cpu").exit_code == 0
    return tmp_path / "tiny"


@needs_devinterp
@pytest.mark.slow
def test_llc_flags_reach_compute_and_key_the_cache(trained):
    args = ["analyze", trained, "--llc", "--steps", "60", "--quiet", "--no-figures"]
    first = invoke(*args, *[part for item in FLAGS.items() for part in item])
    assert first.exit_code == 0, first.output
    assert "llc: 1 checkpoint(s) analysed, 0 from cache" in first.output
    row = json.loads((trained / "analysis" / "llc.json").read_text())[-1]
    given = {"lr": 1e-3, "n_beta": 12.5, "localization": 50.0, "num_chains": 2, "num_draws": 8, "num_burnin": 4}
    assert row["options"] == {**given, "batch_size": None, "seed": 3}
    run = Run.open(trained)
    n = len(run.split().train)
    # What the sampler ran with (recorded by estimate_llc): every flag, the full batch as n rows.
    assert row["settings"] == {**given, "batch_size": n, "seed": 3, "loss_fn": "softmax", "loss_dtype": "float64"}
    # The same estimate as llc.compute called directly with those keywords (the sampler is seeded).
    direct = llc.compute(run.load_model(60), run.task, split=run.split(), **given, batch_size=None, seed=3)
    assert row["llc_per_chain"] == pytest.approx(direct.llc_per_chain, rel=1e-9)

    again = invoke(*args, *[part for item in FLAGS.items() for part in item])
    assert "llc: 0 checkpoint(s) analysed, 1 from cache" in again.output
    other_seed = invoke(*args, *[part for item in {**FLAGS, "--llc-seed": "4"}.items() for part in item])
    assert "llc: 1 checkpoint(s) analysed, 0 from cache" in other_seed.output
    # Without flags the defaults apply: a row computed with other settings is not reused for them.
    defaults = invoke(*args, "--llc-num-draws", "150")  # equal to the default: recorded as no option at all
    assert "llc: 1 checkpoint(s) analysed, 0 from cache" in defaults.output
    row = json.loads((trained / "analysis" / "llc.json").read_text())[-1]
    assert "options" not in row and row["settings"]["num_chains"] == llc.DEFAULTS["num_chains"]
    assert "llc: 0 checkpoint(s) analysed, 1 from cache" in invoke(*args).output


def test_bad_llc_flags_are_one_line(tmp_path):
    path = tmp_path / "nowhere"  # the flags are checked before the run is opened
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-lr", "0"), "--llc-lr 0.0", "greater than 0")
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-num-chains", "0"), "--llc-num-chains 0")
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-num-draws", "2"), "--llc-num-draws 2")
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-n-beta", "nan"), "--llc-n-beta nan", "finite")
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-batch-size", "half"), "--llc-batch-size half")
    assert_one_line_error(invoke("analyze", path, "--llc", "--llc-num-draws", "many"), "--llc-num-draws")
    assert_one_line_error(invoke("analyze", path, "--fourier", "--llc-seed", "1"), "--llc-seed: needs --llc")
    assert_one_line_error(invoke("analyze", path, "--only", "llc", "--llc-seed", "1"), "nowhere")  # --only llc counts
