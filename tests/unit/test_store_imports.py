"""The store knows the run directory, not the analyses that read it (DESIGN.md): importing it loads no analysis
module, and store.py names none, not even lazily inside a function."""

import ast
import subprocess
import sys
from pathlib import Path

STORE = Path(__file__).parents[2] / "src" / "grokscope" / "store.py"


def test_importing_the_store_loads_no_analysis_module():
    code = (
        "import sys, grokscope.store; "
        "print(sorted(m for m in sys.modules if m == 'grokscope.analysis' or m.startswith('grokscope.analysis.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_store_py_names_no_analysis_module_anywhere():
    tree = ast.parse(STORE.read_text(encoding="utf-8"))
    imported = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
    assert not [m for m in imported if m.startswith("grokscope.analysis")], imported
    assert "grokscope.analysis" not in STORE.read_text(encoding="utf-8")
