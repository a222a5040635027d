"""The command line: exit codes, one-line errors, nothing on disk harmed."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from grokscope.cli import app, parse_seeds
from grokscope.errors import UserError

runner = CliRunner()


@pytest.fixture
def config_file(tmp_path, tiny):
    path = tmp_path / "tiny.yaml"
    path.write_text(tiny.to_yaml())
    return path


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,2-3") == [1, 2, 3, 5]
    for bad in ("a", "3-1", "1,,2"):
        with pytest.raises(UserError):
            parse_seeds(bad)


def test_train_several_seeds_into_sibling_directories(tmp_path, config_file):
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        run_dir = tmp_path / "runs" / f"tiny_seed{seed}"
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["seed"] == seed and cfg["task"]["split_seed"] is None  # the split follows the seed
        assert str(run_dir) in result.output
    # A second train into the same place is refused; --resume finds both finished.
    again = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet")
    assert again.exit_code == 2 and "already exists" in again.output
    resumed = invoke("train", config_file, "--out", tmp_path / "runs", "--seeds", "0-1", "--quiet", "--resume")
    assert resumed.exit_code == 0, resumed.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "task.train_fraction=2"], "task.train_fraction"),
        (["--set", "task.operation=div", "--set", "task.modulus=12"], "prime modulus"),
        (["--set", "model.preset=gpt9"], "model.preset"),
        (["--set", "optim.momentum=0.9"], "optim.momentum: unknown key"),
        (["--device", "tpu"], "--device tpu"),
        (["--seeds", "x"], "--seeds"),
        (["--record", "telepathy"], "--record telepathy: unknown recorder"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, config_file, args, message):
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--quiet", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert not (tmp_path / "runs" / "tiny").exists()


def test_missing_config_and_resume_without_run(tmp_path, config_file):
    result = invoke("train", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "no such config file" in result.output
    # --resume continues what was started and starts what was not: rerunning a command always continues it.
    result = invoke("train", config_file, "--out", tmp_path / "runs", "--resume", "--quiet")
    assert result.exit_code == 0 and "resumed" not in result.output, result.output
    assert (tmp_path / "runs" / "tiny" / "summary.json").is_file()


def test_corrupt_checkpoint_on_resume_is_one_line_and_nothing_is_lost(tmp_path, config_file):
    assert invoke("train", config_file, "--out", tmp_path, "--quiet").exit_code == 0
    run_dir = tmp_path / "tiny"
    (run_dir / "trainer_state.pt").write_bytes(b"not a torch file")
    before = sorted(p.name for p in run_dir.rglob("*"))
    result = invoke("train", config_file, "--out", tmp_path, "--quiet", "--resume")
    assert result.exit_code == 2 and "trainer_state.pt: corrupt" in result.output
    assert sorted(p.name for p in run_dir.rglob("*")) == before


def test_real_process_prints_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  modulus: 1\n")
    exe = Path(sys.executable).with_name("grokscope")
    proc = subprocess.run([str(exe), "train", str(bad)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {bad}: task.modulus: Input should be greater than or equal to 2 (got 1)"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_record_gradients_during_training(tmp_path, config_file):
    result = invoke("train", config_file, "--out", tmp_path, "--quiet", "--record", "gradients", "--record-every", "20")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "tiny" / "recordings" / "gradient_norms.jsonl").read_text().splitlines()
    assert [yaml.safe_load(line)["step"] for line in lines] == [0, 20, 40]


def test_name_gives_a_changed_run_a_folder_of_its_own(tmp_path, config_file):
    assert invoke("train", config_file, "--out", tmp_path, "--quiet").exit_code == 0
    # --set alone keeps the name, so it meets the first run's folder ...
    clash = invoke("train", config_file, "--out", tmp_path, "--quiet", "--set", "optim.lr=3e-3")
    assert clash.exit_code == 2 and "tiny: already exists" in clash.output
    # ... and --name gives it its own, for one seed or several.
    renamed = invoke("train", config_file, "--out", tmp_path, "--quiet", "--set", "optim.lr=3e-3", "--name", "lr3e-3")
    assert renamed.exit_code == 0, renamed.output
    config = yaml.safe_load((tmp_path / "lr3e-3" / "config.yaml").read_text())
    assert config["name"] == "lr3e-3" and config["optim"]["lr"] == 3e-3
    seeds = invoke("train", config_file, "--out", tmp_path, "--quiet", "--name", "many", "--seeds", "0-1")
    assert seeds.exit_code == 0 and (tmp_path / "many_seed1" / "summary.json").is_file(), seeds.output
    bad = invoke("train", config_file, "--out", tmp_path, "--quiet", "--name", "../up")
    assert bad.exit_code == 2 and bad.output.startswith("error: --name: name: ")


def command_help(args: list[str], width: int) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(width), "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def all_commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    found = [[]]
    for name, command in group.commands.items():
        found.append([name])
        found += [[name, sub] for sub in getattr(command, "commands", {})]
    return found


def click_command(args: list[str]):
    import typer.main

    command = typer.main.get_command(app)
    for name in args:
        command = command.commands[name]
    return command


def test_help_shows_every_help_text_whole():
    """Rich markup must not eat a bracketed word ([llc], [ray], [default: 2e-4]): in a terminal wide enough for one
    line per option, each option's help and each command's description is in the output as written."""
    commands = all_commands()
    assert ["configs", "show"] in commands and ["train"] in commands
    for args in commands:
        shown = " ".join(command_help(args, 400).split())
        command = click_command(args)
        texts = [p.help for p in command.params if getattr(p, "help", None)]
        texts += [paragraph for paragraph in (command.help or "").split("\n\n") if paragraph.strip()]
        for text in texts:
            assert " ".join(text.replace("\\[", "[").split()) in shown, (args, text)


def test_help_at_80_columns_names_the_extras():
    assert "grokscope[llc]" in command_help(["analyze"], 80)
    assert "grokscope[ray]" in command_help(["experiment"], 80)
    train = command_help(["train"], 80)
    assert "grokscope[tensorboard]" in train and "grokscope[wandb]" in train
    assert "OUT/NAME_seedK" in train  # not cut to "<out>/<name>_seed<k…"


def test_commands_default_to_the_same_device():
    defaults = {
        name: next(p.default for p in click_command([name]).params if p.name == "device")
        for name in ("train", "analyze", "experiment")
    }
    assert defaults == {"train": "auto", "analyze": "auto", "experiment": "auto"}


def test_shell_completion_is_on_and_completes_presets(tmp_path, monkeypatch):
    import typer.completion

    # --show-completion writes the script of the shell it detects from its parent process: bash here, whatever
    # shell happens to run the test suite (under sh it would refuse).
    monkeypatch.setattr(typer.completion, "_get_shell_name", lambda: "bash")
    shown = runner.invoke(app, ["--show-completion", "bash"], prog_name="grokscope")
    assert shown.exit_code == 0 and "_GROKSCOPE_COMPLETE=complete_bash" in shown.output, shown.output
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick_mine.yaml").write_text("name: mine\n")
    env = {"_GROKSCOPE_COMPLETE": "complete_bash", "COMP_WORDS": "grokscope train quick", "COMP_CWORD": "2"}
    completed = runner.invoke(app, [], env=env, prog_name="grokscope")
    assert completed.output.split() == ["quickstart", "quick_mine.yaml"]
    env = {"_GROKSCOPE_COMPLETE": "complete_bash", "COMP_WORDS": "grokscope configs show transfer_q", "COMP_CWORD": "3"}
    assert runner.invoke(app, [], env=env, prog_name="grokscope").output.split() == ["transfer_quick"]


def test_ablate_and_only_ablation_name_one_analysis(tmp_path, config_file):
    assert invoke("train", config_file, "--out", tmp_path, "--quiet").exit_code == 0
    run = tmp_path / "tiny"
    first = invoke("analyze", run, "--only", "ablate", "--steps", "60", "--no-figures", "--quiet")
    assert first.exit_code == 0 and "ablation: 1 checkpoint(s) analysed, 0 from cache" in first.output, first.output
    for args in (["--ablate"], ["--ablation"], ["--only", "ablation"]):  # the same analysis: read from the cache
        again = invoke("analyze", run, *args, "--steps", "60", "--no-figures", "--quiet")
        assert "ablation: 0 checkpoint(s) analysed, 1 from cache" in again.output, (args, again.output)
    unknown = invoke("analyze", run, "--only", "fourier,ablat")
    assert unknown.exit_code == 2 and unknown.output.startswith("error: --only: unknown analysis 'ablat' (known: ")
