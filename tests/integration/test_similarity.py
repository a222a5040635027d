"""The task-similarity experiment: one source's runs shared by several transfer targets."""

import json

import pytest
import yaml

from conftest import tiny_config
from grokscope.errors import UserError
from grokscope.experiments import run
from grokscope.store import Run


def _write(tmp_path, **spec):
    source = tiny_config(train={"steps": 60, "eval_every": 10, "checkpoints": {"every": 10}})
    (tmp_path / "source.yaml").write_text(source.to_yaml())
    path = tmp_path / "similarity.yaml"
    base = {
        "kind": "similarity",
        "name": "sim",
        "source": "source.yaml",
        "targets": {"sub": ["task.operation=sub", "train.steps=30"], "random": ["task.operation=random"]},
        "seeds": [0],
        "conditions": ["random"],
        "partial": [{"name": "at40", "step": 40}],
        "budgets": {"random": 30},
    }
    path.write_text(yaml.safe_dump({**base, **spec}, sort_keys=False))  # targets keep their order
    return path


def test_targets_share_the_source_runs_and_are_compared_in_one_table(tmp_path):
    path = _write(tmp_path)
    report = run(path, tmp_path / "out", device="cpu", progress=False)
    lines = report.lines
    root = tmp_path / "out" / "sim"
    assert report.failures == []
    assert sorted(p.name for p in root.iterdir()) == ["figures", "random", "results.json", "source", "sub"]
    assert not (root / "sub" / "source").exists() and (root / "source" / "seed0" / "summary.json").is_file()
    results = json.loads((root / "results.json").read_text())
    assert [t["target"] for t in results["targets"]] == ["sub", "random"]
    for target in results["targets"]:
        own = json.loads((root / target["target"] / "stats.json").read_text())
        assert target["retention"] == {c: m["source_retention"] for c, m in own["final"].items()}
        assert target["chance"] == pytest.approx(1 / 13)
        # A random table's test accuracy is chance by construction: its speed-up is read on train accuracy.
        expected = "train_acc" if target["target"] == "random" else "test_acc"
        assert target["speed_on"] == own["speed_on"] == expected
    assert (root / "figures" / "similarity.html").is_file()
    assert lines[0].startswith("target | condition") and len(lines) == 1 + 2 * 2 + 1
    # The random target really is the table, not another operation.
    random_run = json.loads((root / "random" / "results.json").read_text())["targets"][0]["run_dir"]
    assert Run.open(random_run).config.task.operation == "random"


def test_similarity_config_mistakes_are_one_line_and_write_nothing(tmp_path):
    for spec, message in [
        ({"targets": {}}, "targets"),
        ({"targets": {"sub": []}}, "targets.sub: needs at least one --set override"),
        ({"targets": {"source": ["task.operation=sub"]}}, "targets.source"),
        ({"target_set": ["task.operation=sub"]}, "target_set: give each target's overrides under targets"),
        ({"targets": {"sub": ["task.operation=pow"]}}, "unknown operation 'pow'"),
    ]:
        path = _write(tmp_path, **spec)
        with pytest.raises(UserError, match=message) as err:
            run(path, tmp_path / "out", device="cpu", progress=False)
        assert "\n" not in str(err.value)
        assert not (tmp_path / "out").exists()
