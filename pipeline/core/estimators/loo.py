"""``loo``: leave-one-out, φ_i = v(N) - v(N∖i), from the n rows of design ``loo`` (numpy only).

Its variance is the utility noise measured from replicates alone (zero without replicates).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from contribshap.pipeline.core.estimators._base import Data, MethodResult, register_method


def _loo(data: Data) -> tuple[np.ndarray, np.ndarray, dict]:
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


def _fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    value, var, extras = _loo(data)
    return MethodResult(value=value, var=var, ci="noise", extras=extras)


register_method("loo", _fit, options={"ci"}, summary="leave-one-out: v(N) - v(N without i)")
