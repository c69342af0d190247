"""The package layout keeps its promises (docs/ARCHITECTURE.md): no import circle between modules
(imports inside functions and type-only imports included), dependencies point down the layers,
the package root holds shared nouns only (the pipeline in pipeline/), the runtime registry is a
leaf, and runtime names live only in their backend package and the registry."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgemed"
# Lowest first: a module imports only modules of its own package or of a lower layer.
LAYERS = (
    ("root",),
    ("data", "executors"),
    ("evaluation",),
    ("backends",),
    ("models",),
    ("domain",),
    ("harness", "bundle"),
    ("pipeline",),
    ("compress", "appliance"),
    ("study", "serve"),
    ("sweep",),
    ("cli",),
)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(tree: ast.AST):
    """Import nodes anywhere: module top, functions and `if TYPE_CHECKING:` blocks alike."""
    for node in ast.iter_child_nodes(tree):
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
    cycles = _cycles(_graph())
    assert not cycles, f"import circles: {[sorted(c) for c in cycles]}"


def test_the_package_root_holds_shared_nouns_and_the_pipeline_lives_in_pipeline():
    root = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    stages = {"export", "fallback", "engine_build", "training", "calibration"}
    assert not (stages - {"calibration"}) & set(root)
    assert stages <= {p.stem for p in (PKG / "pipeline").glob("*.py")}


def _layer(module: str) -> int:
    parts = module.split(".")
    is_root = len(parts) == 2 and not (PKG / parts[1]).is_dir()
    package = "root" if is_root or len(parts) == 1 else parts[1]
    return next(i for i, names in enumerate(LAYERS) if package in names)


def test_dependencies_point_down_the_layers():
    assert {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()} == {
        n for names in LAYERS for n in names if n != "root"
    }
    upward = sorted(
        (m, d)
        for m, deps in _graph().items()
        for d in deps
        if _layer(d) > _layer(m)
        or _layer(d) == _layer(m)
        and m.split(".")[:2] != d.split(".")[:2]
        and _layer(m) != 0
    )
    assert not upward, f"upward imports: {upward}"


def test_the_runtime_registry_is_a_leaf():
    assert _graph()["edgemed.runtimes"] <= {"edgemed.errors"}


def _runtime_names_outside_their_home(path: Path, names: set[str]) -> list[str]:
    """A runtime name compared with a runtime/target, or a literal list of runtime names."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            consts = {s.value for s in sides if isinstance(s, ast.Constant)} & names
            other = " ".join(ast.unparse(s) for s in sides if not isinstance(s, ast.Constant))
            if consts and ("runtime" in other or "target" in other):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            listed = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if len(set(listed) & names) >= 2:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_runtime_names_live_in_their_backend_and_the_registry():
    """What a runtime can do is asked of the registry (`edgemed.runtimes`), not spelled as
    `runtime == "tensorrt"` or a list of runtime names elsewhere."""
    from edgemed.runtimes import RUNTIMES

    homes = {PKG / "runtimes.py"}
    homes |= {PKG / "backends" / r.entry.split(".")[2].partition(":")[0] for r in RUNTIMES.values()}
    found = {
        str(p.relative_to(PKG)): hits
        for p in PKG.rglob("*.py")
        if not any(p == h or h in p.parents for h in homes)
        if (hits := _runtime_names_outside_their_home(p, set(RUNTIMES)))
    }
    assert not found, found


def test_a_backend_with_several_modules_is_a_sub_package():
    """A module loose in backends/ is shared: none is used by one backend's package alone."""
    from edgemed.runtimes import RUNTIMES

    graph = _graph()
    homes = {r.entry.partition(":")[0] for r in RUNTIMES.values()}
    assert all(h.count(".") == 2 for h in homes), homes  # edgemed.backends.<name>
    loose = [p.stem for p in (PKG / "backends").glob("*.py") if p.stem != "__init__"]
    for stem in loose:
        mod = f"edgemed.backends.{stem}"
        users = {m for m, deps in graph.items() if mod in deps}
        owners = {h for h in homes for u in users if u == h or u.startswith(h + ".")}
        alone = len(owners) == 1 and all(u.startswith(tuple(owners)) for u in users)
        assert not alone, f"{mod} is used only by {owners.pop()}: move it into that package"
