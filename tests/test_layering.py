"""The layering DESIGN.md promises, read from the source: who may import whom, and no import cycles."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kerascomp"
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Every kerascomp module ``path`` imports (``top_level_only``: only those run when it is imported);
    imports under ``if TYPE_CHECKING:`` are annotations, never run, and not counted."""
    tree = ast.parse(path.read_text())
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
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {name for name in found if name in modules and name != "kerascomp"}


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _family(a: str, b: str) -> bool:
    return a == b or _under(a, b) and MODULES[b].name == "__init__.py" or _under(b, a) and MODULES[a].name == "__init__.py"


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("importer, forbidden", [
    (("kerascomp.saving", "kerascomp.export", "kerascomp.bench", "kerascomp.runtime"), ("kerascomp.compress",)),
    (("kerascomp.compress",), ("kerascomp.export", "kerascomp.bench", "kerascomp.report", "kerascomp.cli",
                               "kerascomp.pipeline", "kerascomp._stages", "kerascomp.compressing")),
    (("kerascomp.models", "kerascomp.data"), ("kerascomp.compress", "kerascomp.training", "kerascomp.registry")),
])
def test_lower_layers_never_import_upper_ones(importer, forbidden):
    broken = sorted(f"{name} -> {target}" for name, path in MODULES.items() if _under(name, *importer)
                    for target in _imports(path, top_level_only=False) if _under(target, *forbidden))
    assert broken == []


@pytest.mark.parametrize("top_level_only", [True, False], ids=["at-import-time", "including-deferred-imports"])
def test_no_import_cycles(top_level_only):
    """A package's ``__init__`` and its own submodules may import each other (that is how a package assembles
    itself, e.g. the zoo's registrations); any other cycle at import time breaks whichever module is imported
    first, and a cycle hidden behind a function-level import is two modules that cannot be understood apart."""
    graph = {name: {t for t in _imports(path, top_level_only=top_level_only) if not _family(name, t)}
             for name, path in MODULES.items()}
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
