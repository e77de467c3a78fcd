"""Artifacts of prepare: one mechanism (:func:`stage`) builds every artifact in a temporary folder and
publishes it atomically; :func:`config_hash` names it by exactly the config sections it depends on.

May import: contracts. No torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contribshap.pipeline.contracts.io import TMP_NAME

__all__ = ["ARTIFACT_JSON", "METRICS_VERSION", "clean_stale_tmp", "config_hash", "is_done", "stage"]

ARTIFACT_JSON = "artifact.json"
#: Version of the built-in property formulas; 2 = KID on standardised features. Part of the stage hash.
METRICS_VERSION = 2


def config_hash(*parts: Any) -> str:
    """12 hex chars of sha256 over the JSON of ``parts`` (pydantic models are dumped first)."""
    dumped = [p.model_dump(mode="json") if hasattr(p, "model_dump") else p for p in parts]
    return hashlib.sha256(json.dumps(dumped, sort_keys=True, default=str).encode()).hexdigest()[:12]


def is_done(folder: Path) -> dict[str, Any] | None:
    """The summary of a published artifact (its ``artifact.json``), or None when ``folder`` is not complete."""
    path = Path(folder) / ARTIFACT_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def stage(folder: Path, make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Build one artifact: run ``make(tmp_folder) -> summary`` unless ``folder`` is complete; publish atomically.

    The artifact is built in ``.<name>.tmp-<pid>`` next to ``folder`` and renamed with ``os.replace`` once
    ``artifact.json`` is written, so a killed prepare never leaves a half artifact under the final name
    (its temporary folder is removed by the next :func:`clean_stale_tmp`). When another process published
    the same artifact first, theirs is kept.

    Returns:
        the summary (JSON-able, with ``seconds``) plus ``reused``: whether the artifact already existed.
    """
    folder = Path(folder)
    existing = is_done(folder)
    if existing is not None:
        return {**existing, "reused": True}
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    summary = make(tmp)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (tmp / ARTIFACT_JSON).write_text(json.dumps(summary, indent=1, default=str))
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        theirs = is_done(folder)
        if theirs is None:
            raise RuntimeError(f"artifact {folder} exists but is incomplete (no {ARTIFACT_JSON}); delete it and re-run prepare") from None
        return {**theirs, "reused": True}  # another worker published it first: keep theirs
    return {**summary, "reused": False}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_tmp(artifacts_dir: Path) -> list[str]:
    """Remove the ``.<name>.tmp-<pid>`` folders of writers that are no longer running; returns their names.

    Pids are checked on this machine: run prepare on one machine at a time per store (the driver runs it
    as one task before any evaluation), so a temporary folder of a live writer is never removed.
    """
    artifacts_dir = Path(artifacts_dir)
    removed = []
    if not artifacts_dir.is_dir():
        return removed
    for entry in sorted(artifacts_dir.iterdir()):
        match = TMP_NAME.match(entry.name)
        if match is None or int(match["pid"]) == os.getpid() or _pid_alive(int(match["pid"])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed
