"""MkDocs hooks for the grokscope site (``hooks:`` in mkdocs.yml). They keep generated pages from drifting:

* the notebooks in ``examples/`` become the pages ``examples/<name>.ipynb`` (mkdocs-jupyter executes and renders
  them), so the site shows the notebooks as they are in the repository, with fresh outputs;
* ``reference/cli.md`` gets the real ``--help`` of every ``grokscope`` command, produced at build time;
* a concept page's ``<div data-figure="NAME"></div>`` becomes the plotly figure ``docs/figures/NAME.json`` (drawn by
  ``docs/figures/make_figures.py`` from a real quickstart run with grokscope's own figure builders);
* ``assets/javascripts/plotly.min.js`` is written from the installed plotly package, so figures need no CDN;
* links in the notebooks, written for the repository, are pointed at the site's pages;
* the reST roles of the docstrings (``:func:`name```) are shown as plain code in the API reference;
* on notebook pages, the MathJax loaders that nbconvert and plotly always add are dropped: they point at a CDN
  and the notebooks contain no LaTeX, so the pages load nothing from the network;
* on notebook pages, the copy of plotly.js that plotly's notebook renderer inlines (about 5 MB per notebook, so that
  the .ipynb shows its figures offline in Jupyter) is dropped and the figures are drawn with the site's
  ``assets/javascripts/plotly.min.js`` once the page is parsed, as the concept pages' figures are.
"""

from __future__ import annotations

import html
import posixpath
import re
from pathlib import Path

import mkdocs.plugins
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FIGURES = Path(__file__).resolve().parent / "figures"
PLOTLY_JS = "assets/javascripts/plotly.min.js"
CLI_MARKER = "<!-- grokscope-cli-help -->"
CLI_COMMANDS = (
    [],
    ["train"],
    ["analyze"],
    ["forecast"],
    ["forecast-fit"],
    ["experiment"],
    ["report"],
    ["configs"],
    ["configs", "show"],
)
CLI_WIDTH = 82  # the widest the content column shows without scrolling (74 left the help texts a narrow strip)

log = mkdocs.plugins.get_plugin_logger(__name__)


@mkdocs.plugins.event_priority(100)  # before mkdocs-jupyter, so that it picks the notebooks up as pages
def on_files(files: Files, config) -> Files:
    for notebook in sorted(EXAMPLES.glob("*.ipynb")):
        # A real file read from the repository root (not a generated one: mkdocs-jupyter's page wrapper needs its
        # src_dir), so the page is examples/<name>/ and the nav names it examples/<name>.ipynb.
        files.append(File(f"examples/{notebook.name}", str(ROOT), config.site_dir, config.use_directory_urls))
    from plotly.offline import get_plotlyjs

    files.append(File.generated(config, PLOTLY_JS, content=get_plotlyjs()))
    return files


def cli_help(args: list[str]) -> str:
    """``grokscope ARGS --help`` as a terminal of CLI_WIDTH columns shows it (trailing blanks removed)."""
    from typer.testing import CliRunner

    from grokscope.cli import app

    env = {"COLUMNS": str(CLI_WIDTH), "TERMINAL_WIDTH": str(CLI_WIDTH), "NO_COLOR": "1", "TERM": "dumb"}
    result = CliRunner().invoke(app, [*args, "--help"], env=env, prog_name="grokscope")
    if result.exit_code != 0:
        raise RuntimeError(f"grokscope {' '.join(args)} --help failed: {result.output}")
    return "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARKER not in markdown:
        return markdown
    sections = []
    for args in CLI_COMMANDS:
        name = " ".join(["grokscope", *args])
        title = f"## `{name}`" if args else "## `grokscope`"
        sections.append(f"{title}\n\n```text\n$ {name} --help\n{cli_help(args)}\n```\n")
    return markdown.replace(CLI_MARKER, "\n".join(sections))


_FIGURE = re.compile(r'<div data-figure="([A-Za-z0-9_-]+)"></div>')
_SCRIPT = re.compile(r"(<script[^>]*>)(.*?)</script>", re.DOTALL)
_ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|exc|obj):<code>(~?)([^<]*)</code>")


def figure_html(name: str) -> str:
    """The figure ``docs/figures/NAME.json`` as a div and a script that draws it with the site's plotly.js."""
    import plotly.io as pio

    path = FIGURES / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such figure (run docs/figures/make_figures.py)")
    figure = pio.from_json(path.read_text(encoding="utf-8"))
    div = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        include_mathjax=False,
        div_id=f"figure-{name}",
        config={"responsive": True, "displaylogo": False},
        default_width="100%",
    )
    # Material loads extra_javascript (plotly.min.js) at the end of the page: draw once the document is parsed.
    script = _SCRIPT.search(div)
    if script is None:
        raise ValueError(f"{path}: plotly wrote no script for the figure")
    deferred = f'document.addEventListener("DOMContentLoaded", function () {{{script.group(2)}}});'
    div = div[: script.start(2)] + deferred + div[script.end(2) :]
    return f'<div class="grokscope-figure">{div}</div>'


def _role(match: re.Match) -> str:
    short, target = match.group(1), html.unescape(match.group(2))
    shown = target.rsplit(".", 1)[-1] if short else target
    return f"<code>{html.escape(shown)}</code>"


_LOCAL_LINK = re.compile(r'href="(?![a-z][a-z0-9+.-]*:|#|/)([^"#]+\.(?:ipynb|md))(#[^"]*)?"')


def notebook_links(content: str, page, files: Files) -> str:
    """Links in a notebook's markdown are written for the repository (``mechanistic_walkthrough.ipynb``,
    ``../docs/concepts/fourier.md``), so they work on GitHub and in Jupyter; point them at the site's pages instead.
    A link to the notebook itself is left alone: mkdocs-jupyter puts the .ipynb beside its page, for download."""
    folder = posixpath.dirname(page.file.src_uri)

    def link(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join(folder, html.unescape(match.group(1))))
        if target == page.file.src_uri:
            return match.group(0)
        found = files.get_file_from_path(target.removeprefix("docs/"))
        if found is None:
            log.warning(f"{page.file.src_uri}: link to {match.group(1)!r}, which is not a page of the site")
            return match.group(0)
        return f'href="{found.url_relative_to(page.file)}{match.group(2) or ""}"'

    return _LOCAL_LINK.sub(link, content)


def on_page_content(content: str, page, config, files) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        content = notebook_links(content, page, files)
    content = _FIGURE.sub(lambda m: figure_html(m.group(1)), content)
    return _ROLE.sub(_role, content)


# Script tags that load MathJax from a CDN: nbconvert's page template and plotly's notebook renderer add them.
# nbconvert's loader has an empty src when no MathJax URL is configured.
_MATHJAX = re.compile(r'<script[^>]*\bsrc="(?:|https?://[^"]*mathjax[^"]*)"[^>]*>\s*</script>', re.IGNORECASE)


# The bundle plotly's notebook renderer writes into the first output that shows a figure: a script that starts with
# plotly.js's licence header. (An inline script cannot contain "</script>", so the first one ends it.)
_PLOTLY_BUNDLE = re.compile(r"<script[^>]*>\s*/\*\*\s*\*\s*plotly\.js v[0-9].*?</script>", re.DOTALL)
# A figure's own script: it calls Plotly.newPlot as soon as it runs.
_FIGURE_SCRIPT = re.compile(
    r"(<script[^>]*>)((?:(?!</script>).)*?Plotly\.newPlot(?:(?!</script>).)*)</script>", re.DOTALL
)


def share_plotly(output: str) -> str:
    """A notebook page without its inlined plotly.js, each figure drawn once the page is parsed: the site's
    plotly.min.js (``extra_javascript``) is loaded at the end of the page, after the figures' own scripts."""
    output = _PLOTLY_BUNDLE.sub("", output)
    return _FIGURE_SCRIPT.sub(
        lambda m: f'{m.group(1)}document.addEventListener("DOMContentLoaded", function () {{{m.group(2)}}});</script>',
        output,
    )


def on_post_page(output: str, page, config) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        output = share_plotly(_MATHJAX.sub("", output))
    return output
