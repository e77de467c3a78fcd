"""Shared fixtures: one local Ray for the whole test session (started on first use), store helpers.

Ray starts once (~4 s) with 2 CPUs + 2 logical GPUs, on 127.0.0.1 only and with Ray's token authentication
on, as the product's embedded instance does (``ray.init(address="local")``); in-process drivers reuse it, and CLI subprocesses
join it through ``--address``. ``RAY_AUTH_MODE=token`` is set for the whole session so every client (the
CLI, ``ray start`` heads, workers) uses the token Ray keeps under the home folder. ``make test`` runs the
suite inside a loopback-only network namespace (tests/isolated.sh), so nothing is reachable from outside.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

# Every Ray client of the test session authenticates with the token (created on the first local start).
os.environ["RAY_AUTH_MODE"] = "token"
# Every Ray the session starts (its own, the CLI's local instances, `ray start` heads) keeps its node on
# 127.0.0.1, as the product's embedded instance does (see contribshap.pipeline.dispatch.ray_context.connect).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session")
def ray_address() -> str:
    """GCS address of the session's local Ray (``127.0.0.1:<port>``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def game_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """PYTHONPATH with tests/ (for ``games_pipeline``) for workers and subprocesses; returns the env."""
    path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    monkeypatch.setenv("PYTHONPATH", path)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return dict(os.environ)


@pytest.fixture
def contribshap() -> list[str]:
    """Command prefix of the real CLI (the installed console script)."""
    script = Path(sys.executable).with_name("contribshap")
    return [str(script)] if script.exists() else [sys.executable, "-m", "contribshap.pipeline.products.cli"]


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` -> its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
