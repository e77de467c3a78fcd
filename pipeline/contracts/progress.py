"""Progress of the running task, reported by worker code and shown by the driver's one live bar.

Worker code calls :func:`report_progress` (stage, done, total). Inside a task that collects progress
(:func:`collect_progress`), each call goes to a small JSON file that the driver polls (:func:`read_progress`),
so no worker output reaches the console; anywhere else it returns False and the caller shows its own bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from contribshap.pipeline.contracts.io import atomic_write_json

__all__ = ["PROGRESS_INTERVAL_S", "collect_progress", "read_progress", "report_progress"]

#: Seconds between two writes of the progress file (a new stage is written at once).
PROGRESS_INTERVAL_S = 0.25
#: Where the running task sends :func:`report_progress` calls (None: nowhere). A context variable, so
#: only code running inside the task that set it reports.
_PROGRESS_SINK: contextvars.ContextVar[Callable[[str, int, int], None] | None] = contextvars.ContextVar(
    "contribshap_progress_sink", default=None)


def report_progress(stage: str, done: int = 0, total: int = 0) -> bool:
    """Tell the driver what the running task does: ``stage`` (e.g. ``"prepare 1/6 train θ*"``), ``done`` of
    ``total`` steps (0 of 0: a stage without steps). Returns False (and does nothing) outside a task that
    collects progress, so callers fall back to their own display (a tqdm bar when run by hand)."""
    sink = _PROGRESS_SINK.get()
    if sink is None:
        return False
    sink(stage, int(done), int(total))
    return True


class _ProgressFile:
    """Progress sink: ``{"stage", "done", "total", "at"}`` written atomically to ``path``, at most every
    :data:`PROGRESS_INTERVAL_S` seconds unless the stage changes or it is the stage's last step."""

    def __init__(self, path: Path) -> None:
        self.path, self.written_at = Path(path), 0.0
        self.stage: str | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self.stage and done < total and now - self.written_at < PROGRESS_INTERVAL_S:
            return
        self.stage, self.written_at = stage, now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"stage": stage, "done": done, "total": total, "at": time.time()})


def _drop(stage: str, done: int, total: int) -> None:
    """Progress sink of a task whose driver shows no progress (``--quiet``, ``--no-progress``)."""


@contextlib.contextmanager
def collect_progress(path: str | Path | None) -> Iterator[None]:
    """Inside the block, :func:`report_progress` writes to the file ``path``; None: progress is dropped,
    and worker code shows none either (:func:`report_progress` returns True, so no local bar is drawn that
    Ray would forward to the driver's console line by line)."""
    token = _PROGRESS_SINK.set(_ProgressFile(Path(path)) if path else _drop)
    try:
        yield
    finally:
        _PROGRESS_SINK.reset(token)


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last progress a task wrote to ``path`` (``{"stage", "done", "total", "at"}``), or None."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "stage" in doc else None
