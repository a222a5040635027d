"""`grokscope compare RUN_A RUN_B`: one line per measure (or --json), and one-line refusals of bad inputs."""

import json
import shutil

from typer.testing import CliRunner

from conftest import assert_one_line_error, tiny_config
from grokscope.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def train_tiny(tmp_path, name, **sections):
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_config(name=name, **sections).to_yaml())
    result = invoke("train", path, "--out", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    return tmp_path / name


def test_compare_a_grokked_run_with_its_copy(grokked_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(grokked_run.run.root, copy)
    result = invoke("compare", grokked_run.run.root, copy)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("comparing ")
    assert lines[1].startswith("key frequencies: ") and "(Jaccard 1.00)" in lines[1]
    assert lines[2].startswith("predictions: agree on 100.0% of inputs")
    assert lines[3].startswith("embeddings: principal angles of the top ") and "overlap 1.00" in lines[3]
    as_json = invoke("compare", grokked_run.run.root, copy, "--json")
    assert as_json.exit_code == 0, as_json.output
    row = json.loads(as_json.output)
    assert row["agreement"] == 1.0 and row["key_frequency_jaccard"] == 1.0
    assert row["key_frequencies_a"] == row["key_frequencies_b"] and row["step_a"] == row["step_b"]


def test_compare_two_seeds_and_chosen_steps(tmp_path):
    first = train_tiny(tmp_path, "a")
    second = train_tiny(tmp_path, "b", seed=1)
    result = invoke("compare", first, second, "--step-a", 20, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["step_a"] == 20 and row["step_b"] == 60
    assert 0 <= row["agreement"] <= 1 and 0 <= row["key_frequency_jaccard"] <= 1
    assert len(row["principal_angles"]) == row["k"]


def test_compare_refuses_bad_inputs_in_one_line(tmp_path):
    first = train_tiny(tmp_path, "a")
    other_modulus = train_tiny(tmp_path, "m17", task={"modulus": 17})
    other_operation = train_tiny(tmp_path, "sub", task={"operation": "sub"})
    assert_one_line_error(invoke("compare", first, tmp_path / "nowhere"), "nowhere", "no such run directory")
    assert_one_line_error(invoke("compare", first, other_modulus), "different tasks (modulus 13 vs 17)")
    assert_one_line_error(invoke("compare", first, other_operation), "different tasks (operation add vs sub)")
    assert_one_line_error(invoke("compare", first, first, "--step-b", 7), "--step-b 7", "no checkpoint")
