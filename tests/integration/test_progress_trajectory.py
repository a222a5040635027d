"""Progress measures over a grokking run: the paper's definitions at several checkpoints (brute force in the
test), one reference key set, the phases, and the command line's view of them."""

import json
import math
import shutil

import pytest
from typer.testing import CliRunner

from grokscope.analysis import analysis_frame, over_checkpoints, progress
from grokscope.analysis.runner import analyze, default_analyses
from grokscope.cli import app
from unit.test_progress import brute_model_measures


@pytest.fixture
def run_copy(tmp_path, grokked_run):
    target = tmp_path / "run"
    shutil.copytree(grokked_run.run.root, target)
    return target


@pytest.mark.slow
def test_library_defaults_match_brute_force_at_several_checkpoints(grokked_run):
    run = grokked_run.run
    model = run.load_model()
    keys = progress.fourier.key_frequencies(model, run.task)
    assert keys  # the quickstart groks on a few key frequencies
    split = run.split()
    for step in (0, 50, 100, run.steps()[-1]):
        model = run.load_model(step)
        result = progress.compute(model, run.task, split=split, key_frequencies=keys, single_frequencies=False)
        expected = brute_model_measures(model, run.task, split, keys)
        for name, losses in expected.items():
            for split_name, loss in losses.items():
                assert getattr(result, name).loss[split_name] == pytest.approx(loss, rel=1e-6), (step, name)


@pytest.mark.slow
def test_cli_shows_the_circuit_forming_before_the_test_loss_falls(run_copy):
    result = CliRunner().invoke(app, ["analyze", str(run_copy), "--progress", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "phases:" in result.output
    rows = json.loads((run_copy / "analysis" / "progress.json").read_text())
    final_keys = rows[-1]["key_frequencies"]
    assert final_keys and all(r["key_frequencies"] == final_keys for r in rows)
    assert {r["key_reference"] for r in rows} == {f"final:{rows[-1]['step']}"}
    lines = (run_copy / "metrics.jsonl").read_text().splitlines()
    metrics = {m["step"]: m for m in map(json.loads, lines)}
    phases = json.loads((run_copy / "analysis" / "progress.summary.json").read_text())
    chance = math.log(59)
    assert phases["chance_loss"] == pytest.approx(chance)
    memorized = phases["memorization_end"]
    # After memorization, before test accuracy reaches 50%: the circuit is visible in the measures.
    forming = [r for r in rows if r["step"] >= memorized and metrics[r["step"]]["test_acc"] < 0.5 and r["step"] > 0]
    assert forming
    for row in forming:
        assert row["restricted"]["loss"]["all"] < chance
        assert row["excluded"]["loss"]["train"] > row["full"]["loss"]["train"]
    assert memorized < phases["circuit_formation_end"] <= phases["cleanup_end"]
    figure = json.loads((run_copy / "analysis" / "figures" / "progress_measures.json").read_text())
    labels = {a.get("text") for a in figure["layout"].get("annotations", [])}
    assert {"memorization", "circuit formation", "cleanup", f"chance ln p = {chance:.2f}"} <= labels


@pytest.mark.slow
def test_results_against_different_key_sets_never_mix(run_copy):
    steps = [50, 100]
    given = over_checkpoints(run_copy, "progress", steps, key_frequencies=[1, 2], single_frequencies=False)
    assert [r.key_reference for r in given] == ["given", "given"] and given[0].key_frequencies == [1, 2]
    final = over_checkpoints(run_copy, "progress", steps, single_frequencies=False)
    assert final[0].key_frequencies != [1, 2] and final[0].key_reference.startswith("final:")
    assert final[0].excluded.loss["train"] != given[0].excluded.loss["train"]
    own = over_checkpoints(run_copy, "progress", steps, key_from="each", single_frequencies=False)
    assert [r.key_reference for r in own] == ["each", "each"]
    at_step = over_checkpoints(run_copy, "progress", steps, key_from=100, single_frequencies=False)
    assert at_step[0].key_reference == "step:100" and at_step[0].key_frequencies == own[1].key_frequencies


@pytest.mark.slow
def test_every_analysis_is_a_dataframe_and_typed_results(run_copy, grokked_run):
    from grokscope.store import Run

    run = Run.open(run_copy)
    names = default_analyses()
    report = analyze(run, names, steps=[90, 100], progress=False, skip_inapplicable=True)
    assert not report.skipped
    for name in names:
        frame = analysis_frame(run, name)
        assert list(frame.index) == [90, 100], name
        assert frame.shape[1] > 0, name
    typed = over_checkpoints(run, "gradients", [90, 100])
    assert typed[1].steps_between == 10 and typed[1].update_ratio_total_per_step is not None
    assert type(typed[0]).__name__ == "GradientsResult"
    assert list(analysis_frame(run, "progress")["excluded_loss_train"]) == [
        r["excluded"]["loss"]["train"] for r in report.rows["progress"]
    ]
    assert (run_copy / "analysis" / "progress.single_frequency.parquet").is_file()


@pytest.mark.slow
def test_a_few_steps_use_the_runs_final_key_set_and_leave_its_phases_as_they_were(run_copy):
    analysis = run_copy / "analysis"
    whole = CliRunner().invoke(app, ["analyze", str(run_copy), "--progress", "--quiet", "--no-figures"])
    assert whole.exit_code == 0, whole.output
    summary_before = (analysis / "progress.summary.json").read_bytes()
    final = json.loads((analysis / "progress.json").read_text())[-1]
    # Three steps after memorization (step 40), analysed afresh: against the final checkpoint's key set.
    fresh = run_copy.parent / "fresh"
    shutil.copytree(run_copy, fresh)
    shutil.rmtree(fresh / "analysis")
    for folder in (run_copy, fresh):
        result = CliRunner().invoke(
            app, ["analyze", str(folder), "--progress", "--steps", "50,60,80", "--quiet", "--no-figures"]
        )
        assert result.exit_code == 0, result.output
        rows = {r["step"]: r for r in json.loads((folder / "analysis" / "progress.json").read_text())}
        for step in (50, 60, 80):
            assert rows[step]["key_reference"] == final["key_reference"], folder
            assert rows[step]["key_frequencies"] == final["key_frequencies"]
            assert rows[step]["restricted"]["loss"]["all"] < math.log(59), (folder, step)
    assert (analysis / "progress.summary.json").read_bytes() == summary_before


@pytest.mark.slow
def test_variant_key_sets_go_to_folders_of_their_own(run_copy):
    from grokscope.store import Run

    analysis = run_copy / "analysis"
    steps = "50,100"
    base = ["analyze", str(run_copy), "--progress", "--steps", steps, "--quiet", "--no-figures"]
    assert CliRunner().invoke(app, base).exit_code == 0
    default_rows = (analysis / "progress.json").read_bytes()
    default_summary = (analysis / "progress.summary.json").read_bytes()
    for extra, folder in (
        (["--key-from", "each"], "key_from_each"),
        (["--key-from", "100"], "key_from_step_100"),
        (["--key-frequencies", "21,1"], "key_frequencies_1_21"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code == 0, result.output
        assert (analysis / folder / "progress.json").is_file() and (
            analysis / folder / "progress.summary.json"
        ).is_file()
        assert (analysis / "progress.json").read_bytes() == default_rows, folder
        assert (analysis / "progress.summary.json").read_bytes() == default_summary, folder
    run = Run.open(run_copy)
    frame = analysis_frame(run, "progress")
    assert frame.attrs["key_reference"] == f"final:{run.steps()[-1]}"
    assert set(frame["key_reference"]) == {frame.attrs["key_reference"]}
    each = analysis_frame(run, "progress", key_from="each")
    assert each.attrs["key_reference"] == "each" and list(each.index) == [50, 100]
    assert analysis_frame(run, "progress", key_frequencies=[1, 21]).attrs["key_reference"] == "given"
    # A key set given with an analysis that uses none, or with --key-from, or empty: one line each, nothing written.
    for extra in (["--only", "fourier", "--key-frequencies", "1,2"], ["--key-frequencies", "1", "--key-from", "each"]):
        result = CliRunner().invoke(app, ["analyze", str(run_copy), *extra, "--quiet"])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    result = CliRunner().invoke(app, [*base, "--key-frequencies", ",,"])
    assert result.exit_code == 2 and "no frequency given" in result.output


@pytest.mark.slow
def test_the_phases_stay_put_when_the_quickstart_trains_on_past_its_early_stop(run_copy, tmp_path):
    """The quickstart with its early stop and the same run trained to step 1,000: the same memorization and circuit
    formation ends, the cleanup end within one evaluation interval (each against its own final key set)."""
    from conftest import QUICKSTART
    from grokscope.config import load_config
    from grokscope.training import train

    config = load_config(QUICKSTART, overrides=["train.early_stop=null", "train.steps=1000"])
    longer = train(config, tmp_path / "longer", device="cpu", progress=False)
    phases = {}
    for folder in (run_copy, longer.run.root):
        result = CliRunner().invoke(app, ["analyze", str(folder), "--progress", "--quiet", "--no-figures"])
        assert result.exit_code == 0, result.output
        phases[folder] = json.loads((folder / "analysis" / "progress.summary.json").read_text())
    early, late = phases[run_copy], phases[longer.run.root]
    assert early["memorization_end"] is not None and early["cleanup_end"] is not None
    assert early["memorization_end"] == late["memorization_end"]
    assert early["circuit_formation_end"] == late["circuit_formation_end"]
    assert abs(early["cleanup_end"] - late["cleanup_end"]) <= config.train.eval_every
    assert early["memorization_end"] < early["circuit_formation_end"] < early["cleanup_end"]


@pytest.mark.slow
def test_checkpoint_spacing_moves_no_phase_boundary_by_more_than_the_spacing(run_copy):
    """Checkpoints every 10 steps (the quickstart's first 100) against every 100: the drop is read from the metrics
    and stays put; the end of memorization, read from the progress rows, moves by at most the spacing."""
    coarse = run_copy.parent / "coarse"
    shutil.copytree(run_copy, coarse)
    phases = {}
    for folder, extra in ((run_copy, []), (coarse, ["--every", "100"])):
        result = CliRunner().invoke(app, ["analyze", str(folder), "--progress", "--quiet", "--no-figures", *extra])
        assert result.exit_code == 0, result.output
        phases[folder] = json.loads((folder / "analysis" / "progress.summary.json").read_text())
    fine, sparse = phases[run_copy], phases[coarse]
    assert fine["memorization_end"] is not None and sparse["memorization_end"] is not None
    assert abs(fine["memorization_end"] - sparse["memorization_end"]) <= 100
    assert (fine["circuit_formation_end"], fine["cleanup_end"]) == (
        sparse["circuit_formation_end"],
        sparse["cleanup_end"],
    )
