"""Benchmark: Shapley estimators at equal budget against independent references (not a test; prints a
table, writes JSON).

Usage:
    nice -n 10 .venv/bin/python bench/estimators.py [--seeds 5] [--seeds-large 3] [--quick]
        [--games voting,interaction] [--ns 10,50] [--methods regression_msr@leverage,shapiq kADDSHAP]

``--games`` / ``--ns`` / ``--methods`` run a subset while iterating (the targets then cover only what ran;
the JSON written is the subset's: pass ``--out`` elsewhere to keep the full results).

Budgets 2n, 3n, 5n, 10n, 20n sampled coalitions for n in {10, 20, 50} (the empty and full coalitions are
evaluated on top, for every method alike, so shapiq gets budget + 2 game calls). ``--seeds`` repetitions
per cell for n <= 20, ``--seeds-large`` for n = 50 (the JSON records both).

Games (all deterministic functions of the coalition, evaluated through a per-coalition cache):

- ``additive+noise``: v(S) = Σ_{i∈S} w_i + ε(S), ε(S) ~ N(0, 0.25²) fixed per coalition (a hash of S,
  like a cached noisy evaluation). The reference is the Shapley value of this game, noise included.
- ``interaction``: a sum of 3n unanimity games on random sets of 1..4 players (coefficients grow with the
  order, so most of the value is in interactions).
- ``data-valuation``: validation accuracy (500 rows) of a ridge classifier (sklearn's ``RidgeClassifier``
  loss, solved from per-group sufficient statistics; checked against sklearn once) trained on the union
  of n groups of 400 scikit-learn digits rows, 20% of the groups with shuffled labels.
- ``voting``: weighted majority game, integer weights 1..10 (seeded), quota ⌈Σw / 2⌉.

References, never produced by an estimator under test (``references`` in the JSON: how, own error):

- exact: closed form (``interaction``), dynamic programming over (size, weight) counts (``voting``, any n),
  or the subset formula on all 2^n coalitions (``additive+noise`` and ``data-valuation`` for n <= 20);
- otherwise (n = 50) permutation sampling with antithetic pairs (a permutation and its reverse), 10,000
  pairs, evaluated apart from the benchmark's cache; its own error is reported as the expected relative
  L2 error ‖se‖ / ‖φ‖ from the spread over pairs.

Methods (columns):

- ours: ``kernelshap`` (the default, ``leverage`` design), ``leverage_shap`` (``leverage`` design),
  ``regression_msr`` (``leverage`` design; kernel-ridge surrogate, all interaction orders or size-varying
  additive chosen by leave-one-out error, with exact Shapley values + kernelshap on its residuals);
- the paper's estimator: ``kernelshap_paper`` on the ``shapley_kernel`` design (drawn with replacement
  until ``budget`` distinct coalitions, each weighted by its draw count);
- every Shapley-value approximator of shapiq 1.4.1 that applies: ``KernelSHAP`` (with and without its
  pairing trick), ``kADDSHAP`` (order 2), ``SVARM`` (= ``SVARMIQ`` at order 1 with index SV, not run
  twice), ``PermutationSamplingSV``, ``StratifiedSamplingSV``, ``OwenSamplingSV``, ``UnbiasedKernelSHAP``
  and ``SPEX`` (n <= 20 only: one call takes about a minute at n = 50; it refuses budgets too small for its
  transform, recorded as a miss). ``ProxySPEX`` needs LightGBM, which is not installed: not run. shapiq has
  no regression-adjusted (MSR) Shapley approximator.
- a floor: ``equal split`` φ_i = (v(N) − v(∅)) / n (two evaluations; not an estimator, not in the targets):
  an estimator above it has not yet learnt anything the budget paid for.

Metric: mean relative L2 error ‖φ̂ − φ‖ / ‖φ‖ over seeds (a method that fails in a cell is recorded with its
error message and no value). Targets checked at the end, for the default and for ``regression_msr``:
(1) error ≤ the best shapiq approximator in every (game, n) at 10n; (2) geometric mean over those cells of
error / best shapiq ≤ 0.7 at 10n; (3) error ≤ 0.5x the paper's in every cell from 5n up.
Output: a table on stdout and ``bench/results/estimators.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # a shared 2-core machine: no BLAS oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# this script's folder holds other bench scripts whose names can shadow packages (a bench/coverage.py would
# hide the coverage package that shapiq's dependencies import): keep it off the import path
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from contribshap.pipeline.core.designs import sample_coalitions  # noqa: E402
from contribshap.pipeline.core.estimators import estimate  # noqa: E402
from games_core import unanimity_sum  # noqa: E402

OURS = ("kernelshap@leverage", "leverage_shap@leverage", "regression_msr@leverage")
PAPER = "paper(kernelshap_paper@shapley_kernel)"
EQUAL = "equal split"  # a floor, not an estimator: φ_i = (v(N) - v(∅)) / n, two evaluations
SHAPIQ = ("shapiq KernelSHAP", "shapiq KernelSHAP+pairing", "shapiq kADDSHAP", "shapiq SVARM",
          "shapiq PermutationSV", "shapiq StratifiedSV", "shapiq OwenSV", "shapiq UnbiasedKernelSHAP",
          "shapiq SPEX")
DEFAULT = OURS[0]
CANDIDATE = "regression_msr@leverage"
MULTIPLIERS = (2, 3, 5, 10, 20)
SPEX_MAX_PLAYERS = 20


# --------------------------------------------------------------------------------------------------------
# Games
# --------------------------------------------------------------------------------------------------------
class CachedGame:
    """masks (m, n) -> values (m,), memoised per coalition; counts distinct evaluations."""

    def __init__(self, n: int, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        self.n, self.fn, self.cache = n, fn, {}

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.atleast_2d(np.asarray(masks, dtype=bool))
        keys = [bytes(k) for k in np.packbits(masks, axis=1)]
        missing = [i for i, k in enumerate(keys) if k not in self.cache]
        if missing:
            fresh = self.fn(masks[missing])
            for i, value in zip(missing, fresh, strict=True):
                self.cache[keys[i]] = float(value)
        return np.array([self.cache[k] for k in keys])


def _hash_normal(masks: np.ndarray, salt: int) -> np.ndarray:
    """A standard normal per coalition, a pure function of (mask, salt) (splitmix64 + Box-Muller)."""
    words = np.packbits(masks, axis=1)
    h = np.full(len(masks), np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(words.shape[1]):
            h = (h ^ words[:, j].astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
        h2 = (h ^ (h >> np.uint64(29))) * np.uint64(0x94D049BB133111EB)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    u2 = ((h2 >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def additive_noise_game(n: int) -> tuple[CachedGame, np.ndarray, str]:
    rng = np.random.default_rng(100 + n)
    w = rng.normal(size=n)

    def fn(z: np.ndarray) -> np.ndarray:
        return z.astype(np.float64) @ w + 0.25 * _hash_normal(z, salt=n)

    return CachedGame(n, fn), None, "exact (n <= 20) / permutation sampling"


def interaction_game(n: int) -> tuple[CachedGame, np.ndarray, str]:
    game = unanimity_sum(n, 3 * n, 4, seed=200 + n)
    return CachedGame(n, game.fn), game.shapley, "closed form"


def data_valuation_game(n: int) -> tuple[CachedGame, np.ndarray | None, str]:
    """Ridge classifier on n groups of digits rows (PCA-20 features), validation accuracy."""
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.linear_model import RidgeClassifier

    # 1. data: 400 training rows in n groups (20% of groups with shuffled labels), 500 validation rows;
    #    small groups keep the accuracy rising over many coalition sizes instead of saturating at once
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(300 + n)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    x_val, y_val, x_tr, y_tr = x[:500], y[:500], x[500:900], y[500:900]
    pca = PCA(n_components=20, random_state=0).fit(x_tr)
    f_tr = np.column_stack([pca.transform(x_tr), np.ones(len(x_tr))])
    f_val = np.column_stack([pca.transform(x_val), np.ones(len(x_val))])
    groups = np.array_split(np.arange(len(y_tr)), n)
    noisy_groups = rng.choice(n, size=max(1, n // 5), replace=False)
    targets = -np.ones((len(y_tr), 10))
    targets[np.arange(len(y_tr)), y_tr] = 1.0
    for g in noisy_groups:
        targets[groups[g]] = targets[rng.permutation(groups[g])]
    # 2. per-group sufficient statistics of ridge regression on ±1 targets (RidgeClassifier's loss)
    d = f_tr.shape[1]
    xtx = np.stack([f_tr[idx].T @ f_tr[idx] for idx in groups])  # (n, d, d)
    xty = np.stack([f_tr[idx].T @ targets[idx] for idx in groups])  # (n, d, 10)
    alpha = 1.0
    penalty = alpha * np.eye(d)
    penalty[-1, -1] = 1e-8  # intercept column (almost) unpenalised

    xtx_flat, xty_flat = xtx.reshape(n, -1), xty.reshape(n, -1)

    def fn(z: np.ndarray, chunk: int = 1024) -> np.ndarray:
        zf = z.astype(np.float64)
        acc = np.empty(len(zf))
        for lo in range(0, len(zf), chunk):  # matrix products in chunks (the references call it ~10^6 times)
            part = zf[lo : lo + chunk]
            a = (part @ xtx_flat).reshape(-1, d, d) + penalty
            b = (part @ xty_flat).reshape(-1, d, 10)
            coef = np.linalg.solve(a, b)  # (m, d, 10)
            pred = np.matmul(f_val, coef).argmax(axis=2)  # (m, 500)
            acc[lo : lo + chunk] = (pred == y_val).mean(axis=1)
        return np.where(zf.sum(axis=1) == 0, 0.1, acc)  # no data: chance

    # 3. one check against sklearn's RidgeClassifier on a coalition
    mask = np.zeros(n, dtype=bool)
    mask[: max(2, n // 2)] = True
    rows = np.concatenate([groups[g] for g in np.flatnonzero(mask)])
    labels = targets[rows].argmax(axis=1)
    clf = RidgeClassifier(alpha=alpha).fit(pca.transform(x_tr)[rows], labels)
    ours = float(fn(mask[None])[0])
    theirs = float((clf.predict(pca.transform(x_val)) == y_val).mean())
    if abs(ours - theirs) > 0.01:
        raise RuntimeError(f"sufficient-statistics ridge ({ours:.3f}) disagrees with sklearn ({theirs:.3f})")
    return CachedGame(n, fn), None, "exact (n <= 20) / permutation sampling"


def voting_game(n: int) -> tuple[CachedGame, np.ndarray, str]:
    """Weighted majority: v(S) = 1 if Σ_{i∈S} w_i >= ⌈Σw / 2⌉, integer weights 1..10."""
    rng = np.random.default_rng(400 + n)
    weights = rng.integers(1, 11, size=n)
    quota = math.ceil(weights.sum() / 2)

    def fn(z: np.ndarray) -> np.ndarray:
        return (z.astype(np.int64) @ weights >= quota).astype(np.float64)

    return CachedGame(n, fn), voting_shapley(weights, quota), "exact (dynamic programming)"


def voting_shapley(weights: np.ndarray, quota: int) -> np.ndarray:
    """Exact Shapley values of a weighted majority game: φ_i = Σ_k k!(n-k-1)!/n! · #{S ∌ i: |S| = k,
    quota - w_i <= w(S) < quota}, the counts by dynamic programming over (size, weight) (exact integers)."""
    n = len(weights)
    phi = np.zeros(n)
    top = int(weights.sum())
    for i in range(n):
        counts = [[0] * (top + 1) for _ in range(n)]  # counts[k][s]: subsets of N∖i of size k, weight s
        counts[0][0] = 1
        for j in range(n):
            if j == i:
                continue
            wj = int(weights[j])
            for k in range(n - 2, -1, -1):
                row, up = counts[k], counts[k + 1]
                for s in range(top - wj, -1, -1):
                    if row[s]:
                        up[s + wj] += row[s]
        total = 0.0
        for k in range(n):
            swings = sum(counts[k][max(quota - int(weights[i]), 0):quota])
            total += swings * math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
        phi[i] = total
    return phi


GAMES: dict[str, Callable[[int], tuple[CachedGame, np.ndarray | None, str]]] = {
    "additive+noise": additive_noise_game,
    "interaction": interaction_game,
    "data-valuation": data_valuation_game,
    "voting": voting_game,
}


# --------------------------------------------------------------------------------------------------------
# References (independent of every estimator under test)
# --------------------------------------------------------------------------------------------------------
EXACT_MAX_PLAYERS = 20
PERMUTATION_PAIRS = 10_000


def exact_shapley(fn: Callable[[np.ndarray], np.ndarray], n: int, chunk: int = 1 << 15) -> np.ndarray:
    """Subset formula on all 2^n coalitions: φ_i = Σ_{S∌i} |S|!(n-|S|-1)!/n! (v(S ∪ i) - v(S))."""
    codes = np.arange(2**n, dtype=np.int64)
    values = np.empty(2**n)
    for lo in range(0, 2**n, chunk):
        block = codes[lo : lo + chunk]
        values[lo : lo + chunk] = fn(((block[:, None] >> np.arange(n)) & 1).astype(bool))
    sizes = np.zeros(2**n, dtype=np.int64)
    for i in range(n):
        sizes += (codes >> i) & 1
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.zeros(n)
    for i in range(n):
        without = codes[((codes >> i) & 1) == 0]
        phi[i] = float(np.sum(weight[sizes[without]] * (values[without | (1 << i)] - values[without])))
    return phi


def permutation_shapley(fn: Callable[[np.ndarray], np.ndarray], n: int, pairs: int, seed: int,
                        block: int = 100) -> tuple[np.ndarray, float]:
    """Antithetic permutation sampling (each permutation and its reverse). Returns (φ, expected rel. L2 error)."""
    rng = np.random.default_rng(seed)
    per_pair = np.zeros((pairs, n))
    steps = np.tril(np.ones((n + 1, n), dtype=bool), k=-1)  # row j: the first j players of the order
    for lo in range(0, pairs, block):
        orders = [rng.permutation(n) for _ in range(min(block, pairs - lo))]
        perms = [perm for order in orders for perm in (order, order[::-1])]
        masks = np.zeros((len(perms), n + 1, n), dtype=bool)
        for j, perm in enumerate(perms):
            masks[j][:, perm] = steps
        marginal = np.diff(fn(masks.reshape(-1, n)).reshape(len(perms), n + 1), axis=1)  # (2b, n) by position
        for j, perm in enumerate(perms):
            per_pair[lo + j // 2, perm] += marginal[j] / 2.0
    phi = per_pair.mean(axis=0)
    se = per_pair.std(axis=0, ddof=1) / math.sqrt(pairs)
    return phi, float(np.linalg.norm(se) / np.linalg.norm(phi))


def reference_values(game_name: str, game: CachedGame, n: int, closed_form: np.ndarray | None
                     ) -> tuple[np.ndarray, str, float]:
    """(φ, how, own relative error) for one game; never from an estimator under test."""
    if game_name in ("interaction", "voting"):
        return closed_form, "exact (closed form)" if game_name == "interaction" else "exact (dynamic programming)", 0.0
    if n <= EXACT_MAX_PLAYERS:
        return exact_shapley(game.fn, n), f"exact (all 2^{n} coalitions)", 0.0
    phi, error = permutation_shapley(game.fn, n, PERMUTATION_PAIRS, seed=9000 + n)
    return phi, f"permutation sampling, {PERMUTATION_PAIRS} antithetic pairs ({2 * PERMUTATION_PAIRS * (n + 1)} calls)", error


# --------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------
def _endpoints(game: CachedGame) -> tuple[float, float]:
    n = game.n
    return float(game(np.zeros((1, n), bool))[0]), float(game(np.ones((1, n), bool))[0])


def run_ours(label: str, game: CachedGame, budget: int, seed: int) -> np.ndarray:
    method, design = label.split("@")
    masks = sample_coalitions(game.n, budget, design, seed=seed)
    v_empty, v_full = _endpoints(game)
    return estimate(masks, game(masks), v_empty, v_full, method=method, seed=seed).value


def run_paper(game: CachedGame, budget: int, seed: int) -> np.ndarray:
    """Unpaired Shapley-kernel draws with replacement until `budget` distinct coalitions; weights = counts."""
    n = game.n
    raw = sample_coalitions(n, 50 * budget, "shapley_kernel", seed=seed, unique=False)
    position: dict[bytes, int] = {}
    first_rows: list[int] = []
    counts: list[int] = []
    for i, key in enumerate(np.packbits(raw, axis=1)):
        key = bytes(key)
        if key in position:
            counts[position[key]] += 1
            continue
        if len(first_rows) == budget:  # the next distinct coalition would exceed the budget
            break
        position[key] = len(first_rows)
        first_rows.append(i)
        counts.append(1)
    masks = raw[first_rows]
    v_empty, v_full = _endpoints(game)
    return estimate(masks, game(masks), v_empty, v_full, method="kernelshap_paper",
                    draw_counts=np.asarray(counts, dtype=np.float64)).value


def run_shapiq(label: str, game: CachedGame, budget: int, seed: int) -> np.ndarray:
    import shapiq

    n = game.n
    make = {
        "shapiq KernelSHAP": lambda: shapiq.KernelSHAP(n=n, pairing_trick=False, random_state=seed),
        "shapiq KernelSHAP+pairing": lambda: shapiq.KernelSHAP(n=n, pairing_trick=True, random_state=seed),
        "shapiq kADDSHAP": lambda: shapiq.kADDSHAP(n=n, max_order=2, random_state=seed),
        "shapiq SVARM": lambda: shapiq.SVARM(n=n, random_state=seed),
        "shapiq PermutationSV": lambda: shapiq.PermutationSamplingSV(n=n, random_state=seed),
        "shapiq StratifiedSV": lambda: shapiq.StratifiedSamplingSV(n=n, random_state=seed),
        "shapiq OwenSV": lambda: shapiq.OwenSamplingSV(n=n, random_state=seed),
        "shapiq UnbiasedKernelSHAP": lambda: shapiq.UnbiasedKernelSHAP(n=n, random_state=seed),
        "shapiq SPEX": lambda: shapiq.SPEX(n=n, index="SV", max_order=1, random_state=seed),
    }
    if label not in make:
        raise ValueError(f"unknown shapiq method {label!r}; valid: {', '.join(make)}.")
    if label == "shapiq SPEX" and n > SPEX_MAX_PLAYERS:
        raise RuntimeError(f"not run for n > {SPEX_MAX_PLAYERS} (about a minute per call)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = make[label]().approximate(budget=budget + 2, game=game)
    return np.asarray(result.get_n_order_values(1), dtype=np.float64)


def run_method(method: str, game: CachedGame, budget: int, seed: int) -> np.ndarray:
    if method == EQUAL:
        v_empty, v_full = _endpoints(game)
        return np.full(game.n, (v_full - v_empty) / game.n)
    if method in OURS:
        return run_ours(method, game, budget, seed)
    if method == PAPER:
        return run_paper(game, budget, seed)
    return run_shapiq(method, game, budget, seed)


# --------------------------------------------------------------------------------------------------------
# Target checks
# --------------------------------------------------------------------------------------------------------
def check_targets(method: str, cells: list[tuple[str, int]], error: Callable[[str, str, int, int], float | None]
                  ) -> dict:
    """The three targets for one method; ``error(method, game, n, budget)`` is None for a miss."""
    at_10n, ratios_10n, vs_paper = [], [], []
    for game_name, n in cells:
        ours = error(method, game_name, n, 10 * n)
        sq = [e for m in SHAPIQ if (e := error(m, game_name, n, 10 * n)) is not None]
        best = min(sq)
        best_name = min((m for m in SHAPIQ if error(m, game_name, n, 10 * n) is not None),
                        key=lambda m: error(m, game_name, n, 10 * n))
        ratios_10n.append(ours / best)
        at_10n.append({"game": game_name, "n": n, "error": ours, "best_shapiq": best_name,
                       "best_shapiq_error": best, "ratio": ours / best, "holds": ours <= best})
        for mult in MULTIPLIERS:
            if mult < 5:
                continue
            mine, paper = error(method, game_name, n, mult * n), error(PAPER, game_name, n, mult * n)
            vs_paper.append({"game": game_name, "n": n, "budget": mult * n, "ratio": mine / paper,
                             "holds": mine <= 0.5 * paper})
    geo = float(np.exp(np.mean(np.log(ratios_10n))))
    return {
        "le_best_shapiq_every_game_10n": {"holds": all(c["holds"] for c in at_10n), "cells": at_10n},
        "geomean_over_best_shapiq_10n_le_0.7": {"holds": geo <= 0.7, "geomean": geo},
        "le_half_paper_from_5n": {"holds": all(c["holds"] for c in vs_paper),
                                  "held": sum(c["holds"] for c in vs_paper), "cells": len(vs_paper),
                                  "worst_ratio": max(c["ratio"] for c in vs_paper), "detail": vs_paper},
    }


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="repetitions per cell for n <= 20 (default 5)")
    parser.add_argument("--seeds-large", type=int, default=3, help="repetitions per cell for n = 50 (default 3)")
    parser.add_argument("--quick", action="store_true", help="n=10 and n=20 only")
    parser.add_argument("--games", default=None, help="comma-separated subset of the games (default all)")
    parser.add_argument("--ns", default=None, help="comma-separated subset of n (default 10,20,50)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated subset of the methods (default all; the targets need the default, "
                             "the candidate, the paper's and the shapiq columns)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimators.json")
    args = parser.parse_args()

    # 1. setup
    ns = (10, 20) if args.quick else (10, 20, 50)
    if args.ns:
        ns = tuple(int(x) for x in args.ns.split(","))
    methods = (*OURS, PAPER, *SHAPIQ, EQUAL)
    if args.methods:
        chosen = args.methods.split(",")
        unknown = [m for m in chosen if m not in methods]
        if unknown:
            parser.error(f"unknown methods {unknown}; valid: {', '.join(methods)}")
        methods = tuple(m for m in methods if m in chosen)
    games = list(GAMES) if not args.games else args.games.split(",")
    if unknown := [g for g in games if g not in GAMES]:
        parser.error(f"unknown games {unknown}; valid: {', '.join(GAMES)}")
    cells = [(g, n) for g in games for n in ns]
    rows: list[dict] = []
    references: dict[str, dict] = {}
    started = time.time()

    # 2. every (game, n): the reference, then every budget x method x seed
    for game_name, n in cells:
        t_ref = time.time()
        game, closed_form, _ = GAMES[game_name](n)
        truth, how, ref_error = reference_values(game_name, game, n, closed_form)
        references[f"{game_name}/n={n}"] = {"how": how, "reference_error": ref_error, "shapley": truth.tolist(),
                                            "seconds": time.time() - t_ref}
        norm = float(np.linalg.norm(truth))
        seeds = args.seeds if n <= 20 else args.seeds_large
        for budget in (m * n for m in MULTIPLIERS):
            for method in methods:
                errors, seconds, failure = [], [], None
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    try:
                        value = run_method(method, game, budget, seed)
                    except Exception as exc:  # a method that refuses a cell is recorded as a miss
                        failure = f"{type(exc).__name__}: {exc}"[:200]
                        break
                    seconds.append(time.perf_counter() - t0)
                    errors.append(float(np.linalg.norm(value - truth) / norm))
                rows.append({
                    "game": game_name, "n": n, "budget": budget, "method": method, "seeds": seeds,
                    "rel_l2_error": None if failure else float(np.mean(errors)),
                    "rel_l2_error_sd": None if failure else float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
                    "seconds": float(np.mean(seconds)) if seconds else None,
                    "failure": failure,
                })
        print(f"[{time.time() - started:6.0f} s] {game_name} n={n} done (reference: {how})", flush=True)
    elapsed = time.time() - started

    # 3. table: one line per (game, n, budget), methods as columns
    lookup = {(r["method"], r["game"], r["n"], r["budget"]): r["rel_l2_error"] for r in rows}

    def error(method: str, game_name: str, n: int, budget: int) -> float | None:
        return lookup.get((method, game_name, n, budget))  # None: a miss, or not run (subset)

    def ratio(a: float | None, b: float | None) -> float:
        return math.nan if a is None or b is None or b == 0 else a / b

    short = {
        "kernelshap@leverage": "ours:ks", "leverage_shap@leverage": "levshap", "regression_msr@leverage": "rmsr",
        PAPER: "paper", "shapiq KernelSHAP": "KS", "shapiq KernelSHAP+pairing": "KS+pair",
        "shapiq kADDSHAP": "kADD", "shapiq SVARM": "SVARM", "shapiq PermutationSV": "perm",
        "shapiq StratifiedSV": "strat", "shapiq OwenSV": "owen", "shapiq UnbiasedKernelSHAP": "uKS",
        "shapiq SPEX": "SPEX", EQUAL: "t/n",
    }
    header = f"{'game':<15}{'n':>3}{'budget':>7}" + "".join(f"{short[m]:>8}" for m in methods)
    header += f"{'ks/bestSQ':>10}{'rmsr/bestSQ':>12}{'ks/paper':>9}{'rmsr/pap':>9}"
    lines = [header, "-" * len(header)]
    for game_name, n in cells:
        for budget in (m * n for m in MULTIPLIERS):
            cell = [error(m, game_name, n, budget) for m in methods]
            best_sq = min((e for m in SHAPIQ if (e := error(m, game_name, n, budget)) is not None), default=math.nan)
            ks, rm, paper = (error(m, game_name, n, budget) for m in (DEFAULT, CANDIDATE, PAPER))
            lines.append(
                f"{game_name:<15}{n:>3}{budget:>7}" + "".join("     n/a" if e is None else f"{e:>8.4f}" if e < 100 else f"{e:>8.1e}" for e in cell)
                + f"{ratio(ks, best_sq):>10.2f}{ratio(rm, best_sq):>12.2f}{ratio(ks, paper):>9.2f}{ratio(rm, paper):>9.2f}"
            )
    table = "\n".join(lines)
    print(table)

    # 4. targets, for the default and the regression-adjusted candidate
    targets = {}
    summary_lines = []
    for m in (DEFAULT, CANDIDATE):
        if m not in methods or PAPER not in methods or not set(SHAPIQ) & set(methods):
            summary_lines.append(f"{m}: targets not checked (needs it, the paper's and the shapiq columns)")
            continue
        t = targets[m] = check_targets(m, cells, error)
        a = t["le_best_shapiq_every_game_10n"]
        b = t["geomean_over_best_shapiq_10n_le_0.7"]
        c = t["le_half_paper_from_5n"]
        worst = max(a["cells"], key=lambda x: x["ratio"])
        summary_lines.append(
            f"{m}: <= best shapiq at 10n in {sum(x['holds'] for x in a['cells'])}/{len(a['cells'])} (game, n) "
            f"(worst {worst['ratio']:.2f}x on {worst['game']} n={worst['n']} vs {worst['best_shapiq']}); "
            f"geomean vs best shapiq at 10n {b['geomean']:.2f} (target 0.7); "
            f"<= 0.5x paper from 5n in {c['held']}/{c['cells']} cells (worst {c['worst_ratio']:.2f}x)"
        )
    summary = "\n".join(summary_lines) + f"\n{elapsed:.0f} s"
    print(summary)

    # 5. write every cell, misses included
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "description": "mean relative L2 error to independent reference Shapley values (see bench/estimators.py)",
        "seeds": {"n<=20": args.seeds, "n=50": args.seeds_large},
        "default_method": DEFAULT,
        "candidate_method": CANDIDATE,
        "not_run": {"shapiq ProxySPEX": "needs LightGBM (not installed)",
                    "shapiq SVARMIQ": "at order 1 with index SV it is SVARM (reported once)",
                    "shapiq SPEX": f"n > {SPEX_MAX_PLAYERS}: about a minute per call"},
        "rows": rows,
        "targets": targets,
        "references": references,
        "table": table,
        "summary": summary,
        "elapsed_s": elapsed,
    }
    args.out.write_text(json.dumps(document, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
