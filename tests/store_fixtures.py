"""A finished store of a python game, copied per test, and helpers to damage it and to run the real CLI.

``build_store`` runs the driver once (exact airport, n = 4: 16 evaluations on the session's Ray);
``copy_store`` gives a test its own copy (``<tmp>/st`` and ``<tmp>/good.yaml``, CLI run from ``<tmp>``).
``read_only`` and ``full_disk`` mount a read-only bind mount / a small tmpfs for the duration of a block
and skip the test (with the reason) where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import TESTS_DIR

GOOD = {
    "name": "good", "store": "st",
    "game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 4},
    "design": {"kind": "exact"},
    "estimators": ["exact_shapley", "kernelshap"],
}


def build_store(root: Path) -> Path:
    """A finished store at ``root / "st"`` (config ``root / "good.yaml"``) built by the real driver."""
    from contribshap.pipeline.config.schema import load_config
    from contribshap.pipeline.products.run import run

    (root / "good.yaml").write_text(yaml.safe_dump(GOOD))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
        run(load_config(root / "good.yaml"), progress=False)
    return root / "st"


def copy_store(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built store (``tmp_path / "st"``) and its config (``tmp_path / "good.yaml"``)."""
    shutil.copytree(built, tmp_path / "st")
    shutil.copy(built.parent / "good.yaml", tmp_path / "good.yaml")
    return tmp_path / "st"


def cli(command: list[str], *args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``contribshap ARGS`` in ``cwd``."""
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise OSError(done.stderr.strip() or f"mount {' '.join(args)} failed")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """``folder`` bind-mounted read-only onto itself (writes fail with EROFS even for root)."""
    try:
        _mount("--bind", str(folder), str(folder))
    except (OSError, FileNotFoundError) as error:
        pytest.skip(f"a read-only bind mount is not permitted here ({error})")
    try:
        try:
            _mount("-o", "remount,ro,bind", str(folder))
        except OSError as error:
            pytest.skip(f"remounting read-only is not permitted here ({error})")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def full_disk(folder: Path, *, size: str = "4m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``folder`` (created); the caller fills it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    except (OSError, FileNotFoundError) as error:
        pytest.skip(f"mounting a tmpfs is not permitted here ({error})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no space left."""
    with open(path, "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
