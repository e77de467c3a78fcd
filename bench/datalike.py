"""Data-like cooperative games whose exact Shapley values are computable at any n (numpy only, no I/O).

A game is a sum of small-support games, each with an exact Shapley value, so the sum's Shapley value is
exact at n = 50, 258 or 1,000 (Shapley values are additive over games):

- own worth: v_own(S) = Σ_{i∈S} a_i, a_i > 0 (log-normal), φ_i = a_i;
- harmful contributors: a few players (``harmful`` share, at least one) with a_i < 0;
- styles: groups G of 3 to 10 partly redundant contributors (``grouped`` share of the players),
  v_G(S) = c_G (1 - Π_{i∈S∩G} (1 - q_i)), a saturating coverage with q_i ∈ [0.3, 0.9]; its Shapley values
  are computed exactly by enumerating the 2^|G| <= 1024 subsets of G;
- the amount of data: v_size(S) = b sqrt(|S| / n), symmetric, φ_i = b / n (accuracy that grows with the
  data, the part of the utility a size-centred regression removes).

Evaluations carry Gaussian utility noise of sd ``noise`` x |v(N) - v(∅)|, drawn afresh for every
evaluation from one seeded stream (:class:`NoisyGame`): a coalition evaluated twice gets two draws, like
two fine-tunes. The reference is the Shapley value of the noiseless game.

    >>> game = make_game(50, seed=0)
    >>> oracle = NoisyGame(game, noise=0.01, seed=1)
    >>> values = oracle(np.ones((3, 50), dtype=bool))   # three noisy draws of v(N)

Used by ``bench/scale.py`` (and its shapiq runner, which imports this file in another interpreter, so it
depends on numpy alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DataLikeGame", "NoisyGame", "group_shapley", "make_game"]


@dataclass(frozen=True)
class DataLikeGame:
    """A data-like game (see the module docstring). Arrays have shape (n,) unless stated."""

    n: int
    own: np.ndarray  # a_i, negative for the harmful contributors
    group_of: np.ndarray  # int, the style of player i, -1 for none
    coverage: np.ndarray  # q_i within its style (0 for players without one)
    group_worth: np.ndarray  # (n_groups,) c_G
    size_worth: float  # b
    harmful: np.ndarray  # int, indices of the harmful contributors
    shapley: np.ndarray  # exact Shapley value of the noiseless game

    def value(self, masks: np.ndarray) -> np.ndarray:
        """Noiseless v(S) for bool masks (m, n) -> (m,)."""
        z = np.atleast_2d(np.asarray(masks, dtype=bool))
        if z.shape[1] != self.n:
            raise ValueError(f"masks must have {self.n} columns (one per player); got shape {z.shape}.")
        zf = z.astype(np.float64)
        out = zf @ self.own + self.size_worth * np.sqrt(zf.sum(axis=1) / self.n)
        grouped = self.group_of >= 0
        if grouped.any():
            # log Π (1 - q_i) over the members of each style present in S, as one (m, n) @ (n, G) product
            log_miss = np.zeros((self.n, len(self.group_worth)))
            idx = np.flatnonzero(grouped)
            log_miss[idx, self.group_of[idx]] = np.log1p(-self.coverage[idx])
            out += (1.0 - np.exp(zf @ log_miss)) @ self.group_worth
        return out

    @property
    def span(self) -> float:
        """|v(N) - v(∅)| of the noiseless game (the scale of the utility noise)."""
        return float(abs(self.own.sum() + self.group_worth.sum() + self.size_worth))

    @property
    def groups(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.group_of == g) for g in range(len(self.group_worth))]

    def params(self) -> dict:
        """JSON-able parameters (enough to rebuild the game with :meth:`from_params`)."""
        return {"n": self.n, "own": self.own.tolist(), "group_of": self.group_of.tolist(),
                "coverage": self.coverage.tolist(), "group_worth": self.group_worth.tolist(),
                "size_worth": self.size_worth, "harmful": self.harmful.tolist(), "shapley": self.shapley.tolist()}

    @classmethod
    def from_params(cls, p: dict) -> DataLikeGame:
        return cls(n=int(p["n"]), own=np.asarray(p["own"], float), group_of=np.asarray(p["group_of"], int),
                   coverage=np.asarray(p["coverage"], float), group_worth=np.asarray(p["group_worth"], float),
                   size_worth=float(p["size_worth"]), harmful=np.asarray(p["harmful"], int),
                   shapley=np.asarray(p["shapley"], float))


def group_shapley(coverage: np.ndarray, worth: float) -> np.ndarray:
    """Exact Shapley values of v(T) = worth (1 - Π_{i∈T} (1 - q_i)) on |q| <= 12 players, by enumerating
    every subset: φ_i = Σ_{T∌i} |T|!(k-|T|-1)!/k! (v(T ∪ i) - v(T))."""
    q = np.asarray(coverage, dtype=np.float64)
    k = len(q)
    if not 1 <= k <= 12:
        raise ValueError(f"a style has 1 to 12 members for exact enumeration; got {k}.")
    codes = np.arange(2**k)
    members = ((codes[:, None] >> np.arange(k)) & 1).astype(bool)
    values = worth * (1.0 - np.exp(members.astype(np.float64) @ np.log1p(-q)))
    sizes = members.sum(axis=1)
    weight = np.array([math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k) for s in range(k)])
    phi = np.zeros(k)
    for i in range(k):
        without = codes[~members[:, i]]
        phi[i] = np.sum(weight[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return phi


def make_game(n: int, seed: int = 0, *, harmful: float = 0.05, grouped: float = 0.6,
              size_share: float = 0.3) -> DataLikeGame:
    """A data-like game on n >= 10 players, a pure function of (n, seed, shares).

    Args:
        n: players (contributors).
        seed: the game's seed (worths, styles, harmful set).
        harmful: share of contributors with negative own worth (at least one).
        grouped: share of contributors that belong to a style (groups of 3 to 10).
        size_share: b as a share of the other parts' total worth.
    """
    if n < 10:
        raise ValueError(f"n must be >= 10 for a data-like game; got {n}.")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n, 2207]))
    # 1. own worth: log-normal, a few harmful contributors below zero
    own = rng.lognormal(mean=0.0, sigma=0.75, size=n)
    n_harmful = max(1, round(harmful * n))
    bad = np.sort(rng.choice(n, size=n_harmful, replace=False))
    own[bad] = -rng.uniform(1.0, 3.0, size=n_harmful) * float(np.median(own))
    # 2. styles: consecutive groups of 3..10 over a random order until `grouped` of the players are in one
    order = rng.permutation(n)
    group_of = np.full(n, -1, dtype=np.int64)
    coverage = np.zeros(n)
    worths: list[float] = []
    shapley = own.copy()
    start, goal = 0, round(grouped * n)
    while goal - start >= 3:
        size = int(min(rng.integers(3, 11), goal - start))
        members = order[start : start + size]
        q = rng.uniform(0.3, 0.9, size=size)
        worth = float(size * rng.uniform(1.0, 2.0))
        group_of[members] = len(worths)
        coverage[members] = q
        shapley[members] += group_shapley(q, worth)
        worths.append(worth)
        start += size
    group_worth = np.asarray(worths)
    # 3. the amount of data: symmetric, everyone gets b / n
    size_worth = float(size_share * (own.sum() + group_worth.sum()))
    shapley += size_worth / n
    return DataLikeGame(n=n, own=own, group_of=group_of, coverage=coverage, group_worth=group_worth,
                        size_worth=size_worth, harmful=bad, shapley=shapley)


class NoisyGame:
    """masks (m, n) -> noisy values (m,): v(S) + N(0, (noise x span)²), a fresh draw per evaluation from one
    stream seeded by (seed, n, noise); counts evaluations in ``calls``."""

    def __init__(self, game: DataLikeGame, noise: float, seed: int) -> None:
        if noise < 0:
            raise ValueError(f"noise must be >= 0 (a share of |v(N) - v(∅)|); got {noise}.")
        self.game, self.noise, self.seed = game, float(noise), int(seed)
        self.sigma = self.noise * game.span
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, game.n, round(self.noise * 1e5), 41]))
        self.calls = 0

    @property
    def n(self) -> int:
        return self.game.n

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        z = np.atleast_2d(np.asarray(masks, dtype=bool))
        self.calls += len(z)
        return self.game.value(z) + self.sigma * self.rng.standard_normal(len(z))
