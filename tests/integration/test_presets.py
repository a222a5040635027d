"""Presets: the shipped configs by name, from folders outside the checkout, and inside a built wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from grokscope.cli import app
from grokscope.experiments.runs import load_base
from grokscope.presets import available, resolve

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "configs"
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_every_shipped_config_is_a_preset_with_its_first_comment_line():
    files = sorted(p for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".toml"))
    presets = {p.name: p for p in available()}
    assert sorted(presets) == sorted(f.stem for f in files)
    for f in files:
        first = next(line for line in f.read_text().splitlines() if line.startswith("#"))
        kind = yaml.safe_load(f.read_text()).get("kind", "run")
        assert presets[f.stem].description == first.lstrip("# ").strip()
        assert presets[f.stem].kind == kind
        assert presets[f.stem].path.read_bytes() == f.read_bytes()


def test_configs_lists_and_shows_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listed = invoke("configs")
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert len(lines) == len(available())
    quickstart = next(line for line in lines if line.split()[0] == "quickstart")
    assert quickstart.split()[1] == "run" and "Groks on 2 CPU cores" in quickstart
    assert next(line for line in lines if line.split()[0] == "transfer_quick").split()[1] == "transfer"
    shown = invoke("configs", "show", "quickstart")
    assert shown.exit_code == 0 and shown.output == (CONFIGS / "quickstart.yaml").read_text()
    missing = invoke("configs", "show", "quickstat")
    assert missing.exit_code == 2
    assert missing.output.startswith("error: quickstat: no such preset; did you mean quickstart? presets: ")
    assert len(missing.output.strip().splitlines()) == 1


def test_train_a_preset_by_name_from_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", "quickstart", "--set", "train.steps=20", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "runs" / "quickstart" / "config.yaml").read_text())
    assert config["name"] == "quickstart" and config["task"]["modulus"] == 59 and config["train"]["steps"] == 20


def test_a_path_that_exists_wins_and_unknown_names_list_the_presets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("name: mine\ntrain: {steps: 5}\n")
    assert resolve("quickstart.yaml") == Path("quickstart.yaml")  # the file here, not the preset
    assert resolve("quickstart").name == "quickstart.yaml" and resolve("quickstart").parent.name == "configs"
    result = invoke("train", "quickstart.yaml", "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and (tmp_path / "runs" / "mine").is_dir(), result.output
    for args, message in (
        (["train", "quickstat"], "quickstat: no such config file or preset; did you mean quickstart? presets: "),
        (["train", "transfer_quick"], "transfer_quick: an experiment config (kind: transfer); run it with"),
        (["experiment", "quickstart"], "quickstart: a run config (it has no kind:); train it with"),
        (["train", "sub/quickstart.yaml"], "sub/quickstart.yaml: no such config file"),
    ):
        result = invoke(*args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.output
    assert "transfer_quick" in invoke("train", "quickstat").output  # the list names every preset


def test_experiment_presets_find_their_base_in_the_package_and_a_copy_finds_it_too(tmp_path, monkeypatch):
    for preset in (p for p in available() if p.kind != "run"):
        data = yaml.safe_load(preset.path.read_text())
        base = data.get("base") or data["source"]
        _, config = load_base(preset.path, base)
        assert config.name == Path(base).stem
    # An experiment preset copied into a folder of its own (configs show > mine.yaml) still finds its base.
    monkeypatch.chdir(tmp_path)
    sweep = {"kind": "sweep", "name": "tiny_sweep", "base": "quickstart.yaml", "set": ["train.steps=10"]}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(sweep))
    result = invoke("experiment", "mine.yaml", "--out", tmp_path / "runs", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    run_config = yaml.safe_load(next((tmp_path / "runs" / "tiny_sweep").rglob("config.yaml")).read_text())
    assert run_config["task"]["modulus"] == 59 and run_config["train"]["steps"] == 10


def test_notebooks_use_the_packaged_presets():
    """A downloaded notebook runs from a plain install: it never looks for the repository around it."""
    for path in sorted(EXAMPLES.glob("*.ipynb")):
        source = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"])
        assert "Path.cwd().parents" not in source and '"configs" /' not in source, path.name
        assert "preset" in source, path.name  # presets.path("quickstart"), or a preset as an experiment's source


@pytest.mark.slow
def test_a_wheel_carries_the_presets_and_trains_one_outside_the_checkout(tmp_path):
    """Build a wheel from a copy of the checkout's tracked layout, unpack it elsewhere and train the quickstart
    preset from an empty folder with only the unpacked wheel on the path."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "src", "configs"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"symlinks": True} if copy is shutil.copytree else {}))
    for junk in source.rglob("__pycache__"):
        shutil.rmtree(junk)
    shutil.rmtree(source / "src" / "grokscope.egg-info", ignore_errors=True)
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run(
        [*pip, ".", "-w", str(wheels)],
        cwd=source,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("grokscope-*.whl")
    with zipfile.ZipFile(wheel) as z:
        packaged = {Path(n).name for n in z.namelist() if n.startswith("grokscope/configs/")}
        z.extractall(tmp_path / "site")
    assert packaged == {p.name for p in CONFIGS.iterdir() if p.suffix in (".yaml", ".toml")}
    assert not (tmp_path / "site" / "grokscope" / "configs").is_symlink()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    code = (
        "import grokscope, sys; from grokscope.cli import app; print(grokscope.__file__, file=sys.stderr); "
        "app(['train', 'quickstart', '--set', 'train.steps=10', '--quiet', '--device', 'cpu'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(str(tmp_path / "site")), proc.stderr  # the unpacked wheel, not the checkout
    assert (work / "runs" / "quickstart" / "summary.json").is_file()
