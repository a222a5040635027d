"""The documentation site: the example notebooks are clean, and `mkdocs build --strict` executes them into a site that
needs no network.

The build executes every notebook in examples/ (several train the quickstart model), so it takes minutes and is
marked slow; it runs in CI like the other slow tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# What `mkdocs build` needs beyond grokscope: the site generator, its theme and plugins, and the kernel that runs the
# notebooks.
SITE_TOOLS = ("mkdocs", "material", "mkdocs_jupyter", "mkdocstrings", "mkdocstrings_handlers.python", "ipykernel")


def missing_site_tools() -> list[str]:
    missing = []
    for name in SITE_TOOLS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def test_examples_exist():
    names = {path.stem for path in NOTEBOOKS}
    assert {"quickstart", "mechanistic_walkthrough", "transfer", "dynamics"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_has_no_outputs(path: Path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (pip install -e '.[dev]')")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.get("kernelspec", {}).get("language") == "python"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{path.name} cell {index} has stored outputs: clear them before committing"
        assert cell.execution_count is None, f"{path.name} cell {index} has an execution count"
    # The stored file is what nbformat writes: no stray metadata such as widget state.
    assert "widgets" not in json.loads(path.read_text(encoding="utf-8"))["metadata"]


# A tag that makes the browser fetch from the network: a script's src or a link's href that is absolute or
# protocol-relative (stylesheets, preloads, icons, fonts).
REMOTE_SCRIPT = re.compile(r"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.IGNORECASE)
REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref\s*=\s*[\"']?\s*(?:https?:)?//", re.IGNORECASE)
REMOTE_CSS = re.compile(r"@import\s+(?:url\()?\s*[\"']?(?:https?:)?//", re.IGNORECASE)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    missing = missing_site_tools()
    if missing:
        pytest.skip(f"the documentation tools are not installed ({', '.join(missing)}): pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return out


@pytest.mark.slow
def test_site_builds_with_every_page(site: Path):
    for page in (
        "index.html",
        "getting-started/index.html",
        "concepts/grokking/index.html",
        "concepts/fourier/index.html",
        "concepts/progress-measures/index.html",
        "concepts/fingerprints-dmd/index.html",
        "concepts/llc/index.html",
        "how-to/train/index.html",
        "how-to/analyze/index.html",
        "how-to/transfer/index.html",
        "how-to/sweeps/index.html",
        "how-to/ray/index.html",
        "how-to/report/index.html",
        "reference/cli/index.html",
        "reference/run-directory/index.html",
        "reference/api/config/index.html",
        "reference/api/training/index.html",
        "reference/api/analysis/fourier/index.html",
        "reference/api/stats/index.html",
    ):
        assert (site / page).is_file(), f"missing page {page}"
    assert (site / "assets" / "javascripts" / "plotly.min.js").stat().st_size > 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_page_has_rendered_outputs(site: Path, path: Path):
    page = site / "examples" / path.stem / "index.html"
    assert page.is_file(), f"no page for {path.name}"
    html = page.read_text(encoding="utf-8")
    assert "jp-OutputArea-output" in html, f"{path.name}: no cell output was rendered"
    assert "plotly-graph-div" in html, f"{path.name}: no plotly figure was rendered"
    assert "Traceback" not in html, f"{path.name}: a cell raised"


@pytest.mark.slow
def test_interactive_attention_view_is_rendered(site: Path):
    html = (site / "examples" / "mechanistic_walkthrough" / "index.html").read_text(encoding="utf-8")
    assert "circuits-vis-" in html and "CircuitsVis" in html


@pytest.mark.slow
def test_cli_reference_is_the_real_help(site: Path):
    html = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("train", "analyze", "experiment", "report"):
        assert f"Usage: grokscope {command}" in html


@pytest.mark.slow
def test_concept_figures_are_drawn(site: Path):
    html = (site / "concepts" / "fourier" / "index.html").read_text(encoding="utf-8")
    assert html.count('class="plotly-graph-div"') >= 4
    assert "data-figure=" not in html, "a figure marker was left unreplaced"


# plotly.js's licence header, which starts every copy of the bundle: the site ships it once, as an asset.
PLOTLY_BUNDLE = re.compile(r"/\*\*\s*\*\s*plotly\.js v[0-9]")


@pytest.mark.slow
def test_no_page_inlines_plotly_js(site: Path):
    bundle = (site / "assets" / "javascripts" / "plotly.min.js").read_text(encoding="utf-8")
    assert PLOTLY_BUNDLE.search(bundle[:500])  # the pattern does find the bundle
    pages = sorted(site.rglob("*.html"))
    inlined = [str(p.relative_to(site)) for p in pages if PLOTLY_BUNDLE.search(p.read_text(encoding="utf-8"))]
    assert not inlined, f"pages that inline plotly.js: {inlined}"
    for path in NOTEBOOKS:  # the tutorials load the site's copy (relative, so the site works from any folder)
        html = (site / "examples" / path.stem / "index.html").read_text(encoding="utf-8")
        assert 'src="../../assets/javascripts/plotly.min.js"' in html, path.name
        assert html.count('class="plotly-graph-div"') >= 1, path.name


@pytest.mark.slow
def test_notebook_figures_draw_with_the_sites_plotly_in_a_browser(site: Path, tmp_path: Path):
    from .test_report import chromium, render

    browser = chromium()
    page = site / "examples" / "quickstart" / "index.html"
    figures = page.read_text(encoding="utf-8").count('class="plotly-graph-div"')
    dom = render(browser, page, tmp_path)
    # Each figure div holds the SVG plotly.js drew (two main-svg layers per figure).
    assert dom.count('class="main-svg"') >= 2 * figures > 0, (figures, dom.count('class="main-svg"'))


@pytest.mark.slow
def test_site_loads_nothing_from_the_network(site: Path):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    offenders = []
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for pattern in (REMOTE_SCRIPT, REMOTE_LINK, REMOTE_CSS):
            for match in pattern.finditer(text):
                offenders.append(f"{page.relative_to(site)}: {text[match.start() : match.start() + 120]!r}")
    for sheet in sorted(site.rglob("*.css")):
        for match in REMOTE_CSS.finditer(sheet.read_text(encoding="utf-8")):
            offenders.append(f"{sheet.relative_to(site)}: {match.group(0)!r}")
    assert not offenders, "remote loads:\n" + "\n".join(offenders[:20])
