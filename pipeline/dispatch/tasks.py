"""Bodies of the driver's Ray tasks: what runs on a worker process (no Ray import here).

The driver (:mod:`contribshap.pipeline.dispatch.driver`) wraps these plain functions with ``ray.remote`` and
the per-task resources of the config's ``ray`` section. Every task gets the driver's validated
:class:`~contribshap.pipeline.config.schema.Config` (a few KB, pickled inline; a task never validates it
again) and the store root; a worker process keeps the game it built across tasks (:func:`cached_game`), so a
GPU worker loads its model once.

- :func:`prepare_task`: build the game, run ``game.prepare()``; contributors and a summary come back.
  While it runs, ``report_progress`` calls (stage, step, steps) made by the worker code go to a small
  JSON file the driver polls for its progress bar (:mod:`contribshap.pipeline.contracts.progress`), so no
  worker output reaches the console.
- :func:`evaluate_task`: evaluate one (coalition, replicate), retry transient errors inside the task, write
  its row atomically (``ok`` or ``failed``) and return it.
- :func:`model_baselines_task` / :func:`counterfactual_samples_task`: the torch baselines of
  ``contribshap evaluate``, reached through the game factory and run like every other model job (the
  baselines report their progress as prepare does).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config.schema import Config
from contribshap.pipeline.contracts.errors import one_line
from contribshap.pipeline.contracts.game import Game
from contribshap.pipeline.contracts.keys import mask_from_str
from contribshap.pipeline.contracts.progress import collect_progress
from contribshap.pipeline.games import factory
from contribshap.pipeline.storage.store import RESERVED_COLUMNS, Store, make_row, worker_name

__all__ = [
    "cached_game",
    "counterfactual_samples_task",
    "evaluate_task",
    "is_transient",
    "model_baselines_task",
    "prepare_task",
]

#: Games built by this worker process, by (namespace, store root): at most :data:`_GAME_CACHE_SIZE`.
_GAMES: dict[tuple[str, str], Game] = {}
_GAME_CACHE_SIZE = 8


def is_transient(error: BaseException, names: Sequence[str]) -> bool:
    """True when the class of ``error`` or one of its bases is named (bare or qualified) in ``names``."""
    wanted = set(names)
    for cls in type(error).__mro__:
        if cls.__name__ in wanted or f"{cls.__module__}.{cls.__name__}" in wanted:
            return True
    return False


def cached_game(cfg: Config, namespace: str, store_root: str, search_paths: tuple[str, ...]) -> Game:
    """Build the game once per worker process (keyed by namespace = config hash, and store root)."""
    key = (namespace, store_root)
    if key not in _GAMES:
        for path in reversed(search_paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        if len(_GAMES) >= _GAME_CACHE_SIZE:
            _GAMES.pop(next(iter(_GAMES)))
        _GAMES[key] = factory.build_game(cfg, Path(store_root), search_paths=search_paths)
    return _GAMES[key]


def prepare_task(cfg: Config, store_root: str, namespace: str, search_paths: tuple[str, ...],
                 progress_path: str | None = None) -> dict[str, Any]:
    """Build the game, run ``prepare()``, return contributors, property names, a summary and the worker.

    ``progress_path``: a file for ``report_progress`` calls made while preparing (the driver's bar);
    None: no progress is reported (and worker code shows none).
    """
    with collect_progress(progress_path):
        game = cached_game(cfg, namespace, store_root, search_paths)
        summary = game.prepare()
    return {
        "contributors": [c.to_dict() for c in game.contributors()],
        "property_names": list(game.property_names()),
        "summary": summary,
        "worker": worker_name(),
    }


def evaluate_task(cfg: Config, store_root: str, namespace: str, job: dict[str, Any],
                  search_paths: tuple[str, ...]) -> dict[str, Any]:
    """Evaluate one (coalition, replicate), write its row atomically, return the row.

    An exception whose class is named in ``ray.retry_exceptions`` is retried here up to
    ``ray.max_retries`` times with backoff; any other one (or one that keeps coming) makes a ``failed`` row.
    """
    started = time.time()
    max_retries, transient = cfg.ray.max_retries, list(cfg.ray.retry_exceptions)
    attempt = 0
    while True:
        attempt += 1
        clock = time.perf_counter()
        try:
            game = cached_game(cfg, namespace, store_root, search_paths)
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


def model_baselines_task(cfg: Config, store_root: str, methods: list[str],
                         progress_path: str | None = None) -> dict[str, np.ndarray]:
    """The model baselines of the store (TRAK, ...): method -> unsigned scores (n,).

    ``progress_path``: a file for the stages and steps it reports (the driver's bar); None: it reports
    and shows nothing.
    """
    with collect_progress(progress_path):
        return factory.model_baselines(cfg, Path(store_root), methods=methods, progress=progress_path is not None)


def counterfactual_samples_task(cfg: Config, store_root: str, panels: list[tuple[str, np.ndarray]],
                                out_png: str) -> str:
    """Sample grids of the models trained without the given contributors: one PNG; returns its path."""
    return str(factory.counterfactual_samples(cfg, Path(store_root), panels, Path(out_png)))
