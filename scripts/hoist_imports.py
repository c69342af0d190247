"""Hoist in-function `edgemed` imports to module top (the mechanical step of issue 23).

    python scripts/hoist_imports.py REPO_ROOT [--dry]

Keeps lazy: imports already marked `# lazy:` (on the line or the line above); in command modules
(and modules `edgemed --help` loads) any import of a module `--help` does not load already; imports
inside `try:`; imports that would make a module pull a runtime it did not (torch, onnx, ...); imports
of a module that imports this one back (a package and its members). Prints what it hoisted and why
it kept the rest; run `ruff check --fix` and `ruff format` after it, then `scripts/import_stats.py`.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(sys.argv[1]).resolve()
PKG = ROOT / "edgemed"
HEAVY = (
    "torch",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "litert_torch",
    "ai_edge_litert",
    "tensorrt",
    "polygraphy",
    "ray",
    "pydicom",
    "cryptography",
    "click",
    "scipy",
    "sklearn",
)
DRY = "--dry" in sys.argv


def modules():
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODS = modules()


def resolve(name):
    while name and name not in MODS:
        name = name.rpartition(".")[0]
    return name


def heavy_sets(names):
    out = {}
    for n in names:
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys, {n}; print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        out[n] = (
            set(filter(None, r.stdout.strip().split(","))) if r.returncode == 0 else {"<error>"}
        )
    return out


def help_modules():
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom edgemed.cli import cli\ntry: cli(['--help'])\nexcept SystemExit: pass\n"
            "print('\\n'.join(m for m in sys.modules if m.startswith('edgemed')), file=sys.stderr)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return set(r.stderr.split())


def func_imports(tree):
    """(import node, enclosing function, inside try) for every in-function import."""
    out = []

    def walk(node, func, in_try):
        for ch in ast.iter_child_nodes(node):
            f = (
                ch
                if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)) and func is None
                else func
            )
            t = in_try or isinstance(ch, ast.Try)
            if isinstance(ch, (ast.Import, ast.ImportFrom)) and func is not None:
                out.append((ch, func, in_try))
            walk(ch, f if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef)) else func, t)

    walk(tree, None, False)
    return out


def module_bindings(tree):
    names = {}
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                names[(a.asname or a.name).split(".")[0]] = ast.unparse(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = "def"
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        names[n.id] = "assign"
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = "assign"
    return names


def full_graph():
    g = {}
    for name, path in MODS.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                ns = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                ns = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for n in ns:
                if n.startswith("edgemed") and (r := resolve(n)):
                    deps.add(r)
        # importing a submodule runs its package __init__ first
        parts = name.split(".")
        deps |= {".".join(parts[:i]) for i in range(1, len(parts))}
        g[name] = deps - {name}
    return g


def reaches(g, a, b):
    seen, todo = set(), [a]
    while todo:
        x = todo.pop()
        if x == b:
            return True
        if x in seen:
            continue
        seen.add(x)
        todo.extend(g.get(x, ()))
    return False


def main():
    helpset = help_modules()
    graph = full_graph()
    targets = set()
    plans = {}
    for name, path in MODS.items():
        tree = ast.parse(path.read_text())
        for node, func, in_try in func_imports(tree):
            mods = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
            )
            if node.__class__ is ast.ImportFrom and node.level:
                continue
            if not all(m.startswith("edgemed") for m in mods):
                continue
            t = resolve(
                mods[0]
                if isinstance(node, ast.Import)
                else (
                    node.module + "." + node.names[0].name
                    if resolve(node.module + "." + node.names[0].name)
                    == node.module + "." + node.names[0].name
                    else node.module
                )
            )
            targets.add(t)
            targets.add(name)
            plans.setdefault(name, []).append((node, func, in_try, t))
    heavy = heavy_sets(sorted(targets))
    report = {"hoisted": 0, "kept": {}}
    for name, items in plans.items():
        path = MODS[name]
        src = path.read_text()
        tree = ast.parse(src)
        binds = module_bindings(tree)
        lines = src.splitlines(keepends=True)
        hoist, keep = [], []
        for node, _func, in_try, t in items:
            reason = None
            text = ast.unparse(node)
            here = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
            if "# lazy:" in here:
                keep.append((node, "marked", t))
                continue
            newly = heavy.get(t, set()) - heavy.get(name, set())
            if (name.startswith("edgemed.cli") or name == "edgemed") and t not in helpset:
                reason = "cli"
            elif name in helpset and t not in helpset:
                reason = "help"
            elif in_try:
                reason = "optional"
            elif newly:
                reason = "heavy:" + ",".join(sorted(newly))
            elif t == name or reaches(graph, t, name):
                reason = "own-package"
            else:
                for a in node.names:
                    b = (a.asname or a.name).split(".")[0]
                    if b in binds and binds[b] != text:  # bound differently at module level
                        reason = f"name-clash:{b}"
            if reason:
                keep.append((node, reason, t))
                continue
            hoist.append(node)
        report["kept"].setdefault(name, []).extend((ast.unparse(n), r) for n, r, _ in keep)
        if not hoist or DRY:
            report["hoisted"] += len(hoist)
            continue
        # remove hoisted lines (full statement lines), insert after the last top-level import
        drop = set()
        for node in hoist:
            drop.update(range(node.lineno - 1, node.end_lineno))
        last = max(
            (n.end_lineno for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))),
            default=0,
        )
        texts = []
        for node in hoist:
            tx = ast.unparse(node)
            if tx not in texts and tx not in binds.values():
                texts.append(tx)
        new = [line for i, line in enumerate(lines) if i not in drop]
        shift = sum(1 for i in drop if i < last)
        insert_at = last - shift
        new[insert_at:insert_at] = [t + "\n" for t in texts]
        path.write_text("".join(new))
        report["hoisted"] += len(hoist)
    print(json.dumps(report, indent=1))


main()
