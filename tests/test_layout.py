"""The architecture, checked: layers run one way (import-linter), no import cycle, every public
name importable, nothing private imported across modules or packages."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("collab", "agents", "inference")
CHECKED = (*PACKAGES, "bench")


def _sources(packages=CHECKED):
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


def test_import_linter_contracts_hold():
    """The contracts in pyproject.toml: bench > agents > collab | inference, and the leaves."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (pip install -e '.[test]')"
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 3 kept, 0 broken." in out.stdout, out.stdout


def _module_graph():
    import grimp

    return grimp.build_graph(*CHECKED, exclude_type_checking_imports=True, cache_dir=None)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules():
    """Lazy imports inside functions count too: a cycle hidden in a function is still a cycle.
    A package's ``__init__`` importing its own submodules is the package's API, not a cycle."""
    graph = _module_graph()
    edges: dict[str, set[str]] = {}
    for module in graph.modules:
        targets = set()
        for imported in graph.find_modules_directly_imported_by(module):
            if module.startswith(imported + "."):
                continue  # a submodule importing its parent package: Python's own order
            targets.add(imported)
        edges[module] = targets
    # A package __init__ re-exporting its submodules is not an edge that can close a cycle
    # unless a submodule imports the package itself, which the rule above already skips.
    for pkg in [m for m in graph.modules if (ROOT / m.replace(".", "/") / "__init__.py").exists()]:
        edges[pkg] = {t for t in edges[pkg] if not t.startswith(pkg + ".")}
    assert _cycles(edges) == []


def _all_packages():
    for pkg in PACKAGES:
        module = importlib.import_module(pkg)
        yield pkg
        for info in pkgutil.walk_packages(module.__path__, prefix=pkg + "."):
            if info.ispkg and "migrations" not in info.name:
                yield info.name


def test_every_public_name_is_importable():
    for name in _all_packages():
        module = importlib.import_module(name)
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{name} has no __all__"
        missing = [n for n in exported if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names what it does not define: {missing}"


def private_imports(path: Path, root: Path = ROOT) -> list[str]:
    """``from x import _name`` anywhere, and a private module (``_x``) imported from outside the
    package that holds it."""
    tree = ast.parse(path.read_text(), str(path))
    rel = path.relative_to(root).with_suffix("")
    own_package = ".".join(rel.parts[:-1])
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = own_package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            folder = root / base.replace(".", "/")
            submodules = {a.name for a in node.names
                          if (folder / f"{a.name}.py").exists() or (folder / a.name / "__init__.py").exists()}
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and alias.name not in submodules:
                    problems.append(f"{rel}:{node.lineno} imports private name {alias.name} from {base}")
            modules = [base] + [f"{base}.{name}" for name in submodules]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        for module in modules:
            parts = module.split(".")
            if parts[0] not in CHECKED:
                continue
            for i, part in enumerate(parts):
                if part.startswith("_") and not part.startswith("__"):
                    holder = ".".join(parts[:i])
                    if own_package != holder and not own_package.startswith(holder + "."):
                        problems.append(f"{rel}:{node.lineno} imports private module {module} from outside {holder}")
                    break
    return problems


def test_private_import_check_catches_both_kinds(tmp_path):
    pkg = tmp_path / "inference" / "engines"
    pkg.mkdir(parents=True)
    (tmp_path / "agents").mkdir()
    bad = tmp_path / "agents" / "x.py"
    bad.write_text("from inference.engines._sampling import sample\nfrom collab.api import _json\n")
    ok = pkg / "y.py"
    (pkg / "_chat.py").write_text("")
    ok.write_text("from ._sampling import sample\nfrom . import _chat\n")
    problems = private_imports(bad, tmp_path)
    assert len(problems) == 2 and "private name _json" in problems[1] and "private module" in problems[0]
    assert private_imports(ok, tmp_path) == []


@pytest.mark.parametrize("path", list(_sources()), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_private_is_imported_across_modules(path):
    assert private_imports(path) == []
