"""DESIGN.md's arrows: analysis imports neither training nor viz; training never imports analysis; the runner
names no analysis."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "grokscope"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[: -node.level])
                found.add(f"{package}.{node.module}" if node.module else package)
            else:
                found.add(node.module or "")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant):
                found.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant):
                found.add(arg.values[0].value.rstrip("."))
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("analysis", ("grokscope.training", "grokscope.viz", "grokscope.experiments", "grokscope.cli")),
        ("training", ("grokscope.analysis", "grokscope.viz", "grokscope.experiments", "grokscope.cli")),
        ("viz", ("grokscope.cli",)),
    ],
)
def test_imports_follow_the_design_arrows(package, forbidden):
    for path in sorted((SRC / package).rglob("*.py")):
        bad = [m for m in imported_modules(path) if m.startswith(forbidden)]
        assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_runner_names_no_analysis():
    from grokscope.analysis.runner import registry

    source = (SRC / "analysis" / "runner.py").read_text()
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names = set(registry())
    assert len(names) >= 8
    assert not (names & strings), f"runner.py names analyses {sorted(names & strings)}"


def test_every_analysis_spec_is_complete():
    from grokscope.analysis.runner import registry

    for name, spec in registry().items():
        assert callable(spec.compute) and hasattr(spec.result, "to_dict") and hasattr(spec.result, "to_frame"), name
        assert hasattr(spec.result, "from_dict"), name
