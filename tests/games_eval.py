"""Python games with known answers for the evaluation and report tests (no torch).

Each function takes a bool mask of shape (n,) and returns ``{property: float}``; they are deterministic in
the mask (the "noise" of :func:`noisy_additive` is a fixed function of the coalition, seeded by its bits).

- :func:`additive`: v(S) = 10 + sum_{i in S} w_i for ``value``, and ``loss`` = 50 - 2 * sum w_i (a
  lower-is-better property). Shapley values are w_i (and -2 w_i): LDS of the exact attributions is 100.
- :func:`noisy_additive`: the additive game plus a coalition-dependent perturbation of sd 0.3 (weights span
  -3..4), so LDS is high but below 100.
"""

from __future__ import annotations

import numpy as np

WEIGHTS = np.array([4.0, -3.0, 2.5, 1.0, 0.5, -1.5, 3.0, 0.25, -0.75, 2.0])


def _weights(mask: np.ndarray) -> np.ndarray:
    n = len(mask)
    if n > len(WEIGHTS):
        raise ValueError(f"games_eval supports n <= {len(WEIGHTS)} players, got n={n}; use fewer players")
    return WEIGHTS[:n]


def additive(mask: np.ndarray) -> dict[str, float]:
    """Perfectly additive game: ``value`` = 10 + sum w_i, ``loss`` = 50 - 2 sum w_i (over i in S)."""
    mask = np.asarray(mask, dtype=bool)
    total = float(_weights(mask)[mask].sum())
    return {"value": 10.0 + total, "loss": 50.0 - 2.0 * total}


def noisy_additive(mask: np.ndarray) -> dict[str, float]:
    """Additive plus a coalition-seeded perturbation (sd 0.3), deterministic in the mask."""
    mask = np.asarray(mask, dtype=bool)
    bits = int("".join("1" if b else "0" for b in mask) or "0", 2)
    rng = np.random.default_rng([bits, len(mask)])
    base = additive(mask)
    return {name: value + float(rng.normal(0.0, 0.3)) for name, value in base.items()}
