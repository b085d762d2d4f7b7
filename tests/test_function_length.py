"""No function in vigil/ or pipelines/ is longer than 80 lines (a long function is a design bug: split it)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 80


def long_functions(root: Path, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function or method under ``root`` longer than ``limit`` lines
    (from its ``def`` to its last line, decorators not counted)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
                    found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_walk_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    pass\n\n\ndef long():\n{body}\n", encoding="utf-8")
    assert [entry.split()[1] for entry in long_functions(tmp_path)] == ["long"]


def test_no_function_in_vigil_or_pipelines_is_over_80_lines():
    found = long_functions(REPO / "vigil") + long_functions(REPO / "pipelines")
    assert not found, "functions over 80 lines:\n" + "\n".join(found)
