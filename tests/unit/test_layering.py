"""DESIGN.md's arrows: analysis imports neither training nor viz; training never imports analysis; the runner
names no analysis."""

import ast
import sys
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


def _kind_modules() -> dict[str, Path]:
    """Each experiment kind's source: its module, or every file of its package."""
    from grokscope.experiments import registry

    found = {}
    for kind, spec in registry().items():
        module = sys.modules[spec.execute.__module__.removesuffix(".__init__")]
        path = Path(module.__file__)
        found[kind] = path.parent if path.name == "__init__.py" and path.parent.name == kind else path
    return found


def test_the_experiment_runner_names_no_kind():
    from grokscope.experiments import registry

    kinds = set(registry())
    assert {"sweep", "perturbation", "curriculum", "finetune", "transfer", "similarity"} <= kinds
    for name in ("engine.py", "spec.py", "__init__.py"):
        source = (SRC / "experiments" / name).read_text()
        tree = ast.parse(source)
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not (kinds & strings), f"experiments/{name} names kinds {sorted(kinds & strings)}"


def test_no_kind_imports_another():
    modules = _kind_modules()
    for kind, where in modules.items():
        others = tuple(f"grokscope.experiments.{other}" for other in modules if other != kind)
        inside = tuple(f"{other}." for other in others)
        for path in sorted(where.rglob("*.py")) if where.is_dir() else [where]:
            bad = [m for m in imported_modules(path) if m in others or m.startswith(inside)]
            assert not bad, f"{path.relative_to(SRC)} ({kind}) imports another kind: {bad}"
