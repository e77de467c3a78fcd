"""Trust the numbers: linear datamodeling score (LDS) and counterfactual removal, for every method.

Two checks of an attribution vector ``phi`` (shape (n,), one score per contributor) against fresh
evaluations of the game that the estimators never saw:

- **LDS** (Ilyas et al. 2022; Lin et al. 2025, Sec. 5): draw held-out subsets S_1..S_m, each keeping a
  fraction ``alpha`` of the contributors; evaluate v(S_j) under one or more training seeds; then
  ``LDS = 100 * Spearman( sum_{i in S_j} phi_i ,  mean_seed v(S_j) )``. A CI comes from a bootstrap that
  resamples subsets and seeds together; per-seed LDS values are reported too.
- **Counterfactual**: remove the top-k fraction of contributors by ``phi`` (largest scores) and, separately,
  keep only the top (remove the bottom-k fraction); re-evaluate, and report the relative change
  ``(v(N minus R) - v(N)) / |v(N)|`` per seed with a t-interval over seeds. A good attribution makes removing
  the top lower the property the most, removing the bottom raise it (scores are in the property's units:
  for a lower-is-better property such as FID the "top" contributors are the ones that raise FID).

Notation map: ``masks`` (m, n) bool = the held-out subsets S_j; ``values`` (s, m) = v_seed(S_j);
``scores`` (n,) = phi; ``sums`` (m,) = masks @ phi.

The held-out subsets go through the same plan/driver/store as everything else (plan section ``holdout``
and ``counterfactual``, their own store namespace when the fine-tune mode or seed is overridden) and never
reach the estimators. The numpy part of this module (``lds_score``, ``counterfactual_sets``,
``relative_change``) needs no store.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

# --------------------------------------------------------------------------------------------------------
# numpy core
# --------------------------------------------------------------------------------------------------------


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties); NaN if either is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of equal length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        return math.nan
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return math.nan
    return float(rx @ ry) / denom


@dataclass
class LdsResult:
    """LDS of one attribution vector on one property.

    Attributes:
        value: 100 x Spearman(sum of attributions over each subset, seed-averaged measured value); NaN when
            the sums or the values are constant.
        ci_low, ci_high: percentile bootstrap CI at ``level`` (subsets and seeds resampled together).
        per_seed: LDS computed with each seed's values alone (length n_seeds).
        n_subsets: subsets with at least one finite value; n_seeds: seeds (rows of ``values``).
        level: confidence level of the CI.
    """

    value: float
    ci_low: float
    ci_high: float
    per_seed: list[float] = field(default_factory=list)
    n_subsets: int = 0
    n_seeds: int = 0
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lds_score(
    masks: np.ndarray,
    scores: np.ndarray,
    values: np.ndarray,
    *,
    level: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LdsResult:
    """Linear datamodeling score with a bootstrap CI over subsets and seeds.

    Args:
        masks: bool array (m, n): held-out subsets.
        scores: float array (n,): attribution per contributor (any method).
        values: float array (m,) or (s, m): measured property of each subset under s training seeds; NaN for
            a failed evaluation (a subset with no finite value is dropped).
        level: CI level in (0, 1), default 0.95.
        n_bootstrap: bootstrap resamples (default 1000); each resamples the m subsets and the s seeds with
            replacement and recomputes the statistic; resamples that give NaN (constant ranks) are skipped.
        seed: bootstrap seed.

    Returns:
        :class:`LdsResult` (values on the 0..100 scale; -100 for a perfectly reversed ranking).

    Example:
        >>> masks = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
        >>> lds_score(masks, np.array([1.0, 2.0, 3.0]), masks @ np.array([1.0, 2.0, 3.0])).value
        100.0
    """
    # 1. Validate shapes.
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if masks.ndim != 2 or scores.shape != (masks.shape[1],) or values.shape[1] != masks.shape[0]:
        raise ValueError(
            f"lds_score needs masks (m, n), scores (n,), values (s, m); got {masks.shape}, {scores.shape}, "
            f"{values.shape}"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    # 2. Drop subsets without any finite value; seed means ignore NaN.
    keep = np.isfinite(values).any(axis=0)
    masks, values = masks[keep], values[:, keep]
    m, s = masks.shape[0], values.shape[0]
    sums = masks.astype(float) @ scores
    if m < 3:
        return LdsResult(math.nan, math.nan, math.nan, [math.nan] * s, m, s, level)

    def _stat(idx: np.ndarray, seed_idx: np.ndarray) -> float:
        sub = values[np.ix_(seed_idx, idx)]
        with np.errstate(all="ignore"):
            mean = np.nanmean(sub, axis=0) if np.isnan(sub).any() else sub.mean(axis=0)
        ok = np.isfinite(mean)
        return 100.0 * spearman(sums[idx][ok], mean[ok])

    # 3. Point estimate and per-seed LDS.
    all_idx, all_seeds = np.arange(m), np.arange(s)
    point = _stat(all_idx, all_seeds)
    per_seed = [_stat(all_idx, np.array([j])) for j in range(s)]
    # 4. Bootstrap over subsets and seeds together.
    rng = np.random.default_rng(seed)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        boot[b] = _stat(rng.integers(0, m, m), rng.integers(0, s, s) if s > 1 else all_seeds)
    boot = boot[np.isfinite(boot)]
    if len(boot) < max(10, n_bootstrap // 10):
        lo = hi = math.nan
    else:
        lo, hi = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return LdsResult(float(point), lo, hi, [float(v) for v in per_seed], m, s, level)


def counterfactual_sets(scores: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contributors to remove for the two counterfactuals at one fraction.

    Args:
        scores: float array (n,): attribution per contributor (NaN counts as the lowest score).
        fraction: k in (0, 1): share of contributors to remove; ``max(1, round(k * n))`` are removed
            (at most n - 1).

    Returns:
        ``(top, bottom)``: index arrays (sorted) of the highest-scoring and lowest-scoring contributors.
        Ties are broken by contributor index (lower index first among the top), so results are
        deterministic.
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"top_k fraction must be in (0, 1), got {fraction}; e.g. 0.1 for the top 10%")
    if n < 2:
        raise ValueError(f"counterfactuals need at least 2 contributors, got {n}")
    k = min(n - 1, max(1, round(fraction * n)))
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.lexsort((np.arange(n), -filled))  # descending score, then ascending index
    return np.sort(order[:k]), np.sort(order[::-1][:k])


def removal_mask(n: int, removed: np.ndarray) -> np.ndarray:
    """Bool mask (n,) of the full coalition without the ``removed`` indices."""
    mask = np.ones(n, dtype=bool)
    mask[np.asarray(removed, dtype=int)] = False
    return mask


def relative_change(v_after: np.ndarray, v_full: np.ndarray, *, level: float = 0.95) -> dict[str, float]:
    """Relative change ``(v_after - v_full) / |v_full|`` per seed, its mean and a t-interval over seeds.

    Args:
        v_after: float array (s,): property after the removal, one per seed.
        v_full: float array (s,): property of the full coalition under the same seeds.
        level: CI level.

    Returns:
        ``{"value", "ci_low", "ci_high", "n_seeds", "absolute"}`` where ``absolute`` is the mean of
        ``v_after - v_full``. With one seed the CI is NaN (no spread to estimate); a zero ``v_full`` gives
        NaN relative values.
    """
    v_after = np.asarray(v_after, dtype=float)
    v_full = np.asarray(v_full, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (v_after - v_full) / np.abs(v_full)
    ok = np.isfinite(rel)
    rel, diff = rel[ok], (v_after - v_full)[ok]
    s = len(rel)
    if s == 0:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 0, "absolute": math.nan}
    mean = float(rel.mean())
    if s > 1:
        half = float(stats.t.ppf((1 + level) / 2, s - 1) * rel.std(ddof=1) / math.sqrt(s))
        lo, hi = mean - half, mean + half
    else:
        lo = hi = math.nan
    return {"value": mean, "ci_low": lo, "ci_high": hi, "n_seeds": s, "absolute": float(diff.mean())}
