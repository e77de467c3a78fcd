"""Import rules of docs/ARCHITECTURE.md, checked on the code itself.

- the layers import one way (:data:`ALLOWED` lists every allowed arrow; any other fails), and no module is
  part of an import cycle, counting imports inside functions too (a lazy import does not hide a cycle);
- every ``pipeline/`` module imports without torch (each in a fresh interpreter: ``'torch' not in sys.modules``);
- the numpy core (``pipeline/core/``) imports no I/O library at module level (checked on the syntax tree);
- the packages listed in ``pyproject.toml`` are exactly the folders with an ``__init__.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINE = REPO_ROOT / "pipeline"
WORKERS = REPO_ROOT / "workers"
USECASES = REPO_ROOT / "usecases"

#: Libraries that read or write files or data formats: not allowed in the numpy core.
IO_LIBRARIES = frozenset({"pyarrow", "pandas", "polars", "json", "yaml", "pickle", "csv", "sqlite3", "h5py", "io",
                          "shutil", "tempfile", "torch", "ray"})


def module_name(path: Path, package_root: Path, package: str) -> str:
    """``pipeline/core/estimators/_base.py`` -> ``contribshap.pipeline.core.estimators._base`` (``__init__`` -> the package)."""
    parts = list(path.relative_to(package_root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


PIPELINE_MODULES = sorted(module_name(p, PIPELINE, "contribshap.pipeline") for p in PIPELINE.rglob("*.py"))


def top_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import executed when the module is imported.

    That is every import statement outside function and class bodies (module level, including inside
    module-level ``if`` / ``try`` blocks); ``from . import x`` style relative imports are reported as ``.``.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend((node.lineno, alias.name.split(".")[0]) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                found.append((node.lineno, "." if node.level else (node.module or "").split(".")[0]))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])

    visit(tree.body)
    return found


def all_imports(path: Path) -> list[tuple[int, str]]:
    """(line, full dotted module) of every import anywhere in the file (function bodies too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def test_the_module_lists_are_not_empty():
    assert "contribshap.pipeline.core.designs" in PIPELINE_MODULES and "contribshap.pipeline.dispatch.driver" in PIPELINE_MODULES
    assert len(list(WORKERS.rglob("*.py"))) > 10


@pytest.mark.parametrize("module", PIPELINE_MODULES)
def test_pipeline_module_imports_without_torch(module):
    code = f"import sys, importlib; importlib.import_module({module!r}); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False", f"importing {module} loads torch; import it inside the function that needs it"


NUMPY_CORE = sorted((PIPELINE / "core").rglob("*.py"))


@pytest.mark.parametrize("path", NUMPY_CORE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_numpy_core_imports_no_io_library(path):
    bad = [(line, name) for line, name in top_level_imports(path) if name in IO_LIBRARIES]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports I/O libraries at module level {bad}; move the I/O to its caller"


def test_top_level_imports_sees_guarded_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import json\ntry:\n    import pandas\nexcept ImportError:\n    pass\n"
                      "def f():\n    import pyarrow\n")
    assert top_level_imports(sample) == [(1, "json"), (3, "pandas")]


# --- layers and arrows --------------------------------------------------------------------------------------
#: Layer of a module: the first prefix that matches (most specific first).
LAYERS: list[tuple[str, str]] = [
    ("contribshap.pipeline.contracts", "contracts"),
    ("contribshap.pipeline.core", "core"),
    ("contribshap.pipeline.config.sections", "sections"),
    ("contribshap.pipeline.config", "config"),
    ("contribshap.pipeline.storage", "storage"),
    ("contribshap.pipeline.games", "games"),
    ("contribshap.pipeline.dispatch", "dispatch"),
    ("contribshap.pipeline.products", "products"),
    ("contribshap.pipeline", "pipeline"),
    ("contribshap.workers", "workers"),
]
#: Layer -> the layers it may import (besides itself). Use cases: a unit's declaration (``__init__``,
#: ``schema``) is ``usecase``; its ``source`` / ``backend`` / ``properties`` are worker code, ``usecase_impl``.
ALLOWED: dict[str, set[str]] = {
    "contracts": set(),
    "core": {"contracts"},
    "sections": set(),
    "usecase": {"contracts", "sections"},
    "config": {"contracts", "core", "sections", "usecase"},
    "storage": {"contracts", "core", "config", "sections"},
    "games": {"contracts", "config", "sections"},
    "dispatch": {"contracts", "core", "config", "sections", "storage", "games"},
    "products": {"contracts", "core", "config", "sections", "storage", "games", "dispatch", "pipeline"},
    "pipeline": set(),
    "workers": {"contracts", "sections", "config", "usecase"},
    "usecase_impl": {"contracts", "sections", "config", "usecase", "workers"},
}
#: The one door from the driver side to the workers: the game factory (and the baselines through it).
FACTORY_DOORS = {("contribshap.pipeline.games.factory", "contribshap.workers.game"),
                 ("contribshap.pipeline.games.factory", "contribshap.workers.model_baselines"),
                 ("contribshap.pipeline.games.factory", "contribshap.workers.data_summary")}


def layer_of(module: str) -> str | None:
    if module == "contribshap.usecases" or module.startswith("contribshap.usecases."):
        return "usecase_impl" if module.rsplit(".", 1)[-1] in ("source", "backend", "properties") else "usecase"
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    return None


def project_modules() -> dict[str, Path]:
    found = {}
    for root, package in ((PIPELINE, "contribshap.pipeline"), (WORKERS, "contribshap.workers"),
                          (USECASES, "contribshap.usecases")):
        for path in root.rglob("*.py"):
            found[module_name(path, root, package)] = path
    return found


def import_graph() -> dict[str, dict[str, int]]:
    """module -> {imported project module: line}, over every import in the file (function bodies too)."""
    modules = project_modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges: dict[str, int] = {}
        for line, target in all_imports(path):
            # ``from a.b import c``: the module a.b.c when it exists, else a.b
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("contribshap."):
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


def test_layers_import_only_the_allowed_arrows():
    bad = []
    for source, edges in import_graph().items():
        for target, line in edges.items():
            a, b = layer_of(source), layer_of(target)
            if a == b or b in ALLOWED[a] or (source, target) in FACTORY_DOORS:
                continue
            bad.append(f"{source}:{line} ({a}) imports {target} ({b})")
    assert not bad, "imports against the layer arrows:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def strongconnect(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                strongconnect(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            strongconnect(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_layer_test_sees_a_planted_cycle_and_a_wrong_arrow(tmp_path):
    assert layer_of("contribshap.usecases.artbench.backend") == "usecase_impl"
    assert layer_of("contribshap.usecases.artbench.schema") == "usecase"
    assert "dispatch" not in ALLOWED["storage"] and "workers" not in ALLOWED["dispatch"]
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from contribshap.pipeline.storage.store import Store\n")
    assert (2, "contribshap.pipeline.storage.store") in all_imports(sample)


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init, root, package)
             for root, package in ((PIPELINE, "contribshap.pipeline"), (WORKERS, "contribshap.workers"),
                                   (USECASES, "contribshap.usecases"))
             for init in root.rglob("__init__.py")} | {"contribshap.configs"}
    assert listed == found, f"pyproject.toml packages differ from the folders: {sorted(listed ^ found)}"


@pytest.mark.parametrize("path", sorted(WORKERS.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_workers_never_import_the_driver(path):
    bad = [(line, name) for line, name in all_imports(path)
           if name == "contribshap.pipeline.dispatch.driver" or name.startswith("contribshap.pipeline.dispatch.driver.")]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports the driver {bad}; workers are called by it, never the reverse"
