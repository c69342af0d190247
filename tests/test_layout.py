"""The package layout keeps its promises: no import circle between modules (lazy imports inside
functions included), and the package root holds shared nouns only, the pipeline in pipeline/."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgemed"
# models/__init__ rebuilds compressed checkpoints, whose stored spec name is the fixed identifier
# "edgemed.compress.arch:rebuild" (checkpoints already written carry it); arch builds on models.
ALLOWED = {frozenset({"edgemed.compress.arch", "edgemed.models"})}


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(tree: ast.AST):
    """Import nodes, skipping `if TYPE_CHECKING:` blocks (not run)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        yield from _imports(node)


def _targets(node, mods: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        names = [base, *(f"{base}.{a.name}" for a in node.names)]
    out = set()
    for n in names:
        while n and n not in mods:
            n = n.rpartition(".")[0]
        if n:
            out.add(n)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        deps = set()
        for node in _imports(ast.parse(path.read_text())):
            deps |= _targets(node, mods)
        # a module importing its own package (the registry in __init__) is not a circle
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_between_modules():
    cycles = [c for c in _cycles(_graph()) if frozenset(c) not in ALLOWED]
    assert not cycles, f"import circles: {[sorted(c) for c in cycles]}"


def test_the_package_root_holds_shared_nouns_and_the_pipeline_lives_in_pipeline():
    root = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    stages = {"export", "fallback", "engine_build", "training"}
    assert not stages & set(root)
    assert stages <= {p.stem for p in (PKG / "pipeline").glob("*.py")}


def test_backends_and_models_do_not_import_the_pipeline():
    graph = _graph()
    upward = {
        (m, d)
        for m, deps in graph.items()
        if m.startswith(("edgemed.backends", "edgemed.models", "edgemed.evaluation"))
        for d in deps
        if d.startswith(("edgemed.pipeline", "edgemed.cli", "edgemed.harness"))
    }
    assert not upward, f"upward imports: {sorted(upward)}"


def test_a_backend_with_several_modules_is_a_sub_package():
    """A module loose in backends/ is shared: none is used by one backend's package alone."""
    from edgemed.backends import BACKENDS

    graph = _graph()
    homes = {r.entry.partition(":")[0] for r in BACKENDS.values()}
    assert all(h.count(".") == 2 for h in homes), homes  # edgemed.backends.<name>
    loose = [p.stem for p in (PKG / "backends").glob("*.py") if p.stem != "__init__"]
    for stem in loose:
        mod = f"edgemed.backends.{stem}"
        users = {m for m, deps in graph.items() if mod in deps}
        owners = {h for h in homes for u in users if u == h or u.startswith(h + ".")}
        alone = len(owners) == 1 and all(u.startswith(tuple(owners)) for u in users)
        assert not alone, f"{mod} is used only by {owners.pop()}: move it into that package"
