"""Shared fixtures: one local Ray for the whole test session (started on first use), store helpers.

Ray starts once (~4 s) with token auth off and 2 CPUs + 2 logical GPUs (it is asked for node address
127.0.0.1, which Ray 2.60 replaces by the host's address: see docs/pipeline.md, "Scheduling"); in-process drivers reuse it, and CLI subprocesses join it through ``--address``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session")
def ray_address() -> str:
    """GCS address of the session's local Ray (``127.0.0.1:<port>``)."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def game_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """PYTHONPATH with tests/ (for ``games_pipeline``) for workers and subprocesses; returns the env."""
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return dict(os.environ)


@pytest.fixture
def contribshap() -> list[str]:
    """Command prefix of the real CLI (the installed console script)."""
    script = Path(sys.executable).with_name("contribshap")
    return [str(script)] if script.exists() else [sys.executable, "-m", "contribshap.pipeline.cli"]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` -> its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
