"""No source line longer than the formatter's limit (``[tool.ruff] line-length``): ruff format does not split long
strings or comments, so this test is what keeps them readable in an editor and a diff."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[2]
SRC = ROOT / "src" / "grokscope"


def line_limit() -> int:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["line-length"]


def test_no_source_line_is_longer_than_the_formatter_limit():
    limit = line_limit()
    too_long = [
        f"{path.relative_to(ROOT)}:{number} ({len(line)} characters)"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if len(line) > limit
    ]
    assert not too_long, f"lines over {limit} characters:\n" + "\n".join(too_long)
