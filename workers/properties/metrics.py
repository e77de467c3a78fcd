"""Built-in properties: FID, log-FID, KID, Inception-style score, diversity, quality.

Formulas (code names -> symbols):
- ``fid`` = ||μ_g - μ_r||² + Tr(Σ_g + Σ_r - 2 (Σ_g Σ_r)^½) (Heusel et al. 2017), via clean-fid's
  ``frechet_distance`` on the generated features' (μ_g, Σ_g) and the cached reference (μ_r, Σ_r).
- ``log_fid`` = log(fid). Not a headline: Shapley values are not invariant to a monotone transform, so
  φ(log_fid) answers another question than φ(fid) (credit for *relative* FID changes, which weighs the
  steps between good models as much as those between bad ones). Kept as a variance-stabilising
  alternative, e.g. when FID spans orders of magnitude across coalitions; read it next to ``fid``.
- ``kid`` = unbiased MMD² with the polynomial kernel k(x, y) = (xᵀy / D + 1)³ (Bińkowski et al. 2018),
  on all pairs (no random subsets, so it is deterministic):
  (1/(m(m-1))) Σ_{i≠j} k(g_i, g_j) + (1/(n(n-1))) Σ_{i≠j} k(r_i, r_j) - (2/(mn)) Σ_{i,j} k(g_i, r_j),
  on features **standardised with the reference statistics** (z = (x - μ_r) / σ_r per dimension, σ_r from
  the diagonal of Σ_r) for both sets, so its scale does not depend on the extractor's (values ~1e-2..10).

FID at a fixed number of generated images n is biased upward (by about Tr(Σ)/n terms; Chong & Forsyth
2020): every coalition uses the same ``sampling.n_images``, so differences between coalitions (all that
Shapley values use) compare like with like, but absolute values are not comparable across settings of n.
- ``fid_inf`` = the FID extrapolated to infinitely many generated images (Chong & Forsyth 2020, "FID∞"):
  FID of nested subsets of ``FID_INF_POINTS`` sizes from n/4 (at least D + 2) to n, a least-squares line
  in 1/size, its intercept. The subsets are one fixed permutation (seed 0), so it is deterministic. It
  removes the 1/n bias (comparable across settings of n) at the price of more variance; costs
  ``FID_INF_POINTS`` Fréchet distances (one matrix square root each: noticeable for 2048-d Inception
  features), so it is opt-in: list it in ``properties``.
- ``inception_score`` = exp( mean_i KL(p(y|x_i) || p(y)) ), p(y) = mean_i p(y|x_i) (Salimans et al. 2016).
- ``diversity`` = Shannon entropy (nats) of the proportions of argmax classes; log K when uniform.
- ``quality`` = mean_i max_y p(y|x_i), the classifier's mean confidence.
"""

from __future__ import annotations

import numpy as np
from contribshap.workers.properties.base import GeneratedFeatures, Reference

_EPS = 1e-12


def _require_probs(generated: GeneratedFeatures, name: str) -> np.ndarray:
    if generated.probs is None:
        raise ValueError(f"property {name!r} needs class probabilities but the feature extractor has no classifier head")
    return generated.probs


def _frechet(features: np.ndarray, reference: Reference) -> float:
    """clean-fid's Fréchet distance between the Gaussian of ``features`` (N, D) and the reference's."""
    from cleanfid.fid import frechet_distance

    features = features.astype(np.float64)
    return float(frechet_distance(features.mean(axis=0), np.cov(features, rowvar=False), reference.mu, reference.sigma))


def fid(generated: GeneratedFeatures, reference: Reference) -> float:
    """Fréchet distance between generated and reference features (lower is better)."""
    return _frechet(generated.features, reference)


#: Subset sizes of ``fid_inf``'s extrapolation.
FID_INF_POINTS = 8


def fid_inf(generated: GeneratedFeatures, reference: Reference) -> float:
    """FID extrapolated to n = ∞ from nested subsets (lower is better; see the module docstring)."""
    features = generated.features
    n, d = features.shape
    smallest = max(n // 4, d + 2)
    if n < smallest + FID_INF_POINTS:
        raise ValueError(f"property 'fid_inf' needs at least {smallest + FID_INF_POINTS} generated images for "
                         f"{d}-d features (got {n}); raise sampling.n_images or use 'fid'")
    order = np.random.default_rng(0).permutation(n)
    sizes = np.unique(np.linspace(smallest, n, FID_INF_POINTS).astype(int))
    values = [_frechet(features[order[:size]], reference) for size in sizes]
    _slope, intercept = np.polyfit(1.0 / sizes, np.asarray(values, dtype=np.float64), 1)
    return float(intercept)


def log_fid(generated: GeneratedFeatures, reference: Reference) -> float:
    """log(FID), floored at log(1e-6) (lower is better)."""
    return float(np.log(max(fid(generated, reference), 1e-6)))


def kernel_inception_distance(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between rows of ``x`` (m, D) and ``y`` (n, D) with the cubic polynomial kernel."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, n, d = len(x), len(y), x.shape[1]
    k_xx = (x @ x.T / d + 1.0) ** 3
    k_yy = (y @ y.T / d + 1.0) ** 3
    k_xy = (x @ y.T / d + 1.0) ** 3
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def standardise(features: np.ndarray, reference: Reference) -> np.ndarray:
    """``features`` (N, D) as z-scores of the reference: (x - μ_r) / σ_r, σ_r = sqrt(diag Σ_r) (floored)."""
    scale = np.sqrt(np.maximum(np.diag(np.atleast_2d(reference.sigma)), 1e-12))
    return (features.astype(np.float64) - reference.mu) / scale


def kid(generated: GeneratedFeatures, reference: Reference) -> float:
    """Kernel Inception Distance, unbiased, on reference-standardised features (lower is better; can be
    slightly negative)."""
    return kernel_inception_distance(standardise(generated.features, reference), standardise(reference.features, reference))


def inception_score(generated: GeneratedFeatures, reference: Reference) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from the extractor's classifier (higher is better; 1..K)."""
    probs = _require_probs(generated, "inception_score")
    marginal = probs.mean(axis=0, keepdims=True)
    kl = (probs * (np.log(probs + _EPS) - np.log(marginal + _EPS))).sum(axis=1)
    return float(np.exp(kl.mean()))


def class_entropy(classes: np.ndarray, n_classes: int) -> float:
    """Shannon entropy (nats) of the proportions of integer labels ``classes`` (N,) over ``n_classes``."""
    counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def diversity(generated: GeneratedFeatures, reference: Reference) -> float:
    """Entropy of predicted-class proportions (higher is more diverse; max log K)."""
    probs = _require_probs(generated, "diversity")
    return class_entropy(probs.argmax(axis=1), probs.shape[1])


def quality(generated: GeneratedFeatures, reference: Reference) -> float:
    """Mean classifier confidence max_y p(y|x) (higher is better)."""
    return float(_require_probs(generated, "quality").max(axis=1).mean())
