"""Benchmark: Shapley estimators at equal budget (not a test; prints a table, writes JSON).

Usage:
    nice -n 5 .venv/bin/python bench/estimators.py [--seeds 5] [--quick]

For n in {10, 20, 50}, budgets {2n, 5n, 10n, 20n} (sampled coalitions; the empty and full coalitions are
evaluated on top, for every method alike, so shapiq gets budget + 2), on three games:

- ``additive+noise``: v(S) = Σ_{i∈S} w_i + ε(S), ε(S) ~ N(0, 0.25²) fixed per coalition (a deterministic hash
  of S, like a cached noisy evaluation); reference: w (the Shapley value of the noise-free game).
- ``interaction``: a sum of 3n unanimity games on random sets of 1..4 players (coefficients grow with
  the order, so most of the value is in interactions); reference: exact closed form.
- ``data-valuation``: validation accuracy (500 rows) of a ridge classifier (sklearn's ``RidgeClassifier`` loss,
  solved from per-group sufficient statistics; checked against sklearn once) trained on the union of n
  groups of 400 scikit-learn digits rows, 20% of the groups with shuffled labels; utilities cached per
  coalition; reference: exact for n = 10, a leverage/kernelshap estimate with 40,000 coalitions for n = 20
  and n = 50 (its own error is reported as ``reference_error`` from two independent halves).

Methods: ours — ``kernelshap`` (default ``center="auto"``: the per-player blend with the size-centred fit)
on the ``leverage`` design (the default), on the ``paired`` design, ``kernelshap`` with ``center="none"``
(``plain``, the ablation), ``leverage_shap``; the paper's estimator — ``kernelshap_paper`` on the
``shapley_kernel`` design (drawn with replacement until ``budget`` distinct coalitions, each weighted by its draw count); shapiq — ``KernelSHAP``
(with and without its pairing trick) and ``PermutationSamplingSV``. Metric: mean relative L2 error
‖φ̂ − φ‖ / ‖φ‖ over seeds. Output: a table on stdout and ``bench/results/estimators.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from contribshap.pipeline.estimators import estimate  # noqa: E402
from contribshap.pipeline.sampling import sample_coalitions  # noqa: E402
from games_core import unanimity_sum  # noqa: E402

OURS = ("kernelshap@leverage", "kernelshap@paired", "kernelshap(plain)@leverage", "leverage_shap@leverage")
PAPER = "paper(kernelshap_paper@shapley_kernel)"
SHAPIQ = ("shapiq KernelSHAP", "shapiq KernelSHAP+pairing", "shapiq PermutationSV")
DEFAULT = OURS[0]


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

    return CachedGame(n, fn), w, "closed form (noise-free weights)"


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

    def fn(z: np.ndarray) -> np.ndarray:
        zf = z.astype(np.float64)
        a = np.einsum("mg,gij->mij", zf, xtx) + penalty
        b = np.einsum("mg,gij->mij", zf, xty)
        coef = np.linalg.solve(a, b)  # (m, d, 10)
        pred = np.einsum("vd,mdc->mvc", f_val, coef).argmax(axis=2)
        acc = (pred == y_val).mean(axis=1)
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
    return CachedGame(n, fn), None, "exact (n=10) / high-budget leverage kernelshap"


GAMES: dict[str, Callable[[int], tuple[CachedGame, np.ndarray | None, str]]] = {
    "additive+noise": additive_noise_game,
    "interaction": interaction_game,
    "data-valuation": data_valuation_game,
}


# --------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------
def _endpoints(game: CachedGame) -> tuple[float, float]:
    n = game.n
    return float(game(np.zeros((1, n), bool))[0]), float(game(np.ones((1, n), bool))[0])


def run_ours(label: str, game: CachedGame, budget: int, seed: int) -> np.ndarray:
    method, design = label.split("@")
    options = {}
    if method == "kernelshap(plain)":  # kernelshap without its size centring (the ablation)
        method, options = "kernelshap", {"center": "none"}
    masks = sample_coalitions(game.n, budget, design, seed=seed)
    v_empty, v_full = _endpoints(game)
    return estimate(masks, game(masks), v_empty, v_full, method=method, seed=seed, **options).value


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
    return estimate(masks, game(masks), v_empty, v_full, method="kernelshap_paper", draw_counts=np.asarray(counts, dtype=np.float64)).value


def run_shapiq(label: str, game: CachedGame, budget: int, seed: int) -> np.ndarray:
    import shapiq

    n = game.n
    if label == "shapiq PermutationSV":
        approx = shapiq.PermutationSamplingSV(n=n, random_state=seed)
    else:
        approx = shapiq.KernelSHAP(n=n, pairing_trick=label.endswith("pairing"), random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = approx.approximate(budget=budget + 2, game=game)
    return np.asarray(result.get_n_order_values(1), dtype=np.float64)


def reference_values(game: CachedGame, n: int) -> tuple[np.ndarray, float | None]:
    """Exact Shapley for n <= 12, else kernelshap on 40,000 leverage coalitions (+ its error estimate)."""
    v_empty, v_full = _endpoints(game)
    if n <= 12:
        masks = sample_coalitions(n, 0, "exact")
        return estimate(masks, game(masks), v_empty, v_full, method="exact_shapley").value, 0.0
    masks = sample_coalitions(n, 40_000, "leverage", seed=12345)
    ref = estimate(masks, game(masks), v_empty, v_full, ci="analytic").value
    halves = [sample_coalitions(n, 20_000, "leverage", seed=s) for s in (777, 778)]
    a, b = (estimate(h, game(h), v_empty, v_full).value for h in halves)
    # error of one 40k estimate ≈ error of the difference of two independent 20k estimates / 2
    return ref, float(np.linalg.norm(a - b) / 2 / np.linalg.norm(ref))


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="repetitions per cell (default 5)")
    parser.add_argument("--quick", action="store_true", help="n=10 and n=20 only")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimators.json")
    args = parser.parse_args()

    from tqdm import tqdm

    ns = (10, 20) if args.quick else (10, 20, 50)
    methods = (*OURS, PAPER, *SHAPIQ)
    rows: list[dict] = []
    references: dict[str, dict] = {}
    started = time.time()
    cells = [(g, n) for g in GAMES for n in ns]
    bar = tqdm(total=len(cells) * 4 * len(methods) * args.seeds, desc="bench", unit="est")
    for game_name, n in cells:
        game, truth, how = GAMES[game_name](n)
        ref_error = 0.0
        if truth is None:
            truth, ref_error = reference_values(game, n)
            how = "exact" if n <= 12 else f"leverage kernelshap, 40,000 coalitions (est. rel. error {ref_error:.4f})"
        references[f"{game_name}/n={n}"] = {"how": how, "reference_error": ref_error, "shapley": truth.tolist()}
        norm = float(np.linalg.norm(truth))
        for budget in (2 * n, 5 * n, 10 * n, 20 * n):
            for method in methods:
                errors, seconds = [], []
                for seed in range(args.seeds):
                    t0 = time.perf_counter()
                    if method in OURS:
                        value = run_ours(method, game, budget, seed)
                    elif method == PAPER:
                        value = run_paper(game, budget, seed)
                    else:
                        value = run_shapiq(method, game, budget, seed)
                    seconds.append(time.perf_counter() - t0)
                    errors.append(float(np.linalg.norm(value - truth) / norm))
                    bar.update(1)
                rows.append(
                    {
                        "game": game_name,
                        "n": n,
                        "budget": budget,
                        "method": method,
                        "rel_l2_error": float(np.mean(errors)),
                        "rel_l2_error_sd": float(np.std(errors, ddof=1)) if len(errors) > 1 else 0.0,
                        "seconds": float(np.mean(seconds)),
                        "seeds": args.seeds,
                    }
                )
    bar.close()
    elapsed = time.time() - started

    # table: one line per (game, n, budget), methods as columns, then the target checks
    short = {
        "kernelshap@leverage": "ours:ks@lev",
        "kernelshap@paired": "ks@paired",
        "kernelshap(plain)@leverage": "plain@lev",
        "leverage_shap@leverage": "levshap",
        PAPER: "paper",
        "shapiq KernelSHAP": "sq:KS",
        "shapiq KernelSHAP+pairing": "sq:KS+pair",
        "shapiq PermutationSV": "sq:perm",
    }
    header = f"{'game':<15}{'n':>4}{'budget':>7} " + "".join(f"{short[m]:>12}" for m in methods)
    header += f"{'ours/paper':>11}{'ours/bestSQ':>12}"
    lines = [header, "-" * len(header)]
    checks = []
    for game_name, n in cells:
        for budget in (2 * n, 5 * n, 10 * n, 20 * n):
            cell = {r["method"]: r["rel_l2_error"] for r in rows if (r["game"], r["n"], r["budget"]) == (game_name, n, budget)}
            best_sq = min(cell[m] for m in SHAPIQ)
            ratio_paper = cell[DEFAULT] / cell[PAPER]
            ratio_sq = cell[DEFAULT] / best_sq
            checks.append({"game": game_name, "n": n, "budget": budget, "ours_over_paper": ratio_paper,
                           "ours_over_best_shapiq": ratio_sq})
            lines.append(
                f"{game_name:<15}{n:>4}{budget:>7} " + "".join(f"{cell[m]:>12.4f}" for m in methods)
                + f"{ratio_paper:>11.2f}{ratio_sq:>12.2f}"
            )
    table = "\n".join(lines)
    print(table)
    half = sum(c["ours_over_paper"] <= 0.5 for c in checks)
    nowor = sum(c["ours_over_best_shapiq"] <= 1.0 for c in checks)
    summary = (
        f"\ncells where ours <= 0.5 x paper: {half}/{len(checks)}; where ours <= best shapiq: {nowor}/{len(checks)}; "
        f"median ours/paper {np.median([c['ours_over_paper'] for c in checks]):.2f}, "
        f"median ours/best-shapiq {np.median([c['ours_over_best_shapiq'] for c in checks]):.2f}; {elapsed:.0f} s"
    )
    print(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "description": "mean relative L2 error to the reference Shapley values (see bench/estimators.py)",
        "seeds": args.seeds,
        "default_method": DEFAULT,
        "rows": rows,
        "checks": checks,
        "references": references,
        "table": table,
        "summary": summary.strip(),
        "elapsed_s": elapsed,
    }
    args.out.write_text(json.dumps(document, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
