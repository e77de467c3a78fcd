"""Metrics of attributions (numpy/scipy only, no I/O): correlations, LDS, counterfactual sets, orientation.

Notation map (Ilyas et al. 2022; Lin et al. 2025, Sec. 5):

- ``masks`` (m, n) bool: the held-out subsets S_1..S_m (or the estimate rows, for :func:`orient`);
- ``scores`` (n,) float: phi, one attribution per contributor (any method);
- ``values`` (m,) or (s, m) float: v_seed(S_j) under s training seeds (NaN = failed evaluation);
- ``sums`` (m,) = masks @ phi.

- **LDS** = ``100 * Spearman( sum_{i in S_j} phi_i , mean_seed v(S_j) )``, with a percentile bootstrap CI
  that resamples subsets and seeds together, and the LDS of each seed alone (:func:`lds_score`).
- **Held-out subsets** S_j (:func:`holdout_subsets`): fixed-size draws that never equal a coalition any
  method saw (``exclude``); **strata** (:func:`without_members`): the subsets that contain none of a set of
  contributors (e.g. the planted ones), for the LDS "without the obvious one".
- **Counterfactuals**: the top-k / bottom-k contributors by phi (:func:`counterfactual_sets`), the full
  coalition without them (:func:`removal_mask`), and the relative change
  ``(v(N minus R) - v(N)) / |v(N)|`` with a t-interval over seeds (:func:`relative_change`).
- **Orientation** of unsigned scores (similarities) on the estimate rows (:func:`orient`).

Used by ``contribshap evaluate`` (:mod:`contribshap.pipeline.products.evaluate`), the report and the benchmarks.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "LdsResult",
    "counterfactual_sets",
    "holdout_subsets",
    "lds_score",
    "orient",
    "pearson",
    "relative_change",
    "relative_l2_error",
    "removal_mask",
    "spearman",
    "without_members",
]


# --------------------------------------------------------------------------------------------------------
# Correlations and errors
# --------------------------------------------------------------------------------------------------------
def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) of two 1-d arrays; NaN if either is constant.

    Example:
        >>> spearman([1, 2, 3], [10, 30, 20])
        0.5
    """
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
        raise ValueError(f"{name} needs two 1-d arrays of equal length; got shapes {x.shape} and {y.shape}")
    return x, y


# --------------------------------------------------------------------------------------------------------
# LDS
# --------------------------------------------------------------------------------------------------------
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
        if np.isnan(sub).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, dropped below
                mean = np.nanmean(sub, axis=0)
        else:
            mean = sub.mean(axis=0)
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
        rows_b = np.asarray(rng.integers(0, m, size=m))  # rows first, then seeds: the stream's fixed order
        seeds_b = np.asarray(rng.integers(0, s, size=s)) if s > 1 else all_seeds
        boot[b] = _stat(rows_b, seeds_b)
    boot = boot[np.isfinite(boot)]
    if len(boot) < max(10, n_bootstrap // 10):
        lo = hi = math.nan
    else:
        lo, hi = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return LdsResult(float(point), lo, hi, [float(v) for v in per_seed], m, s, level)


def holdout_subsets(
    n: int, m: int, *, alpha: float, seed: int, exclude: set[str] | frozenset[str] = frozenset(),
) -> tuple[np.ndarray, int]:
    """Held-out subsets of the ``datamodel`` design that never equal an excluded coalition.

    The design's stream (each subset keeps ``round(alpha * n)`` contributors, uniformly; distinct draws;
    prefix-stable) is read in order and a draw that equals an excluded coalition is rejected and the next
    one taken, so the subsets are the first ``m`` admissible draws of the stream seeded by ``seed``.
    With nothing excluded this is exactly ``sample_coalitions(n, m, "datamodel", seed=seed, alpha=alpha)``.

    Args:
        n: contributors. m: subsets wanted (fewer come back when fewer admissible subsets exist).
        alpha: fraction of contributors kept, in (0, 1).
        seed: the held-out seed (its own namespace, apart from the plan's seed).
        exclude: mask strings (``"0101..."``, contributor order) that must not be drawn: the coalitions
            the estimators (and the baselines) saw, and the endpoints.

    Returns:
        ``(masks, rejected)``: bool array (k, n), k <= m, and the number of draws rejected.

    Example:
        >>> masks, rejected = holdout_subsets(4, 3, alpha=0.5, seed=0, exclude={"1100"})
        >>> "1100" in {"".join("1" if b else "0" for b in row) for row in masks}
        False
    """
    from contribshap.pipeline.core.designs import sample_coalitions  # numpy-only design module

    size = min(max(round(alpha * n), 1), n - 1)
    excluded = sum(1 for key in exclude if len(key) == n and key.count("1") == size)
    budget = min(math.comb(n, size), int(m) + excluded)  # every rejection can cost at most one more draw
    stream = np.asarray(sample_coalitions(n, budget, "datamodel", seed=seed, alpha=alpha), dtype=bool)
    keys = ["".join("1" if b else "0" for b in row) for row in stream]
    admissible = [j for j, key in enumerate(keys) if key not in exclude]
    kept = admissible[: int(m)]
    read = kept[-1] + 1 if len(kept) == int(m) and kept else len(keys)  # the whole stream when it ran short
    rejected = sum(1 for key in keys[:read] if key in exclude)
    return stream[kept].reshape(len(kept), n), rejected


def without_members(masks: np.ndarray, members: np.ndarray | list[int]) -> np.ndarray:
    """Bool (m,): the subsets (rows of ``masks`` (m, n)) that contain none of ``members`` (indices)."""
    masks = np.asarray(masks, dtype=bool)
    members = np.asarray(members, dtype=int)
    if members.size == 0:
        return np.ones(len(masks), dtype=bool)
    return np.asarray(~masks[:, members].any(axis=1))


# --------------------------------------------------------------------------------------------------------
# Counterfactuals and orientation
# --------------------------------------------------------------------------------------------------------
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


def orient(scores: np.ndarray, masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Give an unsigned score (e.g. a similarity) the sign that fits the property, on training rows.

    The sign is that of Spearman(masks @ scores, values) on the *estimate* rows (never on held-out rows),
    so a similarity that lowers FID is turned into a negative credit for FID, like a Shapley value.

    Args:
        scores: float array (n,). masks: bool array (m, n). values: float array (m,) (NaN skipped).

    Returns:
        ``(sign * scores, sign)`` with sign in {+1.0, -1.0} (+1 when the correlation is NaN).
    """
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    rho = spearman(masks[ok].astype(float) @ np.nan_to_num(scores), values[ok]) if ok.sum() >= 3 else math.nan
    sign = -1.0 if (math.isfinite(rho) and rho < 0) else 1.0
    return sign * np.asarray(scores, dtype=float), sign
