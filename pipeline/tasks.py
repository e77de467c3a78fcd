"""Bodies of the driver's Ray tasks: what runs on a worker process (no Ray import here).

The driver (:mod:`contribshap.pipeline.driver`) wraps these plain functions with ``ray.remote`` and the
per-task resources of the config's ``ray`` section. Every task gets the resolved config as JSON text
(a few KB, sent inline) and the store root; a worker process keeps the game it built across tasks
(:func:`cached_game`), so a GPU worker loads its model once.

- :func:`prepare_task`: build the game, run ``game.prepare()``; contributors and a summary come back.
- :func:`evaluate_task`: evaluate one (coalition, replicate), retry transient errors inside the task, write
  its row atomically (``ok`` or ``failed``) and return it.
- :func:`model_baselines_task` / :func:`counterfactual_samples_task`: the torch baselines of
  ``contribshap evaluate`` (``contribshap.workers.baselines``), run like every other model job.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config import Config
from contribshap.pipeline.ray_context import one_line
from contribshap.pipeline.store import RESERVED_COLUMNS, Store, make_row, mask_from_str, worker_name

__all__ = [
    "cached_game",
    "counterfactual_samples_task",
    "evaluate_task",
    "is_transient",
    "model_baselines_task",
    "prepare_task",
]


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


def prepare_task(config_text: str, store_root: str, namespace: str, search_paths: tuple[str, ...]) -> dict[str, Any]:
    """Build the game, run ``prepare()``, return contributors, property names, a summary and the worker."""
    game = cached_game(namespace, store_root, config_text, search_paths)
    summary = game.prepare()
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
