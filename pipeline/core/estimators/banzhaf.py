"""``banzhaf_msr``: Banzhaf values by maximum sample reuse (Wang & Jia 2023; numpy only).

φ_i = mean v(S ∋ i) - mean v(S ∌ i) over the observed coalitions (design ``uniform``). Intervals: the
two-sample variance of the difference of means (``analytic``) or a row bootstrap (``bootstrap``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from contribshap.pipeline.core.estimators._base import (
    Data,
    MethodResult,
    distrust_zero_variance,
    register_method,
    unknown_ci,
)


def _banzhaf_msr(
    data: Data, ci: str, n_boot: int, seed: int, include_endpoints: bool
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray, int]:
    """Returns (value (n,), variance (n,), extras, identified (n,) bool, more evaluations needed).

    A player is identified when it is in at least 2 and out of at least 2 coalitions (each mean needs a
    spread); a player never in (or never out) has no value (NaN).
    """
    z, y = data.z, data.y
    if include_endpoints:
        z = np.vstack([z, np.zeros((1, data.n), bool), np.ones((1, data.n), bool)])
        y = np.concatenate([y, [data.v_empty, data.v_full]])
    n_in = z.sum(axis=0)
    n_out = len(z) - n_in
    identified = (n_in >= 2) & (n_out >= 2)
    more = int((np.maximum(2 - n_in, 0) + np.maximum(2 - n_out, 0)).max())
    if not identified.any():
        raise ValueError(
            "method 'banzhaf_msr' needs every player in at least 2 and out of at least 2 coalitions; "
            f"got min in={int(n_in.min())}, min out={int(n_out.min())}. Use design 'uniform' with a larger budget "
            f"(at least {more} more evaluation{'s' if more > 1 else ''})."
        )

    def msr(zz: np.ndarray, yy: np.ndarray) -> np.ndarray:
        zf = zz.astype(np.float64)
        cin = zf.sum(axis=0)
        cout = len(zz) - cin
        return (yy @ zf) / np.maximum(cin, 1) - (yy @ (1 - zf)) / np.maximum(cout, 1)

    value = np.where((n_in > 0) & (n_out > 0), msr(z, y), np.nan)
    if ci == "analytic":
        zf = z.astype(np.float64)
        c_in, c_out = np.maximum(n_in, 1), np.maximum(n_out, 1)
        mean_in = (y @ zf) / c_in
        mean_out = (y @ (1 - zf)) / c_out
        ss_in = ((y[:, None] - mean_in) ** 2 * zf).sum(axis=0)
        ss_out = ((y[:, None] - mean_out) ** 2 * (1 - zf)).sum(axis=0)
        var = ss_in / np.maximum(c_in - 1, 1) / c_in + ss_out / np.maximum(c_out - 1, 1) / c_out
    elif ci == "bootstrap":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB4]))
        draws = np.empty((n_boot, data.n))
        for b in range(n_boot):
            pick = rng.integers(0, len(z), size=len(z))
            draws[b] = msr(z[pick], y[pick])
        var = np.nanvar(draws, axis=0, ddof=1)
    else:
        raise unknown_ci(ci)
    identified = distrust_zero_variance(var, identified, scale=float(np.abs(y).max()))
    extras = {"n_in_min": int(n_in.min()), "n_out_min": int(n_out.min())}
    return value, var, extras, identified, max(more, 1) if not identified.all() else 0


def _fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    ci = "analytic" if ci == "auto" else ci
    value, var, extras, identified, more = _banzhaf_msr(
        data, ci, n_boot, seed, bool(options.get("include_endpoints", False))
    )
    return MethodResult(value=value, var=var, ci=ci, extras=extras, identified=identified, more_evaluations=more)


register_method("banzhaf_msr", _fit, options={"ci", "n_boot", "include_endpoints"},
                summary="Banzhaf value by maximum sample reuse (design 'uniform')")
