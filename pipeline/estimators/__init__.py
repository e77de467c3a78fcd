"""Shapley / Banzhaf / LOO / datamodel estimates with uncertainty, from (masks, values) alone (numpy only).

One entry point, :func:`estimate`, for every registered method (:func:`method_names`); one result type,
:class:`Estimate`.

Layout: one file per method family registers its methods with :func:`register_method`
(``kernelshap.py``: ``kernelshap``, ``leverage_shap``, ``kernelshap_paper``; ``exact.py``:
``exact_shapley``; ``banzhaf.py``: ``banzhaf_msr``; ``loo.py``: ``loo``; ``datamodel.py``:
``datamodel``); ``_base.py`` holds the registry, the data preparation and the per-method result.
A new estimator is one file with a ``fit(data, *, ci, n_boot, seed, options)`` function and a
:func:`register_method` call, listed in ``_BUILTIN_MODULES`` below.

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

Identification
--------------
Few evaluations may not determine a player's value, or its uncertainty. Every method then sets
``Estimate.identified[i] = False``, ``stderr[i] = inf`` and the interval (-inf, inf) for the players
affected, and ``extras["more_evaluations"]`` to a lower bound on the further evaluations it needs;
where nothing can be computed at all it refuses with one line naming that number. A zero-width interval
is only reported where the rows fit the estimator's model exactly for every player (an additive game; a
pairwise game under a paired design), so it is then exact; never from a few rows that happen to fit.

- Regression methods (``kernelshap``, ``leverage_shap``, ``kernelshap_paper``): player i is identified
  when (1) e_i lies in the row space of the weighted design with the efficiency constraint (a paired
  design spans one direction per complementary pair: fewer than n-1 pairs leave directions free and the
  pseudo-inverse picks one split of them); (2) φ_i depends on no sampled unit fitted exactly whatever
  its value (leverage 1, the per-size intercepts of the centred fit included: fewer rows than
  parameters) and on no sampled size stratum holding a single unit (no within-stratum spread); (3) its
  variance is not zero while the fit is not exact (a few rows that happen to fit). ``kernelshap``'s
  size-centred fit, and so the blend, is used only when it identifies every player; else the plain fit.
- ``banzhaf_msr``: a player needs at least 2 rows with it and 2 without it (NaN value with none on a side).
- ``datamodel``: the coefficient's direction must be in the row space of the centred design, up to a
  shift common to all players (confounded with the intercept on a one-size design; harmless for a linear
  attribution compared within itself); and the fit needs a residual degree of freedom (u >= rank + 2).
- ``exact_shapley`` (complete exact design) and ``loo`` (all n leave-one-out rows) refuse incomplete
  rows, so what they return is identified; their interval is the measured utility noise alone (zero
  width without replicates: exact for a deterministic utility).
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from contribshap.pipeline.estimators._base import (
    CI_KINDS,
    MethodResult,
    MethodSpec,
    method_names,
    method_spec,
    prepare,
    register_method,
)
from contribshap.pipeline.estimators.kernelshap import CENTER_KINDS, REGRESSION_METHODS

__all__ = [
    "CENTER_KINDS",
    "CI_KINDS",
    "EFFICIENT_METHODS",
    "METHODS",
    "REGRESSION_METHODS",
    "Estimate",
    "MethodResult",
    "MethodSpec",
    "converged",
    "estimate",
    "max_halfwidth",
    "method_names",
    "method_spec",
    "register_method",
]

# The built-in method families, imported in this order (it is the order of :func:`method_names`).
_BUILTIN_MODULES: tuple[str, ...] = ("kernelshap", "exact", "banzhaf", "loo", "datamodel", "regression_msr")
for _module in _BUILTIN_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

METHODS: tuple[str, ...] = method_names()
"""The built-in method names (``method_names()`` also lists methods registered later)."""

EFFICIENT_METHODS: tuple[str, ...] = tuple(m for m in METHODS if method_spec(m).efficient)
"""Methods whose estimate sums to v(N) - v(∅)."""


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
        extras: JSON-able details (``n_unique``, ``ci``, ``n_nan_dropped``, ``total``, layer counts,
            ``more_evaluations``...).
        identified: bool (n,), False for a player whose value or uncertainty the evaluated coalitions
            cannot identify (see "Identification" in the module docstring); its ``stderr`` is inf and
            its interval (-inf, inf). Defaults to all True.
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
    identified: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.identified is None:
            self.identified = np.ones(self.value.shape, dtype=bool)
        self.identified = np.asarray(self.identified, dtype=bool)

    @property
    def n_players(self) -> int:
        return int(self.value.shape[0])

    @property
    def all_identified(self) -> bool:
        """True when every player's value and interval are identified."""
        return bool(np.all(self.identified))

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
            "identified": [bool(x) for x in self.identified],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Estimate:
        """Inverse of :meth:`to_dict` (a dict without ``identified`` loads as all identified)."""
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
            identified=None if data.get("identified") is None else np.asarray(data["identified"], dtype=bool),
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
            and np.array_equal(self.identified, other.identified)
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
    """Largest CI half-width over players, (ci_high - ci_low) / 2; ``inf`` if any bound is NaN or infinite
    or any player is not identified."""
    half = (np.asarray(est.ci_high) - np.asarray(est.ci_low)) / 2.0
    if half.size == 0 or np.any(~np.isfinite(half)) or not est.all_identified:
        return math.inf
    return float(half.max())


def converged(est: Estimate, target: float, *, relative_to: float | None = None) -> bool:
    """True when every player is identified and the largest CI half-width is at most ``target``.

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
    return est.all_identified and max_halfwidth(est) <= bound


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
    spec = method_spec(method)
    unknown = set(options) - spec.options
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for method {method!r}; "
            f"allowed: {', '.join(sorted(spec.options))}."
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
    data = prepare(masks, values, float(v_empty), float(v_full), options.get("draw_counts"))

    # 3. the method
    result = spec.fit(data, ci=ci, n_boot=n_boot, seed=seed, options=options)
    value, var, extras, ci = result.value, result.var, result.extras, result.ci
    identified = np.ones(data.n, dtype=bool) if result.identified is None else np.asarray(result.identified, bool)

    # 4. package
    from scipy import stats

    stderr = np.where(identified, np.sqrt(np.maximum(var, 0.0)), np.inf)
    z = float(stats.norm.ppf(0.5 + float(level) / 2.0))
    extras.update(
        {
            "ci": ci,
            "more_evaluations": int(result.more_evaluations) if not identified.all() else 0,
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
        ci_low=np.where(identified, value - z * stderr, -np.inf),
        ci_high=np.where(identified, value + z * stderr, np.inf),
        n_evaluations=int(data.n_rows),
        method=method,
        level=float(level),
        utility_noise=data.noise_sd,
        extras=extras,
        identified=identified,
    )
