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

At the budgets GPU runs afford (2n-10n coalitions) the regression methods' variance is built to stay honest
with few units per size stratum:

- *Leverage* (CR2, per unit): a unit's weighted residuals are multiplied by (I - H_uu)^(-1/2), H_uu the
  block of the hat matrix on its rows in the whole model, the per-size intercepts of the size-centred fit
  included (left out, thin layers look better fitted than they are). For the plain fit a complementary
  pair spans one direction and this is the division by sqrt(1 - h_S - h_{N∖S}); under the centred fit the
  two rows of a pair sit under different intercepts and the block has two eigenvalues.
- *Collapsed strata*: sampled size strata holding fewer than two units are pooled with their neighbours
  (in order of size) until every group holds two; the stratified variance runs over these groups. With n
  in the hundreds a plan of a few n coalitions leaves most size strata with one unit, which before left
  every player without a variance (every player depends on every row). The blend weight λ keeps the
  uncollapsed size pairs (their means differ by the size effect the control variate removes).
- *Units fitted exactly* (leverage 1): their residual shows nothing, so their error variance is imputed
  from the pooled squared adjusted residuals of their (collapsed) stratum, and added per player as
  Σ lin_{i,S}² σ̂²_h.
- *Size intercepts*: when one intercept per observed size would take more than half the plain fit's
  residual units (U - rank), adjacent sizes share intercepts (contiguous bins of about equal rows), so the
  centred fit keeps residual units for its variance.
- *Blend weight*: λ of ``center="auto"`` is chosen on the same data to minimise the estimated variance,
  so that estimate is optimistic; the analytic variance is at least (1-λ)·Var(φ_p) + λ·Var(φ_c), an upper
  bound of the blend's variance for any fixed λ. The bootstrap re-estimates λ inside every replicate.
- *Heteroscedastic noise*: each coalition (and endpoint) gets its own replicate variance, shrunk toward
  the pooled one as if the pooled value were 4 further replicates ((SS_S + 4 σ̂²) / (r_S - 1 + 4); one
  evaluation gets σ̂²): seed-to-seed SD differs tenfold between coalitions.
- *Thin strata*: the variance estimate has ν effective degrees of freedom (Satterthwaite over strata, a
  stratum of c units giving c - 1, scaled by the share of the sampled units the fit's parameters leave to
  the residuals, combined with the noise term's replicate degrees of freedom; ``extras["dof"]``), and the
  variance is multiplied by (t_{ν,0.975} / z_{0.975})², so the normal interval at level 0.95 is the t
  interval (at other levels the inflation of 0.95 is kept: about ν/(ν-2), the variance of t_ν).

Exactness is kept: an enumerated design on a noiseless game has zero variance (so zero width), and
efficiency Σφ = v(N) - v(∅) is untouched (only the variance changed). Measured coverage of the nominal 95%
intervals of ``kernelshap`` (``bench/coverage.py``: 5 games with 2% heteroscedastic utility noise, n = 10
and 12, designs ``paired`` / ``leverage``, 1 or 2 replicates, 300 repetitions a cell, over identified
players; every cell in ``bench/results/coverage.json``, the previous variance in ``coverage_before.json``):

Coverage over identified players, previous variance → this one (**bold**: outside 90-99%); share of
players identified: 2n 10-14%, 3n 27-40%, 5n 64-87%, 10n 96-100%::

    | game | design | reps | 2n | 3n | 5n | 10n |
    |---|---|---|---|---|---|---|
    | interactions n=10 | paired | 1 | .833 → .902 | .966 → .972 | .967 → .962 | .975 → .978 |
    | interactions n=10 | paired | 2 | .789 → **.876** | .954 → .972 | .935 → .943 | .926 → .942 |
    | interactions n=10 | leverage | 1 | .887 → .955 | .975 → .979 | .973 → .966 | .970 → .970 |
    | interactions n=10 | leverage | 2 | .873 → .941 | .968 → .976 | .964 → .957 | .941 → .950 |
    | learning curve n=10 | paired | 1 | .878 → .943 | .947 → .952 | .954 → .981 | .909 → .971 |
    | learning curve n=10 | paired | 2 | .868 → **.890** | .919 → .910 | .948 → .956 | .944 → .970 |
    | learning curve n=10 | leverage | 1 | .831 → .924 | .957 → .967 | .953 → .962 | .905 → .971 |
    | learning curve n=10 | leverage | 2 | .828 → **.851** | .951 → .950 | .944 → .942 | .946 → .974 |
    | pairwise n=10 | paired | 1 | .907 → .957 | .938 → .951 | .939 → .947 | .878 → .915 |
    | pairwise n=10 | paired | 2 | .964 → .971 | .972 → .963 | .975 → .975 | .950 → .958 |
    | pairwise n=10 | leverage | 1 | .901 → .961 | .948 → .965 | .944 → .945 | .882 → .930 |
    | pairwise n=10 | leverage | 2 | .977 → .966 | .988 → .984 | .982 → .980 | .953 → .966 |
    | voting n=10 | paired | 1 | .632 → **.818** | .891 → **.899** | .958 → .968 | .949 → .980 |
    | voting n=10 | paired | 2 | .522 → **.615** | .882 → **.879** | .939 → .960 | .908 → .961 |
    | voting n=10 | leverage | 1 | .685 → **.873** | .956 → .966 | .953 → .958 | .956 → .984 |
    | voting n=10 | leverage | 2 | .617 → **.730** | .947 → .948 | .944 → .946 | .932 → .972 |
    | interactions n=12 | paired | 1 | .901 → .975 | .968 → .968 | .965 → .960 | .956 → .963 |
    | interactions n=12 | paired | 2 | .868 → .908 | .963 → .954 | .946 → .940 | .935 → .947 |
    | interactions n=12 | leverage | 1 | .832 → .902 | .972 → .975 | .963 → .949 | .956 → .963 |
    | interactions n=12 | leverage | 2 | .936 → .971 | .978 → .973 | .960 → .947 | .944 → .949 |

From 3n up 58 of 60 cells lie in 90-99% (before: 56); the misses are the weighted-voting game (a step
utility: a player's error shows only when a pivotal coalition is drawn, so a few units that miss it
agree and the spread is small) under the ``paired`` design at 3n, 0.899 and 0.879. At 2n (10-14% of
players identified, each on a handful of units) 13 of 20 cells are in range, down to 0.615 (voting); there
the ``identified`` flag, not the interval, carries the budget: grow the plan until the players are
identified before trusting an interval. ``tests/test_coverage.py`` checks two games of this grid.

Identification
--------------
Few evaluations may not determine a player's value, or its uncertainty. Every method then sets
``Estimate.identified[i] = False``, ``stderr[i] = inf`` and the interval (-inf, inf) for the players
affected, and ``extras["more_evaluations"]`` to the further evaluations of the same prefix-stable plan it
needs (regression methods: the missing rank, 25% more for units that repeat a known direction, one
residual unit, at the plan's rows per unit; measured sufficient on 249 grown plans at n = 30-258, four
designs; at n <= 11 a small pool of distinct pairs can need more);
where nothing can be computed at all it refuses with one line naming that number. A zero-width interval
is only reported where the rows fit the estimator's model exactly for every player (an additive game; a
pairwise game under a paired design), so it is then exact; never from a few rows that happen to fit.

- Regression methods (``kernelshap``, ``leverage_shap``, ``kernelshap_paper``): player i is identified
  when (1) e_i lies in the row space of the weighted design with the efficiency constraint (a paired
  design spans one direction per complementary pair: fewer than n-1 pairs leave directions free and the
  pseudo-inverse picks one split of them): rank, "the rows cannot pin the value"; (2) its variance can
  be estimated: thin strata are pooled (collapsed strata) and units fitted exactly get the pooled residual
  variance, so this fails only when no sampled unit has a residual at all (units = rank); (3) its
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
from contribshap.pipeline.estimators.simultaneous import (
    SIMULTANEOUS_LEVELS,
    bonferroni_critical,
    max_t_critical,
)

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
    "normal_interval",
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
            ``more_evaluations``, ``simultaneous``: the max-|t| critical values of the simultaneous
            intervals at levels 0.90 / 0.95 (see :mod:`.simultaneous` for the intervals, FDR sets, top-k
            and rank intervals)...).
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


def normal_interval(value: np.ndarray, stderr: np.ndarray, identified: np.ndarray,
                    level: float) -> tuple[np.ndarray, np.ndarray]:
    """(ci_low, ci_high): value ± z_{(1+level)/2}·stderr, (-inf, inf) where a player is not identified."""
    from scipy import stats

    z = float(stats.norm.ppf(0.5 + float(level) / 2.0))
    return np.where(identified, value - z * stderr, -np.inf), np.where(identified, value + z * stderr, np.inf)


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
    stderr = np.where(identified, np.sqrt(np.maximum(var, 0.0)), np.inf)
    ci_low, ci_high = normal_interval(value, stderr, identified, level)
    levels = tuple(sorted({*SIMULTANEOUS_LEVELS, float(level)}))
    if result.cov_factor is not None:
        diag = np.zeros(data.n) if result.cov_diag is None else result.cov_diag
        critical = max_t_critical(result.cov_factor, diag, identified, levels, seed=seed)
        kind = "max_t_multiplier"
    else:
        critical = bonferroni_critical(int(identified.sum()), levels)
        kind = "bonferroni"
    extras["simultaneous"] = {"method": kind, "levels": list(levels),
                              "critical": [float(c) if np.isfinite(c) else None for c in critical]}
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
        ci_low=ci_low,
        ci_high=ci_high,
        n_evaluations=int(data.n_rows),
        method=method,
        level=float(level),
        utility_noise=data.noise_sd,
        extras=extras,
        identified=identified,
    )
