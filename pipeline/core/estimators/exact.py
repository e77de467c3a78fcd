"""``exact_shapley``: the Shapley value from all 2^n - 2 proper coalitions (design ``exact``; numpy only).

φ_i = Σ_{S ∌ i} |S|!(n-|S|-1)!/n! · (v(S ∪ i) - v(S)). Its variance is the utility noise measured from
replicates alone (zero without replicates): there is no sampling error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from contribshap.pipeline.core.designs import EXACT_MAX_PLAYERS
from contribshap.pipeline.core.estimators._base import Data, MethodResult, register_method


def _codes(z: np.ndarray) -> np.ndarray:
    return (z.astype(np.int64) << np.arange(z.shape[1], dtype=np.int64)).sum(axis=1)


def _exact_shapley(data: Data) -> tuple[np.ndarray, np.ndarray, dict]:
    n = data.n
    if n > EXACT_MAX_PLAYERS:
        raise ValueError(f"method 'exact_shapley' needs all 2^n coalitions; n={n} > {EXACT_MAX_PLAYERS} is refused. Use 'kernelshap'.")
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


def _fit(data: Data, *, ci: str, n_boot: int, seed: int, options: dict[str, Any]) -> MethodResult:
    value, var, extras = _exact_shapley(data)
    return MethodResult(value=value, var=var, ci="noise", extras=extras)


register_method("exact_shapley", _fit, options={"ci"}, efficient=True, max_players=EXACT_MAX_PLAYERS,
                summary="exact Shapley value from every coalition (design 'exact')")
