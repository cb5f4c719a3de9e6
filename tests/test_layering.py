"""The import layering of the README, checked on the source: `core` imports no other part,
`methods` and `tasks` import `core` only, `leaderboard` imports `core` only (it is handed the
records the suite read), `suite` imports them all, and no two
modules import each other, directly or around a circle (lazy and TYPE_CHECKING imports count:
they are dependencies all the same). The registration modules stay torch-free."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("core", "methods", "tasks", "suite", "leaderboard")
ALLOWED = {"core": set(), "methods": {"core"}, "tasks": {"core"},
           "suite": {"core", "methods", "tasks", "leaderboard"}, "leaderboard": {"core"}}


def _modules() -> dict[str, Path]:
    out = {}
    for part in PARTS:
        for path in (ROOT / part).rglob("*.py"):
            dotted = ".".join(("slimbench", *path.relative_to(ROOT).with_suffix("").parts))
            out[dotted.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The slimbench modules `name` imports (a package's `__init__` counts as the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _imports(name, path, known) for name, path in known.items()}


def _part(module: str) -> str:
    return module.split(".")[1]


def test_layers_import_downward_only():
    bad = sorted(f"{a} -> {b}" for a, deps in _graph().items() for b in deps
                 if _part(a) != _part(b) and _part(b) not in ALLOWED[_part(a)])
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_no_import_circles():
    graph = _graph()
    # a package __init__ re-exporting its own modules is not a circle worth reporting
    edges = {a: {b for b in deps if not (b.startswith(a + ".") or a.startswith(b + "."))} for a, deps in graph.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_registration_modules_are_torch_free():
    """What `slimbench list` imports to register methods must not import torch at module level."""
    families = [p.relative_to(ROOT).as_posix() for p in (ROOT / "methods").glob("*/*.py")
                if p.name in ("__init__.py", "configs.py", "plugins.py") and p.parent.name != "common"]
    for rel in ("core", "methods/base.py", "methods/__init__.py", "methods/common/options.py",
                "methods/common/swap.py", "methods/reference", *families):
        paths = [ROOT / rel] if rel.endswith(".py") else list((ROOT / rel).rglob("*.py"))
        for path in paths:
            tree = ast.parse(path.read_text())
            top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
            names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
            names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
            assert not any(n == "torch" or n.startswith("torch.") for n in names), path
