"""``regression_msr``: a surrogate with exact Shapley values plus a residual correction (numpy only).

Regression-adjusted Monte Carlo (the idea of "Regression-adjusted Monte Carlo Estimators for Shapley Values
and Probabilistic Values", arXiv 2506.11849, and of SurrogateSHAP, arXiv 2601.22276): fit a surrogate f of
v on the evaluated coalitions, take the surrogate's *exact* Shapley values φ(f), and correct them with an
estimate of the residual game's Shapley values:  φ̂ = φ(f) + φ̂(v - f).  The better f fits v, the smaller
the residual and the estimator's variance; what f misses is left to the correction, so a poor surrogate
costs variance, not the target.

Paper notation → code
---------------------
=============================  ==========================================================================
z_S ∈ {0,1}^n, y_S             ``data.z`` rows, ``data.y - v_empty`` (values relative to v(∅))
f(S) = Σ_A β_A Π_{j∈A} z_j     the surrogate: interaction (unanimity) features of every order |A| <= K
  + h(|S|)                     (K = n for ``"all_orders"``, 2 for ``surrogate="pairwise"``, kADD-like) + a
                               function h(|S|) of the coalition size (h(0) = 0), fitted by weighted kernel
                               ridge regression (dual form: α), rows weighted like ``kernelshap`` (M_k / c_k)
k(S, T)                        a Σ_{k<=K} θ^(k-1) C(c, k) + g·[|S| = |T|] with c = |S ∩ T|: the inner
                               product of all those features, order k weighted a θ^(k-1) (the ridge
                               penalty of a feature is the inverse of its amplitude)
φ_i(f)                         Σ_{A∋i} β_A / |A| + h(n)/n = a Σ_T α_T z_Ti Σ_k θ^(k-1)/k · C(|T|-1, k-1)
                               + h(n)/n  (closed form; pairwise: β_i + ½ Σ_j β_ij)
f(S) = Σ_{j∈S} b_j(|S|)        size-varying additive surrogate (a candidate of ``surrogate="auto"``, the
  + h(|S|)                     default): every player's slope b_j is a smooth function of the coalition
                               size (a learning curve per contributor: diminishing returns in data
                               valuation, pivotal sizes in a vote); kernel a·c·K(|S|, |T|) + g·[|S| = |T|],
                               K(k, l) = exp(-((k - l) / (w n))² / 2), width w in {0.02, 0.05, 0.15, 0.5}
φ_i(f)                         1/n Σ_{k<n} [b_i(k+1) + k/(n-1) Σ_{j≠i} (b_j(k+1) - b_j(k))] + h(n)/n
                               (closed form: i joining a size-k coalition S adds b_i(k+1) + Σ_{j∈S} Δb_j(k)
                               and a uniform S of size k holds each other player with probability k/(n-1))
r_S = v(S) - f(S)              the residual game on the evaluated coalitions; r(∅) = 0, r(N) = v(N) - f(N)
φ̂(r)                           ``kernelshap`` (post-stratified kernel regression, size-centred blend) on r
=============================  ==========================================================================

Why the correction keeps the estimator on target
------------------------------------------------
``kernelshap`` is exact on fully enumerated size layers and, within a sampled layer, the coalitions are an
exchangeable random subset of that layer for every design in ``sampling.py`` (``leverage``, ``paired``,
``shapley_kernel``, ``uniform``: inclusion probabilities depend on the size only), so the layer's kernel
mass M_k, shared by its c_k observed coalitions, is spread over an unbiased sample of it; the regression is
consistent, with the O(1/m) bias of any ratio/regression estimator. Applied to r it estimates φ(v) - φ(f)
(the Shapley value is linear), so φ̂ = φ(f) + φ̂(r) is the survey-sampling *generalised regression*
(GREG) estimator with f as the assisting model: when every layer is enumerated φ̂(r) = φ(v) - φ(f) and
φ̂ = φ(v) exactly, whatever f. f is fitted on the same rows; its ridge penalty (chosen by leave-one-out
error) keeps its effective degrees of freedom below the rows, and the measured bias stays at the level of
``kernelshap``'s own (tests: mean over 80 plans within a few standard errors of the truth on a game of
order-4/5 unanimity terms the surrogate cannot represent).

Cross-fitting (option ``folds`` = K >= 2; experimental): sampling units of every sampled size stratum are
dealt into K folds, the residual of a row comes from the surrogate fitted without its fold, and
φ(f) is the mean of the K fold surrogates' values. It is *not* the default: a stratum with fewer units than
folds puts its whole residual weight on the folds that hold it, whose surrogates never saw that stratum,
while φ(f) averages all K surrogates, most of which did; the mismatch leaks the fit back in (measured:
|bias| up to 6.7 standard errors over 300 plans, n = 8, 60 coalitions, where the in-sample fit shows 1.0),
and the out-of-fold surrogates are weaker. Rows of fully enumerated layers use the mean surrogate.

Efficiency holds by construction: Σ_i φ_i(f) = f(N) - f(∅) and the residual regression distributes
r(N) - r(∅) = v(N) - f(N) - (v(∅) - f(∅)), so Σ_i φ̂_i = v(N) - v(∅); the result is re-projected onto
that plane against rounding.

Surrogate choice (``surrogate="auto"``, the default): the shape (all orders with order decay θ in
{0, 1, 8}/n, or size-varying additive with width w in {0.02, 0.05, 0.15, 0.5}) and the overall scale a
(17 values; the size feature's amplitude is g = n·a) with the least weighted leave-one-out error, in closed
form from one eigendecomposition per shape (7). Measured (bench/estimators.py, relative L2 error at 10n,
leverage design, all orders alone → auto): voting 0.39 / 0.70 / 0.99 → 0.32 / 0.50 / 0.71 (n = 10 / 20 /
50), data valuation 0.14 / 0.21 / 0.40 → 0.08 / 0.14 / 0.29; interactions and additive+noise unchanged
(all orders keeps winning the choice there). Fixed shapes: ``"all_orders"`` (the previous default) searches
the decays only; ``"pairwise"`` / ``"additive"`` cap the order at 2 / 1.
A cross-validated choice of the *residual* instead (leave-one-out residuals in the correction, a
cross-fitting with as many folds as rows) was measured worse on every game (more variance, e.g. voting
n = 50 0.90 against 0.71), as were surrogate row weights flatter than the kernel's (1/c_k, √M_k / c_k).
Fixed shapes, all orders against pairwise only (relative L2 error at 10n, leverage design, 5 seeds):
unanimity sum 0.100 / 0.119 (n = 10), 0.203 / 0.261 (n = 20), 0.209 / 0.293 (n = 50); voting 0.396 /
0.420, 0.710 / 0.710, 0.959 / 0.959; data valuation 0.140 / 0.181, 0.208 / 0.252, 0.424 / 0.410. The full
coalition N is always a training row with a (near-)interpolating weight, so f(N) ≈ v(N).

Uncertainty
-----------
``stderr`` is ``kernelshap``'s standard error (stratified sandwich or bootstrap, units and strata as in
``kernelshap``, utility noise from replicates added) of the same regression run on the surrogate's
*leave-one-out* residuals (closed form for kernel ridge), taking the larger of that and the in-sample one:
in-sample residuals understate the error of a surrogate fitted to them. The surrogate's exact part φ(f)
adds a delete-a-group jackknife variance (5 groups of sampling units dealt within strata, the surrogate
refitted without each): the in-sample residuals are small, so the estimate is mostly φ(f), and without
that term the intervals undercovered the step-utility voting game (0.77-0.88 at 3n-10n, n = 10). Measured
with it (bench/coverage.py --method regression_msr, 100 repetitions): voting 0.86-0.98, the smooth games
over-covered (0.985-1.000): conservative, not calibrated. Cross-fitted runs (``folds`` >= 2) keep the
residual regression's variance only. A player the residual regression cannot identify gets ``identified = False`` and an infinite
interval. Options: ``folds`` (int >= 1, default 1: no cross-fitting), ``center`` (the residual regression's
size centring, as ``kernelshap``; default ``"auto"``), ``surrogate`` (``"all_orders"``,
``"pairwise"`` or ``"additive"``: highest interaction order n, 2 or 1; ``"auto"`` (default): all orders or
size-varying additive, by leave-one-out error), ``ci``, ``n_boot``, ``deterministic``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from contribshap.pipeline.core.designs import layer_kernel_mass
from contribshap.pipeline.core.estimators._base import Data, MethodResult, method_spec, register_method

SURROGATE_KINDS: tuple[str, ...] = ("auto", "all_orders", "pairwise", "additive")
"""Valid values of the ``surrogate`` option of ``regression_msr`` (default ``"auto"``): ``"auto"`` chooses
by leave-one-out error between all interaction orders and a size-varying additive surrogate; the others
fix the highest interaction order of the surrogate (n, 2 or 1)."""

# Grid of the ridge search: order decay θ (times 1/n; θ = 0 is additive) and overall scale of the kernel.
_DECAYS = (0.0, 1.0, 8.0)
_SCALES = np.logspace(-4, 4, 17)
_WIDTHS = (0.02, 0.05, 0.15, 0.5)  # size kernel widths (times n) of the size-varying additive candidates
_JACKKNIFE_GROUPS = 5  # delete-a-group jackknife of the surrogate's Shapley values (variance only)
_ENDPOINT_WEIGHT = 1e6  # weight of the full coalition relative to the largest row weight (interpolation)


# --------------------------------------------------------------------------------------------------------
# Surrogate: weighted kernel ridge regression on interaction features up to an order, plus size features
# --------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Surrogate:
    """f(S) = Σ_T α_T k(S, T) over training coalitions T (rows of ``z``); see :func:`_kernel`."""

    z: np.ndarray  # (t, n) float 0/1 training coalitions (the full coalition included)
    alpha: np.ndarray  # (t,) dual coefficients
    a: float  # amplitude of the interaction features (inverse ridge penalty of the linear ones)
    theta: float  # decay per order: a feature of order k has amplitude a·θ^(k-1)
    order: int  # highest interaction order
    g: float  # amplitude of the size features
    loo: np.ndarray  # (t,) leave-one-out residuals y_T - f_{-T}(T) of the training rows
    width: float = 0.0  # > 0: the linear features' coefficients vary with |S| (size kernel width, times n)

    def predict(self, z: np.ndarray) -> np.ndarray:
        """f on coalitions z (m, n) bool/0-1 -> (m,)."""
        return _kernel(np.asarray(z, dtype=np.float64), self.z, self.a, self.theta, self.order, self.g,
                       self.width) @ self.alpha

    def shapley(self) -> np.ndarray:
        """Exact Shapley values (n,), from the dual coefficients.

        A feature Π_{j∈A} z_j (|A| = k) is a unanimity game: 1/k to each member. Its coefficient is
        β_A = a θ^(k-1) Σ_T α_T [A ⊆ T], so φ_i = a Σ_T α_T z_Ti Σ_k θ^(k-1)/k · C(|T|-1, k-1)
        (pairwise: β_i + ½ Σ_j β_ij), plus the size part h(n)/n = g Σ_{T=N} α_T / n.
        With ``width`` > 0 the linear part is Σ_j z_j b_j(|S|), b_j(k) = a Σ_T α_T z_Tj K(k, |T|): player i
        joining a coalition S of size k adds b_i(k+1) + Σ_{j∈S} (b_j(k+1) - b_j(k)), and a uniform S of
        size k holds each other player with probability k/(n-1), so
        φ_i = 1/n Σ_{k<n} [b_i(k+1) + k/(n-1) Σ_{j≠i} (b_j(k+1) - b_j(k))].
        """
        n = self.z.shape[1]
        sizes = self.z.sum(axis=1).astype(np.int64)
        low = 2 if self.width > 0 else 1
        per_size = np.array([sum(self.theta ** (k - 1) / k * math.comb(s - 1, k - 1) for k in range(low, self.order + 1))
                             if s > 0 else 0.0 for s in range(n + 1)])
        interactions = self.a * ((self.alpha * per_size[sizes]) @ self.z)
        size_part = self.g * float(self.alpha[sizes == n].sum()) / n
        if self.width > 0:
            b = self.slopes()
            step = np.diff(b, axis=0)  # (n, n): b_j(k+1) - b_j(k), k = 0..n-1
            k = np.arange(n)[:, None] / max(n - 1, 1)
            interactions = interactions + (b[1:] + k * (step.sum(axis=1, keepdims=True) - step)).sum(axis=0) / n
        return interactions + size_part

    def slopes(self) -> np.ndarray:
        """b (n+1, n): b[k, j] = a Σ_T α_T z_Tj K(k, |T|), the linear coefficients at size k (width > 0)."""
        n = self.z.shape[1]
        sizes = self.z.sum(axis=1).astype(np.int64)
        kernel = _size_kernel(np.arange(n + 1), sizes, self.width, n)
        return self.a * (kernel @ (self.alpha[:, None] * self.z))


def _size_kernel(s1: np.ndarray, s2: np.ndarray, width: float, n: int) -> np.ndarray:
    """K(k, l) = exp(-((k - l) / (width · n))² / 2) between coalition sizes; shapes (m1,), (m2,) -> (m1, m2)."""
    s1, s2 = np.asarray(s1), np.asarray(s2)
    d = (s1.astype(np.float64)[:, None] - s2.astype(np.float64)[None, :]) / (width * n)
    return np.exp(-0.5 * d * d)


def _kernel(z1: np.ndarray, z2: np.ndarray, a: float, theta: float, order: int, g: float,
            width: float = 0.0) -> np.ndarray:
    """k(S, T) = a Σ_{k=1..order} θ^(k-1) C(c, k) + g·[|S| = |T|], c = |S ∩ T| (the inner product of all
    interaction features Π_{j∈A} z_j, |A| <= order, weighted a θ^(|A|-1), and of one indicator per size);
    with ``width`` > 0 the order-1 term a·c becomes a·c·K(|S|, |T|) (:func:`_size_kernel`: coefficients of
    the linear features that vary smoothly with the coalition size); shapes (m1, n), (m2, n) -> (m1, m2)."""
    n = z1.shape[1]
    low = 2 if width > 0 else 1
    table = np.array([sum(theta ** (k - 1) * math.comb(c, k) for k in range(low, order + 1)) for c in range(n + 1)])
    c = np.rint(z1 @ z2.T).astype(np.int64)
    s1, s2 = z1.sum(axis=1), z2.sum(axis=1)
    same = s1[:, None] == s2[None, :]
    out = a * table[c] + g * same
    if width > 0:
        out = out + a * c * _size_kernel(s1, s2, width, n)
    return out


Candidate = tuple[int, float, float]
"""A surrogate shape: (highest interaction order, order decay θ·n, size kernel width; 0: constant linear part)."""


def _fit_surrogate(z: np.ndarray, y: np.ndarray, w: np.ndarray, order: int, decays: tuple[float, ...],
                   candidates: tuple[Candidate, ...] = ()) -> _Surrogate:
    """Weighted kernel ridge: min Σ_T w_T (y_T - f(T))² + ‖f‖²_k, shape and amplitude by weighted
    leave-one-out error.

    Args:
        z: (t, n) float 0/1 training coalitions, the last row the full coalition.
        y: (t,) targets (v - v(∅)). w: (t,) positive row weights (the full coalition's very large).
        order: highest interaction order. decays: order decays θ to try (times 1/n).
        candidates: further shapes (order, decay, width) competing with (order, decay, 0) for each decay.
    """
    n = z.shape[1]
    d = 1.0 / w  # noise variance of each row in the dual: (K + D) α = y
    sqrt_d = np.sqrt(d)
    scored = np.ones(len(y), dtype=bool)
    scored[-1] = False  # the full coalition is a constraint, not scored
    best: tuple[float, float, Candidate, np.ndarray, np.ndarray] | None = None
    for shape in (*((order, decay, 0.0) for decay in decays), *candidates):
        k_order, decay, width = shape
        # unit amplitudes of this shape: interactions 1, size n (a nearly free size curve)
        k0 = _kernel(z, z, 1.0, decay / n, k_order, float(n), width)
        # (s K0 + D)^{-1} = D^{-1/2} U (s Λ + I)^{-1} Uᵀ D^{-1/2} with D^{-1/2} K0 D^{-1/2} = U Λ Uᵀ
        lam, u = np.linalg.eigh(k0 / np.outer(sqrt_d, sqrt_d))
        lam = np.maximum(lam, 0.0)
        proj = u.T @ (y / sqrt_d)
        u2 = u**2
        for s in _SCALES:
            shrink = 1.0 / (s * lam + 1.0)
            resid = sqrt_d * (u @ (shrink * proj))  # y - f(T) on the training rows
            one_minus_h = u2 @ shrink  # 1 - H_TT (leave-one-out denominator)
            loo = resid / np.maximum(one_minus_h, 1e-12)
            score = float(np.sum(w[scored] * loo[scored] ** 2))
            if best is None or score < best[0]:
                alpha = (u @ (shrink * proj)) / sqrt_d
                best = (score, s, shape, alpha, loo)
    assert best is not None
    _, s, (k_order, decay, width), alpha, loo = best
    return _Surrogate(z=z, alpha=alpha, a=s, theta=decay / n, order=k_order, g=s * n, loo=loo, width=width)


# --------------------------------------------------------------------------------------------------------
# Folds: sampling units of every sampled size stratum dealt into K folds in equal shares
# --------------------------------------------------------------------------------------------------------
def _units_and_strata(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """unit (u,) id shared by S and N∖S when both are observed; stratum (u,) = min(|S|, n-|S|);
    enumerated (u,) bool: the row's size layer and its complement layer are fully observed."""
    u, n = z.shape
    sizes = z.sum(axis=1)
    stratum = np.minimum(sizes, n - sizes)
    keys = {row.tobytes(): i for i, row in enumerate(np.packbits(z, axis=1))}
    comp = np.packbits(~z, axis=1)
    unit = np.arange(u)
    for i in range(u):
        j = keys.get(comp[i].tobytes())
        if j is not None and j < i:
            unit[i] = unit[j]
    observed = np.bincount(sizes, minlength=n + 1)
    population = np.array([math.comb(n, k) for k in range(n + 1)])
    full = observed >= population
    enumerated = full[sizes] & full[n - sizes]
    return unit, stratum, enumerated


def _assign_folds(unit: np.ndarray, stratum: np.ndarray, sampled: np.ndarray, folds: int,
                  rng: np.random.Generator) -> np.ndarray:
    """fold (u,) int in 0..folds-1 for sampled rows (-1 for enumerated rows): within each stratum, the
    units in random order are dealt round-robin from a random starting fold (equal shares per fold)."""
    fold = -np.ones(len(unit), dtype=np.int64)
    for h in np.unique(stratum[sampled]):
        units = np.unique(unit[sampled & (stratum == h)])
        order = rng.permutation(units)
        start = int(rng.integers(folds))
        unit_fold = {int(un): (start + j) % folds for j, un in enumerate(order)}
        rows = np.flatnonzero(sampled & (stratum == h))
        fold[rows] = [unit_fold[int(unit[r])] for r in rows]
    return fold


def _jackknife_variance(z_all: np.ndarray, y_all: np.ndarray, w_all: np.ndarray, unit: np.ndarray,
                        stratum: np.ndarray, sampled: np.ndarray, order: int, decays: tuple[float, ...],
                        candidates: tuple[Candidate, ...], seed: int) -> np.ndarray:
    """Delete-a-group jackknife variance (n,) of the surrogate's Shapley values: the sampled units are dealt
    into G = min(5, units) groups within each stratum, the surrogate (shape and penalty re-chosen) is refitted
    without each group, and Var = (G-1)/G Σ_g (φ(f_{-g}) - mean)². Enumerated rows stay in every refit."""
    groups = int(min(_JACKKNIFE_GROUPS, len(np.unique(unit[sampled])))) if sampled.any() else 0
    n = z_all.shape[1]
    if groups < 2:
        return np.zeros(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1AC4, n]))
    fold = _assign_folds(unit, stratum, sampled, groups, rng)
    phis = np.array([_fit_surrogate(z_all[keep], y_all[keep], w_all[keep], order, decays, candidates).shapley()
                     for keep in (np.append(fold != g, True) for g in range(groups))])
    return (groups - 1) / groups * ((phis - phis.mean(axis=0)) ** 2).sum(axis=0)


# --------------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------------
def _method_result(value: np.ndarray, var: np.ndarray, ci: str, extras: dict, identified: np.ndarray | None,
                   more: int) -> MethodResult:
    """A MethodResult, passing ``identified`` / ``more_evaluations`` where the result type has them."""
    names = {f.name for f in dataclasses.fields(MethodResult)}
    kwargs: dict[str, Any] = {}
    if "identified" in names:
        kwargs["identified"] = identified
    if "more_evaluations" in names:
        kwargs["more_evaluations"] = more
    return MethodResult(value=value, var=var, ci=ci, extras=extras, **kwargs)


def fit_regression_msr(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    """φ̂ = φ(f) + kernelshap(v - f) (see the module docstring)."""
    # 1. options
    n, u = data.n, data.n_unique
    folds = options.get("folds", 1)
    if not isinstance(folds, int | np.integer) or folds < 1:
        raise ValueError(f"folds must be an int >= 1 (1: no cross-fitting, the default; K >= 2: K folds); "
                         f"got {folds!r}.")
    surrogate_kind = options.get("surrogate", "auto")
    if surrogate_kind not in SURROGATE_KINDS:
        raise ValueError(f"surrogate must be one of {', '.join(SURROGATE_KINDS)}; got {surrogate_kind!r}.")
    order = {"pairwise": 2, "all_orders": n, "auto": n, "additive": 1}[surrogate_kind]
    decays = (0.0,) if order == 1 else _DECAYS
    candidates = tuple((1, 0.0, width) for width in _WIDTHS) if surrogate_kind == "auto" else ()
    residual_options = {k: options[k] for k in ("center", "deterministic") if k in options}
    residual_options.setdefault("center", "auto")

    # 2. training rows: proper coalitions with kernelshap's post-stratified weights, plus the full coalition
    zf = data.z.astype(np.float64)
    sizes = data.z.sum(axis=1)
    counts = np.bincount(sizes, minlength=n + 1).astype(np.float64)
    w = layer_kernel_mass(n)[sizes] / np.maximum(counts[sizes], 1.0)
    w = w / w.mean() if u else w
    y = data.y - data.v_empty
    z_all = np.vstack([zf, np.ones((1, n))])
    y_all = np.append(y, data.total)
    w_all = np.append(w, _ENDPOINT_WEIGHT * (w.max() if u else 1.0))

    # 3. surrogate(s) and residuals: in-sample (default) or cross-fitted over K folds of the sampled units
    residual = np.empty(u)
    surrogates: list[_Surrogate] = []
    unit, stratum, enumerated = _units_and_strata(data.z)
    sampled = ~enumerated
    n_sampled_units = len(np.unique(unit[sampled]))
    k_eff = int(min(folds, n_sampled_units)) if folds >= 2 else 1
    if k_eff >= 2:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED, n]))
        fold = _assign_folds(unit, stratum, sampled, k_eff, rng)
        for k in range(k_eff):
            f_k = _fit_surrogate(z_all[np.append(fold != k, True)], y_all[np.append(fold != k, True)],
                                 w_all[np.append(fold != k, True)], order, decays, candidates)
            surrogates.append(f_k)
            rows = fold == k
            residual[rows] = y[rows] - f_k.predict(zf[rows])
        loo = residual.copy()  # out-of-fold residuals are already honest
    else:
        surrogates.append(_fit_surrogate(z_all, y_all, w_all, order, decays, candidates))
        residual[:] = y - surrogates[0].predict(zf)
        loo = surrogates[0].loo[:u]
    phi_f = np.mean([f.shapley() for f in surrogates], axis=0)
    f_full = float(np.mean([f.predict(np.ones((1, n)))[0] for f in surrogates]))
    if enumerated.any():
        f_bar = np.mean([f.predict(zf[enumerated]) for f in surrogates], axis=0)
        residual[enumerated] = y[enumerated] - f_bar
        loo[enumerated] = residual[enumerated]  # no sampling error there: nothing to be honest about

    # 4. the residual correction: kernelshap on (z, r) with endpoints r(∅) = 0, r(N) = v(N) - f(N)
    kernelshap = method_spec("kernelshap").fit
    resid_data = dataclasses.replace(data, y=residual, v_empty=0.0, v_full=data.total - f_full)
    resid = kernelshap(resid_data, ci=ci, n_boot=n_boot, seed=seed, options=residual_options)
    value = phi_f + resid.value
    value = value + (data.total - value.sum()) / n  # re-project onto Σφ = v(N) - v(∅) (rounding only)

    # 5. variance: the same regression on the leave-one-out residuals (an in-sample residual understates
    #    the error of a surrogate that fitted it); utility noise is added inside kernelshap
    if k_eff >= 2:
        var = np.array(resid.var, dtype=np.float64)
    else:
        honest = kernelshap(dataclasses.replace(resid_data, y=loo), ci=ci, n_boot=n_boot, seed=seed,
                            options=residual_options)
        var = np.maximum(np.array(honest.var, dtype=np.float64), np.array(resid.var, dtype=np.float64))
        # the estimate is mostly the surrogate's exact part (its in-sample residuals are small): add the
        # delete-a-group jackknife variance of φ(f) over the sampled units (dealt into folds per stratum)
        var = var + _jackknife_variance(z_all, y_all, w_all, unit, stratum, sampled, order, decays, candidates,
                                        seed)
    identified = getattr(resid, "identified", None)
    if identified is not None:
        identified = np.asarray(identified, dtype=bool)
        var = np.where(identified, var, np.inf)

    # 6. details
    fitted = surrogates[0]
    rss_v = float(np.sum(w * (y - (data.total / n) * sizes) ** 2))
    rss_r = float(np.sum(w * loo**2))
    extras: dict[str, Any] = dict(resid.extras)
    extras.update({
        "folds": k_eff,
        "surrogate": surrogate_kind,
        "surrogate_shapley": phi_f.tolist(),
        "surrogate_scale": fitted.a,
        "surrogate_decay": fitted.theta * n,
        "surrogate_order": fitted.order,
        "surrogate_width": fitted.width,
        # weighted leave-one-out residual sum of squares over that of v minus its equal split (< 1: f helps)
        "residual_ratio": rss_r / rss_v if rss_v > 0 else 0.0,
    })
    return _method_result(value, var, resid.ci, extras, identified, int(getattr(resid, "more_evaluations", 0)))


register_method(
    "regression_msr",
    fit_regression_msr,
    options={"ci", "n_boot", "deterministic", "center", "folds", "surrogate"},
    efficient=True,
    summary="kernel-ridge surrogate chosen by leave-one-out (exact Shapley) + kernelshap on its residuals",
)
