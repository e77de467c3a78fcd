"""The Ray dispatch: prepare a game on a worker, and run many evaluations with a bounded in-flight window.

Ray Core only, imported lazily (``import contribshap.pipeline.dispatch.driver`` costs no Ray import). Task
bodies live in :mod:`contribshap.pipeline.dispatch.tasks`, the connection and window sizing in
:mod:`contribshap.pipeline.dispatch.ray_context`; the ``run`` command that plans rounds and reduces them is
:mod:`contribshap.pipeline.products.run`.

- :func:`ensure_prepared`: one Ray task builds the game and runs ``game.prepare()`` (its stages and steps
  shown as one live bar); contributors go to the manifest.
- :func:`dispatch`: submit jobs in longest-processing-time order (:func:`lpt_order`) with a bounded in-flight
  window (2 x the cluster's slots, re-read from ``ray.cluster_resources()`` as nodes come and go); handle
  results as they finish: block in ``ray.wait`` for the first, then take every other finished one in the
  same pass. The validated config travels inline with each task (a few KB).
- :func:`evaluate_coalitions`: extra coalitions of ``contribshap evaluate`` (held-out subsets,
  counterfactual removals), of the run's game or of a derived one.
- :func:`run_model_baselines` / :func:`run_counterfactual_samples`: the torch baselines, as Ray tasks with the
  per-task resources of evaluations.

Failures: a worker process that dies is retried by Ray (``ray.max_retries``). An exception whose class
(or a base class) is named in ``ray.retry_exceptions`` is retried inside the task up to
``ray.max_retries`` times; any other exception, or one that keeps coming, is recorded as a ``failed`` row
with its error, and the run goes on.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config.schema import Config, config_hash, plan_hash
from contribshap.pipeline.contracts.errors import ConfigError, ContribshapError, one_line
from contribshap.pipeline.contracts.keys import key_of_mask
from contribshap.pipeline.contracts.progress import read_progress
from contribshap.pipeline.dispatch.ray_context import DriverError, LazyRay, window
from contribshap.pipeline.dispatch.tasks import (
    counterfactual_samples_task,
    evaluate_task,
    model_baselines_task,
    prepare_task,
)
from contribshap.pipeline.storage.plan import (
    Job,
    add_section_rows,
    jobs_for,
    read_plan,
    write_plan,
)
from contribshap.pipeline.storage.store import DriverLock, Store, StoreError, make_row

__all__ = [
    "DriverError",
    "dispatch",
    "ensure_prepared",
    "evaluate_coalitions",
    "lpt_order",
    "run_counterfactual_samples",
    "run_model_baselines",
    "search_paths_of_driver",
]

#: Seconds between two reads of ``ray.cluster_resources()`` (window sizing) while dispatching.
RESOURCE_REFRESH_S = 5.0
#: Seconds between two refreshes of the store's scan cache from the rows tasks returned (bounds what a
#: resume after ``kill -9`` must read file by file).
INDEX_FLUSH_S = 10.0
#: Timeout of one ``ray.wait`` call: the loop wakes at least this often to refresh the bar and the cache.
WAIT_TIMEOUT_S = 1.0
#: Seconds between two reads of the prepare task's progress file (the prepare bar).
PREPARE_POLL_S = 0.3
#: The prepare task's progress file, in the store (removed when prepare ends).
PREPARE_PROGRESS_FILE = "prepare-progress.json"
#: The model-baselines task's progress file, in the store (removed when the task ends).
MODEL_BASELINES_PROGRESS_FILE = "model-baselines-progress.json"


# --- dispatch -----------------------------------------------------------------------------------------------
def lpt_order(jobs: list[Job], ok_rows: list[dict[str, Any]]) -> list[Job]:
    """Longest-processing-time first: by measured mean ``wall_s`` per coalition size when the store
    has some (interpolated between measured sizes), else by size; ties by key for determinism."""
    by_size: dict[int, list[float]] = {}
    for row in ok_rows:
        wall = row.get("wall_s")
        if wall is not None and math.isfinite(wall):
            by_size.setdefault(int(row["size"]), []).append(float(wall))
    if len(by_size) >= 2:
        sizes = np.array(sorted(by_size), dtype=float)
        means = np.array([np.mean(by_size[int(s)]) for s in sizes])

        def cost(job: Job) -> float:
            return float(np.interp(job.size, sizes, means))
    else:
        def cost(job: Job) -> float:
            return float(job.size)
    return sorted(jobs, key=lambda j: (-cost(j), -j.size, j.coalition_key, j.replicate))


@dataclass
class DispatchResult:
    """What one dispatch returned: ``ok`` / ``failed`` counts and the rows (jobs Ray gave up on are failed rows)."""

    ok: int = 0
    failed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


class _LogLines:
    """Where a progress bar draws when stderr is not a terminal (CI logs, ``nohup``, a cluster job's log):
    each redraw becomes one plain line, without the carriage returns that pile every frame onto one line."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


#: Seconds between progress lines in a log (a terminal redraws every half second).
LOG_PROGRESS_INTERVAL_S = 30.0


def _bar_target() -> tuple[Any, float]:
    """(file, mininterval) of a progress bar: the terminal itself, or plain lines every 30 s in a log."""
    if sys.stderr.isatty():
        return sys.stderr, 0.5
    return _LogLines(sys.stderr), LOG_PROGRESS_INTERVAL_S


def _progress_bar(total: int, enabled: bool, description: str) -> Any:
    from tqdm.auto import tqdm

    file, interval = _bar_target()
    return tqdm(total=total, desc=description, unit="eval", disable=not enabled or total == 0,
                dynamic_ncols=True, mininterval=interval, file=file)


def dispatch(jobs: list[Job], *, cfg: Config, store: Store, namespace: str, search_paths: tuple[str, ...], lock: DriverLock | None, progress: bool = True,
             description: str = "evaluating", known_rows: Sequence[dict[str, Any]] = ()) -> DispatchResult:
    """Run ``jobs`` on Ray with a bounded in-flight window; rows are written by the tasks.

    A task Ray gives up on (worker died more than ``max_retries`` times, or an error outside the task
    body) gets a ``failed`` row written here, so every job ends with exactly one file. Every
    ``INDEX_FLUSH_S`` the store's scan cache is rewritten from ``known_rows`` plus the rows returned so far.
    """
    if not jobs:
        return DispatchResult()
    import ray

    # max_calls=0: a worker process runs any number of evaluations, keeping its game (the prepared model on
    # its GPU) between coalitions. Ray's default for a function declared with num_gpus is max_calls=1 (the
    # worker exits after every call, ray#29624), which would reload torch and the model per coalition.
    remote = ray.remote(max_calls=0)(evaluate_task).options(
        num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, max_retries=cfg.ray.max_retries,
        retry_exceptions=False, name="contribshap.evaluate",
    )
    pending = list(reversed(jobs))  # pop() from the end = the most expensive first
    in_flight: dict[Any, Job] = {}
    result = DispatchResult()
    limit, window_at = window(cfg.ray), time.monotonic()
    flush_at = time.monotonic()
    known = {(r["coalition_key"], int(r["replicate"])): r for r in known_rows}
    bar = _progress_bar(len(jobs), progress, description)
    try:
        while pending or in_flight:
            # 1. keep the window full (re-read the cluster size now and then: nodes come and go)
            if time.monotonic() - window_at > RESOURCE_REFRESH_S:
                limit, window_at = window(cfg.ray), time.monotonic()
            while pending and len(in_flight) < limit:
                job = pending.pop()
                ref = remote.remote(cfg, str(store.root), namespace, job.to_dict(), search_paths)
                in_flight[ref] = job
            # 2. handle whatever finished: block for the first, then take every other one ready now
            #    (one pass per batch, not one O(window) wait per evaluation)
            done_refs, _ = ray.wait(list(in_flight), num_returns=1, timeout=WAIT_TIMEOUT_S)
            if done_refs and len(in_flight) > 1:
                done_refs, _ = ray.wait(list(in_flight), num_returns=len(in_flight), timeout=0)
            for ref in done_refs:
                job = in_flight.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as error:  # the task never returned: worker deaths beyond max_retries
                    row = make_row(job.to_dict(), status="failed", attempt=cfg.ray.max_retries + 1,
                                   error=one_line(error))
                    store.write_eval(namespace, row)
                result.rows.append(row)
                known[(row["coalition_key"], int(row["replicate"]))] = row
                if row["status"] == "ok":
                    result.ok += 1
                else:
                    result.failed += 1
                bar.update(1)
                bar.set_postfix(ok=result.ok, failed=result.failed, left=len(pending) + len(in_flight),
                                refresh=False)
            # 3. keep the scan cache fresh, so that a resume reads few files
            if time.monotonic() - flush_at > INDEX_FLUSH_S:
                store.remember(namespace, known.values())
                flush_at = time.monotonic()
        store.remember(namespace, known.values())
    finally:
        bar.close()
        if in_flight:
            # abandoned on an error that is being reported in one line: their own errors (the same full
            # disk, say) must not be printed again as Ray's "Unhandled error" tracebacks when freed
            os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        for ref in in_flight:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
    return result


# --- prepare ---------------------------------------------------------------------------------------------------
def search_paths_of_driver() -> tuple[str, ...]:
    """Folders a worker searches first for a python game's module: the driver's working directory and PYTHONPATH."""
    paths = [os.getcwd(), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    return tuple(dict.fromkeys(os.path.abspath(p) for p in paths))


class _StageBar:
    """One live bar on stderr for the stages and steps a task reports (``{"stage", "done", "total"}``
    states of :mod:`contribshap.pipeline.contracts.progress`): a new stage resets it under its own name;
    a stage without steps shows its name and the elapsed time."""

    STEPS = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]"
    PLAIN = "{desc} [{elapsed}]"

    def __init__(self, starting: str, *, file: Any = None, interval: float | None = None) -> None:
        from tqdm.auto import tqdm

        if file is None:
            file, interval = _bar_target()
        # miniters=0: redraw every `interval` even when no step was made (the elapsed time moves on)
        self.bar = tqdm(total=1, desc=starting, dynamic_ncols=True, mininterval=interval or 0.0, miniters=0,
                        leave=False, file=file, bar_format=self.PLAIN)
        self.stage: str | None = None

    def show(self, state: dict[str, Any] | None) -> None:
        """Draw ``state`` (None: nothing new; the elapsed time is redrawn)."""
        bar = self.bar
        if state is not None:
            total = int(state["total"])
            if state["stage"] != self.stage:  # the name first: reset() draws at once
                self.stage = state["stage"]
                bar.set_description_str(self.stage, refresh=False)
                bar.bar_format = self.STEPS if total else self.PLAIN
                bar.reset(total=max(total, 1))
            bar.n = min(int(state["done"]), total) if total else 0
        bar.update(0)  # redraws at most every mininterval

    def close(self) -> None:
        self.bar.close()


def _await_with_progress(ref: Any, progress_path: Path, enabled: bool, *, starting: str) -> Any:
    """``ray.get(ref)`` of a task that reports its progress to ``progress_path``
    (:func:`~contribshap.pipeline.contracts.progress.collect_progress`), shown as one live bar on stderr;
    ``starting``: the bar's text until the task reports. The file is removed at the end."""
    import ray

    if not enabled:
        return ray.get(ref)
    bar = _StageBar(starting)
    try:
        while True:
            done_refs, _ = ray.wait([ref], timeout=PREPARE_POLL_S)
            bar.show(read_progress(progress_path))
            if done_refs:
                return ray.get(ref)
    finally:
        bar.close()
        with contextlib.suppress(OSError):
            progress_path.unlink()


def ensure_prepared(cfg: Config, store: Store, namespace: str, search_paths: tuple[str, ...], ray_context: LazyRay, *, progress: bool = False) -> list[dict[str, Any]]:
    """Run ``prepare`` as one Ray task unless this namespace was prepared; returns contributors.

    ``progress``: show what the task reports (stage, steps) as one live bar on stderr.
    """
    manifest = store.read_manifest()
    prepared = manifest.get("prepared") or {}
    if manifest.get("contributors") and namespace in prepared:
        return manifest["contributors"]
    ray_context.ensure()
    import ray

    remote = ray.remote(max_calls=0)(prepare_task).options(  # the worker stays, game cached (see dispatch)
        num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, max_retries=cfg.ray.max_retries,
        name="contribshap.prepare",
    )
    progress_path = store.root / PREPARE_PROGRESS_FILE
    try:
        ref = remote.remote(cfg, str(store.root), namespace, search_paths,
                            str(progress_path) if progress else None)
        out = _await_with_progress(ref, progress_path, progress, starting="prepare: starting a worker")
    except Exception as error:
        cause = getattr(error, "cause", None) or error
        if isinstance(cause, ContribshapError):
            raise type(cause)(str(cause)) from None
        raise DriverError(f"prepare failed: {one_line(cause)}; fix the game and run again") from None
    contributors = out["contributors"]
    if manifest.get("contributors") and manifest["contributors"] != contributors:
        raise StoreError(
            f"store {store.root}: the game now reports other contributors than the manifest holds; "
            "use a new store or --force-new"
        )
    prepared[namespace] = {"summary": out["summary"], "worker": out["worker"], "at": time.time()}
    store.update_manifest(contributors=contributors, prepared=prepared,
                          property_names=manifest.get("property_names") or out["property_names"])
    return contributors


# --- derived evaluations (LDS, counterfactuals) ------------------------------------------------------------
def evaluate_coalitions(cfg: Config, store: Store | str | Path, masks: np.ndarray, *, section: str,
                        replicates: int = 1, overrides: dict[str, Any] | None = None,
                        address: str | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate extra coalitions (held-out subsets, counterfactual removals) and return their rows.

    Args:
        cfg: the run's config.
        store: the run's store (must have been prepared by ``contribshap run``... or is prepared here).
        masks: bool array (m, n) in manifest contributor order.
        section: plan section (``holdout`` / ``counterfactual``); these rows never reach the estimators.
        replicates: evaluations per mask (replicate indices 0..replicates-1).
        overrides: deep-merged into the config's dump to derive another game (e.g.
            ``{"game": {"finetune": {"mode": "retrain"}}}``); its rows live in namespace
            ``<config_hash>-<variant>``. ``None``: the run's own game and namespace (rows are shared with
            the run when a mask was already evaluated).
        address: Ray address (as :func:`run`).
        progress: progress bar on stderr.

    Returns:
        one row dict per (mask, replicate), in the order of ``masks`` then replicate (``status`` ok/failed).
    """
    store = store if isinstance(store, Store) else Store(store)
    namespace = config_hash(cfg)
    derived = cfg
    if overrides:
        try:
            derived = cfg.derive(overrides)
        except Exception as error:
            raise ConfigError(f"evaluate overrides {overrides}: {one_line(error)}") from None
        namespace = cfg.derived_namespace(overrides)
    store.create(name=cfg.name, config_hash=config_hash(cfg), plan_hash=plan_hash(cfg))
    masks = np.asarray(masks, dtype=bool)
    lock = DriverLock(store.lock_path, stale_after_s=cfg.ray.stale_lock_s, heartbeat_s=cfg.ray.heartbeat_s)
    with lock, LazyRay(address, cfg.ray) as ray_context:
        search_paths = search_paths_of_driver()
        contributors = ensure_prepared(derived, store, namespace, search_paths, ray_context,
                                        progress=progress)
        ids = [c["id"] for c in contributors]
        if masks.ndim != 2 or masks.shape[1] != len(ids):
            raise ConfigError(f"masks: shape {masks.shape} does not match ({len(ids)} contributors); pass (m, {len(ids)})")
        rows = add_section_rows(read_plan(store), ids, masks, section=section, replicates=replicates)
        write_plan(store, rows)
        keys = [key_of_mask(mask, ids) for mask in masks]
        wanted = set(keys)
        jobs = [j for j in jobs_for(rows, seed=derived.seed, sections=[section])
                if j.coalition_key in wanted and j.replicate < replicates]
        scan = store.scan(namespace)
        done = scan.ok_jobs()
        todo = lpt_order([j for j in jobs if (j.coalition_key, j.replicate) not in done], [])
        if todo:
            ray_context.ensure()
            dispatch(todo, cfg=derived, store=store, namespace=namespace, search_paths=search_paths, lock=lock, progress=progress, description=section,
                     known_rows=scan.rows)
    by_job = {(r["coalition_key"], int(r["replicate"])): r for r in store.scan(namespace).rows}
    return [by_job[(key, r)] for key in keys for r in range(replicates) if (key, r) in by_job]


# --- model jobs of `contribshap evaluate` (torch baselines) --------------------------------------------------
def _run_model_task(cfg: Config, task: Callable[..., Any], *args: Any, name: str, address: str | None,
                    progress_path: Path | None = None) -> Any:
    """Run ``task(cfg, *args)`` as one Ray task with the evaluation resources; return its result.

    ``progress_path``: the task takes it as ``progress_path=`` and reports its progress there; it is shown
    as one live bar (as prepare's). None: the task reports nothing and shows nothing.

    Raises:
        DriverError: the task failed (one line: the task's name and its error; the caller may record it).
    """
    with LazyRay(address, cfg.ray) as ray_context:
        ray_context.ensure()
        import ray

        remote = ray.remote(max_calls=0)(task).options(  # the worker stays (see dispatch)
            num_cpus=cfg.ray.num_cpus, num_gpus=cfg.ray.num_gpus, max_retries=cfg.ray.max_retries, name=name,
        )
        try:
            if progress_path is None:
                return ray.get(remote.remote(cfg, *args))
            ref = remote.remote(cfg, *args, progress_path=str(progress_path))
            return _await_with_progress(ref, progress_path, True, starting=f"{name}: starting a worker")
        except Exception as error:
            cause = getattr(error, "cause", None) or error
            raise DriverError(f"task {name} failed: {one_line(cause)}; fix the cause and run the command again") from None


def run_model_baselines(cfg: Config, store: str | Path, *, methods: Sequence[str], address: str | None = None,
                        progress: bool = True) -> dict[str, np.ndarray]:
    """``contribshap.workers.model_baselines.model_baselines`` of a diffusion store, as a Ray task.

    Args:
        cfg: the run's config. store: its store folder (prepared artifacts under ``artifacts/``).
        methods: model baselines to compute (``pixel_mean``, ``pixel_max``, ``feature_mean``,
            ``feature_max``, ``trak``).
        address: Ray address (as :func:`run`). progress: one live bar of the task's stages and steps.

    Returns:
        method -> float array (n,) of unsigned scores (the worker also caches them in
        ``estimates/model_baselines.json``).
    """
    progress_path = Path(store) / MODEL_BASELINES_PROGRESS_FILE
    return _run_model_task(cfg, model_baselines_task, str(Path(store)), list(methods),
                           name="contribshap.model_baselines", address=address,
                           progress_path=progress_path if progress else None)


def run_counterfactual_samples(cfg: Config, store: str | Path, panels: list[tuple[str, np.ndarray]], out_png: Path,
                               *, address: str | None = None) -> Path:
    """``contribshap.workers.model_baselines.counterfactual_samples`` (a PNG of sample grids) as a Ray task.

    Args:
        cfg: the run's config. store: its store folder. panels: ``(title, mask)`` pairs, mask bool (n,).
        out_png: the PNG to write (in the store). address: Ray address (as :func:`run`).
    """
    return Path(_run_model_task(cfg, counterfactual_samples_task, str(Path(store)), panels, str(out_png),
                                name="contribshap.counterfactual_samples", address=address))
