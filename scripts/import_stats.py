"""The import-graph numbers docs/ARCHITECTURE.md reports: internal (`edgemed.*`) import statements
at module top, inside functions (each with its `# lazy:` reason) and under TYPE_CHECKING, and the
import circles (every import counted, the graph of `tests/test_layout.py`).

    python scripts/import_stats.py
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.test_layout import PKG, _cycles, _graph  # noqa: E402


def _statements(tree: ast.AST, where: str = "top"):
    for node in ast.iter_child_nodes(tree):
        inner = where
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inner = "TYPE_CHECKING"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and where == "top":
            inner = "function"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            if any((n or "").startswith("edgemed") for n in names):
                yield node, where
        yield from _statements(node, inner)


def main() -> None:
    where, reasons = Counter(), Counter()
    for path in PKG.rglob("*.py"):
        text = path.read_text()
        lines = text.splitlines()
        for node, kind in _statements(ast.parse(text)):
            where[kind] += 1
            if kind == "function":
                line, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                here = line if "# lazy:" in line else above if above.startswith("# lazy:") else ""
                reasons[here.partition("# lazy:")[2].strip() or "(no reason given)"] += 1
    total = sum(where.values())
    print(f"internal import statements: {total}")
    for kind in ("top", "function", "TYPE_CHECKING"):
        print(f"  {kind}: {where[kind]} ({100 * where[kind] / total:.1f}%)")
    for reason, n in reasons.most_common():
        print(f"    in functions, lazy: {reason}: {n}")
    print(f"circles: {_cycles(_graph())}")


if __name__ == "__main__":
    main()
