"""Import rules of docs/ARCHITECTURE.md, checked on the code itself.

- every ``pipeline/`` module imports without torch (each in a fresh interpreter: ``'torch' not in sys.modules``);
- the numpy core (``pipeline/sampling.py``, ``pipeline/estimators*``, ``pipeline/metrics.py``) imports no I/O
  library at module level (checked on the syntax tree, so nothing is executed);
- ``workers/`` never imports ``contribshap.pipeline.driver`` (workers are called by the driver, not the reverse).
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

#: Libraries that read or write files or data formats: not allowed in the numpy core.
IO_LIBRARIES = frozenset({"pyarrow", "pandas", "polars", "json", "yaml", "pickle", "csv", "sqlite3", "h5py", "io",
                          "shutil", "tempfile", "torch", "ray"})


def module_name(path: Path, package_root: Path, package: str) -> str:
    """``pipeline/estimators/_base.py`` -> ``contribshap.pipeline.estimators._base`` (``__init__`` -> the package)."""
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
    assert "contribshap.pipeline.sampling" in PIPELINE_MODULES and "contribshap.pipeline.driver" in PIPELINE_MODULES
    assert len(list(WORKERS.rglob("*.py"))) > 10


@pytest.mark.parametrize("module", PIPELINE_MODULES)
def test_pipeline_module_imports_without_torch(module):
    code = f"import sys, importlib; importlib.import_module({module!r}); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False", f"importing {module} loads torch; import it inside the function that needs it"


NUMPY_CORE = [PIPELINE / "sampling.py", PIPELINE / "metrics.py", *sorted((PIPELINE / "estimators").rglob("*.py"))]


@pytest.mark.parametrize("path", NUMPY_CORE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_numpy_core_imports_no_io_library(path):
    bad = [(line, name) for line, name in top_level_imports(path) if name in IO_LIBRARIES]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports I/O libraries at module level {bad}; move the I/O to its caller"


def test_top_level_imports_sees_guarded_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import json\ntry:\n    import pandas\nexcept ImportError:\n    pass\n"
                      "def f():\n    import pyarrow\n")
    assert top_level_imports(sample) == [(1, "json"), (3, "pandas")]


@pytest.mark.parametrize("path", sorted(WORKERS.rglob("*.py")), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_workers_never_import_the_driver(path):
    bad = [(line, name) for line, name in all_imports(path)
           if name == "contribshap.pipeline.driver" or name.startswith("contribshap.pipeline.driver.")]
    assert not bad, f"{path.relative_to(REPO_ROOT)} imports the driver {bad}; workers are called by it, never the reverse"
