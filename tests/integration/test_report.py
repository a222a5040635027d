"""`grokscope report`: one self-contained page that tells a run's story in order, its sentences carrying the numbers
of the run's files, checked in a real headless Chromium."""

import csv
import html
import json
import math
import os
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser

import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from grokscope.analysis.runner import analyze
from grokscope.cli import app
from grokscope.store import Run
from grokscope.viz.report import _ERROR_PROBE as ERROR_PROBE
from grokscope.viz.report import build_report, write_report
from grokscope.viz.write import write_analysis_figures

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROMIUM = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
# On CI (CI=true or CI=1, as CI services set it; .ci/run does too) a missing browser fails these tests: skipping
# would let the only check that the report's JavaScript really runs pass silently.
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")


def chromium() -> str:
    """The headless browser's path; without one, skip the calling test, or fail it on CI."""
    if CHROMIUM is None:
        message = f"needs Chromium ({' / '.join(BROWSERS)} on PATH; from the system packages: apt install chromium)"
        if IN_CI:
            pytest.fail(f"CI is set but no browser was found: {message}", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


def render(browser: str, page, tmp_path) -> str:
    """The DOM after the page's scripts ran, from headless Chromium (offline: no network is needed)."""
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


NARRATIVE = ["what-happened", "training", "progress", "fourier", "neurons", "attention", "ablation", "gradients"]
ANALYSES = ["fourier", "progress", "neurons", "attention", "ablation", "gradients", "fingerprint"]


@pytest.fixture(scope="module")
def analysed_run(grokked_run, tmp_path_factory):
    # A copy: the session's run is shared, and other modules analyse it from scratch.
    root = tmp_path_factory.mktemp("report") / "quickstart"
    shutil.copytree(grokked_run.run.root, root)
    run = Run.open(root)
    steps = run.steps()
    report = analyze(run, ANALYSES, steps=sorted({0, 20, 40, 100, steps[-1]} & set(steps)), progress=False)
    write_analysis_figures(report.rows, run.metrics(), run.root / "analysis" / "figures", report.summaries["progress"])
    return run


class Outline(HTMLParser):
    """The ids of a page's elements, its h2 sections (id, title, the lead sentence after each) and the table of
    contents' links."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.sections: list[dict[str, str]] = []
        self.links: list[str] = []
        self._in: str | None = None
        self._nav = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "nav":
            self._nav = True
        elif tag == "a" and self._nav:
            self.links.append(attrs.get("href", ""))
        elif tag == "h2":
            self.sections.append({"id": attrs.get("id", ""), "title": "", "lead": ""})
            self._in = "title"
        elif tag == "p" and attrs.get("class") == "lead" and self.sections and not self.sections[-1]["lead"]:
            self._in = "lead"

    def handle_endtag(self, tag):
        if tag == "nav":
            self._nav = False
        if tag in ("h2", "p"):
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.sections[-1][self._in] += data


def outline(page: str) -> Outline:
    parser = Outline()
    parser.feed(page.replace(get_plotlyjs(), ""))
    return parser


def number_after(text: str, words: str) -> float:
    """The number written right after ``words`` in ``text`` (e.g. "restricted loss) is 4.06e-05")."""
    found = re.search(re.escape(words) + r"\s*(-?[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?)(%?)", text)
    assert found, f"no number after {words!r} in: {text}"
    value = float(found.group(1))
    return value / 100 if found.group(2) else value


def rows_of(run, name: str) -> list[dict]:
    """The cached rows of an analysis, read from the run's file (not through grokscope), by step."""
    return sorted(json.loads((run.root / "analysis" / f"{name}.json").read_text()), key=lambda r: r["step"])


def test_run_report_is_self_contained_and_complete(analysed_run, tmp_path):
    page = build_report(analysed_run.root)
    assert get_plotlyjs() in page  # plotly.js is inline: the page works offline
    ours = page.replace(get_plotlyjs(), "")
    assert "<script src=" not in ours and "https://" not in ours
    assert "grokked" in page and "Training curves" in page and "key frequencies" in page
    assert page.count("class='figure'") >= 3  # training curves + the analyses' figures


def test_run_report_renders_in_chromium_without_errors(analysed_run, tmp_path):
    browser = chromium()
    page = write_report(analysed_run.root, tmp_path / "report.html")
    dom = render(browser, page, tmp_path)
    assert re.search(r'data-errors=""', dom), re.search(r'data-errors="[^"]*"', dom)
    assert dom.count('class="main-svg"') >= 3  # plotly drew the figures


def test_a_broken_page_is_caught_by_the_error_probe(tmp_path):
    browser = chromium()
    page = tmp_path / "broken.html"
    page.write_text(
        f"<html data-errors=''><head><script>{ERROR_PROBE}</script></head>"
        "<body><script>undefinedFunction();</script></body></html>"
    )
    assert re.search(r'data-errors="[^"]*undefinedFunction', render(browser, page, tmp_path))


def test_report_cli_and_bad_paths(analysed_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(analysed_run.root), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0 and (tmp_path / "r.html").stat().st_size > 1_000_000
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not a directory" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "neither a run directory" in result.output


@pytest.mark.slow
def test_run_report_tells_the_story_in_order_with_a_working_contents(analysed_run):
    parsed = outline(build_report(analysed_run.root))
    order = [section["id"] for section in parsed.sections]
    # What happened, the training curves with the phases, then the analyses in the narrative's order, config last.
    assert order == [*NARRATIVE, "dynamics", "config"], order
    assert parsed.links == [f"#{anchor}" for anchor in order]  # every section is in the contents ...
    assert all(link[1:] in parsed.ids for link in parsed.links)  # ... and every link lands on its section
    assert all(section["lead"].strip() for section in parsed.sections), parsed.sections


@pytest.mark.slow
def test_run_report_sentences_carry_the_numbers_of_the_run(analysed_run):
    page = build_report(analysed_run.root)
    lead = {section["id"]: html.unescape(section["lead"]) for section in outline(page).sections}
    root = analysed_run.root
    summary = json.loads((root / "summary.json").read_text())
    phases = json.loads((root / "analysis" / "progress.summary.json").read_text())
    metrics = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines() if line.strip()]

    assert f"memorized (train acc >= 99%) at step {summary['memorization_step']}" in lead["what-happened"]
    assert f"generalized (test acc >= 99%) at step {summary['generalization_step']}" in lead["what-happened"]
    for key, label in (("memorization_end", "memorization"), ("circuit_formation_end", "circuit formation")):
        assert f"{label} until step {phases[key]}" in page

    last = metrics[-1]
    assert f"over {last['step']} steps" in lead["training"]
    assert number_after(lead["training"], "test loss") == pytest.approx(last["test_loss"], rel=1e-3)
    assert number_after(lead["training"], "chance loss ln p =") == pytest.approx(math.log(59), abs=0.005)

    progress = rows_of(analysed_run, "progress")
    first, final = progress[0], progress[-1]
    text = lead["progress"]
    assert f"at step {final['step']}" in text
    assert number_after(text, "(restricted loss) is") == pytest.approx(final["restricted"]["loss"]["all"], rel=5e-3)
    assert number_after(text, f"(step {first['step']}:") == pytest.approx(first["restricted"]["loss"]["all"], rel=5e-3)
    assert number_after(text, "(excluded loss) is") == pytest.approx(final["excluded"]["loss"]["train"], rel=5e-3)
    assert number_after(text, "against the full model's") == pytest.approx(final["full"]["loss"]["train"], rel=5e-3)

    fourier = rows_of(analysed_run, "fourier")[-1]
    keys = fourier["key_frequencies"]
    assert f"the key frequencies are {', '.join(map(str, keys))}" in lead["fourier"]
    norms = fourier["embedding_norms"]  # norms[k - 1]: frequency k's norm
    share = sum(norms[k - 1] ** 2 for k in keys) / sum(n**2 for n in norms)
    assert number_after(lead["fourier"], "they hold") == pytest.approx(share, abs=0.005)

    neurons = rows_of(analysed_run, "neurons")[-1]
    assert number_after(lead["neurons"], f"At step {neurons['step']},") == pytest.approx(
        neurons["fraction_clustered"], abs=0.005
    )

    ablation = rows_of(analysed_run, "ablation")[-1]
    key = next(a for a in ablation["ablations"] if a["role"] == "key" and a["component"] == "embed_frequencies")
    assert number_after(lead["ablation"], "key frequencies ablated") == pytest.approx(key["test_acc"], abs=5e-4)

    moved = [r for r in rows_of(analysed_run, "gradients") if r.get("update_ratio_total_per_step") is not None]
    top = max(moved, key=lambda r: r["update_ratio_total_per_step"])
    text = lead["gradients"]
    assert number_after(text, "the weights moved") == pytest.approx(moved[-1]["update_ratio_total_per_step"], rel=5e-3)
    assert number_after(text, "of their norm per step by then,") == pytest.approx(
        top["update_ratio_total_per_step"], rel=5e-3
    )
    assert f"at most (step {top['step']})" in text

    fingerprint = rows_of(analysed_run, "fingerprint")
    median = len(fingerprint[-1]["log_prob"]) // 2
    assert number_after(lead["dynamics"], "goes from") == pytest.approx(fingerprint[0]["log_prob"][median], rel=5e-3)


def write_experiment(root):
    """An experiment folder as an experiment writes it: config in a JSON file, results.csv, stats.json, one figure
    and three runs (two grokked, one memorized)."""
    import plotly.graph_objects as go

    from grokscope.viz.write import write_figures

    root.mkdir()
    (root / "experiment.json").write_text(json.dumps({"config": {"kind": "sweep", "name": "toy"}}))
    with (root / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["run", "condition", "test_acc"])
        writer.writeheader()
        writer.writerows(
            [{"run": f"r{i}", "condition": "wd=1" if i else "wd=0", "test_acc": 0.5 + i / 10} for i in range(3)]
        )
    stats = {
        "describe": {"0.99": {"wd=0": {"mean": 300.0, "sd": 0.0, "n": 1}, "wd=1": {"mean": 200.0, "sd": 10.0, "n": 2}}},
        "compare": {"0.99": [{"a": "wd=0", "b": "wd=1", "p": 0.2}]},
    }
    (root / "stats.json").write_text(json.dumps(stats))
    write_figures({"accuracy_curves": go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))}, root / "figures")
    for name, regime, step in (("r0", "memorized", None), ("r1", "grokked", 300), ("r2", "grokked", 500)):
        (root / "runs" / name).mkdir(parents=True)
        (root / "runs" / name / "summary.json").write_text(
            json.dumps({"regime": regime, "generalization_step": step, "final": {"step": 600, "test_acc": 0.5}})
        )


def test_experiment_report_puts_the_results_first(tmp_path):
    root = tmp_path / "toy"
    write_experiment(root)
    parsed = outline(build_report(root))
    order = [section["id"] for section in parsed.sections]
    assert order == ["results", "statistics", "figures", "runs", "config"]
    assert parsed.links == [f"#{anchor}" for anchor in order] and all(link[1:] in parsed.ids for link in parsed.links)
    lead = {section["id"]: section["lead"] for section in parsed.sections}
    assert "3 rows of run, condition, test_acc" in lead["results"]
    assert "over 2 conditions (wd=0, wd=1)" in lead["statistics"]
    steps = [300, 500]
    assert f"2 grokked, 1 memorized; median generalization step {statistics.median(steps):g} over the 2" in lead["runs"]
