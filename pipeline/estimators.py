"""Shapley / Banzhaf / LOO / datamodel estimates with uncertainty, from (masks, values) alone (numpy only).

One entry point, :func:`estimate`, for every method in :data:`METHODS`; one result type, :class:`Estimate`.

Inputs (shapes)
---------------
- ``masks``: bool array (m, n), one row per *evaluation*. Identical rows are replicates of one coalition
  (same S, other seeds): they are averaged, and their spread is reported as ``utility_noise``. Rows that
  are the empty or full coalition are allowed; their values are ignored in favour of ``v_empty`` /
  ``v_full`` (their count still sets the endpoints' replicate number for the noise term).
- ``values``: float array (m,); NaN rows (failed evaluations) are dropped with a warning counting them.
- ``v_empty`` = v(∅), ``v_full`` = v(N): floats (the endpoints, evaluated apart).

Paper notation → code
---------------------
=========================  ==========================================================================
z_S ∈ {0,1}^n              a row of ``masks`` (unique coalition after averaging replicates)
y_S = v(S) - v(∅)          ``y``
t = v(N) - v(∅)            ``total`` (efficiency: Σ_i φ_i = t)
μ(S)                       Shapley kernel, (n-1) / (C(n,|S|) |S| (n-|S|))  (``sampling.kernel_weights``)
M_k = Σ_{|S|=k} μ(S)       layer mass, (n-1) / (k (n-k))  (``sampling.layer_kernel_mass``)
c_k                        number of distinct observed coalitions of size k
w_S                        regression weight of row S (per method, below)
=========================  ==========================================================================

Regression methods solve  min_φ Σ_S w_S (y_S - z_S·φ)²  s.t.  Σ_i φ_i = t  in closed form (the constraint
is eliminated with an orthonormal basis Q of 1⊥: φ = t/n·1 + Qβ). They differ only in w_S:

- ``kernelshap`` (default): post-stratified kernel weights w_S = M_k / c_k. Every size layer keeps its
  exact total kernel mass, shared equally by the coalitions observed in it. This is exact for layers that
  were fully enumerated (the border trick) and unbiased within a layer for every exchangeable design
  (``paired``, ``leverage``, ``shapley_kernel``, ``uniform``...), so it needs nothing but the masks.
  Paired-aware: a coalition and its complement form one sampling unit in the CIs.
  **Size centring** (option ``center``): with ``"size"`` the regression gets a free intercept per coalition
  size, i.e. y' and Z Q are centred by their w-weighted mean within each size layer before the solve. On
  a fully enumerated layer z̄_k = (k/n)·1, so z̄_k·φ = k t/n is fixed by the constraint and the layer means
  drop out of the objective: the exact solution (the Shapley value) is unchanged. On a sampled layer they
  no longer leak into φ: a utility that moves strongly with |S| (accuracy or FID growing with the amount
  of data) stops adding variance. It costs one degree of freedom per observed size; when fewer than n-1
  remain the plain solve is used. Centring can also cost variance for a player whose effect itself varies
  with |S|, so ``"auto"`` (the default) blends per player: φ_i = φ_p,i + λ_i (φ_c,i - φ_p,i), where the
  difference of the two fits has mean ~0 and serves as a control variate, λ_i ∈ [0, 1] minimises the
  estimated (stratified) variance, and the blend is re-projected onto Σφ = t. ``"none"``: the plain fit.
  ``extras["center"]`` says which fit was used, ``extras["center_weight"]`` holds λ.
- ``leverage_shap``: Musco & Witter's Horvitz-Thompson weights w_S = μ(S) / π_k, with π_k the inclusion
  probability of a size-k coalition under the ``leverage`` order-sampling stream (π_k = 1 - exp(-τ/C(n,k)),
  τ solved so Σ π matches the number of observed coalitions).
- ``kernelshap_paper``: the paper's baseline (Lin et al. 2025 / Lundberg & Lee 2017): masks drawn from the
  Shapley kernel, w_S = 1 per draw (option ``draw_counts``: multiplicity of each row in the raw draw; 1
  when omitted), one unstratified sample: no pairing, no stratification, no variance reduction.

Other methods: ``exact_shapley`` (needs all 2^n - 2 proper coalitions), ``banzhaf_msr`` (maximum sample
reuse, Wang & Jia 2023: φ_i = mean v(S ∋ i) - mean v(S ∌ i)), ``loo`` (φ_i = v(N) - v(N∖i); needs all n
leave-one-out rows), ``datamodel`` (ridge regression of v(S) on z_S with intercept, penalty chosen by
leave-one-out CV; Ilyas et al. 2022 — a linear attribution, not efficient).

Uncertainty
-----------
``stderr`` combines sampling error (which coalitions were drawn) and the utility noise measured from
replicates. ``ci="analytic"``: stratified linearisation (sandwich) variance of the regression, strata =
size pairs {k, n-k}, units = complementary pairs (or single coalitions), with the finite-population
correction (fully enumerated layers contribute no sampling variance); it reduces to the Covert & Lee
KernelSHAP covariance for an unstratified with-replacement sample. ``ci="bootstrap"``: resample units
within strata (``n_boot`` times, seeded) and refit. Both add the replicate noise term for the parts the
sampling variance cannot see (enumerated layers, endpoints). ``ci="auto"`` (default) is analytic for the
regression methods and ``banzhaf_msr``, bootstrap for ``datamodel``. Intervals are normal:
value ± z_{(1+level)/2} · stderr. A small stderr is not accuracy: it says nothing about a biased design.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from contribshap.pipeline.sampling import kernel_weights, layer_kernel_mass
from scipy import stats

METHODS: tuple[str, ...] = (
    "kernelshap",
    "leverage_shap",
    "kernelshap_paper",
    "exact_shapley",
    "banzhaf_msr",
    "loo",
    "datamodel",
)
"""Valid method names for :func:`estimate`."""

CI_KINDS: tuple[str, ...] = ("auto", "analytic", "bootstrap")
"""Valid values of the ``ci`` option."""

CENTER_KINDS: tuple[str, ...] = ("auto", "size", "none")
"""Valid values of the ``center`` option of ``kernelshap`` (default ``"auto"``)."""

REGRESSION_METHODS: tuple[str, ...] = ("kernelshap", "leverage_shap", "kernelshap_paper")
EFFICIENT_METHODS: tuple[str, ...] = ("kernelshap", "leverage_shap", "kernelshap_paper", "exact_shapley")

_METHOD_OPTIONS: dict[str, frozenset[str]] = {
    "kernelshap": frozenset({"ci", "n_boot", "deterministic", "center"}),
    "leverage_shap": frozenset({"ci", "n_boot", "deterministic"}),
    "kernelshap_paper": frozenset({"ci", "n_boot", "draw_counts", "deterministic"}),
    "exact_shapley": frozenset({"ci"}),
    "banzhaf_msr": frozenset({"ci", "n_boot", "include_endpoints"}),
    "loo": frozenset({"ci"}),
    "datamodel": frozenset({"ci", "n_boot", "alphas"}),
}


# --------------------------------------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    """Per-player attribution with its uncertainty. Plain data: ``from_dict(e.to_dict())`` equals ``e``.

    Attributes:
        value: float64 (n,), the estimate φ (Shapley, Banzhaf, LOO or datamodel coefficients).
        stderr: float64 (n,), standard error (sampling + measured utility noise); 0 when exact and no
            noise was measured.
        ci_low, ci_high: float64 (n,), the two-sided interval at ``level``.
        n_evaluations: rows used (after dropping NaN), replicates and endpoint rows included.
        method: one of :data:`METHODS`.
        level: confidence level in (0, 1), e.g. 0.95.
        utility_noise: pooled standard deviation of replicate evaluations of the same coalition, or None
            when no coalition was evaluated twice.
        extras: JSON-able details (``n_unique``, ``ci``, ``n_nan_dropped``, ``total``, layer counts...).
    """

    value: np.ndarray
    stderr: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    n_evaluations: int
    method: str
    level: float
    utility_noise: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def n_players(self) -> int:
        return int(self.value.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (arrays as lists of floats; NaN kept as float NaN)."""
        return {
            "value": [float(x) for x in self.value],
            "stderr": [float(x) for x in self.stderr],
            "ci_low": [float(x) for x in self.ci_low],
            "ci_high": [float(x) for x in self.ci_high],
            "n_evaluations": int(self.n_evaluations),
            "method": self.method,
            "level": float(self.level),
            "utility_noise": None if self.utility_noise is None else float(self.utility_noise),
            "extras": _jsonable(self.extras),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict`."""
        return cls(
            value=np.asarray(data["value"], dtype=np.float64),
            stderr=np.asarray(data["stderr"], dtype=np.float64),
            ci_low=np.asarray(data["ci_low"], dtype=np.float64),
            ci_high=np.asarray(data["ci_high"], dtype=np.float64),
            n_evaluations=int(data["n_evaluations"]),
            method=str(data["method"]),
            level=float(data["level"]),
            utility_noise=None if data.get("utility_noise") is None else float(data["utility_noise"]),
            extras=dict(data.get("extras", {})),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Estimate):
            return NotImplemented
        arrays_equal = all(
            np.array_equal(getattr(self, name), getattr(other, name), equal_nan=True)
            for name in ("value", "stderr", "ci_low", "ci_high")
        )
        return (
            arrays_equal
            and self.n_evaluations == other.n_evaluations
            and self.method == other.method
            and self.level == other.level
            and self.utility_noise == other.utility_noise
            and self.extras == other.extras
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


# --------------------------------------------------------------------------------------------------------
# Stopping rule
# --------------------------------------------------------------------------------------------------------
def max_halfwidth(est: Estimate) -> float:
    """Largest CI half-width over players, (ci_high - ci_low) / 2; ``inf`` if any bound is NaN."""
    half = (np.asarray(est.ci_high) - np.asarray(est.ci_low)) / 2.0
    if half.size == 0 or np.any(~np.isfinite(half)):
        return math.inf
    return float(half.max())


def converged(est: Estimate, target: float, *, relative_to: float | None = None) -> bool:
    """True when the largest CI half-width is at most ``target``.

    Args:
        est: an :class:`Estimate`.
        target: absolute half-width (``relative_to=None``), or a fraction of ``|relative_to|``
            (e.g. ``relative_to = v_full - v_empty``, ``target=0.02`` for 2% of the total credit).

    Example:
        >>> converged(est, 0.05, relative_to=est.extras["total"])  # doctest: +SKIP
    """
    if not target > 0:
        raise ValueError(f"target must be > 0; got {target!r}.")
    bound = float(target) if relative_to is None else float(target) * abs(float(relative_to))
    return max_halfwidth(est) <= bound


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------
def estimate(
    masks: np.ndarray,
    values: np.ndarray,
    v_empty: float,
    v_full: float,
    method: str = "kernelshap",
    level: float = 0.95,
    seed: int = 0,
    **options: Any,
) -> Estimate:
    """Estimate per-player attributions with standard errors and confidence intervals.

    Args:
        masks: bool (m, n), one row per evaluation (replicates = identical rows).
        values: float (m,), the property value of each evaluation (NaN = failed, dropped with a warning).
        v_empty: v(∅). v_full: v(N). Both finite.
        method: one of :data:`METHODS` (default ``"kernelshap"``).
        level: CI level in (0, 1), default 0.95.
        seed: seed of the bootstrap (only used by ``ci="bootstrap"``).
        **options: ``ci`` ("auto" | "analytic" | "bootstrap", default "auto"), ``n_boot`` (int, default
            500), ``draw_counts`` (``kernelshap_paper``: float (m,) multiplicity of each row in the raw
            draw), ``include_endpoints`` (``banzhaf_msr``: also use v(∅), v(N) as samples; default False),
            ``alphas`` (``datamodel``: ridge penalties to search; default logspace(-4, 4, 17)),
            ``center`` (``kernelshap``: "auto" (default) blends the size-centred and the plain fit per
            player, "size" uses the size-centred fit, "none" the plain one; see the module docstring).

    Returns:
        :class:`Estimate` with arrays of shape (n,).

    Example:
        >>> from contribshap.pipeline.sampling import sample_coalitions
        >>> masks = sample_coalitions(6, 62, "exact")
        >>> est = estimate(masks, masks.sum(1) * 1.0, 0.0, 6.0, method="exact_shapley")
        >>> est.value.round(6).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    # 1. validate
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}.")
    unknown = set(options) - _METHOD_OPTIONS[method]
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; "
            f"allowed: {', '.join(sorted(_METHOD_OPTIONS[method]))}."
        )
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie in (0, 1), e.g. 0.95; got {level!r}.")
    ci = options.get("ci", "auto")
    if ci not in CI_KINDS:
        raise ValueError(f"ci must be one of {', '.join(CI_KINDS)}; got {ci!r}.")
    n_boot = int(options.get("n_boot", 500))
    if n_boot < 20:
        raise ValueError(f"n_boot must be >= 20; got {n_boot}.")
    if not (np.isfinite(v_empty) and np.isfinite(v_full)):
        raise ValueError(f"v_empty and v_full must be finite; got v_empty={v_empty!r}, v_full={v_full!r}.")

    # 2. group replicates, drop NaN, split off endpoint rows
    data = _prepare(masks, values, float(v_empty), float(v_full), options.get("draw_counts"))

    # 3. dispatch
    if method in REGRESSION_METHODS:
        if ci == "auto":
            ci = "analytic"
        center = options.get("center", "auto" if method == "kernelshap" else "none")
        if center not in CENTER_KINDS:
            raise ValueError(f"center must be one of {', '.join(CENTER_KINDS)}; got {center!r}.")
        value, var, extras = _regression(
            data, method, ci, n_boot, seed, bool(options.get("deterministic", False)), center
        )
    elif method == "exact_shapley":
        value, var, extras = _exact_shapley(data)
        ci = "noise"
    elif method == "banzhaf_msr":
        ci = "analytic" if ci == "auto" else ci
        value, var, extras = _banzhaf_msr(data, ci, n_boot, seed, bool(options.get("include_endpoints", False)))
    elif method == "loo":
        value, var, extras = _loo(data)
        ci = "noise"
    elif method == "datamodel":
        ci = "bootstrap" if ci == "auto" else ci
        value, var, extras = _datamodel(data, ci, n_boot, seed, options.get("alphas"))
    else:  # pragma: no cover - guarded in step 1
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}.")

    # 4. package
    stderr = np.sqrt(np.maximum(var, 0.0))
    z = float(stats.norm.ppf(0.5 + float(level) / 2.0))
    extras.update(
        {
            "ci": ci,
            "n_unique": int(data.n_unique),
            "n_nan_dropped": int(data.n_nan),
            "total": data.total,
            "v_empty": data.v_empty,
            "v_full": data.v_full,
        }
    )
    return Estimate(
        value=value,
        stderr=stderr,
        ci_low=value - z * stderr,
        ci_high=value + z * stderr,
        n_evaluations=int(data.n_rows),
        method=method,
        level=float(level),
        utility_noise=data.noise_sd,
        extras=extras,
    )


# --------------------------------------------------------------------------------------------------------
# Step 2: replicates, NaN, endpoints
# --------------------------------------------------------------------------------------------------------
@dataclass
class _Data:
    n: int
    z: np.ndarray  # (u, n) bool, unique proper coalitions
    y: np.ndarray  # (u,) mean value v(S) (not yet minus v_empty)
    reps: np.ndarray  # (u,) replicate counts
    draw_counts: np.ndarray  # (u,) multiplicities (kernelshap_paper), 1 when not given
    v_empty: float
    v_full: float
    reps_empty: int
    reps_full: int
    noise_var: float | None
    noise_sd: float | None
    n_rows: int
    n_nan: int

    @property
    def n_unique(self) -> int:
        return int(self.z.shape[0])

    @property
    def total(self) -> float:
        return self.v_full - self.v_empty

    def noise_var_rows(self) -> np.ndarray:
        """Variance of each averaged value ȳ_S from utility noise (zeros when noise is unknown)."""
        if self.noise_var is None:
            return np.zeros(self.n_unique)
        return self.noise_var / self.reps


def _prepare(
    masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, draw_counts: Any
) -> _Data:
    masks = np.asarray(masks)
    values = np.asarray(values, dtype=np.float64)
    if masks.ndim != 2 or masks.shape[1] < 2:
        raise ValueError(f"masks must be a (m, n) bool array with n >= 2; got shape {masks.shape}.")
    if values.shape != (masks.shape[0],):
        raise ValueError(f"values must have shape ({masks.shape[0]},) to match masks; got {values.shape}.")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks must be bool or 0/1; found other values.")
        masks = masks.astype(bool)
    n = masks.shape[1]
    counts_in = np.ones(masks.shape[0]) if draw_counts is None else np.asarray(draw_counts, dtype=np.float64)
    if counts_in.shape != values.shape or np.any(counts_in <= 0):
        raise ValueError(f"draw_counts must be positive with shape {values.shape}; got shape {counts_in.shape}.")

    # drop NaN evaluations
    bad = ~np.isfinite(values)
    n_nan = int(bad.sum())
    if n_nan:
        warnings.warn(
            f"dropped {n_nan} of {len(values)} evaluations with NaN/inf values (failed or unmeasured).",
            RuntimeWarning,
            stacklevel=3,
        )
    masks, values, counts_in = masks[~bad], values[~bad], counts_in[~bad]

    # group identical rows (replicates)
    uniq, inverse, reps = np.unique(masks, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.bincount(inverse, weights=values, minlength=len(uniq))
    means = sums / reps
    resid = values - means[inverse]
    ss = np.bincount(inverse, weights=resid**2, minlength=len(uniq))
    dof = int((reps - 1).sum())
    noise_var = float(ss.sum() / dof) if dof > 0 else None
    dc = np.zeros(len(uniq))
    np.maximum.at(dc, inverse, counts_in)

    sizes = uniq.sum(axis=1)
    is_empty, is_full = sizes == 0, sizes == n
    reps_empty = int(reps[is_empty].sum()) if is_empty.any() else 1
    reps_full = int(reps[is_full].sum()) if is_full.any() else 1
    keep = ~(is_empty | is_full)
    return _Data(
        n=n,
        z=uniq[keep],
        y=means[keep],
        reps=reps[keep].astype(np.float64),
        draw_counts=dc[keep],
        v_empty=v_empty,
        v_full=v_full,
        reps_empty=reps_empty,
        reps_full=reps_full,
        noise_var=noise_var,
        noise_sd=None if noise_var is None else math.sqrt(noise_var),
        n_rows=len(values),
        n_nan=n_nan,
    )


# --------------------------------------------------------------------------------------------------------
# Regression methods
# --------------------------------------------------------------------------------------------------------
def _basis(n: int) -> np.ndarray:
    """Orthonormal basis Q (n, n-1) of the subspace orthogonal to the all-ones vector."""
    # Helmert-type construction via QR of [1 | I] (deterministic)
    q, _ = np.linalg.qr(np.column_stack([np.ones(n), np.eye(n)[:, : n - 1]]))
    return q[:, 1:n]


def _strata(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strata (size pairs) and sampling units (complementary pairs or single coalitions).

    Returns:
        stratum (u,) int: min(|S|, n-|S|); unit (u,) int: unit id shared by S and N∖S when both observed;
        fpc_fraction (n//2 + 1,) float: observed share of each stratum's coalitions.
    """
    u, n = z.shape
    sizes = z.sum(axis=1)
    stratum = np.minimum(sizes, n - sizes)
    keys = {row.tobytes(): i for i, row in enumerate(np.packbits(z, axis=1))}
    unit = np.arange(u)
    comp = np.packbits(~z, axis=1)
    for i in range(u):
        j = keys.get(comp[i].tobytes())
        if j is not None and j < i:
            unit[i] = unit[j]
    observed = np.bincount(stratum, minlength=n // 2 + 1).astype(np.float64)
    population = np.array(
        [math.comb(n, k) * (1 if 2 * k == n else 2) if k > 0 else 1 for k in range(n // 2 + 1)], dtype=np.float64
    )
    return stratum, unit, np.minimum(observed / population, 1.0)


def _regression_weights(data: _Data, method: str) -> np.ndarray:
    n = data.n
    sizes = data.z.sum(axis=1)
    if method == "kernelshap":
        counts = np.bincount(sizes, minlength=n + 1).astype(np.float64)
        return layer_kernel_mass(n)[sizes] / counts[sizes]
    if method == "leverage_shap":
        pi = _leverage_inclusion(n, sizes)
        return kernel_weights(n, sizes) / pi
    if method == "kernelshap_paper":
        return data.draw_counts.astype(np.float64)
    raise ValueError(f"no regression weights for method {method!r}; valid: {', '.join(REGRESSION_METHODS)}.")


def _leverage_inclusion(n: int, sizes: np.ndarray) -> np.ndarray:
    """π_k = 1 - exp(-τ / C(n,k)) with τ such that Σ_S π_S = number of observed coalitions."""
    k = np.arange(1, n)
    binom = np.array([float(math.comb(n, int(kk))) for kk in k])
    target = float(len(sizes))

    def expected(log_tau: float) -> float:
        return float(np.sum(binom * -np.expm1(-np.exp(log_tau) / binom)))

    lo, hi = -50.0, math.log(binom.max()) + 60.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if expected(mid) < target:
            lo = mid
        else:
            hi = mid
    tau = math.exp((lo + hi) / 2)
    pi = -np.expm1(-tau / binom)
    return np.maximum(pi[sizes - 1], 1e-300)


def _solve_constrained(x: np.ndarray, yprime: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """β = (XᵀWX)⁺ XᵀW y'. Returns (β, (XᵀWX)⁺)."""
    a = (x * w[:, None]).T @ x
    h = np.linalg.pinv(a, hermitian=True)
    return h @ (x.T @ (w * yprime)), h


def _center_by_size(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, sizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Subtract from every row of x (u, d) and y (u,) the w-weighted mean of its size layer."""
    sw = np.bincount(sizes, weights=w)
    safe = np.where(sw > 0, sw, 1.0)
    x_mean = np.stack([np.bincount(sizes, weights=w * x[:, j], minlength=len(sw)) for j in range(x.shape[1])], axis=1)
    y_mean = np.bincount(sizes, weights=w * y, minlength=len(sw))
    return x - (x_mean / safe[:, None])[sizes], y - (y_mean / safe)[sizes]


@dataclass
class _Fit:
    """One weighted constrained solve: φ = t/n + ``offset``, ``offset = lin @ y'``, ``g`` its influence rows."""

    offset: np.ndarray  # (n,), orthogonal to 1 for a single fit
    lin: np.ndarray  # (n, u): φ - t/n is linear in y' through this operator
    g: np.ndarray  # (u, n): influence of each row on φ (HC3-adjusted residual times its column of lin)
    rank: int


def _fit(x_fit: np.ndarray, y_fit: np.ndarray, w: np.ndarray, q: np.ndarray, unit: np.ndarray) -> _Fit:
    beta, h = _solve_constrained(x_fit, y_fit, w)
    # x_fitᵀW y_fit = x_fitᵀW y' when x_fit is size-centred, so lin applies to the uncentred y' as well
    lin = q @ h @ (x_fit * w[:, None]).T
    resid = y_fit - x_fit @ beta
    # HC3-style small-sample correction: residual of each unit divided by (1 - its leverage)
    hat = w * np.einsum("ij,jk,ik->i", x_fit, h, x_fit)
    unit_hat = np.bincount(unit, weights=hat)[unit]
    adjusted = resid / np.maximum(1.0 - unit_hat, 0.05)
    rank = int(np.linalg.matrix_rank(x_fit * np.sqrt(w)[:, None]))
    return _Fit(offset=q @ beta, lin=lin, g=(lin * adjusted).T, rank=rank)


def _blend_weights(plain: _Fit, centred: _Fit, stratum: np.ndarray, unit: np.ndarray,
                   fraction: np.ndarray) -> np.ndarray:
    """λ (n,) in [0, 1] minimising Var(φ_p + λ(φ_c - φ_p)) per player (φ_c - φ_p is a control variate)."""
    diff = centred.g - plain.g
    var_diff = _stratified_cov(diff, diff, stratum, unit, fraction)
    cov = _stratified_cov(plain.g, diff, stratum, unit, fraction)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(var_diff > 0, -cov / var_diff, 1.0)
    return np.clip(np.nan_to_num(lam, nan=1.0), 0.0, 1.0)


def _blend(plain: np.ndarray, centred: np.ndarray, lam: np.ndarray, player_axis: int = 0) -> np.ndarray:
    """plain + λ (centred - plain) along the player axis, re-projected onto Σ_players = 0 (efficiency)."""
    shape = [1] * plain.ndim
    shape[player_axis] = -1
    out = plain + lam.reshape(shape) * (centred - plain)
    return out - out.mean(axis=player_axis, keepdims=True)


def _regression(
    data: _Data, method: str, ci: str, n_boot: int, seed: int, deterministic: bool, center: str = "none"
) -> tuple[np.ndarray, np.ndarray, dict]:
    n, u = data.n, data.n_unique
    if u < n - 1:
        raise ValueError(
            f"method {method!r} needs at least n-1={n - 1} distinct proper coalitions with finite values; "
            f"got {u}. Evaluate more coalitions (raise the budget)."
        )
    # 1. weights, basis, reduced problem  y' = y - t/n·|S| = (Z Q) β; strata and sampling units
    w = _regression_weights(data, method)
    q = _basis(n)
    zf = data.z.astype(np.float64)
    x = zf @ q
    sizes = zf.sum(axis=1)
    size_index = sizes.astype(np.int64)
    total = data.total
    yprime = data.y - data.v_empty - total / n * sizes
    if method != "kernelshap_paper":
        stratum, unit, fraction = _strata(data.z)
    else:
        stratum, unit, fraction = np.zeros(u, dtype=np.int64), np.arange(u), np.zeros(1)
    if not deterministic and data.noise_var is None:
        # utility noise unknown: a fully enumerated layer still carries noise, so no FPC (conservative)
        fraction = np.zeros_like(fraction)

    # 2. the plain fit, the size-centred fit (a free intercept per size; needs n-1 dof left), the blend
    plain = _fit(x, yprime, w, q, unit)
    centred = None
    if center in ("size", "auto"):
        xc, yc = _center_by_size(x, yprime, w, size_index)
        candidate = _fit(xc, yc, w, q, unit)
        centred = candidate if candidate.rank == n - 1 else None
    lam = None
    if centred is None:
        chosen, used = plain, "none"
    elif center == "size":
        chosen, used = centred, "size"
    else:
        # per-player blend, re-projected onto Σφ = t (P removes the mean over players)
        lam = _blend_weights(plain, centred, stratum, unit, fraction)
        chosen = _Fit(
            offset=_blend(plain.offset, centred.offset, lam),
            lin=_blend(plain.lin, centred.lin, lam),
            g=_blend(plain.g, centred.g, lam, player_axis=1),
            rank=max(plain.rank, centred.rank),
        )
        used = "auto"
    value = total / n + chosen.offset

    # 3. sampling variance
    if ci == "analytic":
        var = _stratified_cov(chosen.g, chosen.g, stratum, unit, fraction)
    elif ci == "bootstrap":

        def refit(wb: np.ndarray) -> np.ndarray:
            b_plain = q @ _solve_constrained(x, yprime, wb)[0]
            if used == "none":
                return b_plain
            b_centred = q @ _solve_constrained(*_center_by_size(x, yprime, wb, size_index), wb)[0]
            return b_centred if used == "size" else _blend(b_plain, b_centred, lam)

        var = _bootstrap_regression(refit, w, n, stratum, unit, fraction, n_boot, seed)
    else:
        raise ValueError(f"ci must be one of {', '.join(CI_KINDS)}; got {ci!r}.")

    # 4. utility noise the sampling variance cannot see: enumerated share of strata + the endpoints
    if data.noise_var is not None:
        share = fraction[stratum]
        var = var + (chosen.lin**2) @ (data.noise_var_rows() * share)
        # ∂φ/∂v_full and ∂φ/∂v_empty (φ is affine in both; t enters φ as t/n and through y')
        d_total = 1.0 / n - chosen.lin @ (sizes / n)
        d_empty = -d_total - chosen.lin @ np.ones(u)
        var = var + d_total**2 * data.noise_var / data.reps_full + d_empty**2 * data.noise_var / data.reps_empty
    layer_counts = np.bincount(size_index, minlength=n + 1).tolist()
    extras: dict[str, Any] = {"rank": chosen.rank, "layer_counts": layer_counts, "n_units": len(np.unique(unit)),
                              "center": used}
    if lam is not None:
        extras["center_weight"] = lam.tolist()
    return value, var, extras


def _stratified_cov(
    g1: np.ndarray, g2: np.ndarray, stratum: np.ndarray, unit: np.ndarray, fraction: np.ndarray
) -> np.ndarray:
    """Per column, Σ_h (1 - f_h) · c_h/(c_h - 1) · Σ_units (g1_u - ḡ1_h)(g2_u - ḡ2_h), g summed per unit."""
    n_units = int(unit.max()) + 1

    def per_unit(g: np.ndarray) -> np.ndarray:
        gu = np.zeros((n_units, g.shape[1]))
        np.add.at(gu, unit, g)
        return gu

    gu1 = per_unit(g1)
    sums = (gu1, gu1 if g2 is g1 else per_unit(g2))
    unit_stratum = np.zeros(n_units, dtype=np.int64)
    unit_stratum[unit] = stratum
    present = np.zeros(n_units, dtype=bool)
    present[unit] = True
    cov = np.zeros(g1.shape[1])
    for h in np.unique(stratum):
        members = present & (unit_stratum == h)
        c = int(members.sum())
        fpc = 1.0 - fraction[h]
        if c < 2 or fpc <= 0:
            continue
        a, b = (gu[members] - gu[members].mean(axis=0) for gu in sums)
        cov += fpc * c / (c - 1) * (a * b).sum(axis=0)
    return cov


def _bootstrap_regression(
    refit: Any,
    w: np.ndarray,
    n: int,
    stratum: np.ndarray,
    unit: np.ndarray,
    fraction: np.ndarray,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """Variance of φ over ``n_boot`` refits (``refit(row weights) -> φ offset``) with units resampled within
    strata (enumerated strata fixed)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    groups: list[np.ndarray] = []
    for h in np.unique(stratum):
        if fraction[h] >= 1.0:
            continue
        groups.append(np.unique(unit[stratum == h]))
    draws = np.empty((n_boot, n))
    for b in range(n_boot):
        mult = np.ones(int(unit.max()) + 1)
        for units in groups:
            picks = rng.integers(0, len(units), size=len(units))
            mult[units] = np.bincount(picks, minlength=len(units))
        draws[b] = refit(w * mult[unit])
    return draws.var(axis=0, ddof=1)


# --------------------------------------------------------------------------------------------------------
# Exact Shapley, LOO, Banzhaf (MSR), datamodels
# --------------------------------------------------------------------------------------------------------
def _codes(z: np.ndarray) -> np.ndarray:
    return (z.astype(np.int64) << np.arange(z.shape[1], dtype=np.int64)).sum(axis=1)


def _exact_shapley(data: _Data) -> tuple[np.ndarray, np.ndarray, dict]:
    n = data.n
    if n > 20:
        raise ValueError(f"method 'exact_shapley' needs all 2^n coalitions; n={n} > 20 is refused. Use 'kernelshap'.")
    needed = 2**n - 2
    if data.n_unique < needed:
        raise ValueError(
            f"method 'exact_shapley' needs all {needed} proper coalitions (design 'exact') with finite values; "
            f"got {data.n_unique}. Evaluate the missing {needed - data.n_unique} or use 'kernelshap'."
        )
    # 1. value table indexed by bitmask; per-row noise variance table
    table = np.empty(2**n)
    noise = np.zeros(2**n)
    codes = _codes(data.z)
    table[codes] = data.y
    table[0], table[-1] = data.v_empty, data.v_full
    if data.noise_var is not None:
        noise[codes] = data.noise_var_rows()
        noise[0], noise[-1] = data.noise_var / data.reps_empty, data.noise_var / data.reps_full
    # 2. φ_i = Σ_{S ∌ i} |S|!(n-|S|-1)!/n! · (v(S ∪ i) - v(S))
    all_codes = np.arange(2**n, dtype=np.int64)
    popcount = ((all_codes[:, None] >> np.arange(n)) & 1).sum(axis=1)
    coef = np.array([1.0 / (n * math.comb(n - 1, s)) for s in range(n)])
    value = np.empty(n)
    var = np.zeros(n)
    for i in range(n):
        bit = 1 << i
        without = all_codes[(all_codes & bit) == 0]
        c = coef[popcount[without]]
        value[i] = np.sum(c * (table[without | bit] - table[without]))
        var[i] = np.sum(c**2 * (noise[without | bit] + noise[without]))
    return value, var, {}


def _loo(data: _Data) -> tuple[np.ndarray, np.ndarray, dict]:
    n = data.n
    sizes = data.z.sum(axis=1)
    rows = np.flatnonzero(sizes == n - 1)
    missing_player = np.argmin(data.z[rows], axis=1)
    found = np.zeros(n, dtype=bool)
    found[missing_player] = True
    if not found.all():
        raise ValueError(
            f"method 'loo' needs all n={n} leave-one-out coalitions (design 'loo'); "
            f"missing players {np.flatnonzero(~found).tolist()}."
        )
    value = np.empty(n)
    var = np.zeros(n)
    value[missing_player] = data.v_full - data.y[rows]
    if data.noise_var is not None:
        var[missing_player] = data.noise_var / data.reps[rows] + data.noise_var / data.reps_full
    return value, var, {}


def _banzhaf_msr(
    data: _Data, ci: str, n_boot: int, seed: int, include_endpoints: bool
) -> tuple[np.ndarray, np.ndarray, dict]:
    z, y = data.z, data.y
    if include_endpoints:
        z = np.vstack([z, np.zeros((1, data.n), bool), np.ones((1, data.n), bool)])
        y = np.concatenate([y, [data.v_empty, data.v_full]])
    n_in = z.sum(axis=0)
    n_out = len(z) - n_in
    if n_in.min() < 2 or n_out.min() < 2:
        raise ValueError(
            "method 'banzhaf_msr' needs every player in at least 2 and out of at least 2 coalitions; "
            f"got min in={int(n_in.min())}, min out={int(n_out.min())}. Use design 'uniform' with a larger budget."
        )

    def msr(zz: np.ndarray, yy: np.ndarray) -> np.ndarray:
        zf = zz.astype(np.float64)
        cin = zf.sum(axis=0)
        cout = len(zz) - cin
        return (yy @ zf) / np.maximum(cin, 1) - (yy @ (1 - zf)) / np.maximum(cout, 1)

    value = msr(z, y)
    if ci == "analytic":
        zf = z.astype(np.float64)
        mean_in = (y @ zf) / n_in
        mean_out = (y @ (1 - zf)) / n_out
        ss_in = ((y[:, None] - mean_in) ** 2 * zf).sum(axis=0)
        ss_out = ((y[:, None] - mean_out) ** 2 * (1 - zf)).sum(axis=0)
        var = ss_in / (n_in - 1) / n_in + ss_out / (n_out - 1) / n_out
    elif ci == "bootstrap":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB4]))
        draws = np.empty((n_boot, data.n))
        for b in range(n_boot):
            pick = rng.integers(0, len(z), size=len(z))
            draws[b] = msr(z[pick], y[pick])
        var = np.nanvar(draws, axis=0, ddof=1)
    else:
        raise ValueError(f"ci must be one of {', '.join(CI_KINDS)}; got {ci!r}.")
    return value, var, {"n_in_min": int(n_in.min()), "n_out_min": int(n_out.min())}


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
    data: _Data, ci: str, n_boot: int, seed: int, alphas: Any
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
