"""Bodies of the driver's Ray tasks: what runs on a worker process (no Ray import here).

The driver (:mod:`contribshap.pipeline.driver`) wraps these plain functions with ``ray.remote`` and the
per-task resources of the config's ``ray`` section. Every task gets the resolved config as JSON text
(a few KB, sent inline) and the store root; a worker process keeps the game it built across tasks
(:func:`cached_game`), so a GPU worker loads its model once.

- :func:`prepare_task`: build the game, run ``game.prepare()``; contributors and a summary come back.
  While it runs, :func:`report_progress` calls (stage, step, steps) made by the worker code go to a small
  JSON file the driver polls for its progress bar (:func:`read_progress`), so no worker output reaches
  the console.
- :func:`evaluate_task`: evaluate one (coalition, replicate), retry transient errors inside the task, write
  its row atomically (``ok`` or ``failed``) and return it.
- :func:`model_baselines_task` / :func:`counterfactual_samples_task`: the torch baselines of
  ``contribshap evaluate`` (``contribshap.workers.baselines``), run like every other model job.
"""

from __future__ import annotations

import contextvars
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config import Config
from contribshap.pipeline.ray_context import one_line
from contribshap.pipeline.store import (
    RESERVED_COLUMNS,
    Store,
    atomic_write_json,
    make_row,
    mask_from_str,
    worker_name,
)

__all__ = [
    "cached_game",
    "counterfactual_samples_task",
    "evaluate_task",
    "is_transient",
    "model_baselines_task",
    "prepare_task",
    "read_progress",
    "report_progress",
]

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
        self.path, self.stage, self.written_at = Path(path), None, 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if stage == self.stage and done < total and now - self.written_at < PROGRESS_INTERVAL_S:
            return
        self.stage, self.written_at = stage, now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"stage": stage, "done": done, "total": total, "at": time.time()})


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last progress a task wrote to ``path`` (``{"stage", "done", "total", "at"}``), or None."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "stage" in doc else None


def is_transient(error: BaseException, names: Sequence[str]) -> bool:
    """True when the class of ``error`` or one of its bases is named (bare or qualified) in ``names``."""
    wanted = set(names)
    for cls in type(error).__mro__:
        if cls.__name__ in wanted or f"{cls.__module__}.{cls.__name__}" in wanted:
            return True
    return False


def _config(config_text: str) -> Config:
    return Config.model_validate(json.loads(config_text))


@functools.lru_cache(maxsize=8)
def cached_game(namespace: str, store_root: str, config_text: str, search_paths: tuple[str, ...]) -> Any:
    """Build the game once per worker process (keyed by namespace = config hash, and store root)."""
    from contribshap.pipeline.games import build_game

    for path in reversed(search_paths):
        if path not in sys.path:
            sys.path.insert(0, path)
    return build_game(_config(config_text), Path(store_root), search_paths=search_paths)


def prepare_task(config_text: str, store_root: str, namespace: str, search_paths: tuple[str, ...],
                 progress_path: str | None = None) -> dict[str, Any]:
    """Build the game, run ``prepare()``, return contributors, property names, a summary and the worker.

    ``progress_path``: a file for :func:`report_progress` calls made while preparing (the driver's bar);
    None: no progress is reported (and worker code shows none).
    """
    token = _PROGRESS_SINK.set(_ProgressFile(Path(progress_path)) if progress_path else None)
    try:
        game = cached_game(namespace, store_root, config_text, search_paths)
        summary = game.prepare()
    finally:
        _PROGRESS_SINK.reset(token)
    return {
        "contributors": [c.to_dict() for c in game.contributors()],
        "property_names": list(game.property_names()),
        "summary": summary,
        "worker": worker_name(),
    }


def evaluate_task(config_text: str, store_root: str, namespace: str, job: dict[str, Any],
                  search_paths: tuple[str, ...]) -> dict[str, Any]:
    """Evaluate one (coalition, replicate), write its row atomically, return the row.

    An exception whose class is named in ``ray.retry_exceptions`` is retried here up to
    ``ray.max_retries`` times with backoff; any other one (or one that keeps coming) makes a ``failed`` row.
    """
    started = time.time()
    ray_cfg = json.loads(config_text)["ray"]
    max_retries, transient = int(ray_cfg["max_retries"]), list(ray_cfg["retry_exceptions"])
    attempt = 0
    while True:
        attempt += 1
        clock = time.perf_counter()
        try:
            game = cached_game(namespace, store_root, config_text, search_paths)
            result = game.evaluate(mask_from_str(job["mask"]), replicate=int(job["replicate"]), seed=int(job["seed"]))
            reserved = sorted(set(result.values) & RESERVED_COLUMNS)
            if reserved:
                raise ValueError(f"property name(s) {reserved} are reserved store columns; rename them")
            timings = {**result.timings, "wall_s": time.perf_counter() - clock}
            row = make_row(job, status="ok", attempt=attempt, values=result.values, timings=timings,
                           info=result.info, started_at=started)
            break
        except Exception as error:
            if is_transient(error, transient) and attempt <= max_retries:
                time.sleep(min(0.05 * 2**attempt, 5.0))
                continue
            row = make_row(job, status="failed", attempt=attempt, error=one_line(error),
                           timings={"wall_s": time.perf_counter() - clock}, started_at=started)
            break
    Store(store_root).write_eval(namespace, row)
    return row


def model_baselines_task(config_text: str, store_root: str, methods: list[str], progress: bool) -> dict[str, np.ndarray]:
    """``contribshap.workers.baselines.model_baselines`` of the store: method -> unsigned scores (n,)."""
    from contribshap.workers.baselines import model_baselines

    return model_baselines(_config(config_text), Path(store_root), methods=methods, progress=progress)


def counterfactual_samples_task(config_text: str, store_root: str, panels: list[tuple[str, np.ndarray]],
                                out_png: str) -> str:
    """``contribshap.workers.baselines.counterfactual_samples``: one PNG of sample grids; returns its path."""
    from contribshap.workers.baselines import counterfactual_samples

    return str(counterfactual_samples(_config(config_text), Path(store_root), panels, Path(out_png)))
