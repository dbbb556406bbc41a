"""The layer order of docs/architecture.md, enforced.

* the import-linter contracts in ``.importlinter`` (layers point down; no package module
  imports ``acegen.reference``) are kept, and would break on an upward import (checked on a
  synthetic package with the same layer names);
* every acegen module or subpackage is placed in a layer (a new one cannot slip past);
* there is no import cycle among acegen modules, function-level (lazy) imports included.
"""

from __future__ import annotations

import ast
import configparser
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import acegen

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
PACKAGE_DIR = Path(acegen.__file__).resolve().parent


def _config() -> configparser.ConfigParser:
    cp = configparser.ConfigParser()
    cp.read(CONFIG)
    return cp


def _layer_names() -> list[list[str]]:
    """The layers, top to bottom, each a list of module names (relative to acegen)."""
    text = _config()["importlinter:contract:layers"]["layers"]
    return [[m.strip() for m in line.split("|")] for line in text.strip().splitlines() if line.strip()]


def _lint(config: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))\n"
    )
    return subprocess.run([sys.executable, "-c", code], cwd=pythonpath, env={"PYTHONPATH": str(pythonpath)},
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------------------- contracts
def test_import_contracts_are_kept():
    out = _lint(CONFIG, PACKAGE_DIR.parent)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


def test_every_acegen_module_has_a_layer():
    top = {m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)])}
    placed = [m for layer in _layer_names() for m in layer]
    assert len(placed) == len(set(placed)), "a module is placed in two layers"
    assert top == set(placed), f"unplaced: {sorted(top - set(placed))}; unknown: {sorted(set(placed) - top)}"
    sources = _config()["importlinter:contract:reference"]["source_modules"].split()
    assert set(sources) == {f"acegen.{m}" for m in top - {"reference"}}


def _synthetic_package(tmp_path: Path, extra: dict[str, str]) -> Path:
    """A package ``fakeace`` with one empty module per acegen layer entry, plus ``extra``
    module sources, and the acegen contracts rewritten for it."""
    pkg = tmp_path / "fakeace"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for layer in _layer_names():
        for name in layer:
            (pkg / f"{name}.py").write_text(extra.get(name, ""))
    config = tmp_path / "fake.importlinter"
    config.write_text(CONFIG.read_text().replace("acegen", "fakeace"))
    return config


def test_synthetic_copy_without_upward_import_is_kept(tmp_path):
    config = _synthetic_package(tmp_path, {"model": "from . import runtime, errors\n"})
    out = _lint(config, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "module,source",
    [
        ("errors", "def f():\n    from . import model\n"),  # function-level, bottom → model
        ("jit", "from .backends import x\n"),  # the former jit → backends ABI import
        ("symbolic", "from . import basis\n"),  # the former purify → basis import
        ("model", "from .reference import ace\n"),  # package code using a reference oracle
    ],
)
def test_contract_breaks_on_an_upward_import(tmp_path, module, source):
    config = _synthetic_package(tmp_path, {module: source})
    out = _lint(config, tmp_path)
    assert out.returncode != 0, out.stdout
    assert "BROKEN" in out.stdout


# ---------------------------------------------------------------------------------- cycles
def _under_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """module → modules of ``package`` it imports anywhere (module level or inside functions,
    except under ``if TYPE_CHECKING:``), from the source with ``ast``."""
    files = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir).with_suffix("").parts
        name = ".".join((package,) + (rel[:-1] if rel[-1] == "__init__" else rel))
        files[name] = path
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _under_type_checking(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in files else origin for a in node.names]
            graph[mod].update(t for t in targets if t in files and t != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycles_including_function_level_imports():
    graph = import_graph(PACKAGE_DIR, "acegen")
    assert "acegen.model" in graph and "acegen.basis" in graph["acegen.model"]  # lazy imports are seen
    assert cycles(graph) == []


def test_cycle_check_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "cyc"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text(textwrap.dedent("""
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from .. import c
        def f():
            from ..a import thing
    """))
    (pkg / "c.py").write_text("import cyc.a\n")
    found = cycles(import_graph(pkg, "cyc"))
    assert found == [["cyc.a", "cyc.sub.b"]]  # c → a is one-way; b → c is TYPE_CHECKING only


def test_no_package_module_imports_the_reference_evaluators():
    """The forbidden contract lists the subpackages; this also covers ``acegen/__init__``."""
    graph = import_graph(PACKAGE_DIR, "acegen")
    users = sorted(m for m, deps in graph.items() if not m.startswith("acegen.reference")
                   and any(d == "acegen.reference" or d.startswith("acegen.reference.") for d in deps))
    assert users == []
    assert any(d.startswith("acegen.") for d in graph["acegen.reference.ace_numpy"])  # the graph sees them
