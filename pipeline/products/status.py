"""Progress of a store without Ray (``contribshap status``): planned / ok / failed / remaining, ETA, lock holder.

A two-fidelity store (``low_fidelity``) counts the evaluations of both games (``by_fidelity`` splits them).

Reads only the store (manifest, plan, the evaluation files through the scan cache, never rewriting it),
so it works while a driver runs and on a copy of a store. :func:`require_ok_evaluations` turns "nothing
usable" (no ok evaluation at all) into :class:`NoUsableEvaluationsError` (exit code 3) for ``run`` and
``reduce``.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.contracts.errors import ContribshapError, NoUsableEvaluationsError
from contribshap.pipeline.storage.plan import ESTIMATOR_SECTIONS, jobs_for, read_plan
from contribshap.pipeline.storage.saved_config import read_saved_config
from contribshap.pipeline.storage.store import Store

__all__ = ["mean_wall_s", "require_ok_evaluations", "store_status"]

def require_ok_evaluations(store_path: str | Path, *, what: str) -> None:
    """Raise :class:`NoUsableEvaluationsError` when no planned evaluation of the store is ok.

    Args:
        store_path: the store folder.
        what: the sentence's subject, e.g. ``"every evaluation failed"`` (run) or ``"nothing to reduce"``.

    The message is one line: the counts, where the errors are (``contribshap status``) and the fix.
    """
    info = store_status(store_path)
    if info["ok"] > 0:
        return
    if info["failed"] == 0:
        raise NoUsableEvaluationsError(
            f"{what}: store {info['store']} has no ok evaluation yet ({info['planned']} planned); run "
            "`contribshap run` to evaluate the plan"
        )
    raise NoUsableEvaluationsError(
        f"{what}: store {info['store']} has no ok evaluation ({info['failed']} of {info['planned']} planned "
        f"failed); see the errors with `contribshap status {info['store']}`, fix the game and run again"
    )


def _low_fidelity_namespace(store: Store) -> str | None:
    """The cheap game's namespace of a two-fidelity store (from its saved config), else None."""
    try:
        return read_saved_config(store.root).low_fidelity_namespace()
    except ContribshapError:
        return None


def mean_wall_s(rows: list[dict[str, Any]]) -> float | None:
    """Mean measured ``wall_s`` of the ok rows among ``rows`` (None when none has one)."""
    walls = [r["wall_s"] for r in rows if r.get("status") == "ok" and r.get("wall_s") is not None
             and math.isfinite(r["wall_s"])]
    return float(np.mean(walls)) if walls else None


def store_status(store_path: str | Path) -> dict[str, Any]:
    """Progress of a store without Ray: planned / ok / failed / remaining evaluations, ETA, lock holder.

    The ETA assumes the mean measured ``wall_s`` per evaluation and the parallelism seen so far
    (evaluations whose [started_at, finished_at] overlap).
    """
    store = Store(store_path)
    manifest = store.read_manifest()
    namespace = manifest["config_hash"]
    rows = read_plan(store)
    parts = [(namespace, jobs_for(rows, seed=0, sections=ESTIMATOR_SECTIONS), "high")]
    low_namespace = _low_fidelity_namespace(store)
    if low_namespace is not None:
        parts.append((low_namespace, jobs_for(rows, seed=0, sections=(*ESTIMATOR_SECTIONS, "control"),
                                              fidelity="low"), "low"))
    planned = ok = 0
    failed_rows: list[dict[str, Any]] = []
    ok_rows: list[dict[str, Any]] = []
    unreadable: list[str] = []
    by_fidelity: dict[str, dict[str, int]] = {}
    for part_namespace, jobs, fidelity in parts:
        scan = store.scan(part_namespace, update_index=False)
        status = scan.status_by_job()
        wanted = {(j.coalition_key, j.replicate) for j in jobs}
        part_ok = sum(1 for j in wanted if status.get(j) == "ok")
        part_failed = [{**r, "fidelity": fidelity} for r in scan.rows
                       if r["status"] == "failed" and (r["coalition_key"], r["replicate"]) in wanted]
        by_fidelity[fidelity] = {"planned": len(wanted), "ok": part_ok, "failed": len(part_failed)}
        planned, ok = planned + len(wanted), ok + part_ok
        failed_rows += part_failed
        ok_rows += [r for r in scan.rows if r["status"] == "ok"]
        unreadable += scan.unreadable
    remaining = planned - ok
    mean_wall = mean_wall_s(ok_rows)
    eta_s = None
    if mean_wall is not None and remaining:
        span = [(r["started_at"], r["finished_at"]) for r in ok_rows if math.isfinite(r.get("started_at") or math.nan)]
        busy = sum(f - s for s, f in span)
        elapsed = (max(f for _, f in span) - min(s for s, _ in span)) if span else 0.0
        parallel = max(1.0, busy / elapsed) if elapsed > 0 else 1.0
        eta_s = mean_wall * remaining / parallel
    holder = None
    if store.lock_path.is_file():
        with contextlib.suppress(Exception):
            holder = json.loads(store.lock_path.read_text())
    return {
        "store": str(store.root), "name": manifest.get("name"), "config_hash": namespace,
        "contributors": len(manifest.get("contributors") or []),
        "planned_coalitions": sum(1 for r in rows if r["section"] in ESTIMATOR_SECTIONS),
        "planned": planned, "ok": ok, "failed": len(failed_rows), "remaining": remaining,
        "rounds": max((r["round"] for r in rows), default=-1) + 1,
        "eta_s": eta_s, "unreadable": unreadable, "driver": holder,
        "failed_evaluations": [
            {"coalition_key": r["coalition_key"], "mask": r["mask"], "replicate": r["replicate"], "error": r["error"],
             **({"fidelity": r["fidelity"]} if low_namespace is not None else {})}
            for r in failed_rows
        ],
        "by_fidelity": by_fidelity if low_namespace is not None else None,
        "other_sections": sorted({r["section"] for r in rows} - set(ESTIMATOR_SECTIONS)),
        "overlap": _overlap_pairs(store.root, manifest),
    }


def _overlap_pairs(root: Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Prepare's overlap audit (pairs of contributors sharing images), or None before prepare."""
    from contribshap.pipeline.products.overlap import read_overlap

    table = read_overlap(root, manifest)
    if table is None:
        return None
    return {**{key: table.get(key) for key in ("ids", "n_images", "hamming", "rmse", "near_searched", "pairs")},
            "inside": [row[k] for k, row in enumerate(table.get("near") or [])]}
