"""Coalition designs: which coalitions S ⊂ N to evaluate (numpy only).

Every design returns a boolean matrix of shape ``(m, n)`` (``CoalitionMatrix``): row r is a coalition,
``masks[r, i]`` is True when contributor ``i`` is a member. Rules shared by all designs:

- The empty and the full coalition are never returned (they are always evaluated apart, as v(∅), v(N)).
- Seeded and reproducible: the same ``(n, budget, design, seed, options)`` gives the same matrix.
- **Prefix-stable** (all designs but ``exact``): for ``b1 <= b2``,
  ``sample_coalitions(n, b1, d, seed)`` equals the first rows of ``sample_coalitions(n, b2, d, seed)``,
  so a plan grows in rounds without reshuffling what was planned. Every design is a budget-independent
  stream of coalitions that is cut after ``budget`` rows.
- **Duplicates**: by default (``unique=True``) the stream skips coalitions already emitted, so every row
  is a distinct coalition and ``m == budget`` unless the design has fewer distinct coalitions (then
  ``m`` is that count) or the with-replacement stream meets 20,000 repeats in a row (its coupon-collector
  tail; the stop point belongs to the stream, so prefixes stay stable). With ``unique=False`` the with-replacement designs (``shapley_kernel``,
  ``paired``, ``uniform``, ``datamodel``) return their raw draws, repeats included (the plan dedupes
  them and may keep the multiplicity as a weight). ``exact``, ``leverage`` and ``loo`` never repeat.

Designs (``DESIGNS``):

=================  ====================================================================================
``exact``          all 2^n - 2 proper coalitions, ordered by integer bitmask (refused for n > 20).
``shapley_kernel`` size k ∈ 1..n-1 with p(k) ∝ (n-1)/(k(n-k)), then k players uniformly (the paper's).
``paired``         as ``shapley_kernel``, each coalition followed by its complement (Covert & Lee 2021).
``leverage``       Leverage SHAP (Musco & Witter 2025): paired, without replacement, every size equally
                   likely, "border trick" included (see below).
``uniform``        each player kept with probability 1/2 (Banzhaf / MSR, Wang & Jia 2023).
``datamodel``      exactly round(alpha * n) players kept, uniformly (option ``alpha``, default 0.5).
``loo``            N minus one player: n coalitions, player 0 left out first (``budget`` is ignored).
=================  ====================================================================================

The prefix-stable ``leverage`` stream (order sampling)
-------------------------------------------------------
Leverage SHAP samples each complementary pair {S, N∖S} with probability proportional to its leverage
score, ℓ(S) ∝ 1 / C(n, |S|) (every size layer carries the same total leverage), without replacement,
and enumerates whole sizes once the budget covers them (the border trick). A plain "draw m pairs" rule
depends on m, so it is not prefix-stable. We use *order sampling* instead (Rosén 1997; priority
sampling): every pair gets an independent priority ``E / ℓ`` with ``E ~ Exp(1)``, and the stream lists
pairs by increasing priority. A prefix of length m is then a sample without replacement whose inclusion
probability is ``1 - exp(-τ ℓ(S))`` for the m-dependent threshold τ, so:

- while τ ℓ(S) is small, sizes are drawn in proportion to their leverage (each size equally often);
- small layers (sizes 1 and n-1, then 2 and n-2, ...) whose pairs all have high leverage are used up
  first, which *is* the border trick, reached smoothly instead of at a hard cut;
- the stream never depends on the budget, so every prefix of it is the same plan grown in rounds.

It is generated lazily without enumerating 2^n coalitions: within one layer (size k < n/2, C(n, k)
pairs, or the middle layer k = n/2 with C(n, k)/2 pairs) all pairs share one weight, so the sorted
priorities are cumulative sums of exponential spacings ``E_j / (N_k - j)`` scaled by C(n, k), and the
pair attached to each is a uniformly random not-yet-used k-subset. Layers are merged by priority with a
heap; a single generator draws everything in stream order. Option ``size_weights="kernel"`` replaces
the leverage weights by Shapley-kernel weights (ℓ_k ∝ 1/(k (n-k) C(n, k))) in the same machinery.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

DESIGNS: tuple[str, ...] = ("exact", "shapley_kernel", "paired", "leverage", "uniform", "datamodel", "loo")
"""Valid design names for :func:`sample_coalitions`: the one source (the config validates against it). A
design's position seeds its stream, so a new design is appended at the end."""

EXACT_MAX_PLAYERS = 20
"""Largest n for which the ``exact`` design (2^n - 2 coalitions) is accepted (by the config too)."""

# Layers with at most this many pairs are enumerated and shuffled; larger ones draw random subsets and
# reject repeats (a stream cannot use up a layer that large within any realistic budget).
_ENUMERATE_LAYER_MAX = 50_000

# A unique with-replacement stream stops after this many repeats in a row (a coupon-collector tail): the
# stop point is a property of the stream, so prefix stability still holds; m < budget then.
_MAX_CONSECUTIVE_REPEATS = 20_000

_DESIGN_OPTIONS: dict[str, frozenset[str]] = {
    "exact": frozenset(),
    "shapley_kernel": frozenset({"unique"}),
    "paired": frozenset({"unique"}),
    "leverage": frozenset({"size_weights"}),
    "uniform": frozenset({"unique"}),
    "datamodel": frozenset({"unique", "alpha"}),
    "loo": frozenset(),
}


# --------------------------------------------------------------------------------------------------------
# Small helpers the plan, reducer and estimators share
# --------------------------------------------------------------------------------------------------------
def coalition_sizes(masks: np.ndarray) -> np.ndarray:
    """Number of members per coalition.

    Args:
        masks: bool (or 0/1) array of shape (m, n), or (n,) for a single coalition.

    Returns:
        int64 array of shape (m,) (or a 0-d array for a single coalition).
    """
    masks = np.asarray(masks)
    return masks.sum(axis=-1).astype(np.int64)


def kernel_weights(n: int, sizes: np.ndarray | int) -> np.ndarray:
    """Shapley-kernel weight μ(S) of one coalition of each given size.

    μ(S) = (n - 1) / (C(n, k) · k · (n - k)) for k = |S| in 1..n-1; the empty and full coalitions have
    infinite weight (they are enforced as constraints), returned as ``np.inf``.

    Args:
        n: number of players (>= 2).
        sizes: int or int array of coalition sizes in 0..n.

    Returns:
        float64 array with the shape of ``sizes``.
    """
    _check_n(n, minimum=2)
    k = np.asarray(sizes, dtype=np.int64)
    if np.any((k < 0) | (k > n)):
        raise ValueError(f"sizes must lie in 0..n={n}; got min {k.min()}, max {k.max()}. Pass coalition sizes.")
    out = np.full(k.shape, np.inf, dtype=np.float64)
    inner = (k > 0) & (k < n)
    kk = k[inner]
    log_binom = _log_binom(n, kk)
    out[inner] = (n - 1) / (kk * (n - kk)) * np.exp(-log_binom)
    return out


def layer_kernel_mass(n: int) -> np.ndarray:
    """Total Shapley-kernel weight of each size layer, M_k = Σ_{|S|=k} μ(S) = (n-1)/(k(n-k)).

    Returns:
        float64 array of shape (n + 1,); entries 0 and n (empty/full) are 0.
    """
    _check_n(n, minimum=2)
    k = np.arange(n + 1, dtype=np.float64)
    out = np.zeros(n + 1)
    out[1:n] = (n - 1) / (k[1:n] * (n - k[1:n]))
    return out


def shapley_kernel_size_probs(n: int) -> np.ndarray:
    """p(k) ∝ (n-1)/(k(n-k)) for k = 1..n-1 (normalised); shape (n - 1,), index 0 is size 1."""
    mass = layer_kernel_mass(n)[1:n]
    return mass / mass.sum()


def _log_binom(n: int, k: np.ndarray) -> np.ndarray:
    from scipy.special import gammaln

    k = np.asarray(k, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def _check_n(n: int, minimum: int = 2) -> None:
    if not isinstance(n, int | np.integer) or n < minimum:
        raise ValueError(f"n (number of players) must be an int >= {minimum}; got {n!r}.")


# --------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------
def sample_coalitions(n: int, budget: int, design: str, seed: int = 0, **options: Any) -> np.ndarray:
    """Draw a coalition plan.

    Args:
        n: number of players (contributors), >= 2.
        budget: maximum number of rows (coalitions) to return, >= 0. Ignored by ``exact`` (all 2^n - 2)
            and ``loo`` (n rows).
        design: one of :data:`DESIGNS`.
        seed: int seed; the stream is a function of (n, design, seed, options) only.
        **options: design options:
            ``unique`` (bool, default True; ``shapley_kernel``, ``paired``, ``uniform``, ``datamodel``):
            skip repeats so every row is distinct.
            ``alpha`` (float in (0, 1), default 0.5; ``datamodel``): fraction of players kept.
            ``size_weights`` (``"leverage"`` default, or ``"kernel"``; ``leverage``): size weights.

    Returns:
        bool array of shape (m, n) with m <= budget (m == budget when enough distinct coalitions exist);
        never contains the empty or the full coalition.

    Example:
        >>> masks = sample_coalitions(10, 40, "leverage", seed=0)
        >>> masks.shape, bool(masks.any(axis=1).all())
        ((40, 10), True)
    """
    # 1. validate everything up front
    _check_n(n, minimum=2)
    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}; valid designs: {', '.join(DESIGNS)}.")
    if not isinstance(budget, int | np.integer) or budget < 0:
        raise ValueError(f"budget must be an int >= 0; got {budget!r}.")
    unknown = set(options) - _DESIGN_OPTIONS[design]
    if unknown:
        allowed = ", ".join(sorted(_DESIGN_OPTIONS[design])) or "none"
        raise ValueError(f"unknown option(s) {sorted(unknown)} for design {design!r}; allowed: {allowed}.")
    unique = bool(options.get("unique", True))

    # 2. deterministic designs
    if design == "exact":
        return _exact(n)
    if design == "loo":
        return ~np.eye(n, dtype=bool)

    # 3. streamed designs, cut after `budget` rows
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), n, DESIGNS.index(design)]))
    if design == "leverage":
        size_weights = options.get("size_weights", "leverage")
        if size_weights not in ("leverage", "kernel"):
            raise ValueError(f"size_weights must be 'leverage' or 'kernel'; got {size_weights!r}.")
        stream = _leverage_stream(n, rng, size_weights)
        capacity = 2**n - 2
    elif design in ("shapley_kernel", "paired"):
        stream = _kernel_stream(n, rng, paired=design == "paired")
        capacity = 2**n - 2
    elif design == "uniform":
        stream = _uniform_stream(n, rng)
        capacity = 2**n - 2
    elif design == "datamodel":
        alpha = float(options.get("alpha", 0.5))
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1) (fraction of players kept); got {alpha!r}.")
        k = min(max(round(alpha * n), 1), n - 1)
        stream = _fixed_size_stream(n, k, rng)
        capacity = math.comb(n, k)
    else:  # pragma: no cover - guarded above
        raise ValueError(f"unknown design {design!r}; valid designs: {', '.join(DESIGNS)}.")

    target = min(int(budget), capacity) if unique or design == "leverage" else int(budget)
    return _take(stream, n, target, dedupe=unique and design != "leverage")


def _take(stream: Iterator[np.ndarray], n: int, count: int, *, dedupe: bool) -> np.ndarray:
    """First ``count`` rows of a coalition stream (optionally skipping repeats)."""
    out = np.zeros((count, n), dtype=bool)
    seen: set[bytes] = set()
    filled = repeats = 0
    while filled < count:
        row = next(stream)
        if dedupe:
            key = np.packbits(row).tobytes()
            if key in seen:
                repeats += 1
                if repeats >= _MAX_CONSECUTIVE_REPEATS:  # nearly exhausted: stop (same place for any budget)
                    break
                continue
            seen.add(key)
            repeats = 0
        out[filled] = row
        filled += 1
    return out[:filled]


def _exact(n: int) -> np.ndarray:
    if n > EXACT_MAX_PLAYERS:
        raise ValueError(
            f"design 'exact' needs 2^n - 2 coalitions; n={n} > {EXACT_MAX_PLAYERS} is refused. "
            "Use 'leverage' or 'paired' with a budget."
        )
    codes = np.arange(1, 2**n - 1, dtype=np.int64)
    return ((codes[:, None] >> np.arange(n)) & 1).astype(bool)


# --------------------------------------------------------------------------------------------------------
# Streams (infinite generators of (n,) bool rows; one generator per call, consumed in order)
# --------------------------------------------------------------------------------------------------------
def _random_subset(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    row = np.zeros(n, dtype=bool)
    row[rng.choice(n, size=k, replace=False)] = True
    return row


# Streams are generated in fixed blocks (vectorised, and still a fixed sequence whatever the budget).
_BLOCK = 256


def _subsets_of_sizes(n: int, sizes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly random subset per requested size: rows (len(sizes), n) bool."""
    ranks = rng.random((len(sizes), n)).argsort(axis=1).argsort(axis=1)
    return ranks < sizes[:, None]


def _kernel_stream(n: int, rng: np.random.Generator, *, paired: bool) -> Iterator[np.ndarray]:
    # repeats are removed by _take when unique=True; a repeated pair is then skipped as a whole,
    # because S and N∖S are always emitted back to back
    probs = shapley_kernel_size_probs(n)
    while True:
        sizes = rng.choice(np.arange(1, n), size=_BLOCK, p=probs)
        for row in _subsets_of_sizes(n, sizes, rng):
            yield row
            if paired:
                yield ~row


def _uniform_stream(n: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        rows = rng.random((_BLOCK, n)) < 0.5
        sizes = rows.sum(axis=1)
        yield from rows[(sizes > 0) & (sizes < n)]


def _fixed_size_stream(n: int, k: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    while True:
        yield from _subsets_of_sizes(n, np.full(_BLOCK, k), rng)


class _PairLayer:
    """Pairs {S, N∖S} with |S| = k <= n/2, served in random order without replacement."""

    def __init__(self, n: int, k: int, weight: float) -> None:
        self.n, self.k = n, k
        self.middle = 2 * k == n
        self.n_pairs = math.comb(n, k) // 2 if self.middle else math.comb(n, k)
        self.weight = weight  # per-pair selection weight (priority = E / weight)
        self.served = 0
        self.priority = 0.0
        self._order: list[tuple[int, ...]] | None = None  # enumerated lazily at first use
        self._seen: set[bytes] = set()

    def exhausted(self) -> bool:
        return self.served >= self.n_pairs

    def advance_priority(self, rng: np.random.Generator) -> None:
        # sorted priorities of N iid Exp(1)/weight: spacings Exp(1) / (N - j) / weight
        self.priority += rng.exponential() / (self.n_pairs - self.served) / self.weight

    def next_pair(self, rng: np.random.Generator) -> np.ndarray:
        if self._order is None and self.n_pairs <= _ENUMERATE_LAYER_MAX:
            pairs = [c for c in itertools.combinations(range(self.n), self.k) if not self.middle or c[0] == 0]
            self._order = [pairs[i] for i in rng.permutation(len(pairs))]
        if self._order is not None:
            members = self._order[self.served]
            row = np.zeros(self.n, dtype=bool)
            row[list(members)] = True
        else:
            while True:
                row = _random_subset(self.n, self.k, rng)
                if self.middle and not row[0]:
                    row = ~row
                key = np.packbits(row).tobytes()
                if key not in self._seen:
                    self._seen.add(key)
                    break
        self.served += 1
        return row


def _leverage_stream(n: int, rng: np.random.Generator, size_weights: str) -> Iterator[np.ndarray]:
    # 1. one layer per size pair {k, n-k}, k = 1..floor(n/2); per-pair weight ∝ per-coalition leverage
    layers: list[_PairLayer] = []
    for k in range(1, n // 2 + 1):
        # "kernel": per-coalition Shapley-kernel weight instead of the leverage 1 / C(n, k)
        weight = 1.0 / math.comb(n, k) if size_weights == "leverage" else float(kernel_weights(n, k))
        layers.append(_PairLayer(n, k, weight))
    # 2. first priority of each layer, drawn in layer order (part of the fixed stream)
    heap: list[tuple[float, int]] = []
    for index, layer in enumerate(layers):
        layer.advance_priority(rng)
        heap.append((layer.priority, index))
    heapq.heapify(heap)
    # 3. merge by priority; each pop yields S then N∖S, then schedules the layer's next priority
    while heap:
        _, index = heapq.heappop(heap)
        layer = layers[index]
        row = layer.next_pair(rng)
        yield row
        yield ~row
        if not layer.exhausted():
            layer.advance_priority(rng)
            heapq.heappush(heap, (layer.priority, index))
    raise RuntimeError("leverage stream exhausted")  # callers cap the budget at 2^n - 2
