"""``contribshap plan``: from a store used as a pilot, the evaluations (and GPU-hours) that reach a target.

The pilot is whatever the store holds: the first round of a run, or a cheap run of ``design.budget`` 2n to
3n on a python game or a low-fidelity game before a GPU is spent. The projection is
:func:`contribshap.pipeline.core.planner.project_budget` (its accuracy is measured in ``bench/planner.py``);
GPU-hours are the projected evaluations times the seconds per evaluation, measured in the store (mean
``wall_s`` of its ok rows) unless ``seconds_per_evaluation`` states them (e.g. the paper's 635 s a coalition
for ArtBench). The result is written to ``<store>/estimates/plan.json``, which ``status`` and the report show.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from contribshap.pipeline.contracts.errors import ConfigError
from contribshap.pipeline.contracts.io import atomic_write_json
from contribshap.pipeline.products.reduce import reduce_store
from contribshap.pipeline.products.status import mean_wall_s
from contribshap.pipeline.storage.saved_config import read_saved_config
from contribshap.pipeline.storage.store import Store

__all__ = ["PLAN_FILE", "plan_lines", "plan_store", "read_plan_projection"]

#: The projection's file in the store.
PLAN_FILE = "plan.json"


def plan_store(store_path: str | Path, *, halfwidth: float | None = None, relative: bool = False,
               top_k: int | None = None, harmful_q: float | None = None, prop: str | None = None,
               method: str | None = None, seconds_per_evaluation: float | None = None,
               write: bool = True) -> dict[str, Any]:
    """Project the evaluations a store's plan needs to reach one target.

    Args:
        store_path: the pilot store. prop / method: which property and regression method (default: the
            first property and the config's first regression method).
        halfwidth / relative / top_k / harmful_q: the target, exactly one (see ``project_budget``).
        seconds_per_evaluation: seconds one evaluation takes on the target hardware (default: measured).
        write: also write ``<store>/estimates/plan.json``.

    Returns:
        a JSON-able document: the projection, the property and method, seconds per evaluation and GPU-hours.
    """
    from contribshap.pipeline.core.estimators.kernelshap import REGRESSION_METHODS
    from contribshap.pipeline.core.planner import project_budget

    store = Store(store_path)
    cfg = read_saved_config(store.root)
    method = method or next((m for m in cfg.estimators if m in REGRESSION_METHODS), "kernelshap")
    if method not in REGRESSION_METHODS:
        raise ConfigError(f"--method {method!r}: the planner projects {', '.join(REGRESSION_METHODS)}; pick one")
    rows: dict[str, dict[str, Any]] = {}
    reduce_store(store.root, cfg=cfg, methods=[method], write=False, rows_out=rows)
    if not rows:
        raise ConfigError(f"store {store.root} has no evaluated property yet; run `contribshap run` first")
    prop = prop or next(iter(rows))
    if prop not in rows:
        raise ConfigError(f"--property {prop!r} is not in the store; valid: {', '.join(rows)}")
    data = rows[prop]
    projection = project_budget(data["masks"], data["values"], data["v_empty"], data["v_full"], method=method,
                                design=cfg.design.kind, target_halfwidth=halfwidth, relative=relative, top_k=top_k,
                                harmful_q=harmful_q, level=cfg.level, seed=cfg.seed)
    seconds = seconds_per_evaluation if seconds_per_evaluation is not None else mean_wall_s(
        store.scan(store.read_manifest()["config_hash"]).rows)
    n_gpus = max(float(cfg.ray.num_gpus), 0.0)
    total = projection.evaluations + 2 if projection.reached else None  # design budget + the two endpoints
    doc = {
        "property": prop, "method": method, "design": cfg.design.kind, "projection": projection.to_dict(),
        "seconds_per_evaluation": seconds, "seconds_source": "stated" if seconds_per_evaluation is not None else "measured",
        "design_budget": total, "gpus_per_evaluation": n_gpus,
        "hours": None if total is None or seconds is None else total * seconds / 3600.0,
        "gpu_hours": (None if total is None or seconds is None or n_gpus == 0 else total * seconds * n_gpus / 3600.0),
        "created": time.time(),
    }
    if write:
        store.estimates_dir.mkdir(exist_ok=True)
        atomic_write_json(store.estimates_dir / PLAN_FILE, doc)
    return doc


def read_plan_projection(store_path: str | Path) -> dict[str, Any] | None:
    """The last projection ``contribshap plan`` wrote for a store, or None."""
    import json

    path = Store(store_path).estimates_dir / PLAN_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def plan_lines(doc: dict[str, Any]) -> list[str]:
    """The projection in a few lines of text (``plan``, ``status`` and the report)."""
    p = doc["projection"]
    target = {"halfwidth": f"largest CI half-width <= {p['details'].get('target_halfwidth', '?')}",
              "top_k": f"the top {p['details'].get('top_k', '?')} resolved",
              "harmful": f"the harmful set at FDR {p['details'].get('harmful_q', '?')}"}.get(p["target"], p["target"])
    head = f"plan ({doc['property']}, {doc['method']}, design {doc['design']}): {target}: "
    if not p["reached"]:
        return [head + f"not reached within the planner's limit (pilot {p['pilot_evaluations']} coalitions); "
                "a boundary case needs a budget that grows as 1/gap^2"]
    lines = [head + f"{p['evaluations']} coalitions ({p['more']} more than the pilot's {p['pilot_evaluations']}); "
             f"largest half-width {p['halfwidth_pilot']:.4g} now -> {p['halfwidth_projected']:.4g} projected"]
    if doc.get("seconds_per_evaluation") is not None:
        cost = f"{doc['hours']:.1f} hours of evaluation at {doc['seconds_per_evaluation']:.3g} s each ({doc['seconds_source']})"
        if doc.get("gpu_hours") is not None:
            cost += f", {doc['gpu_hours']:.1f} GPU-hours"
        lines.append("cost: " + cost)
    return lines
