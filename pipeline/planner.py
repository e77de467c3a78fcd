"""Budget planner: from a pilot's rows, the evaluations that reach a precision target (numpy only, no I/O).

A pilot (the first round of a plan, e.g. ``design.budget`` = 2n or 3n coalitions) gives every player a
standard error. The sampling variance of the regression estimators falls as 1/m in the number m of
sampled coalitions (each unit's influence is O(1/m) and the units add up), and so does the utility-noise
part (each coalition's noise enters with weight O(1/m)); what does not scale is the t widening of a
variance estimated on few degrees of freedom, which the planner carries separately. So, per player,

    se_i(m) = se_raw,i · sqrt(m0 / m) · infl(ν_i(m)),   ν_i(m) = ν_i,0 · (U(m) - p) / (U0 - p),

with se_raw the pilot's standard error without its t widening, m0 the pilot's distinct coalitions, U the
sampling units (U(m) = U0 · m / m0), p the fitted parameters (``extras["params"]``: the rank, plus
the size intercepts of a centred fit), infl the t/z ratio at 0.95. The
projection is the smallest m whose projected intervals meet the target:

- ``target_halfwidth=h``: the largest CI half-width z·se_i(m) over players is at most h (absolute, or a
  share of |v(N) - v(∅)| with ``relative=True``);
- ``top_k=k``: the k largest players are sure at ``level_statements`` (their worst rank inside the
  simultaneous intervals is at most k; the pilot's values plugged in);
- ``harmful_q=q``: every player the pilot puts below zero is in the Benjamini-Hochberg "harmful" set at
  FDR q (the pilot's values plugged in).

The plug-in targets assume the values stay where the pilot put them; a player near a boundary (a value
near 0, or near the k-th largest) needs a budget that grows as 1/gap², and the projection says so
(``reached=False`` at ``max_factor`` times the pilot). Designs whose variance falls faster than 1/m
(``leverage`` enumerating whole size layers as the budget grows) make the projection conservative.
Measured accuracy (``bench/planner.py``): the projected budget against the budget that actually reached the
target when the plan was grown.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

TARGETS: tuple[str, ...] = ("halfwidth", "top_k", "harmful")


@dataclass
class Projection:
    """The planner's answer.

    Attributes:
        evaluations: projected distinct coalitions (the design's ``budget``) that reach the target; the
            endpoints and any replicates come on top, as in the pilot. -1 when not reachable within
            ``max_factor`` times the pilot.
        more: ``evaluations`` minus the pilot's coalitions (>= 0; -1 when not reachable).
        pilot_evaluations: the pilot's distinct coalitions m0.
        target: ``"halfwidth"``, ``"top_k"`` or ``"harmful"``.
        reached: False when the target is not met within ``max_factor`` × m0.
        halfwidth_pilot: the pilot's largest CI half-width (inf if a player is not identified).
        halfwidth_projected: the projected largest half-width at ``evaluations``.
        identified_first: evaluations the pilot still needs before every player has an interval (its
            ``more_evaluations``; the projection starts no lower than the pilot plus these).
        details: JSON-able extras (method, design, level, target values).
    """

    evaluations: int
    more: int
    pilot_evaluations: int
    target: str
    reached: bool
    halfwidth_pilot: float
    halfwidth_projected: float
    identified_first: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("halfwidth_pilot", "halfwidth_projected"):
            out[key] = None if not math.isfinite(out[key]) else float(out[key])
        return out


def project_budget(masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, *,
                   method: str = "kernelshap", design: str = "paired", target_halfwidth: float | None = None,
                   relative: bool = False, top_k: int | None = None, harmful_q: float | None = None,
                   level: float = 0.95, level_statements: float = 0.90, max_factor: float = 1000.0,
                   **options: Any) -> Projection:
    """Project the coalitions a plan needs to reach a target, from a pilot's rows.

    Args:
        masks, values, v_empty, v_full: the pilot, as for :func:`~contribshap.pipeline.estimators.estimate`.
        method: the estimator (a regression method: ``kernelshap`` default, ``leverage_shap``).
        design: the plan's design (recorded; the scaling is the same for every sampled design, see above).
        target_halfwidth: largest CI half-width to reach (absolute, or a share of |v(N) - v(∅)| with
            ``relative=True``).
        top_k: resolve the top k (their worst rank inside the simultaneous intervals <= k).
        harmful_q: resolve the harmful set at FDR q (every player with a negative pilot value declared).
        level: CI level of the half-width target. level_statements: level of the simultaneous intervals.
        max_factor: give up beyond this multiple of the pilot.
        **options: passed to ``estimate`` (e.g. ``center``).

    Returns:
        :class:`Projection`. Exactly one of ``target_halfwidth``, ``top_k``, ``harmful_q`` must be given.

    Example:
        >>> proj = project_budget(masks, values, v0, v1, design="paired", target_halfwidth=0.5)  # doctest: +SKIP
        >>> proj.evaluations, proj.more  # doctest: +SKIP
    """
    from contribshap.pipeline.estimators import estimate, max_halfwidth
    from contribshap.pipeline.estimators.kernelshap import INFLATION_LEVEL, REGRESSION_METHODS
    from contribshap.pipeline.estimators.simultaneous import fdr_set, top_k_sure
    from scipy import stats

    # 1. validate
    chosen = [name for name, val in (("halfwidth", target_halfwidth), ("top_k", top_k), ("harmful", harmful_q))
              if val is not None]
    if len(chosen) != 1:
        raise ValueError("give exactly one target: target_halfwidth=H, top_k=K or harmful_q=Q; "
                         f"got {len(chosen)} ({', '.join(chosen) or 'none'}).")
    target = chosen[0]
    if method not in REGRESSION_METHODS:
        raise ValueError(f"the planner projects the regression methods ({', '.join(REGRESSION_METHODS)}); "
                         f"got {method!r}.")
    if target_halfwidth is not None and not target_halfwidth > 0:
        raise ValueError(f"target_halfwidth must be > 0; got {target_halfwidth!r}.")
    if not max_factor > 1:
        raise ValueError(f"max_factor must be > 1; got {max_factor!r}.")

    # 2. the pilot
    est = estimate(masks, values, v_empty, v_full, method=method, level=level, **options)
    m0 = int(est.extras["n_unique"])
    n = est.n_players
    ok = np.asarray(est.identified, dtype=bool)
    first = int(est.extras.get("more_evaluations") or 0)
    if not ok.any():
        raise ValueError(f"the pilot identifies no contributor, so it holds no variance to project from; "
                         f"grow it by {first} evaluations (more_evaluations) and plan again.")
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    z_inf = float(stats.norm.ppf(0.5 + INFLATION_LEVEL / 2.0))
    dof_list = est.extras.get("dof") or [None] * n
    nu0 = np.array([np.inf if d is None else max(float(d), 1.0) for d in dof_list])

    def infl(nu: np.ndarray) -> np.ndarray:
        out = np.ones_like(nu)
        fin = np.isfinite(nu)
        out[fin] = stats.t.isf((1 - INFLATION_LEVEL) / 2, np.maximum(nu[fin], 1.0)) / z_inf
        return out

    se0 = np.asarray(est.stderr, dtype=np.float64)
    raw = np.where(ok, se0 / infl(nu0), np.nan)
    # a player without an interval yet is projected at the largest standard error of the others
    raw = np.where(ok, raw, np.nanmax(raw))
    n_id = int(ok.sum())

    def spread(nu: np.ndarray) -> float:
        """The largest of n_id variance estimates on ν degrees of freedom sits near the 1 - 1/(2 n_id)
        quantile of χ²_ν / ν times the variance (ν the median over players; 1 at ν = inf)."""
        fin = nu[np.isfinite(nu)]
        if fin.size == 0:
            return 1.0
        med = float(np.median(fin))
        return float(stats.chi2.ppf(1 - 0.5 / max(n_id, 1), med) / med)

    spread0 = spread(nu0)
    units0 = float(est.extras.get("n_units", m0))
    params = float(est.extras.get("params", est.extras.get("rank", n - 1)))

    rank = float(est.extras.get("rank", n - 1))

    def se_at(m: float) -> tuple[np.ndarray, np.ndarray]:
        units = units0 * m / m0
        nu = nu0 * max(units - params, 1.0) / max(units0 - params, 1.0)
        shrink = max(units0 - rank - 1.0, 1.0) / max(units - rank - 1.0, 1.0)
        # the largest half-width is the largest of noisy variance estimates: the pilot's sits high by the
        # spread at its degrees of freedom, the one at m by the (smaller) spread at ν(m)
        scale = math.sqrt(shrink * spread(nu) / spread0) if target == "halfwidth" else math.sqrt(shrink)
        return raw * scale * infl(nu), nu

    total = abs(float(est.extras.get("total", v_full - v_empty)))
    bound = None
    if target == "halfwidth":
        bound = float(target_halfwidth) * (total if relative else 1.0)

    def meets(m: float) -> bool:
        se, nu = se_at(m)
        if target == "halfwidth":
            return float(z * se.max()) <= bound
        shadow = _Shadow(est, se, nu)
        if target == "top_k":
            return len(top_k_sure(shadow, int(top_k), level_statements)) >= int(top_k)
        negative = np.flatnonzero(est.value < 0)
        return bool(np.isin(negative, fdr_set(shadow, "harmful", float(harmful_q))).all())

    # 3. the smallest m (>= the pilot plus what identification needs) meeting the target, by bisection
    start = float(m0 + first)
    cap = float(m0) * float(max_factor)
    details = {"method": method, "design": design, "level": level, "level_statements": level_statements,
               "target_halfwidth": bound, "top_k": top_k, "harmful_q": harmful_q, "relative": relative}
    hw_pilot = max_halfwidth(est)
    if meets(start):
        m = start
        if first == 0:
            return Projection(evaluations=m0, more=0, pilot_evaluations=m0, target=target, reached=True,
                              halfwidth_pilot=hw_pilot, halfwidth_projected=float(z * se_at(m0)[0].max()),
                              identified_first=first, details=details)
    elif not meets(cap):
        return Projection(evaluations=-1, more=-1, pilot_evaluations=m0, target=target, reached=False,
                          halfwidth_pilot=hw_pilot, halfwidth_projected=float(z * se_at(cap)[0].max()),
                          identified_first=first, details=details)
    else:
        lo, hi = start, cap
        while hi - lo > 0.5:
            mid = (lo + hi) / 2.0
            if meets(mid):
                hi = mid
            else:
                lo = mid
        m = hi
    evaluations = math.ceil(m)
    return Projection(evaluations=evaluations, more=evaluations - m0, pilot_evaluations=m0, target=target,
                      reached=True, halfwidth_pilot=hw_pilot,
                      halfwidth_projected=float(z * se_at(evaluations)[0].max()), identified_first=first,
                      details=details)


class _Shadow:
    """The pilot's estimate with projected standard errors and degrees of freedom (for the plug-in targets)."""

    def __init__(self, est: Any, se: np.ndarray, nu: np.ndarray) -> None:
        self.value = est.value
        self.stderr = se
        self.identified = np.ones(len(se), dtype=bool)
        extras = dict(est.extras)
        extras["dof"] = [None if not np.isfinite(v) else float(v) for v in nu]
        self.extras = extras
