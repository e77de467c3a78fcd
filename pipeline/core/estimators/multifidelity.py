"""Two-fidelity estimates: cheap evaluations as a control variate for fewer full ones (numpy only).

Every coalition value can be measured at two costs: the full game ``v_H`` (K fine-tune steps, all
samples) and a cheap one ``v_L`` (fewer steps, fewer samples) that tracks it. The plan draws two
independent sets of coalitions from the same design:

- ``A`` (``m_A`` coalitions and the endpoints), evaluated at **both** fidelities with the same job seeds,
  so every high row has a low twin (same coalition, same replicate);
- ``B`` (``m_B`` further draws, a seed stream of its own), evaluated at the low fidelity only, with the
  same low-fidelity endpoints.

Shapley values (and every estimator here) are linear in the game, so for any coefficient c

    φ(v_H) = φ(v_H − c·v_L) + c·φ(v_L),

and the estimate is ``φ̂_A(v_H − c·v_L) + c·φ̂_B(v_L)``: the residual game on A (small when v_L tracks
v_H, so its sampling error is small) plus c times the cheap game's value on B. The two parts come from
independent draws, so their variances add:

    Var = Var_A(v_H − c·v_L) + c²·Var_B(v_L).

Both variances are the estimator's own (the intervals the coverage benchmark checks); the only shared
evaluations are the low endpoints (and low rows of a coalition drawn in both sets), which enter the two
parts with opposite signs: their covariance is negative and the sum is conservative. Efficiency is exact:
the low endpoints cancel, so the estimate sums to v_H(N) − v_H(∅).

The coefficient: were the estimator linear, Var_A(v_H − c·v_L) = V_H − 2c·C + c²·V_LA (C the covariance
of the two fits on A, read off the estimator's variances of v_H, v_L and v_H − v_L), and the summed
variance over players would be least at ``c* = Σ C_j / Σ (V_LA,j + V_LB,j)`` (the multi-fidelity Monte
Carlo coefficient; Peherstorfer, Willcox & Gunzburger 2016). The default estimator is only nearly linear
(its blend weight is chosen on the data), so c* is one candidate among 0 and multiples of the regression
slope of v_H on v_L, and the one whose fit reports the least summed variance is used
(:func:`_search_coefficient`). c = 0 (a useless cheap game) gives back the full-fidelity estimate on A.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["combine_fidelities", "optimal_coefficient"]


def _endpoint_means(masks: np.ndarray, values: np.ndarray, what: str) -> tuple[float, float]:
    sizes = masks.sum(axis=1)
    n = masks.shape[1]
    empty = values[(sizes == 0) & np.isfinite(values)]
    full = values[(sizes == n) & np.isfinite(values)]
    if not len(empty) or not len(full):
        missing = "empty" if not len(empty) else "full"
        raise ValueError(f"{what}: no finite evaluation of the {missing} coalition; evaluate both endpoints.")
    return float(empty.mean()), float(full.mean())


def _fit(masks: np.ndarray, values: np.ndarray, what: str, method: str, level: float, seed: int,
         options: dict[str, Any]) -> Any:
    from contribshap.pipeline.core.estimators import estimate

    v_empty, v_full = _endpoint_means(masks, values, what)
    return estimate(masks, values, v_empty, v_full, method=method, level=level, seed=seed, **options)


def _variance(est: Any) -> np.ndarray:
    """Per-player variance, NaN where the estimate is not identified."""
    se = np.asarray(est.stderr, dtype=np.float64)
    return np.where(np.asarray(est.identified) & np.isfinite(se), se**2, np.nan)


def optimal_coefficient(var_high: np.ndarray, var_low_a: np.ndarray, var_diff: np.ndarray,
                        var_low_b: np.ndarray) -> float:
    """c* minimising Σ_j Var_j(c) (players where all four variances are known; 0 when none is).

    Args:
        var_high: Var of φ̂_A(v_H). var_low_a: Var of φ̂_A(v_L). var_diff: Var of φ̂_A(v_H − v_L).
        var_low_b: Var of φ̂_B(v_L). All (n,), NaN = unknown.
    """
    cov = 0.5 * (var_high + var_low_a - var_diff)
    known = np.isfinite(cov) & np.isfinite(var_low_a) & np.isfinite(var_low_b)
    denominator = float(np.sum(var_low_a[known] + var_low_b[known]))
    if not known.any() or not denominator > 0:
        return 0.0
    return float(np.sum(cov[known]) / denominator)


#: Multiples of the regression slope of v_H on v_L tried as the coefficient (besides 0 and c*).
_SLOPE_MULTIPLES = (0.25, 0.5, 0.75, 1.0, 1.25)


def _slope(high: np.ndarray, low: np.ndarray) -> float:
    """Least-squares slope of v_H on v_L over the pairs (0 when v_L does not vary)."""
    low_c = low - low.mean()
    denominator = float(low_c @ low_c)
    return float(low_c @ (high - high.mean()) / denominator) if denominator > 0 else 0.0


def _search_coefficient(masks_a: np.ndarray, high_a: np.ndarray, low_a: np.ndarray, est_high: Any,
                        est_low_b: Any, quadratic: float, fit: dict[str, Any]) -> tuple[float, Any]:
    """The coefficient whose estimate has the least summed variance, and the residual fit it gives.

    The estimators are not exactly linear in the values (a data-chosen blend, leverage corrections), so
    the quadratic c* from three fits can miss, and it is noisy when the players' covariances are; the
    search scores c = 0, c* and multiples of the regression slope of v_H on v_L with the estimator's own
    variance, Σ_j Var_A,j(v_H − c·v_L) + c²·Var_B,j(v_L), over the players identified at c = 0. Only
    c >= 0 is tried (a cheap game anti-correlated with the full one is a broken one). Ties: the smaller c.
    """
    slope = _slope(high_a, low_a)
    candidates = sorted({0.0, *(m * slope for m in _SLOPE_MULTIPLES if slope > 0),
                         *([quadratic] if 0 < quadratic <= 2 * max(slope, quadratic) else [])})
    base = np.asarray(est_high.identified) & np.isfinite(np.asarray(est_high.stderr))
    var_b = np.asarray(est_low_b.stderr, dtype=np.float64) ** 2
    best: tuple[float, float, Any] | None = None
    for c in candidates:
        est = est_high if c == 0.0 else _fit(masks_a, high_a - c * low_a, "set A (residual)", **fit)
        keep = base & np.asarray(est.identified) & (np.asarray(est_low_b.identified) | (c == 0.0))
        if c and not keep.sum() >= base.sum():
            continue  # never trade an identified player for variance
        total = float(np.sum(np.asarray(est.stderr)[base] ** 2 + c**2 * var_b[base])) if base.any() else 0.0
        if best is None or total < best[1] * (1 - 1e-9):
            best = (c, total, est)
    assert best is not None
    return best[0], best[2]


def combine_fidelities(
    masks_a: np.ndarray,
    high_a: np.ndarray,
    low_a: np.ndarray,
    masks_b: np.ndarray,
    low_b: np.ndarray,
    *,
    method: str = "kernelshap",
    level: float = 0.95,
    seed: int = 0,
    coefficient: float | None = None,
    **options: Any,
) -> Any:
    """The two-fidelity estimate ``φ̂_A(v_H − c·v_L) + c·φ̂_B(v_L)`` (see the module docstring).

    Args:
        masks_a: bool (m, n), the evaluations of set A, endpoints included (replicates = identical rows).
        high_a: float (m,), their full-fidelity values (NaN = failed; the pair is dropped).
        low_a: float (m,), the low-fidelity value of the same coalition and replicate, row by row.
        masks_b: bool (k, n), the low-only evaluations of set B, low endpoints included.
        low_b: float (k,), their values.
        method: the estimator (any of :data:`contribshap.pipeline.core.estimators.METHODS` that takes no
            per-row option); the same method fits every part.
        level, seed, options: as :func:`contribshap.pipeline.core.estimators.estimate`.
        coefficient: a fixed c; None (default) estimates c* from the fits.

    Returns:
        an :class:`~contribshap.pipeline.core.estimators.Estimate` whose ``extras["multifidelity"]`` holds the
        coefficient, the high-fidelity-only estimate's largest half-width, the variance ratio
        Σ Var(two-fidelity) / Σ Var(high only), and the evaluation counts.
    """
    from contribshap.pipeline.core.estimators import Estimate, max_halfwidth, normal_interval

    masks_a = np.asarray(masks_a, dtype=bool)
    masks_b = np.asarray(masks_b, dtype=bool)
    high_a = np.asarray(high_a, dtype=np.float64)
    low_a = np.asarray(low_a, dtype=np.float64)
    low_b = np.asarray(low_b, dtype=np.float64)
    if high_a.shape != low_a.shape or high_a.shape != (masks_a.shape[0],):
        raise ValueError(f"high_a and low_a must both have shape ({masks_a.shape[0]},) to pair with masks_a; "
                         f"got {high_a.shape} and {low_a.shape}.")
    if masks_b.ndim != 2 or masks_b.shape[1] != masks_a.shape[1] or low_b.shape != (masks_b.shape[0],):
        raise ValueError(f"masks_b must be (k, {masks_a.shape[1]}) with low_b of shape (k,); "
                         f"got {masks_b.shape} and {low_b.shape}.")
    paired = np.isfinite(high_a) & np.isfinite(low_a)
    masks_a, high_a, low_a = masks_a[paired], high_a[paired], low_a[paired]
    fit: dict[str, Any] = {"method": method, "level": level, "seed": seed, "options": options}

    # 1. the parts' variances on A (v_H, v_L, v_H − v_L) and on B (v_L): the coefficient
    est_high = _fit(masks_a, high_a, "set A (full fidelity)", **fit)
    est_low_b = _fit(masks_b, low_b, "set B (low fidelity)", **fit)
    if coefficient is None:
        est_low_a = _fit(masks_a, low_a, "set A (low fidelity)", **fit)
        est_diff = _fit(masks_a, high_a - low_a, "set A (difference)", **fit)
        quadratic = optimal_coefficient(_variance(est_high), _variance(est_low_a), _variance(est_diff),
                                        _variance(est_low_b))
        c, est_resid = _search_coefficient(masks_a, high_a, low_a, est_high, est_low_b, quadratic, fit)
    else:
        c = float(coefficient)
        if not math.isfinite(c):
            raise ValueError(f"coefficient must be finite; got {c!r}.")
        est_resid = _fit(masks_a, high_a - c * low_a, "set A (residual)", **fit)

    # 2. the residual game on A plus c times the cheap game on B
    value = est_resid.value + c * est_low_b.value
    identified = np.asarray(est_resid.identified) & (np.asarray(est_low_b.identified) | (c == 0.0))
    var = np.asarray(est_resid.stderr) ** 2 + (c * np.asarray(est_low_b.stderr)) ** 2 if c else \
        np.asarray(est_resid.stderr) ** 2
    stderr = np.where(identified, np.sqrt(var), np.inf)
    ci_low, ci_high = normal_interval(value, stderr, identified, level)
    n_low_only = int(np.sum((masks_b.sum(axis=1) > 0) & (masks_b.sum(axis=1) < masks_b.shape[1])))

    var_high = _variance(est_high)
    both = np.isfinite(var_high) & identified
    ratio = float(np.sum(var[both]) / np.sum(var_high[both])) if both.any() and np.sum(var_high[both]) > 0 else None
    extras = dict(est_resid.extras)
    extras.update(
        v_empty=est_high.extras["v_empty"], v_full=est_high.extras["v_full"],
        total=est_high.extras["v_full"] - est_high.extras["v_empty"],
        more_evaluations=max(int(est_resid.extras.get("more_evaluations") or 0),
                             int(est_low_b.extras.get("more_evaluations") or 0) if c else 0),
        multifidelity={
            "coefficient": c,
            "coefficient_estimated": coefficient is None,
            "high_only_max_halfwidth": max_halfwidth(est_high),
            "variance_ratio": ratio,
            "n_high": int(est_high.n_evaluations),
            "n_low_paired": int(masks_a.shape[0]),
            "n_low_only": n_low_only,
        },
    )
    return Estimate(
        value=value,
        stderr=stderr,
        ci_low=ci_low,
        ci_high=ci_high,
        n_evaluations=int(est_high.n_evaluations + masks_a.shape[0] + n_low_only),
        method=method,
        level=float(level),
        utility_noise=est_high.utility_noise,
        extras=extras,
        identified=identified,
    )
