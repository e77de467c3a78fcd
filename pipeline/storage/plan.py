"""The coalition plan: ``<store>/plan.parquet``, written before any dispatch, grown in rounds.

One row per planned coalition and section (schema in docs/ARCHITECTURE.md). Sections:

- ``endpoint``: the empty and the full coalition (always evaluated, ``replicates.endpoints`` times);
- ``estimate``: rows of the design (``design.kind``), the only rows the estimators see besides endpoints;
- ``control``: with ``low_fidelity`` only: further draws of the same design from a seed stream of their
  own (:func:`control_seed`), evaluated at the low fidelity only (the control variate's set B);
- ``holdout`` / ``counterfactual`` / ``banzhaf_uniform``: rows planned by ``contribshap evaluate`` (never fed
  to estimators; ``banzhaf_uniform`` is the uniform design of the Banzhaf baseline).

Fidelity (column ``fidelity``): ``high`` rows are evaluated by the run's game, ``low`` rows by the cheap
game of ``low_fidelity`` (its own store namespace), ``both`` rows by both with the same job seeds (the
endpoints and the design's rows of a two-fidelity plan). Plans written before the column existed read as
``high``.

Budget: ``design.budget`` counts coalition draws *including* the two endpoints, so the design draws
``budget - 2`` coalitions (``exact``: all 2^n - 2; ``loo``: n). Draws that repeat a coalition are merged
into one row whose ``weight`` counts them. Rounds ask :func:`contribshap.pipeline.core.designs.sample_coalitions` for a
larger budget with the same seed; it is prefix-stable, so earlier rows never change.

Keys and seeds:
- ``coalition_key(ids)``: first 16 hex chars of sha256 of the sorted member ids joined by ``\\x1f``.
- ``derive_seed(seed, key, replicate)``: ``np.random.SeedSequence`` over (seed, key, replicate): a job's
  randomness never depends on the order jobs run or finish.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from contribshap.pipeline.contracts.io import atomic_write_table
from contribshap.pipeline.contracts.keys import derive_seed, key_of_mask, mask_to_str
from contribshap.pipeline.storage.store import Store, StoreError

__all__ = [
    "ESTIMATOR_SECTIONS",
    "FIDELITIES",
    "PLAN_SCHEMA",
    "SECTIONS",
    "Job",
    "add_section_rows",
    "control_draws",
    "control_seed",
    "extend_plan",
    "jobs_for",
    "read_plan",
    "round_budgets",
    "write_plan",
]

SECTIONS = ("endpoint", "estimate", "control", "holdout", "counterfactual", "banzhaf_uniform")
#: Sections whose evaluations feed the estimators (``control`` too, through the two-fidelity reducer).
ESTIMATOR_SECTIONS = ("endpoint", "estimate")
#: Values of the plan's ``fidelity`` column.
FIDELITIES = ("high", "low", "both")
_CONTROL_SALT = 0x4C4F57  # "LOW": the control draws' own seed stream
PLAN_SCHEMA = pa.schema(
    [
        ("coalition_key", pa.string()),
        ("mask", pa.string()),
        ("size", pa.int32()),
        ("section", pa.string()),
        ("round", pa.int32()),
        ("design", pa.string()),
        ("weight", pa.float64()),
        ("replicates", pa.int32()),
        ("fidelity", pa.string()),
    ]
)


# --- reading / writing ---------------------------------------------------------------------------------------
def read_plan(store: Store) -> list[dict[str, Any]]:
    """Plan rows (empty list when no plan was written yet); :class:`StoreError` when unreadable."""
    if not store.plan_path.is_file():
        return []
    try:
        rows = pq.read_table(store.plan_path).to_pylist()
    except Exception as error:
        raise StoreError(
            f"{store.plan_path} is unreadable ({type(error).__name__}); it was written atomically, so the "
            f"disk or a copy tool broke it: restore it, or {store.repair_hint()} to rebuild it from the config"
        ) from None
    for row in rows:
        if row.get("fidelity") is None:
            row["fidelity"] = "high"
    return rows


def write_plan(store: Store, rows: list[dict[str, Any]]) -> None:
    """Write all plan rows atomically (sorted by section order, round, then key)."""
    order = {s: i for i, s in enumerate(SECTIONS)}
    rows = sorted(rows, key=lambda r: (order.get(r["section"], 99), r["round"], r["coalition_key"]))
    rows = [{**r, "fidelity": r.get("fidelity") or "high"} for r in rows]
    table = pa.Table.from_pylist(rows, schema=PLAN_SCHEMA)
    atomic_write_table(store.plan_path, table)


# --- building -----------------------------------------------------------------------------------------------
def _sample_budget(design_kind: str, n: int, budget: int | None) -> int:
    """Design draws (without endpoints) the whole budget allows."""
    if design_kind == "exact":
        return 2**n - 2
    if design_kind == "loo":
        return n
    assert budget is not None
    return budget - 2


def round_budgets(design_kind: str, n: int, budget: int | None, *, round_size: int | None, max_rounds: int) -> list[int]:
    """Cumulative design draws requested after each round, e.g. ``[20, 40, 62]``.

    Args:
        design_kind: ``design.kind``.
        n: number of players.
        budget: ``design.budget`` (endpoints included; None for exact / loo).
        round_size: draws per round (default: total / max_rounds, rounded up).
        max_rounds: most rounds.
    """
    total = _sample_budget(design_kind, n, budget)
    if design_kind in ("exact", "loo"):
        return [total]
    size = round_size if round_size is not None else math.ceil(total / max_rounds)
    cumulative = []
    for k in range(max_rounds):
        cumulative.append(min(total, (k + 1) * size))
        if cumulative[-1] >= total:
            break
    return cumulative


def _sample(design_kind: str, n: int, draws: int, seed: int, options: dict[str, Any]) -> np.ndarray:
    from contribshap.pipeline.core.designs import sample_coalitions

    if design_kind == "exact":
        masks = sample_coalitions(n, 2**n, "exact", seed=seed, **options)
    else:
        masks = sample_coalitions(n, draws, design_kind, seed=seed, **options)
    masks = np.asarray(masks, dtype=bool).reshape(-1, n)
    keep = (masks.sum(axis=1) > 0) & (masks.sum(axis=1) < n)
    return masks[keep]


def control_seed(plan_seed: int) -> int:
    """Seed of the control draws (set B of a two-fidelity plan): a stream apart from the design's."""
    state = np.random.SeedSequence(entropy=int(plan_seed), spawn_key=(_CONTROL_SALT,)).generate_state(2)
    return int((int(state[1]) << 32 | int(state[0])) & (2**63 - 1))


def control_draws(draws: int, total_draws: int, control_budget: int) -> int:
    """Control draws planned alongside ``draws`` of the design's ``total_draws``: the same share of
    ``control_budget - 2`` (the budget counts the two endpoints, which the design's rows hold)."""
    total = max(int(control_budget) - 2, 0)
    if total_draws <= 0 or draws >= total_draws:
        return total
    return min(total, math.ceil(total * draws / total_draws))


@dataclass(frozen=True)
class PlanRequest:
    """What :func:`extend_plan` should plan (from the config).

    ``control``: draws of the low-fidelity-only set (0: a single-fidelity plan); with control draws the
    endpoint and design rows are planned at ``both`` fidelities.
    """

    design: str
    n_players: int
    draws: int
    seed: int
    options: dict[str, Any]
    replicates_coalition: int
    replicates_endpoints: int
    control: int = 0
    control_replicates: int = 1

    @classmethod
    def of(cls, cfg: Any, n_players: int, draws: int, total_draws: int) -> PlanRequest:
        """The request of a run's config (:class:`contribshap.pipeline.config.schema.Config`) for ``draws`` of its
        ``total_draws`` design draws; a two-fidelity config adds the same share of its control budget."""
        low = cfg.low_fidelity
        return cls(cfg.design.kind, n_players, draws, cfg.plan_seed(), cfg.design.options,
                   cfg.replicates.coalition, cfg.replicates.endpoints,
                   control=0 if low is None else max(control_draws(draws, total_draws, low.budget), 1),
                   control_replicates=1 if low is None else low.replicates or cfg.replicates.coalition)


def _merge_draws(by_id: dict[tuple[str, str], dict[str, Any]], masks: np.ndarray, ids: Sequence[str], *,
                 section: str, design: str, round_index: int, replicates: int, fidelity: str) -> int:
    """Merge design draws into ``by_id`` by key (``weight`` = multiplicity); returns the rows added.
    Rows already planned keep their round and get their weight recounted from all draws."""
    counts: dict[str, int] = {}
    first: dict[str, np.ndarray] = {}
    for mask in masks:
        key = key_of_mask(mask, ids)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, mask)
    added = 0
    for key, count in counts.items():
        existing = by_id.get((section, key))
        if existing is not None:
            existing["weight"] = float(count)
            continue
        mask = first[key]
        by_id[(section, key)] = {
            "coalition_key": key, "mask": mask_to_str(mask), "size": int(mask.sum()), "section": section,
            "round": int(round_index), "design": design, "weight": float(count), "replicates": int(replicates),
            "fidelity": fidelity,
        }
        added += 1
    return added


def extend_plan(rows: list[dict[str, Any]], ids: Sequence[str], request: PlanRequest, *, round_index: int) -> tuple[list[dict[str, Any]], int]:
    """Plan rows after asking the design for ``request.draws`` draws in total.

    Endpoints are added when missing. New coalitions get ``round = round_index``; coalitions already
    planned keep their round; ``weight`` is recomputed from all draws (their multiplicity).

    Returns:
        (new rows list, number of coalitions added).
    """
    n = request.n_players
    by_id = {(r["section"], r["coalition_key"]): dict(r) for r in rows}
    fidelity = "both" if request.control > 0 else "high"
    if request.control > 0:  # a plan that gains a low fidelity evaluates its design rows at both
        for row in by_id.values():
            if row["section"] in ESTIMATOR_SECTIONS:
                row["fidelity"] = "both"
    added = 0
    # 1. endpoints
    for mask in (np.zeros(n, dtype=bool), np.ones(n, dtype=bool)):
        key = key_of_mask(mask, ids)
        if ("endpoint", key) not in by_id:
            by_id[("endpoint", key)] = {
                "coalition_key": key, "mask": mask_to_str(mask), "size": int(mask.sum()),
                "section": "endpoint", "round": 0, "design": "endpoint", "weight": 1.0,
                "replicates": request.replicates_endpoints, "fidelity": fidelity,
            }
            added += 1
    # 2. the design's draws, merged by key (weight = multiplicity)
    masks = _sample(request.design, n, request.draws, request.seed, request.options)
    added += _merge_draws(by_id, masks, ids, section="estimate", design=request.design, round_index=round_index,
                          replicates=request.replicates_coalition, fidelity=fidelity)
    # 3. the control draws (low fidelity only), from their own seed stream
    if request.control > 0:
        control = _sample(request.design, n, request.control, control_seed(request.seed), request.options)
        added += _merge_draws(by_id, control, ids, section="control", design=request.design,
                              round_index=round_index, replicates=request.control_replicates, fidelity="low")
    return list(by_id.values()), added


def add_section_rows(
    rows: list[dict[str, Any]], ids: Sequence[str], masks: np.ndarray, *, section: str, replicates: int = 1,
) -> list[dict[str, Any]]:
    """Plan rows for ``masks`` (bool, shape (m, n)) under ``section`` (holdout / counterfactual / ...)."""
    if section not in SECTIONS:
        raise StoreError(f"section {section!r} is not valid; valid sections: {', '.join(SECTIONS)}")
    by_id = {(r["section"], r["coalition_key"]): dict(r) for r in rows}
    round_index = max((r["round"] for r in rows), default=0)
    for mask in np.asarray(masks, dtype=bool):
        key = key_of_mask(mask, ids)
        row = by_id.get((section, key))
        if row is not None:
            row["replicates"] = max(int(row["replicates"]), int(replicates))
            continue
        by_id[(section, key)] = {
            "coalition_key": key, "mask": mask_to_str(mask), "size": int(mask.sum()), "section": section,
            "round": int(round_index), "design": section, "weight": 1.0, "replicates": int(replicates),
            "fidelity": "high",
        }
    return list(by_id.values())


@dataclass(frozen=True)
class Job:
    """One evaluation to run: a coalition and a replicate index.

    ``seed`` (the job seed, :func:`derive_seed` of ``config_seed``, key and replicate) is computed on
    first use: a resume over 10,000 planned jobs derives seeds only for the few left to run.
    """

    coalition_key: str
    mask: str
    size: int
    replicate: int
    config_seed: int

    @functools.cached_property
    def seed(self) -> int:
        return derive_seed(self.config_seed, self.coalition_key, self.replicate)

    def to_dict(self) -> dict[str, Any]:
        return {"coalition_key": self.coalition_key, "mask": self.mask, "size": self.size,
                "replicate": self.replicate, "seed": self.seed}


def jobs_for(rows: Iterable[dict[str, Any]], *, seed: int, sections: Sequence[str] = ESTIMATOR_SECTIONS,
             fidelity: str = "high") -> list[Job]:
    """Every (coalition, replicate) the plan wants in ``sections`` at ``fidelity`` (``high`` / ``low``; rows
    planned at ``both`` count for either), one job per key and replicate."""
    wanted: dict[tuple[str, int], Job] = {}
    for row in rows:
        if row["section"] not in sections or row.get("fidelity", "high") not in (fidelity, "both"):
            continue
        for replicate in range(int(row["replicates"])):
            job_id = (row["coalition_key"], replicate)
            if job_id not in wanted:
                wanted[job_id] = Job(row["coalition_key"], row["mask"], int(row["size"]), replicate, int(seed))
    return list(wanted.values())
