"""A data-like python game of any size whose exact Shapley values are known (for the large-n tests).

Each contributor has a worth of its own (a few are harmful: negative worth); contributors of one "style"
(groups of 3 to 10) are partly redundant: the style adds ``bonus * (1 - 0.5**k)`` for its k members in the
coalition, a symmetric game whose Shapley value splits ``bonus * (1 - 0.5**|G|)`` equally among the style.
Utility noise: Gaussian with standard deviation ``noise * |v(N) - v(∅)|``, drawn from the job seed.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def _parts(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(20261207)
    worth = rng.gamma(2.0, 0.5, size=n)
    harmful = rng.choice(n, size=max(1, n // 40), replace=False)
    worth[harmful] = -rng.uniform(0.5, 1.5, size=len(harmful))
    style = np.full(n, -1)
    start = 0
    while start < n - 3:
        size = int(rng.integers(3, 11))
        style[start:start + size] = start
        start += size
    bonus = rng.uniform(1.0, 3.0, size=n)
    return worth, style, bonus


def datalike_exact(n: int) -> np.ndarray:
    worth, style, bonus = _parts(n)
    phi = worth.copy()
    for s in set(style.tolist()) - {-1}:
        members = np.flatnonzero(style == s)
        phi[members] += bonus[s] * (1 - 0.5 ** len(members)) / len(members)
    return phi


def _value(mask: np.ndarray) -> float:
    worth, style, bonus = _parts(len(mask))
    total = float(worth[mask].sum())
    for s in set(style[mask].tolist()) - {-1}:
        total += bonus[s] * (1 - 0.5 ** int((style[mask] == s).sum()))
    return total


def datalike(mask: np.ndarray, seed: int, noise: float = 0.01) -> dict[str, float]:
    mask = np.asarray(mask, dtype=bool)
    scale = abs(float(datalike_exact(len(mask)).sum()))
    return {"value": _value(mask) + noise * scale * float(np.random.default_rng(seed).normal())}
