"""Statements about many contributors at once: simultaneous intervals, FDR sets, top-k, rank intervals (numpy).

With n nominal 95% intervals about 5% of them miss by chance (13 of 258); a user acting on "every
contributor whose interval lies below zero" needs a statement that holds for the whole set. This module
gives four, all from an :class:`~contribshap.pipeline.estimators.Estimate`:

- **Simultaneous intervals** (:func:`simultaneous_interval`): value ± c·stderr with one critical value c
  for all players (carried to each player's t tail where its variance has few degrees of freedom), the ``level`` quantile of max_i |Z_i| / sd_i (max-|t|), Z the estimator's error
  distribution. For the regression methods Z is drawn by a Gaussian multiplier bootstrap over the sampling
  units (:func:`max_t_critical`): Z = Σ_u ξ_u (g_u - ḡ_h) + the utility-noise terms, ξ_u ~ N(0, 1), with
  g_u the unit's influence row of the interval's own (collapsed-stratum) variance, so the draws carry the
  correlation of the players' errors (under efficiency they are negatively correlated: the errors sum to
  the endpoints' noise). c is computed once at fit time for levels 0.90 and 0.95 (and the estimate's
  level) and kept in ``extras["simultaneous"]``; methods without influence rows get the Bonferroni value
  z_{1 - (1 - level) / (2 n)} (valid under any dependence, conservative).
- **FDR sets** (:func:`fdr_set`): "harmful at FDR q": Benjamini-Hochberg at q on the one-sided p-values
  p_i = Φ(value_i / stderr_i) (small when the value is clearly below 0); "helpful" likewise with the sign
  flipped. The expected share of false entries in the set is at most q when the p-values are independent
  or positively dependent; the efficiency constraint makes a little negative dependence, measured in
  ``bench/coverage.py`` (false discovery proportion per cell).
- **Top k with confidence** (:func:`top_k_sure`): players that are in the top k for every vector of values
  inside the simultaneous intervals: fewer than k others can exceed them (another's upper bound above
  their lower bound).
- **Rank intervals** (:func:`rank_intervals`): the ranks each player can take inside the simultaneous
  intervals, [1 + #{j: low_j > high_i}, n - #{j: high_j < low_i}] (1 = largest value). Players whose
  rank intervals overlap are the ones the budget cannot tell apart (:func:`unresolved`).

A player that is not identified has an infinite interval: it is in no set, can take every rank, and
widens the rank intervals of the others.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIMULTANEOUS_LEVELS: tuple[float, ...] = (0.90, 0.95)
"""Levels whose max-|t| critical value every estimate carries (plus its own ``level``)."""

N_DRAWS = 4000
"""Multiplier-bootstrap draws behind a critical value (Monte-Carlo SD of a 0.95 quantile ~0.01 in c)."""


def max_t_critical(factor: np.ndarray, diag: np.ndarray, identified: np.ndarray, levels: tuple[float, ...],
                   seed: int = 0, draws: int = N_DRAWS) -> list[float]:
    """Critical values c(level) = quantile_level max_{i identified} |Z_i| / sd_i, Z = factor ξ + sqrt(diag) η.

    Args:
        factor: (n, K) float, columns whose outer products sum to the correlated part of the error
            covariance (the centred, scaled unit influence rows; the endpoints' noise).
        diag: (n,) float >= 0, the variance of independent per-player parts (imputed units, row noise).
        identified: (n,) bool, players that enter the maximum.
        levels: levels in (0, 1).
        seed: seed of the Gaussian draws (reproducible).
        draws: number of draws.

    Returns:
        one critical value per level (the normal quantile when one player is identified; nan when none).
    """
    from scipy import stats

    keep = np.asarray(identified, dtype=bool)
    if not keep.any():
        return [float("nan")] * len(levels)
    f = np.asarray(factor, dtype=np.float64)[keep]
    d = np.maximum(np.asarray(diag, dtype=np.float64)[keep], 0.0)
    sd = np.sqrt((f**2).sum(axis=1) + d)
    live = sd > 0
    if live.sum() <= 1:
        return [float(stats.norm.ppf(0.5 + lv / 2.0)) for lv in levels]
    f, d, sd = f[live], d[live], sd[live]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x51A7]))
    peak = np.empty(draws)
    block = 500
    for start in range(0, draws, block):
        b = min(block, draws - start)
        z = f @ rng.standard_normal((f.shape[1], b)) + np.sqrt(d)[:, None] * rng.standard_normal((len(d), b))
        peak[start:start + b] = np.abs(z / sd[:, None]).max(axis=0)
    return [float(np.quantile(peak, lv)) for lv in levels]


def bonferroni_critical(n_identified: int, levels: tuple[float, ...]) -> list[float]:
    """z_{1 - (1 - level) / (2 m)} for m identified players (valid under any dependence)."""
    from scipy import stats

    m = max(int(n_identified), 1)
    return [float(stats.norm.ppf(1.0 - (1.0 - lv) / (2.0 * m))) for lv in levels]


def critical_value(est: Any, level: float = 0.95) -> float:
    """The simultaneous critical value of ``est`` at ``level`` (one of the stored levels, or Bonferroni)."""
    info = est.extras.get("simultaneous") or {}
    for lv, c in zip(info.get("levels", []), info.get("critical", []), strict=False):
        if abs(float(lv) - float(level)) < 1e-12 and c is not None and np.isfinite(c):
            return float(c)
    return bonferroni_critical(int(np.sum(est.identified)), (float(level),))[0]


def simultaneous_halfwidth(est: Any, level: float = 0.95) -> np.ndarray:
    """(n,) half-widths of the simultaneous intervals (inf where a player is not identified).

    The critical value c is on the normal scale (the draws are Gaussian). Where the estimate reports
    effective degrees of freedom ν_i (``extras["dof"]``: its stderr is then widened to the t interval at
    0.95), c is carried to the same tail probability of t_ν: half-width = t_ν^{-1}(1 - p/2) · stderr_i ·
    z_0.975 / t_{ν, 0.975} with p = 2(1 - Φ(c)), so a variance on few degrees of freedom widens the
    simultaneous interval by its own heavier tail, not by the 0.95 one.
    """
    from scipy import stats

    c = critical_value(est, level)
    ok = np.asarray(est.identified, dtype=bool)
    se = np.asarray(est.stderr, dtype=np.float64)
    factor = np.full(se.shape, c)
    dof = est.extras.get("dof")
    if dof is not None and len(dof) == len(se):
        nu = np.array([np.inf if d is None else max(float(d), 1.0) for d in dof])
        finite = np.isfinite(nu)
        if finite.any():
            tail = 2.0 * stats.norm.sf(c)
            z975 = stats.norm.isf(0.025)
            factor[finite] = stats.t.isf(tail / 2.0, nu[finite]) * z975 / stats.t.isf(0.025, nu[finite])
    return np.where(ok, factor * se, np.inf)


def simultaneous_interval(est: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) (n,): intervals that hold for all identified players together with probability ``level``
    (value ± :func:`simultaneous_halfwidth`; (-inf, inf) where a player is not identified)."""
    half = simultaneous_halfwidth(est, level)
    value = np.asarray(est.value, dtype=np.float64)
    return value - half, value + half


def _bh(p: np.ndarray, q: float) -> np.ndarray:
    """Benjamini-Hochberg: bool mask of the rejected hypotheses at FDR q."""
    m = len(p)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.argsort(p, kind="stable")
    passed = p[order] <= q * np.arange(1, m + 1) / m
    out = np.zeros(m, dtype=bool)
    if passed.any():
        out[order[: int(np.flatnonzero(passed).max()) + 1]] = True
    return out


def fdr_set(est: Any, direction: str = "harmful", q: float = 0.10) -> np.ndarray:
    """Indices of the players declared below zero (``"harmful"``) or above zero (``"helpful"``) with the
    false discovery rate controlled at ``q`` (Benjamini-Hochberg over the identified players)."""
    from scipy import stats

    if direction not in ("harmful", "helpful"):
        raise ValueError(f"direction must be 'harmful' or 'helpful'; got {direction!r}.")
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must lie in (0, 1), e.g. 0.10; got {q!r}.")
    ok = np.flatnonzero(np.asarray(est.identified, dtype=bool))
    value, se = np.asarray(est.value)[ok], np.asarray(est.stderr)[ok]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, value / se, np.sign(value) * np.inf)
    p = stats.norm.cdf(t) if direction == "harmful" else stats.norm.sf(t)
    p = np.where(np.isnan(p), 1.0, p)
    return ok[_bh(p, q)]


def rank_intervals(est: Any, level: float = 0.90) -> tuple[np.ndarray, np.ndarray]:
    """(best, worst) (n,) int: the ranks (1 = largest value) each player can take while every value stays
    inside its simultaneous interval at ``level``."""
    low, high = simultaneous_interval(est, level)
    n = len(low)
    above = (low[None, :] > high[:, None]).sum(axis=1)  # players surely above i
    below = (high[None, :] < low[:, None]).sum(axis=1)  # players surely below i
    return 1 + above, n - below


def top_k_sure(est: Any, k: int, level: float = 0.90) -> np.ndarray:
    """Indices of the players that are in the top ``k`` (largest values) with confidence ``level``:
    whose worst possible rank inside the simultaneous intervals is at most k."""
    if not 1 <= int(k) <= len(est.value):
        raise ValueError(f"k must lie in 1..{len(est.value)}; got {k!r}.")
    _, worst = rank_intervals(est, level)
    return np.flatnonzero(worst <= int(k))


def unresolved(est: Any, level: float = 0.90) -> list[list[int]]:
    """Groups of players the budget cannot order: connected runs of players (in order of value) whose rank
    intervals at ``level`` overlap; a group of one is a player whose rank is pinned."""
    best, worst = rank_intervals(est, level)
    order = np.argsort(-np.asarray(est.value), kind="stable")
    groups: list[list[int]] = []
    reach = 0
    for i in order:
        if groups and best[i] <= reach:
            groups[-1].append(int(i))
            reach = max(reach, int(worst[i]))
        else:
            groups.append([int(i)])
            reach = int(worst[i])
    return groups


def statements(est: Any, *, q: float = 0.10, level: float = 0.90, top_k: int | None = None) -> dict[str, Any]:
    """JSON-able summary: harmful / helpful sets at FDR ``q``, the top-``top_k`` sure at ``level`` (if
    given), rank intervals, the groups the budget cannot order, and the number of players whose sign the
    simultaneous intervals resolve."""
    low, high = simultaneous_interval(est, level)
    best, worst = rank_intervals(est, level)
    out: dict[str, Any] = {
        "fdr_q": float(q),
        "harmful": fdr_set(est, "harmful", q).tolist(),
        "helpful": fdr_set(est, "helpful", q).tolist(),
        "level": float(level),
        "critical": critical_value(est, level),
        "sign_resolved": int(np.sum((low > 0) | (high < 0))),
        "rank_best": best.tolist(),
        "rank_worst": worst.tolist(),
        "unresolved_groups": [g for g in unresolved(est, level) if len(g) > 1],
    }
    if top_k is not None:
        out["top_k"] = int(top_k)
        out["top_k_sure"] = top_k_sure(est, top_k, level).tolist()
    return out
