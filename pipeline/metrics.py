"""Evaluation metrics for attributions (numpy/scipy only): LDS, counterfactual sets, correlations, errors.

Notation
--------
- ``attributions``: float (n,) — one score φ_i per contributor — or (k, n) for k attribution vectors
  (e.g. estimated under k training seeds; the LDS is then averaged over them).
- ``subset_masks``: bool (s, n), held-out subsets S_j (e.g. ``sample_coalitions(n, s, "datamodel")``).
- ``measured``: float (s,) — v(S_j) — or (s, r) for r retraining seeds (averaged per subset, NaN-aware).

LDS (linear datamodeling score, Ilyas et al. 2022; Lin et al. 2025 Sec. 5)
    LDS = 100 · Spearman_j( Σ_{i∈S_j} φ_i , v(S_j) ),  with a percentile bootstrap CI over subsets.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

COUNTERFACTUALS: tuple[str, ...] = ("remove_top", "remove_bottom", "keep_top", "keep_bottom")
"""Names of the masks :func:`top_k_removal_masks` returns."""


@dataclass(frozen=True)
class LDSResult:
    """Linear datamodeling score on the 0..100 scale (−100 = perfectly reversed ranking).

    Attributes:
        value: 100 × Spearman (averaged over attribution vectors when several were given).
        ci_low, ci_high: percentile bootstrap interval at ``level`` over subsets (NaN if undefined).
        n_subsets: subsets used (after dropping those without a finite measured value).
        level: CI level.
        per_attribution: the LDS of each attribution vector (length k; [value] when k = 1).
    """

    value: float
    ci_low: float
    ci_high: float
    n_subsets: int
    level: float = 0.95
    per_attribution: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["per_attribution"] = list(self.per_attribution)
        return out


# --------------------------------------------------------------------------------------------------------
# Correlations and errors
# --------------------------------------------------------------------------------------------------------
def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) of two 1-d arrays; NaN if either is constant."""
    x, y = _pair(x, y, "spearman")
    return pearson(stats.rankdata(x), stats.rankdata(y))


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two 1-d arrays; NaN if either is constant or shorter than 2."""
    x, y = _pair(x, y, "pearson")
    if len(x) < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return math.nan if denom == 0.0 else float(xc @ yc) / denom


def relative_l2_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """‖estimate − truth‖₂ / ‖truth‖₂ (inf when truth is all zeros and the estimate is not)."""
    estimate, truth = _pair(estimate, truth, "relative_l2_error")
    num = float(np.linalg.norm(estimate - truth))
    den = float(np.linalg.norm(truth))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def _pair(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"{name} needs two 1-d arrays of equal length; got shapes {x.shape} and {y.shape}.")
    return x, y


# --------------------------------------------------------------------------------------------------------
# LDS
# --------------------------------------------------------------------------------------------------------
def lds(
    attributions: np.ndarray,
    subset_masks: np.ndarray,
    measured: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> LDSResult:
    """Linear datamodeling score with a bootstrap CI over held-out subsets.

    Args:
        attributions: float (n,) or (k, n); with k vectors the LDS is the mean of their k LDS values
            (each bootstrap resample recomputes that mean on the same resampled subsets).
        subset_masks: bool (s, n) held-out subsets.
        measured: float (s,) or (s, r): measured v(S_j), r retraining seeds averaged (NaN ignored);
            subsets with no finite value are dropped.
        n_boot: bootstrap resamples (default 1000, >= 0; 0 skips the CI).
        level: CI level in (0, 1).
        seed: bootstrap seed.

    Returns:
        :class:`LDSResult`; value NaN when fewer than 3 subsets remain or the ranks are constant.

    Example:
        >>> masks = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
        >>> lds(np.array([1.0, 2.0, 3.0]), masks, masks @ np.array([1.0, 2.0, 3.0]), n_boot=0).value
        100.0
    """
    # 1. validate and average measured values over seeds
    phi = np.atleast_2d(np.asarray(attributions, dtype=np.float64))
    masks = np.asarray(subset_masks, dtype=bool)
    y = np.asarray(measured, dtype=np.float64)
    if masks.ndim != 2 or phi.ndim != 2 or phi.shape[1] != masks.shape[1]:
        raise ValueError(
            f"lds needs attributions (n,) or (k, n) and subset_masks (s, n) with the same n; "
            f"got {phi.shape} and {masks.shape}."
        )
    if y.ndim == 2:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.nanmean(y, axis=1)
    if y.shape != (masks.shape[0],):
        raise ValueError(f"measured must have shape ({masks.shape[0]},) or ({masks.shape[0]}, r); got {y.shape}.")
    if not 0.0 < level < 1.0 or n_boot < 0:
        raise ValueError(f"level must lie in (0, 1) and n_boot >= 0; got level={level!r}, n_boot={n_boot!r}.")
    keep = np.isfinite(y)
    masks, y = masks[keep], y[keep]
    s = len(y)
    # 2. point estimate: per attribution vector, then averaged
    sums = masks.astype(np.float64) @ phi.T  # (s, k)
    if s < 3:
        return LDSResult(math.nan, math.nan, math.nan, s, level, tuple(math.nan for _ in phi))
    per = [100.0 * spearman(sums[:, j], y) for j in range(phi.shape[0])]
    value = float(np.mean(per))
    # 3. bootstrap over subsets
    lo = hi = math.nan
    if n_boot > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D5]))
        draws = np.empty(n_boot)
        for b in range(n_boot):
            idx = rng.integers(0, s, size=s)
            draws[b] = np.mean([100.0 * spearman(sums[idx, j], y[idx]) for j in range(phi.shape[0])])
        draws = draws[np.isfinite(draws)]
        if len(draws) >= max(10, n_boot // 10):
            lo, hi = (float(q) for q in np.quantile(draws, [(1 - level) / 2, (1 + level) / 2]))
    return LDSResult(value, lo, hi, s, float(level), tuple(float(p) for p in per))


def lds_over_seeds(
    attributions: np.ndarray,
    subset_masks: np.ndarray,
    measured: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> LDSResult:
    """LDS against each retraining seed separately, averaged (Datamodels' per-seed protocol).

    Args:
        attributions: float (n,) or (k, n). subset_masks: bool (s, n).
        measured: float (s, r): one column per retraining seed.

    Returns:
        :class:`LDSResult` whose value is the mean over seeds (and attribution vectors) of the LDS; the CI
        resamples subsets; ``per_attribution`` holds the per-seed means.
    """
    y = np.asarray(measured, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"lds_over_seeds needs measured of shape (s, r); got {y.shape}. Use lds for (s,).")
    per_seed = [lds(attributions, subset_masks, y[:, j], n_boot=0, level=level) for j in range(y.shape[1])]
    values = np.array([r.value for r in per_seed])
    masks = np.asarray(subset_masks, dtype=bool)
    phi = np.atleast_2d(np.asarray(attributions, dtype=np.float64))
    sums = masks.astype(np.float64) @ phi.T
    lo = hi = math.nan
    if n_boot > 0 and len(y) >= 3:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D6]))
        draws = []
        for _ in range(n_boot):
            idx = rng.integers(0, len(y), size=len(y))
            stat = []
            for j in range(y.shape[1]):
                ok = np.isfinite(y[idx, j])
                for a in range(phi.shape[0]):
                    stat.append(100.0 * spearman(sums[idx, a][ok], y[idx, j][ok]) if ok.sum() >= 3 else math.nan)
            draws.append(np.nanmean(stat) if np.isfinite(stat).any() else math.nan)
        d = np.array(draws)
        d = d[np.isfinite(d)]
        if len(d) >= max(10, n_boot // 10):
            lo, hi = (float(q) for q in np.quantile(d, [(1 - level) / 2, (1 + level) / 2]))
    n_used = int(np.isfinite(y).any(axis=1).sum())
    return LDSResult(float(np.nanmean(values)), lo, hi, n_used, float(level), tuple(float(v) for v in values))


# --------------------------------------------------------------------------------------------------------
# Counterfactuals
# --------------------------------------------------------------------------------------------------------
def top_k_removal_masks(
    values: np.ndarray, k_frac: float, *, higher_is_better: bool = True
) -> dict[str, np.ndarray]:
    """Coalition masks for the counterfactual checks at one fraction.

    "Top" contributors are the most beneficial ones: the highest attributions when a higher property is
    better (accuracy, IS), the lowest (most negative) when lower is better (FID). k = max(1, round(k_frac·n)),
    at most n − 1. Ties are broken by contributor index (lower index ranks first), so results are
    deterministic; NaN attributions rank last.

    Args:
        values: float (n,) attributions.
        k_frac: fraction in (0, 1).
        higher_is_better: direction of the property the attributions were computed for.

    Returns:
        dict with bool (n,) masks (True = kept in the coalition), keys :data:`COUNTERFACTUALS`:
        ``remove_top`` (N minus the top k), ``remove_bottom`` (N minus the bottom k), ``keep_top`` (only
        the top k), ``keep_bottom`` (only the bottom k).

    Example:
        >>> top_k_removal_masks(np.array([0.1, 0.5, -0.2, 0.3]), 0.25)["remove_top"].tolist()
        [True, False, True, True]
    """
    phi = np.asarray(values, dtype=np.float64)
    n = phi.shape[0] if phi.ndim == 1 else 0
    if n < 2:
        raise ValueError(f"values must be a 1-d array with at least 2 contributors; got shape {phi.shape}.")
    if not 0.0 < k_frac < 1.0:
        raise ValueError(f"k_frac must lie in (0, 1), e.g. 0.1 for the top 10%; got {k_frac!r}.")
    k = min(max(1, round(k_frac * n)), n - 1)
    benefit = phi if higher_is_better else -phi
    benefit = np.where(np.isnan(benefit), -np.inf, benefit)
    order = np.lexsort((np.arange(n), -benefit))  # most beneficial first, index breaks ties
    top = np.zeros(n, dtype=bool)
    top[order[:k]] = True
    bottom = np.zeros(n, dtype=bool)
    bottom[order[n - k :]] = True
    return {"remove_top": ~top, "remove_bottom": ~bottom, "keep_top": top, "keep_bottom": bottom}
