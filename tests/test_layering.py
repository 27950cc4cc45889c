"""The layering docs/architecture.md promises, read from the source: who may import whom, and no import cycles.

Imports are read with ``ast`` (every ``import``, at module level or inside a
function) and followed the two ways a module can reach another unseen: a
package face re-exporting its submodules, and ``importlib.import_module`` with
a literal name. The registry's discovery of its techniques (``pkgutil`` over
:mod:`kerascomp.compress`) is followed too, so a lower layer cannot reach a
technique through the registry either.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kerascomp"
MAX_LINES = 400
MAX_TOP_LEVEL_FILES = 12

# Every unit of the package (a top-level module or a subpackage), lowest layer first. A unit may import units of
# lower layers only: units in one row are siblings and never import each other.
LAYERS = (
    ("errors",),
    ("console", "files", "options"),
    ("backend",),
    ("tasks",),
    ("report",),
    ("data",),
    ("models", "runtime"),
    ("interop",),
    ("saving",),
    ("training", "export"),
    ("budget",),
    ("compress", "bench"),
    ("analysis",),
    ("pipeline",),
    ("cli",),
    ("testing",),
    ("__main__",),
)
RANK = {unit: rank for rank, row in enumerate(LAYERS) for unit in row}
BELOW_TECHNIQUES = ("saving", "export", "bench", "runtime", "data", "models", "interop", "training", "budget")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _unit(module: str) -> str:
    return module.split(".")[1] if "." in module else "kerascomp"


def _package(module: str) -> str:
    """The package a module belongs to: itself for a package's ``__init__``, else its folder."""
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, top_level_only: bool = False) -> set[str]:
    """Every kerascomp module ``module`` imports (``top_level_only``: only those run when it is imported);
    imports under ``if TYPE_CHECKING:`` are annotations, never run, and not counted."""
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value)
    if module == "kerascomp.compress.registry":  # the built-in techniques, discovered with pkgutil
        found |= {name for name in MODULES if name.startswith("kerascomp.compress.")}
    return {name for name in found if name in MODULES and name != "kerascomp"}


def _reachable(module: str) -> set[str]:
    """Every module importing ``module`` can run, following imports transitively (package faces included)."""
    seen, todo = set(), [module]
    while todo:
        for target in _imports(todo.pop()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in MODULES} - {"kerascomp"} == set(RANK)


def test_units_import_only_lower_layers():
    broken = sorted(f"{name} -> {target}" for name in MODULES if _unit(name) != "kerascomp"
                    for target in _imports(name)
                    if _unit(target) != _unit(name) and RANK[_unit(target)] >= RANK[_unit(name)])
    assert broken == []


@pytest.mark.parametrize("unit", BELOW_TECHNIQUES)
def test_lower_layers_reach_no_technique_even_through_the_registry(unit):
    reached = {target for name in MODULES if _unit(name) == unit for target in _reachable(name)}
    assert sorted(t for t in reached if _unit(t) in ("compress", "analysis", "pipeline", "cli")) == []


def test_the_registry_would_be_caught_reaching_down_to_techniques():
    """The check above follows the registry's discovery: through it, every technique is reachable."""
    assert "kerascomp.compress.prune" in _reachable("kerascomp.compress.registry")


def test_compress_imports_no_export_bench_report_pipeline_or_cli():
    forbidden = ("export", "bench", "report", "pipeline", "cli", "analysis")
    broken = sorted(f"{name} -> {target}" for name in MODULES if _unit(name) == "compress"
                    for target in _imports(name) if _unit(target) in forbidden)
    assert broken == []


def test_a_private_module_is_imported_only_inside_its_own_package():
    """``kerascomp.export._verify`` serves ``kerascomp.export``; a top-level ``_`` module serves top-level modules."""
    broken = []
    for name in MODULES:
        for target in _imports(name):
            if target.rpartition(".")[2].startswith("_") and not target.endswith("__main__"):
                if _package(name) != target.rpartition(".")[0]:
                    broken.append(f"{name} -> {target}")
    assert sorted(broken) == []


def test_tests_and_scripts_use_public_names_only():
    """What tests, scripts and the docs need has a public name: none of them imports a ``_`` module or name."""
    broken = []
    for path in [*ROOT.glob("tests/*.py"), *ROOT.glob("scripts/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                     if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            broken += [f"{path.name}: {n}" for n in names
                       if n.startswith("kerascomp.") and any(_private(part) for part in n.split(".")[1:])
                       and (n in MODULES or n.rpartition(".")[0] in MODULES)]
    assert broken == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")  # ``__version__`` is public


def test_click_is_imported_only_by_the_cli():
    users = sorted(name for name, path in MODULES.items() if _unit(name) != "cli"
                   for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, (ast.Import, ast.ImportFrom))
                   and any(n.split(".")[0] == "click" for n in
                           ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])))
    assert users == []


def test_the_top_level_holds_at_most_twelve_files():
    assert len(list(PACKAGE.glob("*.py"))) <= MAX_TOP_LEVEL_FILES


def test_function_level_imports_say_why():
    """Imports of kerascomp modules inside functions hide the graph; each one left has a comment on its line or
    the line above (third-party imports on use, such as tfmot or onnx, are the usual way to keep start-up fast)."""
    silent = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and "kerascomp" in lines[inner.lineno - 1]:
                        here, above = lines[inner.lineno - 1], lines[inner.lineno - 2].strip()
                        if "#" not in here and not above.startswith("#"):
                            silent.append(f"{name}:{inner.lineno}")
    assert sorted(set(silent)) == []


@pytest.mark.parametrize("top_level_only", [True, False], ids=["at-import-time", "including-deferred-imports"])
def test_no_import_cycles(top_level_only):
    """A package's ``__init__`` and its own submodules may import each other (that is how a package assembles
    itself); any other cycle at import time breaks whichever module is imported first, and a cycle hidden behind
    a function-level import is two modules that cannot be understood apart."""
    def family(a, b):
        return _package(a) == b or _package(b) == a

    graph = {name: {t for t in _imports(name, top_level_only) if not family(name, t)} for name in MODULES}
    graph["kerascomp.compress.registry"] -= {n for n in MODULES if n.startswith("kerascomp.compress.")}  # on use
    state, cycles = {}, []

    def visit(name, trail):
        state[name] = "open"
        for target in graph.get(name, ()):
            if state.get(target) == "open":
                cycles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_no_module_is_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize("module", ["kerascomp.cli", "kerascomp.runtime", "kerascomp.pipeline.config",
                                    "kerascomp.compress.registry", "kerascomp.saving", "kerascomp.export",
                                    "kerascomp.bench"])
def test_importing_a_package_face_loads_no_tensorflow(module):
    code = f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'tf_keras', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
