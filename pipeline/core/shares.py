"""Payout shares: a pool split by credit, with intervals propagated from the estimate (numpy only, no I/O).

The rule (:func:`payout_shares`), after Shapley Royalty Share (Wang et al., arXiv 2404.13964: royalties in
proportion to each contributor's Shapley value, normalised to the pool): a contributor's share of
``pool`` is proportional to its non-negative credit, ``max(credit_i, 0) / Σ_j max(credit_j, 0)``, so the
shares sum to the pool and harmful contributors (negative credit) get nothing. Two options, both as
fractions of the pool:

- ``floor`` F (0 <= F <= 1/n): every contributor gets at least F·pool (a participation minimum, harmful
  ones included); the rest is split in proportion to credit: ``x_i = F + t·w_i``;
- ``cap`` C (C >= 1/n, C >= F): nobody gets more than C·pool; what a capped contributor would have got
  above C is redistributed to the uncapped ones in proportion to their credit (``t`` grows until the
  shares sum to 1: water-filling, exact in at most n steps). When every contributor with positive
  credit is capped and pool is left, the rest is split equally among the others.

With no positive credit at all the pool is split equally. Shares sum to the pool to the last bit
(``math.fsum``; the rounding residual goes to the largest share strictly inside its bounds).

Intervals (:func:`bootstrap_shares`): the credit's sampling distribution is redrawn and pushed through
the rule; the interval of each share is the percentile interval of its draws at ``level``.

- ``resample="units"`` (default up to :data:`BOOTSTRAP_MAX_PLAYERS` players): the store's evaluation rows
  are grouped into **sampling units** (a coalition and its complement, with all their replicates: one
  unit), strata are the size pairs {k, n-k} as in the estimator. Each draw keeps a random half of the
  units of every stratum with at least 2 units (without replacement), re-estimates with
  :func:`contribshap.pipeline.core.estimators.estimate`, and rescales the deviation from the full
  estimate by sqrt(m/d) (m kept, d left out; 1 for an even half): a delete-d jackknife (half-sampling).
  Resampling *with* replacement would not work here: the estimator averages identical rows as
  replicates of one coalition, so a unit drawn twice would count once, and the draws would be too narrow.
  Draws whose re-estimate is not identified are dropped (counted in ``n_dropped``); with fewer than 20
  identified draws the normal approximation is used instead. The endpoints v(∅), v(N) are not resampled:
  they scale every credit alike, which the normalisation removes (they matter only through the clip at 0).
- ``resample="normal"`` (beyond :data:`BOOTSTRAP_MAX_PLAYERS` players, or asked for): credit draws
  ``value + stderr · z`` with independent standard normal z (the estimate's own standard errors, utility
  noise included; correlations between players ignored).
- an estimate that is not identified gives no interval (NaN) and the whole pool is unresolved.

**Unresolved share** (``Shares.unresolved``): half the summed widths of the share intervals, Σ_i (hi_i - lo_i)/2,
at most the pool, as an amount of the pool: how much money the intervals leave free to move between
contributors at this budget (0 = every share pinned down; the pool = nothing is; it shrinks like
1/sqrt(evaluations)). ``Shares.uncertain_payees``:
the pool share held by contributors whose share interval reaches their minimum (F·pool): the budget
cannot tell whether they should be paid more than the floor.

Measured cost of one ``kernelshap`` re-estimate (2 shared CPU cores): n = 11 with 28 rows ~7 ms (200 draws
~1.5 s); n = 30 with 300 rows ~0.15 s (200 draws ~30 s); n = 50 with 200 rows ~0.7 s. Hence the default
switch to the normal approximation above 32 players.

May import: contracts and the core (numpy only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["BOOTSTRAP_MAX_PLAYERS", "Shares", "bootstrap_shares", "normal_shares", "payout_shares", "rule_text",
           "sampling_units"]

#: Above this many players :func:`bootstrap_shares` defaults to the normal approximation (see the timings).
BOOTSTRAP_MAX_PLAYERS = 32
_MIN_DRAWS = 20


def _check_rule(n: int, pool: float, floor: float, cap: float | None) -> None:
    if not (math.isfinite(pool) and pool > 0):
        raise ValueError(f"pool must be a positive number; got {pool!r}")
    if not (math.isfinite(floor) and floor >= 0.0):
        raise ValueError(f"floor must be a fraction of the pool >= 0; got {floor!r}")
    if floor * n > 1.0 + 1e-12:
        raise ValueError(f"floor {floor} x {n} contributors exceeds the pool; use floor <= {1.0 / n:.6g}")
    if cap is not None:
        if not (math.isfinite(cap) and cap > 0):
            raise ValueError(f"cap must be a fraction of the pool > 0; got {cap!r}")
        if cap * n < 1.0 - 1e-12:
            raise ValueError(f"cap {cap} x {n} contributors cannot cover the pool; use cap >= {1.0 / n:.6g}")
        if cap < floor:
            raise ValueError(f"cap {cap} is below floor {floor}; use cap >= floor")


def _fractions(weights: np.ndarray, floor: float, cap: float | None) -> np.ndarray:
    """Fractions of the pool (sum 1) for non-negative weights (n,): floor + proportional, capped, water-filled."""
    n = len(weights)
    eligible = weights > 0
    if not eligible.any():
        return np.full(n, 1.0 / n)
    hi = math.inf if cap is None else cap
    k = int(eligible.sum())
    if k * hi + (n - k) * floor < 1.0:  # every paid contributor at the cap: the rest equally to the others
        return np.where(eligible, hi, (1.0 - k * hi) / (n - k))
    capped = np.zeros(n, dtype=bool)
    while True:
        free = ~capped
        at_cap = capped.sum() * hi if capped.any() else 0.0
        t = (1.0 - at_cap - free.sum() * floor) / weights[free].sum()
        x = np.where(capped, hi, floor + t * weights)
        over = free & (x > hi)
        if not over.any():
            return x
        capped |= over


def payout_shares(credit: np.ndarray, pool: float = 1.0, *, floor: float = 0.0, cap: float | None = None) -> np.ndarray:
    """Shares of ``pool`` by the rule of the module docstring.

    Args:
        credit: float (n,) credit (benefit to the model; negative = harmful), all finite.
        pool: the amount to split, > 0.
        floor: minimum share as a fraction of the pool (0 <= floor <= 1/n).
        cap: maximum share as a fraction of the pool (>= 1/n and >= floor), or None.

    Returns:
        float (n,), each in [floor·pool, cap·pool], ``math.fsum`` of them == pool.

    Example:
        >>> payout_shares(np.array([3.0, 1.0, -2.0]), 100.0).tolist()
        [75.0, 25.0, 0.0]
    """
    credit = np.asarray(credit, dtype=float)
    if credit.ndim != 1 or len(credit) < 1:
        raise ValueError(f"credit must be a 1-d array of contributors; got shape {credit.shape}")
    if not np.isfinite(credit).all():
        raise ValueError("credit has NaN or infinite entries; shares need a finite credit for every contributor")
    n = len(credit)
    _check_rule(n, float(pool), float(floor), cap)
    x = _fractions(np.clip(credit, 0.0, None), float(floor), cap)
    shares = pool * x
    lo, hi = floor * pool, (math.inf if cap is None else cap * pool)
    for _ in range(3):  # put the rounding residual on the largest share strictly inside its bounds
        residual = pool - math.fsum(shares)
        if residual == 0.0:
            break
        inside = np.flatnonzero((shares + residual >= lo) & (shares + residual <= hi))
        j = int(inside[np.argmax(shares[inside])]) if len(inside) else int(np.argmax(shares))
        shares[j] += residual
    return shares


def rule_text(pool: float, floor: float, cap: float | None) -> str:
    """The rule in words, e.g. ``"pool 1000 split in proportion to non-negative credit; floor 1%, cap 30%"``."""
    options = [f"floor {floor:.3g} of the pool each"] if floor > 0 else []
    options += [f"cap {cap:.3g} of the pool (excess redistributed by credit)"] if cap is not None else []
    return (f"pool {pool:g} split in proportion to non-negative credit (Shapley Royalty Share, arXiv 2404.13964)"
            + (f"; {', '.join(options)}" if options else ""))


def sampling_units(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sampling unit and stratum of every row.

    Args:
        masks: bool (m, n).

    Returns:
        ``(unit, stratum)``, int (m,) each: rows of one coalition or its complement share a unit (replicates
        included); stratum = min(|S|, n - |S|); the empty and the full coalition get unit and stratum -1.
    """
    masks = np.asarray(masks, dtype=bool)
    m, n = masks.shape
    sizes = masks.sum(axis=1)
    unit = np.full(m, -1, dtype=np.int64)
    stratum = np.where((sizes == 0) | (sizes == n), -1, np.minimum(sizes, n - sizes)).astype(np.int64)
    keys: dict[bytes, int] = {}
    for r in range(m):
        if stratum[r] < 0:
            continue
        row = masks[r] if not masks[r, 0] else ~masks[r]  # a coalition and its complement: one key
        unit[r] = keys.setdefault(np.packbits(row).tobytes(), len(keys))
    return unit, stratum


@dataclass
class Shares:
    """Shares of a pool with their intervals (see the module docstring for every field's meaning).

    Attributes:
        share: float (n,), the shares of the point estimate; sum == pool.
        low, high: float (n,), the percentile interval of each share at ``level`` (NaN: not identified).
        pool, floor, cap: the rule. level: interval level.
        resample: ``"units"`` (half-sampling of sampling units), ``"normal"`` or ``"none"`` (not identified).
        n_draws: draws used; n_dropped: unit draws dropped because their re-estimate was not identified.
        unresolved: Σ (high - low) / 2, in pool units (the pool when not identified).
        uncertain_payees: pool held by contributors whose interval reaches floor·pool (the pool when not identified).
        identified: whether the estimate (and so the intervals) is identified.
        extras: ``n_units``, ``scale`` (the sqrt(m/d) of the half-samples), ``seed``.
    """

    share: np.ndarray
    low: np.ndarray
    high: np.ndarray
    pool: float
    floor: float
    cap: float | None
    level: float
    resample: str
    n_draws: int
    n_dropped: int
    unresolved: float
    uncertain_payees: float
    identified: bool
    extras: dict[str, Any] = field(default_factory=dict)


def _summary(share: np.ndarray, draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    alpha = (1.0 - level) / 2.0
    low = np.quantile(draws, alpha, axis=0)
    high = np.quantile(draws, 1.0 - alpha, axis=0)
    low, high = np.minimum(low, share), np.maximum(high, share)  # the point share lies inside its interval
    return low, high


def normal_shares(value: np.ndarray, stderr: np.ndarray, identified: np.ndarray, *, sign: float = 1.0,
                  pool: float = 1.0, floor: float = 0.0, cap: float | None = None, level: float = 0.95,
                  n_draws: int = 200, seed: int = 0) -> Shares:
    """Shares with intervals from the normal approximation: credit draws ``sign·(value + stderr·z)``, z iid N(0, 1).

    Args:
        value, stderr: float (n,) of an estimate; identified: bool (n,). The rest as :func:`bootstrap_shares`.
    """
    value = np.asarray(value, dtype=float)
    n = len(value)
    _check_rule(n, float(pool), float(floor), cap)
    credit = sign * value
    share = payout_shares(np.nan_to_num(credit), pool, floor=floor, cap=cap)
    if not np.all(identified):
        nan = np.full(n, np.nan)
        return Shares(share, nan, nan.copy(), float(pool), float(floor), cap, float(level), "none", 0, 0,
                      float(pool), float(pool), False, {"seed": seed})
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((int(n_draws), n))
    err = np.nan_to_num(np.asarray(stderr, dtype=float))
    sample = np.vstack([payout_shares(credit + err * z[b], pool, floor=floor, cap=cap) for b in range(int(n_draws))])
    low, high = _summary(share, sample, level)
    return Shares(share, low, high, float(pool), float(floor), cap, float(level), "normal", int(n_draws), 0,
                  _unresolved(low, high, pool), _uncertain(share, low, pool, floor), True, {"seed": seed})


def _unresolved(low: np.ndarray, high: np.ndarray, pool: float) -> float:
    """Half the summed widths of the share intervals, at most the pool."""
    return float(min(pool, math.fsum(high - low) / 2.0))


def _uncertain(share: np.ndarray, low: np.ndarray, pool: float, floor: float) -> float:
    """Pool held by contributors whose share interval reaches the minimum floor·pool."""
    return float(math.fsum(share[low <= floor * pool + 1e-12 * pool]))


def bootstrap_shares(masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, *, sign: float = 1.0,
                     pool: float = 1.0, floor: float = 0.0, cap: float | None = None, method: str = "kernelshap",
                     level: float = 0.95, n_draws: int = 200, seed: int = 0, resample: str = "auto",
                     estimate_options: dict[str, Any] | None = None, full_estimate: Any = None) -> Shares:
    """Shares of ``pool`` from the rows of one property, with intervals (module docstring).

    Args:
        masks: bool (m, n) evaluated coalitions (replicates = identical rows; endpoints allowed).
        values: float (m,) the property of each row (NaN rows are dropped by the estimator).
        v_empty, v_full: the endpoints. sign: +1 (higher is better) or -1 (lower is better): credit = sign·φ.
        pool, floor, cap: the rule (:func:`payout_shares`). method, level: of the estimate.
        n_draws: draws of the interval (>= 20). seed: seeds the draws (same seed, same result).
        resample: ``"auto"`` (units up to :data:`BOOTSTRAP_MAX_PLAYERS` players, else normal),
            ``"units"`` or ``"normal"``.
        estimate_options: further options for ``estimate`` (``draw_counts``, one per row, follows the rows kept).
        full_estimate: the estimate on every row, when the caller has it (the reducer's: the same call with the
            same method, level, seed and options); None: fitted here.

    Returns:
        :class:`Shares`.
    """
    import warnings

    from contribshap.pipeline.core.estimators import estimate

    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=float)
    n = masks.shape[1]
    _check_rule(n, float(pool), float(floor), cap)
    if resample not in ("auto", "units", "normal"):
        raise ValueError(f"resample must be auto, units or normal; got {resample!r}")
    if int(n_draws) < _MIN_DRAWS:
        raise ValueError(f"n_draws must be >= {_MIN_DRAWS}; got {n_draws}")
    options = dict(estimate_options or {})

    def fit(rows: np.ndarray) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept = {k: (np.asarray(v)[rows] if k == "draw_counts" else v) for k, v in options.items()}
            return estimate(masks[rows], values[rows], v_empty, v_full, method=method, level=level, seed=seed, **kept)

    est = full_estimate if full_estimate is not None else fit(np.arange(len(masks)))
    credit = sign * np.asarray(est.value, dtype=float)
    share = payout_shares(np.nan_to_num(credit), pool, floor=floor, cap=cap)
    nan = np.full(n, np.nan)
    if not est.all_identified:
        return Shares(share, nan, nan.copy(), pool, floor, cap, level, "none", 0, 0, float(pool), float(pool), False,
                      {"seed": seed})
    kind = ("units" if n <= BOOTSTRAP_MAX_PLAYERS else "normal") if resample == "auto" else resample
    rng = np.random.default_rng(seed)
    draws: list[np.ndarray] = []
    dropped = 0
    extras: dict[str, Any] = {"seed": seed}
    if kind == "units":
        unit, stratum = sampling_units(masks)
        by_stratum: dict[int, list[int]] = {}
        for u in np.unique(unit[unit >= 0]):
            by_stratum.setdefault(int(stratum[unit == u][0]), []).append(int(u))
        resampled = {h: us for h, us in by_stratum.items() if len(us) >= 2}
        kept_total = sum(len(us) - len(us) // 2 for us in resampled.values())
        left_total = sum(len(us) // 2 for us in resampled.values())
        scale = math.sqrt(kept_total / left_total) if left_total else 0.0
        extras.update(n_units=int(sum(len(us) for us in by_stratum.values())), scale=scale)
        if left_total:
            fixed = [u for h, us in by_stratum.items() if h not in resampled for u in us]
            for _ in range(int(n_draws)):
                keep = list(fixed)
                for us in resampled.values():
                    keep += rng.choice(us, size=len(us) - len(us) // 2, replace=False).tolist()
                rows = np.flatnonzero((unit < 0) | np.isin(unit, keep))
                try:
                    sub = fit(rows)
                except (ValueError, np.linalg.LinAlgError):  # too few rows left for the estimator
                    dropped += 1
                    continue
                if not sub.all_identified:
                    dropped += 1
                    continue
                phi = np.asarray(est.value) + scale * (np.asarray(sub.value) - np.asarray(est.value))
                draws.append(payout_shares(sign * phi, pool, floor=floor, cap=cap))
        if len(draws) < _MIN_DRAWS:
            kind, draws = "normal", []
            extras["fallback"] = f"only {n_draws - dropped} of {n_draws} half-samples were identified"
    if kind == "normal":
        normal = normal_shares(np.asarray(est.value), np.asarray(est.stderr), np.asarray(est.identified), sign=sign,
                               pool=pool, floor=floor, cap=cap, level=level, n_draws=n_draws, seed=seed)
        normal.extras.update({k: v for k, v in extras.items() if k not in normal.extras})
        return normal
    sample = np.vstack(draws)
    low, high = _summary(share, sample, level)
    return Shares(share, low, high, float(pool), float(floor), cap, float(level), kind, len(draws), dropped,
                  _unresolved(low, high, pool), _uncertain(share, low, pool, floor), True, extras)
