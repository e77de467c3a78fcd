"""Known-answer cooperative games for the numpy core's tests and benchmarks (pure numpy).

Every game is a plain function ``game(masks) -> values`` on a bool matrix of shape (m, n) (a single
(n,) mask is accepted too), with its exact Shapley values available in closed form.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KnownGame:
    """A game with its exact Shapley values.

    Attributes:
        name: short label.
        n: number of players.
        fn: masks (m, n) bool -> values (m,) float.
        shapley: exact Shapley values, shape (n,).
    """

    name: str
    n: int
    fn: Callable[[np.ndarray], np.ndarray]
    shapley: np.ndarray

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.atleast_2d(np.asarray(masks, dtype=bool))
        return self.fn(masks)


def additive(weights: np.ndarray, offset: float = 0.0) -> KnownGame:
    """v(S) = offset + Σ_{i∈S} w_i; φ_i = w_i."""
    w = np.asarray(weights, dtype=np.float64)
    return KnownGame("additive", len(w), lambda z: offset + z.astype(np.float64) @ w, w.copy())


def glove(n_left: int, n_right: int) -> KnownGame:
    """Glove game: v(S) = min(#left gloves in S, #right gloves in S). Players 0..n_left-1 hold left gloves.

    Hand-computed special case (1 left, 2 right): φ = (2/3, 1/6, 1/6). General values come from the
    exact formula on all coalitions (independent of the estimators under test).
    """
    n = n_left + n_right

    def fn(z: np.ndarray) -> np.ndarray:
        return np.minimum(z[:, :n_left].sum(axis=1), z[:, n_left:].sum(axis=1)).astype(np.float64)

    return KnownGame("glove", n, fn, brute_force_shapley(fn, n))


def weighted_voting(weights: np.ndarray, quota: float) -> KnownGame:
    """v(S) = 1 if Σ_{i∈S} w_i >= quota else 0 (exact values by brute force on all coalitions)."""
    w = np.asarray(weights, dtype=np.float64)

    def fn(z: np.ndarray) -> np.ndarray:
        return (z.astype(np.float64) @ w >= quota).astype(np.float64)

    return KnownGame("weighted_voting", len(w), fn, brute_force_shapley(fn, len(w)))


def pairwise(a: np.ndarray, b: np.ndarray) -> KnownGame:
    """v(S) = Σ_{i∈S} a_i + Σ_{i<j, i,j∈S} b_ij (b symmetric, zero diagonal); φ_i = a_i + ½ Σ_j b_ij."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    b = np.triu(b, 1)
    b = b + b.T

    def fn(z: np.ndarray) -> np.ndarray:
        zf = z.astype(np.float64)
        return zf @ a + 0.5 * np.einsum("mi,ij,mj->m", zf, b, zf)

    return KnownGame("pairwise", len(a), fn, a + 0.5 * b.sum(axis=1))


def unanimity_sum(n: int, n_terms: int, max_order: int, seed: int = 0) -> KnownGame:
    """Interaction-heavy game: v(S) = Σ_t c_t · [T_t ⊆ S] over random sets T_t of size 1..max_order.

    A unanimity game on T gives c/|T| to each member of T, so φ is exact for any n.
    """
    rng = np.random.default_rng(seed)
    members = np.zeros((n_terms, n), dtype=bool)
    for t in range(n_terms):
        order = int(rng.integers(1, max_order + 1))
        members[t, rng.choice(n, size=order, replace=False)] = True
    coef = rng.normal(size=n_terms) * members.sum(axis=1)  # higher orders carry more weight
    size = members.sum(axis=1).astype(np.float64)
    shapley = (members.astype(np.float64) * (coef / size)[:, None]).sum(axis=0)

    def fn(z: np.ndarray) -> np.ndarray:
        zf = z.astype(np.float64)
        contains = (zf @ members.T.astype(np.float64)) >= size  # (m, n_terms)
        return contains.astype(np.float64) @ coef

    return KnownGame(f"unanimity(n={n},T={n_terms},order<={max_order})", n, fn, shapley)


def size_effect(game: KnownGame, curve: Callable[[np.ndarray], np.ndarray]) -> KnownGame:
    """v(S) = curve(|S|) + game(S): a utility that moves strongly with the amount of data (a learning
    curve), like accuracy or FID. The curve is a symmetric game, so φ_i = (curve(n) - curve(0)) / n + φ_i(game)."""
    n = game.n
    share = (float(curve(np.array([n]))[0]) - float(curve(np.array([0]))[0])) / n

    def fn(z: np.ndarray) -> np.ndarray:
        return curve(z.sum(axis=1)) + game.fn(z)

    return KnownGame(f"size_effect({game.name})", n, fn, game.shapley + share)


def noisy(game: KnownGame, sd: float, seed: int = 0) -> KnownGame:
    """The same game plus independent N(0, sd²) noise per evaluation (stateful generator, seeded)."""
    rng = np.random.default_rng(seed)

    def fn(z: np.ndarray) -> np.ndarray:
        return game.fn(z) + rng.normal(scale=sd, size=len(z))

    return KnownGame(f"noisy({game.name},sd={sd})", game.n, fn, game.shapley.copy())


def brute_force_shapley(fn: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Exact Shapley values by the permutation-free subset formula on all 2^n coalitions (n <= 14)."""
    if n > 14:
        raise ValueError(f"brute force is for n <= 14; got n={n}.")
    all_masks = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    values = dict(zip(map(bytes, np.packbits(all_masks, axis=1)), fn(all_masks), strict=True))
    phi = np.zeros(n)
    for mask in all_masks:
        k = int(mask.sum())
        base = values[bytes(np.packbits(mask))]
        for i in np.flatnonzero(~mask):
            plus = mask.copy()
            plus[i] = True
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[i] += weight * (values[bytes(np.packbits(plus))] - base)
    return phi


def permutation_shapley(fn: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Exact Shapley values as average marginal contributions over all n! orderings (n <= 7).

    A second, independent algorithm (orderings, not subsets) used to check hand-computed values.
    """
    if n > 7:
        raise ValueError(f"permutation enumeration is for n <= 7; got n={n}.")
    phi = np.zeros(n)
    orders = list(itertools.permutations(range(n)))
    for order in orders:
        mask = np.zeros((n + 1, n), dtype=bool)
        for step, player in enumerate(order):
            mask[step + 1 :, player] = True
        values = fn(mask)
        phi[list(order)] += np.diff(values)
    return phi / len(orders)


def banzhaf_brute_force(fn: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
    """Exact Banzhaf values: mean over S ⊆ N∖i of v(S ∪ i) - v(S) (n <= 14)."""
    all_masks = np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)
    values = fn(all_masks)
    zf = all_masks.astype(np.float64)
    half = 2 ** (n - 1)
    return (values @ zf - values @ (1 - zf)) / half


def data_like(n: int, seed: int = 0, *, harmful: float = 0.05, grouped: float = 0.6,
              curve: float = 0.3) -> KnownGame:
    """A data-valuation-shaped game at any n, with exact Shapley values (sums of small-support games).

    v(S) = curve · t · sqrt(|S| / n)                 (a learning curve: symmetric, φ_i = its share)
         + Σ_{i∈S} a_i                              (each contributor's own worth; ~``harmful`` of them < 0)
         + Σ_g c_g · u_g(S ∩ G_g)                   (styles: groups of 3-10 partly redundant contributors)

    About ``grouped`` of the players sit in disjoint groups G_g of 3-10; a group's utility u_g is one of
    coverage 1 - Π_{j∈S∩G}(1 - p_j) (redundant: a second member adds less), max_j w_j (only the best
    representative counts) or a threshold [Σ_j w_j >= q] (a style needs enough examples). Its Shapley values
    are computed exactly by enumerating the group's 2^|G| <= 1024 subsets; the total is the sum over terms.
    """
    rng = np.random.default_rng(seed)
    own = np.abs(rng.normal(1.0, 0.5, size=n))
    bad = rng.random(n) < harmful
    own[bad] = -np.abs(rng.normal(1.5, 0.5, size=int(bad.sum())))
    order = rng.permutation(n)
    groups: list[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], float]] = []
    start, limit = 0, round(grouped * n)
    while start + 3 <= limit:
        size = int(min(rng.integers(3, 11), limit - start))
        members = np.sort(order[start:start + size])
        start += size
        kind = int(rng.integers(0, 3))
        w = rng.uniform(0.2, 1.0, size=size)
        if kind == 0:
            def u(z: np.ndarray, p: np.ndarray = w * 0.8) -> np.ndarray:
                return 1.0 - np.prod(np.where(z, 1.0 - p, 1.0), axis=1)
        elif kind == 1:
            def u(z: np.ndarray, p: np.ndarray = w) -> np.ndarray:
                return np.max(np.where(z, p, 0.0), axis=1)
        else:
            def u(z: np.ndarray, p: np.ndarray = w, q: float = 0.5 * w.sum()) -> np.ndarray:
                return (z.astype(np.float64) @ p >= q).astype(np.float64)
        groups.append((members, u, float(rng.uniform(1.0, 3.0) * size)))
    shapley = own.copy()
    for members, u, c in groups:
        shapley[members] += c * brute_force_shapley(u, len(members))
    base_total = float(own.sum() + sum(c * u(np.ones((1, len(m)), bool))[0] for m, u, c in groups))
    amp = curve * base_total
    shapley = shapley + amp / n

    def fn(z: np.ndarray) -> np.ndarray:
        out = amp * np.sqrt(z.sum(axis=1) / n) + z.astype(np.float64) @ own
        for members, u, c in groups:
            out = out + c * u(z[:, members])
        return out

    return KnownGame(f"data_like(n={n},seed={seed})", n, fn, shapley)
