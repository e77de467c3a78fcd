"""``contribshap run``: prepare once, plan, dispatch every missing evaluation, reduce, repeat per round.

The whole state is the store (manifest, plan, one file per evaluation): running the same command again
after a crash, a ``kill -9`` or a preemption continues exactly where the last run stopped.

Run, step by step (:func:`run`):
 0. a python game's ``game.options`` (and ``low_fidelity.game.options``) must fit its function's
    signature (:func:`contribshap.pipeline.games.python_game.option_problems`): else exit 2, nothing written.
 1. open the store: create it, or check that it belongs to this config hash and design; take
    ``driver.lock`` (a second live driver on the same store is refused; a stale lock is taken over).
 2. connect to Ray on first need: ``address`` (CLI, config, or ``RAY_ADDRESS``); ``auto`` joins the
    cluster of this machine; no address starts a quiet local instance without dashboard. Some node must
    have the per-task ``ray.num_cpus`` / ``ray.num_gpus`` (a cluster given by address gets a bounded wait
    to add one); otherwise the run fails with one line before it writes the resolved config or the plan.
 3. prepare: one Ray task builds the game and runs ``game.prepare()``; contributors go to the manifest.
 4. per round: extend ``plan.parquet`` (written before any dispatch), then todo = plan x replicates -
    ok evaluations; dispatch them (:func:`contribshap.pipeline.dispatch.driver.dispatch`).
 4'. two fidelities (``low_fidelity``): the plan also holds the control draws; the cheap game is prepared
    once in its own namespace and its jobs (the low twins of every design row, and the control rows)
    are dispatched after the round's full-fidelity jobs, with the same job seeds.
 5. reduce; stop when the configured CI target is met or the budget is spent. A round after which the
    store holds no ok evaluation at all (every one failed) ends the run with
    :class:`~contribshap.pipeline.contracts.errors.NoUsableEvaluationsError` (exit code 3), never a silent
    success; so does a two-fidelity round in which every job of one fidelity failed.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contribshap import pipeline
from contribshap.pipeline.config.schema import Config, config_hash, plan_hash, resolve_store, save_resolved
from contribshap.pipeline.contracts.errors import ConfigError, NoUsableEvaluationsError
from contribshap.pipeline.core.designs import EXACT_MAX_PLAYERS
from contribshap.pipeline.dispatch.driver import (
    DispatchResult,
    dispatch,
    ensure_prepared,
    lpt_order,
    search_paths_of_driver,
)
from contribshap.pipeline.dispatch.ray_context import LazyRay
from contribshap.pipeline.games.python_game import GameError, option_problems
from contribshap.pipeline.products.reduce import ci_target_met, reduce_store
from contribshap.pipeline.products.status import require_ok_evaluations
from contribshap.pipeline.storage.plan import (
    ESTIMATOR_SECTIONS,
    Job,
    PlanRequest,
    extend_plan,
    jobs_for,
    read_plan,
    round_budgets,
    write_plan,
)
from contribshap.pipeline.storage.store import RESERVED_COLUMNS, DriverLock, Store

__all__ = ["RunSummary", "run"]


@dataclass
class RunSummary:
    """What :func:`run` did (counts over this invocation; the store holds the full history)."""

    store: Path
    namespace: str
    rounds: int = 0
    planned: int = 0
    evaluated: int = 0
    failed: int = 0
    skipped: int = 0  # evaluations of the final plan found done before this invocation
    stopped_because: str = ""
    wall_s: float = 0.0
    prepare_s: float = 0.0  # seconds in the prepare step (about 0 when the store was prepared before)


@dataclass(frozen=True)
class _LowFidelity:
    """The cheap game of a two-fidelity run: its config and namespace."""

    cfg: Config
    namespace: str

    @classmethod
    def of(cls, cfg: Config) -> _LowFidelity | None:
        cheap, namespace = cfg.low_fidelity_config(), cfg.low_fidelity_namespace()
        if cheap is None or namespace is None:
            return None
        return cls(cheap, namespace)


@dataclass
class _Round:
    """What one round leaves to do: the plan rows, the jobs, and the todo of each fidelity."""

    rows: list[dict[str, Any]]
    extend: bool
    draws: int
    control: int
    jobs: list[Job]
    done: set[Any]
    todo: list[Job]
    known_rows: list[dict[str, Any]]
    low_todo: list[Job] = dataclasses.field(default_factory=list)
    low_known_rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _check_budget(cfg: Config, n: int) -> None:
    design = cfg.design
    if design.kind not in ("exact", "loo") and design.budget is not None and design.budget < n + 2:
        raise ConfigError(
            f"design.budget: {design.budget} is below n+2 = {n + 2} (the game has {n} contributors); "
            f"use budget >= {n + 2}"
        )
    if design.kind == "exact" and n > EXACT_MAX_PLAYERS:
        raise ConfigError(f"design.kind: exact needs 2^{n} coalitions; use a sampling design such as leverage")


def _record_properties(store: Store, rows: list[dict[str, Any]]) -> None:
    names = list(store.read_manifest().get("property_names") or [])
    for row in rows:
        if row.get("status") != "ok":
            continue
        for name, value in row.items():
            if name not in RESERVED_COLUMNS and isinstance(value, float) and name not in names:
                names.append(name)
    store.update_manifest(property_names=names)


def _plan_round(cfg: Config, store: Store, namespace: str, ids: list[str], round_index: int, draws: int,
                final_draws: int, low: _LowFidelity | None, summary: RunSummary) -> _Round:
    """The plan of this round (in memory; written by :func:`run` once Ray is known to be usable) and what
    it leaves to do."""
    manifest = store.read_manifest()
    planned_draws = int(manifest.get("planned_draws") or 0)
    planned_control = int(manifest.get("planned_control_draws") or 0)
    rows = read_plan(store)
    request = PlanRequest.of(cfg, len(ids), max(draws, planned_draws), final_draws)
    control = request.control
    extend = draws > planned_draws or not rows or control > planned_control
    if extend:
        last_round = max((r["round"] for r in rows), default=-1)
        index = round_index if planned_draws == 0 else max(round_index, last_round + 1)
        request = dataclasses.replace(request, control=max(control, planned_control))
        rows, added = extend_plan(rows, ids, request, round_index=index)
        summary.planned += added
    jobs = jobs_for(rows, seed=cfg.seed, sections=ESTIMATOR_SECTIONS)
    scan = store.scan(namespace)
    done = scan.ok_jobs()
    todo = lpt_order([j for j in jobs if (j.coalition_key, j.replicate) not in done],
                     [r for r in scan.rows if r["status"] == "ok"])
    plan = _Round(rows=rows, extend=extend, draws=max(draws, planned_draws),
                  control=max(control, planned_control), jobs=jobs, done=done, todo=todo, known_rows=scan.rows)
    if low is not None:
        low_jobs = jobs_for(rows, seed=cfg.seed, sections=(*ESTIMATOR_SECTIONS, "control"), fidelity="low")
        low_scan = store.scan(low.namespace)
        low_done = low_scan.ok_jobs()
        plan.low_todo = lpt_order([j for j in low_jobs if (j.coalition_key, j.replicate) not in low_done],
                                  [r for r in low_scan.rows if r["status"] == "ok"])
        plan.low_known_rows = low_scan.rows
        plan.jobs = jobs + low_jobs
        plan.done = {("high", *j) for j in done} | {("low", *j) for j in low_done}
    return plan


def _check_fidelity_failed(result: DispatchResult, what: str) -> None:
    """A fidelity whose every job of this round failed ends the run (exit 3), naming the first error."""
    if result.failed and not result.ok:
        first = next((r.get("error") for r in result.rows if r.get("status") != "ok"), None)
        raise NoUsableEvaluationsError(
            f"every {what} evaluation of this round failed ({result.failed}); the first error: {first}; "
            "fix the cause and run the same command again (what the store holds is kept)"
        )


def _check_game_options(cfg: Config) -> None:
    """``game.options`` (and ``low_fidelity.game.options``) of a python game against the function's
    signature; a module that does not import here is left to the prepare step, which reports it."""
    try:
        problems = option_problems(cfg, search_paths_of_driver())
    except GameError:
        return
    if problems:
        raise ConfigError(" | ".join(problems))


def run(cfg: Config, *, store_path: str | Path | None = None, address: str | None = None,
        force_new: bool = False, progress: bool = True, reduce: bool = True) -> RunSummary:
    """Prepare, plan, dispatch and reduce (resumable). See the module docstring for the steps.

    Args:
        cfg: a validated config.
        store_path: overrides ``cfg.store``.
        address: overrides ``ray.address``.
        force_new: move an existing store of another config aside and start afresh.
        progress: show a progress bar on stderr.
        reduce: reduce after each round (and stop early on the CI target).
    """
    clock = time.perf_counter()
    # 0. a python game's options must fit its function (else every job would fail): before any write
    _check_game_options(cfg)
    # 1. the store and its lock
    store = Store(resolve_store(cfg, store_path))
    namespace = config_hash(cfg)
    store.create(name=cfg.name, config_hash=namespace, plan_hash=plan_hash(cfg), force_new=force_new,
                 code_version=pipeline.__version__)
    lock = DriverLock(store.lock_path, stale_after_s=cfg.ray.stale_lock_s, heartbeat_s=cfg.ray.heartbeat_s)
    summary = RunSummary(store=store.root, namespace=namespace)
    # 2. Ray: connected (and its resources checked) on first need, before the store is written
    with lock, LazyRay(address, cfg.ray) as ray_context:
        search_paths = search_paths_of_driver()
        # 3. prepare once
        prepare_clock = time.perf_counter()
        contributors = ensure_prepared(cfg, store, namespace, search_paths, ray_context, progress=progress)
        summary.prepare_s = time.perf_counter() - prepare_clock
        ids = [c["id"] for c in contributors]
        _check_budget(cfg, len(ids))
        budgets = round_budgets(cfg.design.kind, len(ids), cfg.design.budget,
                                round_size=cfg.stopping.round_size, max_rounds=cfg.stopping.max_rounds)
        low = _LowFidelity.of(cfg)
        jobs: list[Job] = []
        # 4. rounds: plan (written before dispatch), dispatch the todo, reduce, maybe stop
        for round_index, draws in enumerate(budgets):
            # 4a. the plan of this round and what it leaves to do (in memory)
            plan = _plan_round(cfg, store, namespace, ids, round_index, draws, budgets[-1], low, summary)
            jobs = plan.jobs
            # 4b. Ray before any write: unsatisfiable resources leave the store as it was
            if plan.todo or plan.low_todo:
                ray_context.ensure()
            save_resolved(cfg, store.config_path)
            if plan.extend:
                write_plan(store, plan.rows)
                store.update_manifest(planned_draws=plan.draws, planned_control_draws=plan.control)
            # 4c. dispatch; a round that leaves no ok evaluation at all is never a silent success
            result = dispatch(plan.todo, cfg=cfg, store=store, namespace=namespace, search_paths=search_paths,
                              lock=lock, progress=progress, description=f"round {round_index}",
                              known_rows=plan.known_rows)
            ok, failed = result.ok, result.failed
            if low is not None:
                _check_fidelity_failed(result, "full-fidelity")
            if plan.low_todo:
                assert low is not None
                ensure_prepared(low.cfg, store, low.namespace, search_paths, ray_context, progress=progress)
                low_result = dispatch(plan.low_todo, cfg=low.cfg, store=store, namespace=low.namespace,
                                      search_paths=search_paths, lock=lock, progress=progress,
                                      description=f"round {round_index} (low fidelity)",
                                      known_rows=plan.low_known_rows)
                ok, failed = ok + low_result.ok, failed + low_result.failed
                _check_fidelity_failed(low_result, "low-fidelity")
            summary.rounds = round_index + 1
            summary.evaluated += ok
            summary.failed += failed
            if failed and not ok and not plan.done:
                require_ok_evaluations(store.root, what="every evaluation failed")
            _record_properties(store, result.rows or plan.known_rows)
            # 5. reduce and check the CI target
            if not reduce:
                continue
            estimates = reduce_store(store.root, cfg=cfg, write=True, show=False)
            if round_index + 1 < len(budgets) and ci_target_met(estimates, cfg):
                summary.stopped_because = f"CI target met after round {round_index}"
                break
        if not summary.stopped_because:
            summary.stopped_because = "budget spent"
        summary.skipped = len(jobs) - summary.evaluated - summary.failed
    summary.wall_s = time.perf_counter() - clock
    return summary
