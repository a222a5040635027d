"""`grokscope report`: one self-contained page, checked in a real headless Chromium."""

import os
import re
import shutil
import subprocess

import pytest
from plotly.offline import get_plotlyjs
from typer.testing import CliRunner

from grokscope.analysis.runner import analyze
from grokscope.cli import app
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


@pytest.fixture(scope="module")
def analysed_run(grokked_run, tmp_path_factory):
    run = grokked_run.run
    report = analyze(run, ["fourier", "progress"], steps=[0, run.steps()[-1]], progress=False)
    write_analysis_figures(report.rows, run.metrics(), run.root / "analysis" / "figures", report.summaries["progress"])
    return run


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
