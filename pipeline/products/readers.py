"""Read-only views of a store for ``contribshap evaluate`` and ``contribshap report`` (no Ray, no torch).

- :func:`load_estimates` / :func:`load_evaluation`: ``estimates/estimates.json`` (the ``reduce --json``
  document) and ``estimates/evaluation.json`` (written by ``contribshap evaluate``);
- :func:`read_all_evals`: every readable evaluation row of every namespace;
- :func:`main_rows`: the main game's ok rows arranged for estimators and baselines (:class:`MainRows`);
- :func:`design_order`: the planned estimate masks in the order the design drew them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.contracts.errors import ContribshapError
from contribshap.pipeline.contracts.keys import mask_from_str, mask_to_str
from contribshap.pipeline.storage.plan import read_plan
from contribshap.pipeline.storage.saved_config import read_saved_config
from contribshap.pipeline.storage.store import RESERVED_COLUMNS, Store

__all__ = [
    "MainRows",
    "MissingEstimatesError",
    "design_order",
    "float_or_nan",
    "load_estimates",
    "load_evaluation",
    "main_rows",
    "read_all_evals",
]


class MissingEstimatesError(ContribshapError, FileNotFoundError):
    """``estimates/estimates.json`` is missing and cannot be made; the message names the fix."""


def load_estimates(root: Path, *, reduce_if_missing: bool = False) -> dict[str, Any]:
    """``<store>/estimates/estimates.json`` (the ``reduce --json`` document).

    Args:
        root: store folder.
        reduce_if_missing: run ``contribshap.pipeline.products.reduce.reduce_store`` first when the file is missing (and the
            store has a config), as ``contribshap reduce STORE`` would.

    Raises:
        FileNotFoundError: one line naming the file and the command that writes it.
    """
    path = Path(root) / "estimates" / "estimates.json"
    if not path.is_file() and reduce_if_missing and (Path(root) / "config.yaml").is_file():
        from contribshap.pipeline.products.reduce import reduce_store

        reduce_store(root, write=True)
    if not path.is_file():
        raise MissingEstimatesError(f"{path} does not exist; run `contribshap reduce {root}` first")
    doc = json.loads(path.read_text())
    return doc.get("properties", doc) if isinstance(doc, dict) else {}


def load_evaluation(root: Path) -> dict[str, Any] | None:
    """``<store>/estimates/evaluation.json`` or None when ``contribshap evaluate`` has not run."""
    path = Path(root) / "estimates" / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_all_evals(root: Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every readable evaluation row of every namespace, and the unreadable file names (read-only)."""
    store = Store(root)
    rows: dict[str, list[dict[str, Any]]] = {}
    unreadable: list[str] = []
    for namespace in store.namespaces():
        scan = store.scan(namespace, update_index=False, warn=False)
        rows[namespace] = scan.rows
        unreadable += [f"{namespace}/{name}" for name in scan.unreadable]
    return rows, unreadable


@dataclass
class MainRows:
    """The main game's evaluations, arranged for estimators and baselines.

    Attributes:
        masks: bool (m, n): one row per ok evaluation of an ``estimate``-section coalition, in plan order
            (replicates next to each other).
        values: property -> float (m,).
        other_masks / other_values: ok evaluations of the main namespace outside the estimate section
            (e.g. LOO and singleton rows), same layout.
        v_empty / v_full: property -> mean over ok replicates of the endpoints (NaN if missing).
    """

    masks: np.ndarray
    values: dict[str, np.ndarray]
    other_masks: np.ndarray
    other_values: dict[str, np.ndarray]
    v_empty: dict[str, float]
    v_full: dict[str, float]


def main_rows(root: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> MainRows:
    """Split the main namespace's ok rows into estimate rows (plan order) and the rest.

    Args:
        root: store folder (its ``plan.parquet`` gives the order and the sections).
        manifest: the store manifest (contributors, property names).
        rows: the main namespace's evaluation rows (``Store.scan(config_hash).rows``).
    """
    n = len(manifest.get("contributors") or [])
    props = list(manifest.get("property_names") or [])
    if not props:  # python games learn their names from the first evaluation
        props = sorted({k for r in rows for k in r if k not in RESERVED_COLUMNS})
    ok = [r for r in rows if r.get("status") == "ok"]
    by_mask: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by_mask.setdefault(r["mask"], []).append(r)
    plan = read_plan(Store(root))
    estimate_keys = design_order([p["mask"] for p in plan if p.get("section", "estimate") == "estimate"], root)
    estimate_set = set(estimate_keys)
    empty, full = "0" * n, "1" * n

    def _arrange(mask_strings: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        picked = [r for s in mask_strings for r in sorted(by_mask.get(s, []), key=lambda r: r["replicate"])]
        masks = np.array([mask_from_str(r["mask"]) for r in picked], dtype=bool).reshape(len(picked), n)
        return masks, {p: np.array([float_or_nan(r.get(p)) for r in picked]) for p in props}

    masks, values = _arrange(list(dict.fromkeys(estimate_keys)))
    others = [s for s in by_mask if s not in estimate_set and s not in (empty, full)]
    other_masks, other_values = _arrange(others)
    v_empty = {p: _mean_of(by_mask.get(empty, []), p) for p in props}
    v_full = {p: _mean_of(by_mask.get(full, []), p) for p in props}
    return MainRows(masks, values, other_masks, other_values, v_empty, v_full)


def design_order(mask_strings: list[str], root: Path) -> list[str]:
    """Order planned estimate masks as the design drew them (plan.parquet sorts rows by key).

    The design stream is prefix-stable, so re-drawing it from the store's resolved config gives the order
    in which a smaller budget would have planned the rows; prefixes of that order are what
    "estimate vs number of coalitions" means. Masks the stream does not reproduce keep their plan order at
    the end. ``exact`` designs (and stores without a readable config) get a seeded random order.
    """
    n = len(mask_strings[0]) if mask_strings else 0
    if n == 0:
        return mask_strings
    kind, seed, options = "", 0, {}
    try:
        cfg = read_saved_config(root)
        kind, seed, options = cfg.design.kind, cfg.plan_seed(), dict(cfg.design.options)
    except Exception:  # no/old config: fall back to a seeded shuffle
        kind = ""
    if kind and kind != "exact":
        from contribshap.pipeline.core.designs import sample_coalitions

        try:
            stream = sample_coalitions(n, len(mask_strings), kind, seed=seed, **options)
            position = {mask_to_str(m): i for i, m in enumerate(stream)}
            return sorted(mask_strings, key=lambda s: position.get(s, len(position)))
        except Exception:
            pass
    perm = np.random.default_rng(seed).permutation(len(mask_strings))
    return [mask_strings[i] for i in perm]


def float_or_nan(x: Any) -> float:
    """``float(x)``, NaN for None or anything that is not a number."""
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _mean_of(rows: list[dict[str, Any]], prop: str) -> float:
    vals = [float_or_nan(r.get(prop)) for r in rows]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan
