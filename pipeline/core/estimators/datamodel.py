"""``datamodel``: ridge regression of v(S) on z_S with an intercept (Ilyas et al. 2022; numpy only).

The penalty is chosen by exact leave-one-out CV. A linear attribution, not efficient. Intervals: a row
bootstrap at the chosen penalty (``bootstrap``, the default) or the ridge sandwich (``analytic``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from contribshap.pipeline.core.estimators._base import (
    Data,
    MethodResult,
    distrust_zero_variance,
    register_method,
    unknown_ci,
)


def _ridge_fit(x: np.ndarray, y: np.ndarray, alphas: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Ridge with intercept; penalty by exact leave-one-out CV. Returns (coef, intercept, alpha)."""
    xm, ym = x.mean(axis=0), y.mean()
    xc, yc = x - xm, y - ym
    uu, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = uu.T @ yc
    best = (math.inf, float(alphas[0]))
    m = len(y)
    for alpha in alphas:
        d = s**2 / (s**2 + alpha)
        fitted = uu @ (d * uty)
        hat = (uu**2) @ d + 1.0 / m  # leverage incl. intercept
        loo = (yc - fitted) / np.maximum(1.0 - hat, 1e-12)
        err = float(np.mean(loo**2))
        if err < best[0]:
            best = (err, float(alpha))
    alpha = best[1]
    coef = vt.T @ (s / (s**2 + alpha) * uty)
    return coef, float(ym - xm @ coef), alpha


def _datamodel(
    data: Data, ci: str, n_boot: int, seed: int, alphas: Any
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray, int]:
    if data.n_unique < 5:
        more = 5 - data.n_unique
        raise ValueError(f"method 'datamodel' needs at least 5 distinct coalitions; got {data.n_unique}. "
                         f"Evaluate at least {more} more coalition{'s' if more > 1 else ''} (raise the budget).")
    grid = np.logspace(-4, 4, 17) if alphas is None else np.asarray(alphas, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or np.any(grid <= 0):
        raise ValueError(f"alphas must be a non-empty 1-d list of positive penalties; got {alphas!r}.")
    x = data.z.astype(np.float64)
    coef, intercept, alpha = _ridge_fit(x, data.y, grid)
    if ci == "bootstrap":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xD4]))
        draws = np.empty((n_boot, data.n))
        for b in range(n_boot):
            pick = rng.integers(0, len(x), size=len(x))
            draws[b], _, _ = _ridge_fit(x[pick], data.y[pick], np.array([alpha]))
        var = draws.var(axis=0, ddof=1)
    elif ci == "analytic":
        resid = data.y - intercept - x @ coef
        xc = x - x.mean(axis=0)
        inv = np.linalg.pinv(xc.T @ xc + alpha * np.eye(data.n))
        sigma2 = float(resid @ resid) / max(len(x) - data.n - 1, 1)
        var = np.diag(inv @ (xc.T @ xc) @ inv) * sigma2
    else:
        raise unknown_ci(ci)
    identified, more = _identified(x)
    identified = distrust_zero_variance(var, identified, scale=float(np.abs(data.y).max()))
    more = max(more, 1) if not identified.all() else 0
    return coef, var, {"alpha": alpha, "intercept": intercept}, identified, more


def _identified(x: np.ndarray) -> tuple[np.ndarray, int]:
    """(identified (n,) bool, more evaluations needed) for a ridge fit with intercept on rows x (u, n).

    1. Value: coefficient i is identified when e_i has no component along the null space of the centred
       design, apart from the all-ones direction: on a design with one coalition size (``datamodel``) a
       shift common to every player is confounded with the intercept, which is harmless for a linear
       attribution compared within itself (ranking, LDS). A player always in or always out is unidentified.
    2. Variance: the fit needs at least one residual degree of freedom, u >= rank + 2 (intercept).
    """
    u, n = x.shape
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=True)
    rank = int(np.sum(s > s.max() * max(u, n) * np.finfo(float).eps)) if s.size else 0
    null = vt[rank:].T  # (n, n - rank)
    ones = np.ones(n) / math.sqrt(n)
    shift_free = null.shape[1] > 0 and np.linalg.norm(ones - null @ (null.T @ ones)) < 1e-8
    if shift_free:
        null = null - np.outer(ones, ones @ null)  # N ∩ 1⊥ spans the same directions once 1 is removed
    identified = (null**2).sum(axis=1) <= 1e-10
    target = n - (1 if shift_free else 0)
    if u < rank + 2:
        identified[:] = False
    return identified, max(target + 2 - u, target - rank, 0)


def _fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    ci = "bootstrap" if ci == "auto" else ci
    value, var, extras, identified, more = _datamodel(data, ci, n_boot, seed, options.get("alphas"))
    return MethodResult(value=value, var=var, ci=ci, extras=extras, identified=identified, more_evaluations=more)


register_method("datamodel", _fit, options={"ci", "n_boot", "alphas"},
                summary="ridge datamodel with intercept, penalty by leave-one-out CV")
