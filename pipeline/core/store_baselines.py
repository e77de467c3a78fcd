"""Store-based baselines (numpy only): LOO, add-one-in, Banzhaf (MSR) and datamodel regression.

Every baseline turns the (mask, value) rows of a store into one score per contributor, in the property's
units, so it is scored by exactly the same LDS and counterfactuals as the Shapley estimates
(:mod:`contribshap.pipeline.products.evaluate`).

- ``loo``: phi_i = v(N) - v(N minus i). Needs the n leave-one-out coalitions.
- ``add_one_in``: phi_i = v({i}) - v(empty). Needs the n singletons.
- ``banzhaf_on_estimate_rows``: ``contribshap.pipeline.core.estimators.estimate(..., method="banzhaf_msr")`` on the
  estimate rows, i.e. on the run's (paired Shapley-kernel) design: free, but *not* the Banzhaf value (MSR is
  unbiased on a uniform design only); named for what it is.
- ``datamodel``: ``estimate(..., method="datamodel")`` (ridge regression of v(S) on the mask).
- ``banzhaf_uniform`` (:func:`banzhaf_uniform`): Banzhaf by MSR on rows of its own uniform design (each
  contributor kept with probability 1/2) plus the endpoints; ``contribshap evaluate`` evaluates those rows
  in plan section ``banzhaf_uniform`` when ``evaluation.banzhaf_uniform`` is on.

Model-based baselines (pixel / feature similarity, TRAK) need torch and live in ``contribshap.workers.model_baselines``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

STORE_BASELINES = ("loo", "add_one_in", "banzhaf_on_estimate_rows", "datamodel")
"""Baselines computed from store rows, in report order."""


@dataclass
class Attribution:
    """One score per contributor from one method, on one property.

    Attributes:
        method: method name (an estimator such as ``kernelshap``, or a baseline such as ``loo``).
        value: float array (n,), the score of each contributor (NaN when it could not be computed).
        ci_low, ci_high: float arrays (n,) or None when the method has no interval.
        signed: True when ``value`` is in the property's units (Shapley, LOO, ...: a larger score means
            the contributor raises the property). False for similarity scores, which say "influential" but
            not in which direction; :mod:`contribshap.pipeline.products.evaluate` orients those on the estimate rows.
        kind: ``"estimator"``, ``"store_baseline"`` or ``"model_baseline"``.
        note: free text shown in the report (e.g. missing coalitions).
    """

    method: str
    value: np.ndarray
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None
    signed: bool = True
    kind: str = "estimator"
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def required_masks(n: int, methods: list[str] | tuple[str, ...]) -> np.ndarray:
    """Masks the store baselines need besides the estimate rows and the endpoints.

    Args:
        n: number of contributors.
        methods: baseline names (subset of :data:`STORE_BASELINES`).

    Returns:
        bool array (k, n): the n leave-one-out coalitions if ``loo`` is asked, then the n singletons if
        ``add_one_in`` is asked (k = 0, n or 2n).
    """
    _check_methods(methods)
    rows: list[np.ndarray] = []
    if "loo" in methods:
        rows.append(~np.eye(n, dtype=bool))
    if "add_one_in" in methods:
        rows.append(np.eye(n, dtype=bool))
    return np.concatenate(rows, axis=0) if rows else np.zeros((0, n), dtype=bool)


def _check_methods(methods: list[str] | tuple[str, ...]) -> None:
    bad = [m for m in methods if m not in STORE_BASELINES]
    if bad:
        raise ValueError(f"unknown store baseline(s) {bad}; valid: {list(STORE_BASELINES)}")


def _mean_by_mask(masks: np.ndarray, values: np.ndarray) -> dict[bytes, float]:
    """Average finite values of identical masks (replicates): mask bytes -> mean value."""
    sums: dict[bytes, list[float]] = {}
    for mask, value in zip(masks, values, strict=True):
        if np.isfinite(value):
            sums.setdefault(np.asarray(mask, dtype=bool).tobytes(), []).append(float(value))
    return {key: float(np.mean(vals)) for key, vals in sums.items()}


def store_baselines(
    masks: np.ndarray,
    values: np.ndarray,
    v_empty: float,
    v_full: float,
    methods: list[str] | tuple[str, ...] = STORE_BASELINES,
    *,
    estimate_rows: np.ndarray | None = None,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Attribution]:
    """Compute the store baselines for one property.

    Args:
        masks: bool array (m, n): every evaluated coalition of the main game (estimate rows, LOO and
            singleton rows; replicates allowed, endpoints ignored).
        values: float array (m,): the property for each row (NaN = failed, skipped).
        v_empty, v_full: property of the empty and the full coalition.
        methods: subset of :data:`STORE_BASELINES` (default: all).
        estimate_rows: optional bool array (m,) selecting the rows that ``banzhaf_on_estimate_rows`` and ``datamodel``
            regress on (default: all rows).
        level, seed: passed to the estimators.

    Returns:
        method -> :class:`Attribution` (``kind="store_baseline"``). A LOO or add-one-in score whose
        coalition is missing is NaN, and the note says how many are missing.

    Example:
        >>> masks = np.array([[0, 1], [1, 0]], dtype=bool)
        >>> store_baselines(masks, np.array([2.0, 1.0]), 0.0, 4.0, ["loo", "add_one_in"])["loo"].value
        array([2., 3.])
    """
    # 1. Validate and average replicates.
    _check_methods(methods)
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=float)
    n = masks.shape[1]
    means = _mean_by_mask(masks, values)
    out: dict[str, Attribution] = {}
    # 2. LOO and add-one-in read single coalitions.
    for method, probe, sign in (("loo", ~np.eye(n, dtype=bool), -1.0), ("add_one_in", np.eye(n, dtype=bool), 1.0)):
        if method not in methods:
            continue
        score = np.full(n, math.nan)
        for i in range(n):
            v = means.get(probe[i].tobytes())
            if v is not None:
                score[i] = (v - v_empty) if sign > 0 else (v_full - v)
        missing = int(np.isnan(score).sum())
        note = f"{missing} of {n} coalitions missing" if missing else ""
        out[method] = Attribution(method, score, signed=True, kind="store_baseline", note=note)
    # 3. Regression-type baselines through the estimators.
    rows = np.ones(len(masks), dtype=bool) if estimate_rows is None else np.asarray(estimate_rows, dtype=bool)
    for method, estimator in (("banzhaf_on_estimate_rows", "banzhaf_msr"), ("datamodel", "datamodel")):
        if method not in methods:
            continue
        from contribshap.pipeline.core.estimators import estimate  # numpy-only module

        try:
            est = estimate(masks[rows], values[rows], v_empty, v_full, method=estimator, level=level, seed=seed)
        except ValueError as err:  # e.g. too few rows for the method
            out[method] = Attribution(method, np.full(n, math.nan), kind="store_baseline", note=str(err))
            continue
        out[method] = Attribution(
            method,
            np.asarray(est.value, dtype=float),
            np.asarray(est.ci_low, dtype=float),
            np.asarray(est.ci_high, dtype=float),
            signed=True,
            kind="store_baseline",
        )
    return out


def banzhaf_uniform(
    masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, *, level: float = 0.95, seed: int = 0,
) -> Attribution:
    """Banzhaf values by maximum sample reuse on rows of a uniform design (and the two endpoints).

    phi_i = mean v(S ∋ i) - mean v(S ∌ i) over the rows plus v(∅) and v(N) (Wang & Jia 2023); on an
    additive game v(S) = c + sum_{i in S} w_i it equals w_i plus the imbalance term
    sum_{j != i} w_j (P(j in S | i in S) - P(j in S | i not in S)) of the sample, 0 on the full design.

    Args:
        masks: bool array (m, n): the uniform-design rows (draws; a repeated coalition counts again).
        values: float array (m,): their values (NaN = failed, dropped).
        v_empty, v_full: the endpoints' values.
        level, seed: passed to the estimator.

    Returns:
        :class:`Attribution` ``banzhaf_uniform`` (kind ``store_baseline``; NaN with a note when too few rows).
    """
    from contribshap.pipeline.core.estimators import estimate  # numpy-only module

    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    try:
        est = estimate(masks[ok], values[ok], v_empty, v_full, method="banzhaf_msr", level=level, seed=seed,
                       include_endpoints=True)
    except ValueError as err:
        return Attribution("banzhaf_uniform", np.full(masks.shape[1], math.nan), kind="store_baseline", note=str(err))
    note = f"{int((~ok).sum())} uniform row(s) failed" if (~ok).any() else ""
    return Attribution("banzhaf_uniform", np.asarray(est.value, dtype=float), np.asarray(est.ci_low, dtype=float),
                       np.asarray(est.ci_high, dtype=float), signed=True, kind="store_baseline", note=note)
