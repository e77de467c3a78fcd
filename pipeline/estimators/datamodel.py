"""``datamodel``: ridge regression of v(S) on z_S with an intercept (Ilyas et al. 2022; numpy only).

The penalty is chosen by exact leave-one-out CV. A linear attribution, not efficient. Intervals: a row
bootstrap at the chosen penalty (``bootstrap``, the default) or the ridge sandwich (``analytic``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from contribshap.pipeline.estimators._base import CI_KINDS, Data, MethodResult, register_method


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
) -> tuple[np.ndarray, np.ndarray, dict]:
    if data.n_unique < 5:
        raise ValueError(f"method 'datamodel' needs at least 5 distinct coalitions; got {data.n_unique}.")
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
        raise ValueError(f"ci must be one of {', '.join(CI_KINDS)}; got {ci!r}.")
    return coef, var, {"alpha": alpha, "intercept": intercept}


def _fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    ci = "bootstrap" if ci == "auto" else ci
    value, var, extras = _datamodel(data, ci, n_boot, seed, options.get("alphas"))
    return MethodResult(value=value, var=var, ci=ci, extras=extras)


register_method("datamodel", _fit, options={"ci", "n_boot", "alphas"},
                summary="ridge datamodel with intercept, penalty by leave-one-out CV")
