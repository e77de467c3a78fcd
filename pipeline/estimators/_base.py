"""What every estimator shares: the method registry, the prepared data, the result of one method (numpy only).

A method is one function ``fit(data, *, ci, n_boot, seed, options) -> MethodResult`` registered under its
name with :func:`register_method`; :func:`contribshap.pipeline.estimators.estimate` validates the common
arguments, prepares the data once (:func:`prepare`) and calls it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

CI_KINDS: tuple[str, ...] = ("auto", "analytic", "bootstrap")
"""Valid values of the ``ci`` option."""


# --------------------------------------------------------------------------------------------------------
# Prepared data: replicates averaged, NaN dropped, endpoints split off
# --------------------------------------------------------------------------------------------------------
@dataclass
class Data:
    """The rows a method sees.

    Attributes:
        n: number of players.
        z: bool (u, n), the unique proper coalitions (neither empty nor full).
        y: float (u,), mean value v(S) of each (not yet minus v_empty).
        reps: float (u,), replicate count of each.
        draw_counts: float (u,), multiplicity in the raw draw (``kernelshap_paper``), 1 when not given.
        v_empty, v_full: the endpoints; reps_empty, reps_full: their replicate counts.
        noise_var, noise_sd: pooled replicate variance / standard deviation (None without replicates).
        n_rows: evaluations used (after dropping NaN); n_nan: evaluations dropped.
        noise_var_each: float (u,), each coalition's own utility-noise variance (one evaluation), its
            replicate variance shrunk toward ``noise_var`` (:func:`shrunk_noise_var`); None without replicates.
        noise_var_empty, noise_var_full: the same for the endpoints (None without replicates).
        noise_dof: replicate degrees of freedom behind ``noise_var`` (Σ (reps - 1)), 0 without replicates.
    """

    n: int
    z: np.ndarray
    y: np.ndarray
    reps: np.ndarray
    draw_counts: np.ndarray
    v_empty: float
    v_full: float
    reps_empty: int
    reps_full: int
    noise_var: float | None
    noise_sd: float | None
    n_rows: int
    n_nan: int
    noise_var_each: np.ndarray | None = None
    noise_var_empty: float | None = None
    noise_var_full: float | None = None
    noise_dof: int = 0

    @property
    def n_unique(self) -> int:
        return int(self.z.shape[0])

    @property
    def total(self) -> float:
        return self.v_full - self.v_empty

    def noise_var_rows(self) -> np.ndarray:
        """Variance of each averaged value ȳ_S from utility noise: the coalition's own (shrunk) noise variance
        over its replicate count (zeros when noise is unknown)."""
        if self.noise_var is None:
            return np.zeros(self.n_unique)
        each = self.noise_var if self.noise_var_each is None else self.noise_var_each
        return each / self.reps

    def noise_var_endpoints(self) -> tuple[float, float]:
        """Variance of the averaged v(∅) and v(N) from utility noise (zeros when noise is unknown)."""
        if self.noise_var is None:
            return 0.0, 0.0
        empty = self.noise_var if self.noise_var_empty is None else self.noise_var_empty
        full = self.noise_var if self.noise_var_full is None else self.noise_var_full
        return empty / self.reps_empty, full / self.reps_full


NOISE_PRIOR_DOF = 4.0
"""Weight of the pooled noise variance in a coalition's own, in replicate degrees of freedom (see
:func:`shrunk_noise_var`)."""


def shrunk_noise_var(ss: np.ndarray, reps: np.ndarray, pooled: float, prior_dof: float = NOISE_PRIOR_DOF) -> np.ndarray:
    """Per-coalition noise variance, its own replicate variance shrunk toward the pooled one:
    (SS_S + ν₀ σ̂²) / (r_S - 1 + ν₀), ν₀ = ``prior_dof``.

    Utility noise is heteroscedastic (seed-to-seed SD differs tenfold between coalitions), so the pooled
    value misstates a given coalition's noise; its own variance from r_S replicates has only r_S - 1 degrees
    of freedom, so it is weighted against the pooled value as if that were ν₀ further replicates. One
    evaluation (r_S = 1) gets the pooled value; many replicates get essentially their own.
    ``ss`` (u,): sum of squared deviations from the coalition's mean; ``reps`` (u,): replicate counts.
    """
    return (np.asarray(ss, dtype=np.float64) + prior_dof * pooled) / (np.asarray(reps, dtype=np.float64) - 1.0
                                                                      + prior_dof)


def prepare(masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, draw_counts: Any) -> Data:
    """Validate shapes, drop NaN rows (with a warning), average replicates, split off the endpoint rows."""
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
    each = None if noise_var is None else shrunk_noise_var(ss, reps, noise_var)
    keep = ~(is_empty | is_full)
    return Data(
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
        noise_var_each=None if each is None else each[keep],
        noise_var_empty=None if each is None or not is_empty.any() else float(each[is_empty][0]),
        noise_var_full=None if each is None or not is_full.any() else float(each[is_full][0]),
        noise_dof=dof,
    )


# --------------------------------------------------------------------------------------------------------
# One method's answer, and the registry
# --------------------------------------------------------------------------------------------------------
@dataclass
class MethodResult:
    """What a method's ``fit`` returns.

    Attributes:
        value: float (n,), the estimate.
        var: float (n,), its variance (sampling + utility noise).
        ci: the interval kind actually used (``"analytic"``, ``"bootstrap"`` or ``"noise"``).
        extras: JSON-able method details.
        identified: bool (n,): False where the rows cannot identify the player's value or its variance
            (its interval becomes (-inf, inf)); None means every player is identified.
        more_evaluations: further evaluations of the same (prefix-stable) plan needed until every player
            is identified (0 when all are).
        cov_factor, cov_diag: optional (n, K) and (n,): the error covariance across players, ≈ F Fᵀ +
            diag(d), for simultaneous intervals (None: the method gives none; Bonferroni is used).
    """

    value: np.ndarray
    var: np.ndarray
    ci: str
    extras: dict[str, Any]
    identified: np.ndarray | None = None
    more_evaluations: int = 0
    cov_factor: np.ndarray | None = None
    cov_diag: np.ndarray | None = None


FitFunction = Callable[..., MethodResult]
"""``fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict) -> MethodResult``."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered estimator.

    Attributes:
        name: the ``method`` string of :func:`~contribshap.pipeline.estimators.estimate`.
        fit: ``fit(data, *, ci, n_boot, seed, options) -> MethodResult``; ``ci`` is ``"auto"``,
            ``"analytic"`` or ``"bootstrap"`` as requested; ``options`` holds only names in ``options``.
        options: keyword options the method accepts (anything else is refused up front).
        efficient: True when the estimate sums to v(N) - v(∅) (a Shapley estimator).
        max_players: largest n the method accepts (None: no limit).
        summary: one line for listings.
    """

    name: str
    fit: FitFunction
    options: frozenset[str]
    efficient: bool = False
    max_players: int | None = None
    summary: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    fit: FitFunction,
    *,
    options: frozenset[str] | set[str] | tuple[str, ...] = (),
    efficient: bool = False,
    max_players: int | None = None,
    summary: str = "",
) -> MethodSpec:
    """Register an estimator under ``name`` (names are unique; registering a name twice is an error).

    Example:
        >>> def fit(data, *, ci, n_boot, seed, options):  # doctest: +SKIP
        ...     return MethodResult(value=..., var=..., ci="analytic", extras={})
        >>> register_method("my_method", fit, options={"ci"}, summary="...")  # doctest: +SKIP
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"method name must be an identifier-like string; got {name!r}.")
    if name in _REGISTRY:
        raise ValueError(f"method {name!r} is already registered; choose another name.")
    spec = MethodSpec(name=name, fit=fit, options=frozenset(options), efficient=efficient,
                      max_players=max_players, summary=summary)
    _REGISTRY[name] = spec
    return spec


def method_names() -> tuple[str, ...]:
    """Registered method names, in registration order (the built-in ones first, ``kernelshap`` first)."""
    return tuple(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``; an unknown name is an error listing the valid ones."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(_REGISTRY)}.")
    return spec


def check_ci(ci: str) -> None:
    """Refuse an unknown ``ci`` value, listing the valid ones."""
    if ci not in CI_KINDS:
        raise ValueError(f"ci must be one of {', '.join(CI_KINDS)}; got {ci!r}.")


def distrust_zero_variance(var: np.ndarray, identified: np.ndarray, *, scale: float,
                           depends: np.ndarray | None = None) -> np.ndarray:
    """``identified`` (n,) with players whose sampling variance is zero turned False, unless the whole fit is
    exact (every player identified, every variance zero: an additive game, say).

    A player at zero variance while the fit is not exact sits on a few rows that happen to fit exactly
    (too few rows to see its error): a zero-width interval there would be a confident answer the data do
    not support. ``scale``: the size of the values (zero means below (1e-9 · scale)²); ``depends`` (n,)
    bool: players whose estimate depends on sampled rows at all (others are exact by design).
    """
    floor = (1e-9 * max(float(scale), 1e-300)) ** 2
    zero = var <= floor
    if depends is not None:
        zero &= depends
    if zero.any() and not (identified.all() and np.all(var <= floor)):
        return identified & ~zero
    return identified
