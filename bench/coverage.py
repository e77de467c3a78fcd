"""Benchmark: coverage of the default ``kernelshap`` intervals (or another method's) at GPU-run budgets (not a
test; prints a table, writes JSON).

Usage:
    nice -n 10 .venv/bin/python bench/coverage.py [--reps 300] [--method kernelshap] [--factors 2,3,5,10]
        [--out bench/results/coverage.json]

``--method``: the estimator whose intervals are checked (default ``kernelshap``; any other method writes
``bench/results/coverage_<method>.json`` unless ``--out`` is given). ``--factors``: the budget factors to run.

Cells: game × budget (2n, 3n, 5n, 10n sampled coalitions; v(∅) and v(N) on top) × design (``paired``,
``leverage``) × replicates (1, or 2 evaluations per coalition and endpoint). Every evaluation, the endpoints
included, carries heteroscedastic utility noise: SD_S = 2% of |v(N) − v(∅)| times a per-coalition factor
10^(u_S − 1/2), u_S ∈ [0, 1) fixed by the coalition (a tenfold range between coalitions, like the 5-50 FID
seed-to-seed spread of the fidelity data). Truth: the closed-form (or brute-force) Shapley value of the
noiseless game, so the interval must cover sampling error and noise together.

Per cell and ``--reps`` repetitions (plan seed = repetition): ``coverage`` = share of (repetition, player)
intervals at level 0.95 holding the truth (a player flagged not identified has the interval (-inf, inf) and
counts as covered); ``coverage_identified`` = the same over identified players only (what a stopping rule
acts on); ``identified`` = share of identified players; ``se_ratio`` = mean stderr / RMS error
over identified players (1 is calibrated; below 1 too narrow). Coverage is pooled over players, which are
correlated within a repetition: its Monte-Carlo SD is about sqrt(p(1-p) / (reps · n)) times a design effect
(the script reports the SD of the per-repetition coverage / sqrt(reps), which includes it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from contribshap.pipeline.estimators import estimate  # noqa: E402
from contribshap.pipeline.estimators.simultaneous import fdr_set, simultaneous_interval  # noqa: E402
from contribshap.pipeline.sampling import sample_coalitions  # noqa: E402
from games_core import KnownGame, data_like, pairwise, size_effect, unanimity_sum, weighted_voting  # noqa: E402

BUDGET_FACTORS = (2, 3, 5, 10)
DESIGNS = ("paired", "leverage")
REPLICATES = (1, 2)
NOISE = 0.02  # utility noise SD as a share of |v(N) - v(∅)| (geometric mean of the per-coalition SDs)


def _games() -> list[KnownGame]:
    rng = np.random.default_rng(7)
    b = rng.normal(scale=0.3, size=(10, 10))
    votes = rng.integers(1, 11, size=10).astype(np.float64)
    return [
        unanimity_sum(10, 30, 3, seed=3),
        size_effect(unanimity_sum(10, 30, 3, seed=5), lambda k: 20.0 * np.sqrt(np.asarray(k, dtype=np.float64))),
        pairwise(rng.normal(size=10), b),
        weighted_voting(votes, quota=float(np.ceil(votes.sum() / 2))),
        unanimity_sum(12, 36, 3, seed=8),
    ]


def _noise_sd(masks: np.ndarray, base: float, key: np.ndarray) -> np.ndarray:
    """Per-coalition SD: base · 10^(u_S - 1/2), u_S = frac(z_S · key) (fixed by the coalition)."""
    u = np.mod(masks.astype(np.float64) @ key, 1.0)
    return base * 10.0 ** (u - 0.5)


def run_cell(game: KnownGame, factor: int, design: str, reps: int, n_rep: int, method: str = "kernelshap",
             noise: float = NOISE) -> dict:
    n = game.n
    budget = factor * n
    key = np.random.default_rng(123).uniform(size=n) * np.pi
    ends = np.stack([np.zeros(n, bool), np.ones(n, bool)])
    true_ends = game(ends)
    base = noise * abs(true_ends[1] - true_ends[0])
    covered, ident, se, err = [], [], [], []
    family, fdp, harmful_found = [], [], []
    for r in range(n_rep):
        rng = np.random.default_rng([r, factor, reps, DESIGNS.index(design)])
        masks = np.repeat(sample_coalitions(n, budget, design, seed=r), reps, axis=0)
        values = game(masks) + rng.normal(size=len(masks)) * _noise_sd(masks, base, key)
        end_values = true_ends[:, None] + rng.normal(size=(2, reps)) * _noise_sd(ends, base, key)[:, None]
        all_masks = np.concatenate([masks, np.repeat(ends, reps, axis=0)])
        all_values = np.concatenate([values, end_values.reshape(-1)])
        try:
            est = estimate(all_masks, all_values, float(end_values[0].mean()), float(end_values[1].mean()),
                           method=method, seed=r)
        except ValueError:  # refused: too few coalitions for any player (counts as not identified, covered)
            covered.append(np.ones(n, bool))
            ident.append(np.zeros(n, bool))
            continue
        covered.append((est.ci_low <= game.shapley) & (game.shapley <= est.ci_high))
        low, high = simultaneous_interval(est, 0.95)
        family.append(bool(np.all((low <= game.shapley) & (game.shapley <= high))))
        harmful = fdr_set(est, "harmful", 0.10)
        fdp.append(float(np.mean(game.shapley[harmful] >= 0)) if len(harmful) else 0.0)
        harmful_found.append(float(np.mean(np.isin(np.flatnonzero(game.shapley < 0), harmful)))
                             if np.any(game.shapley < 0) else float("nan"))
        ident.append(est.identified)
        se.append(np.where(est.identified, est.stderr, np.nan))
        err.append(np.where(est.identified, est.value - game.shapley, np.nan))
    cov = np.array(covered, dtype=np.float64)
    idf = np.array(ident, dtype=np.float64)
    cov_id = float(cov[idf > 0].mean()) if idf.any() else float("nan")
    se_ratio = float("nan")
    if se:
        se_a, err_a = np.array(se), np.array(err)
        rmse = np.sqrt(np.nanmean(err_a**2))
        se_ratio = float(np.nanmean(se_a) / rmse) if rmse > 0 else float("nan")
    return {
        "method": method, "game": game.name, "n": n, "budget": budget, "factor": factor, "design": design, "replicates": reps,
        "coverage": float(cov.mean()), "coverage_mc_sd": float(cov.mean(axis=1).std(ddof=1) / np.sqrt(n_rep)),
        "coverage_identified": cov_id, "identified": float(idf.mean()), "se_ratio": se_ratio, "n_rep": n_rep,
        "noise": noise,
        "simultaneous_coverage": float(np.mean(family)) if family else float("nan"),
        "harmful_fdp": float(np.mean(fdp)) if fdp else float("nan"),
        "harmful_power": float(np.nanmean(harmful_found)) if harmful_found else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=300, help="repetitions per cell (default 300)")
    parser.add_argument("--method", default="kernelshap", help="estimator whose intervals are checked")
    parser.add_argument("--factors", default=",".join(map(str, BUDGET_FACTORS)),
                        help="budget factors, comma-separated (default 2,3,5,10)")
    parser.add_argument("--out", default=None, help="JSON path (default bench/results/coverage.json for "
                        "kernelshap, coverage_<method>.json otherwise)")
    parser.add_argument("--large", default=None, help="instead of the grid: data-like games of these sizes, "
                        "comma-separated (e.g. 100,258), 1%% noise, one replicate; JSON to coverage_large.json")
    args = parser.parse_args()
    if args.large:
        large(args)
        return
    factors = tuple(int(f) for f in args.factors.split(","))
    if args.out is None:
        name = "coverage.json" if args.method == "kernelshap" else f"coverage_{args.method}.json"
        args.out = str(ROOT / "bench" / "results" / name)

    # 1. every cell
    start = time.time()
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for game in _games():
            for factor in factors:
                for design in DESIGNS:
                    for reps in REPLICATES:
                        row = run_cell(game, factor, design, reps, args.reps, args.method)
                        rows.append(row)
                        print(f"{row['game'][:34]:34s} {row['budget']:4d} ({factor:2d}n) {design:8s} x{reps}  "
                              f"coverage {row['coverage']:.3f} ± {row['coverage_mc_sd']:.3f} "
                              f"(identified only {row['coverage_identified']:.3f})  "
                              f"identified {row['identified']:.3f}  se/rmse {row['se_ratio']:.2f}", flush=True)
    seconds = time.time() - start

    # 2. summary per budget factor over identified players (the goal: 90-99% from 3n up)
    summary = {}
    for factor in factors:
        cells = np.array([r["coverage_identified"] for r in rows if r["factor"] == factor])
        cells = cells[np.isfinite(cells)]  # a cell with no identified player has no coverage to speak of
        summary[f"{factor}n"] = {"min": float(cells.min()), "median": float(np.median(cells)),
                                 "max": float(cells.max()), "in_90_99": int(np.sum((cells >= 0.90) & (cells <= 0.99))),
                                 "cells": len(cells)}
        print(f"{factor:2d}n: coverage (identified players) min {cells.min():.3f} median {np.median(cells):.3f} "
              f"max {cells.max():.3f}; "
              f"{summary[f'{factor}n']['in_90_99']}/{len(cells)} cells in [0.90, 0.99]")
    print(f"{seconds:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"method": args.method, "level": 0.95, "noise": NOISE, "reps": args.reps, "seconds": round(seconds, 1),
                               "summary": summary, "cells": rows}, indent=1) + "\n")
    print(f"wrote {out}")


def large(args: argparse.Namespace) -> None:
    """Large-n cells: ``data_like`` games (each contributor's own worth, ~5% harmful, groups of 3-10 partly
    redundant contributors, a learning curve; exact values by enumeration of the small groups), utility
    noise 1% of v(N) - v(∅) (heteroscedastic as above), designs paired and leverage, budgets 2n-10n.
    Also per cell: ``simultaneous_coverage`` (share of repetitions whose 95% simultaneous intervals hold
    every identified player's true value), ``harmful_fdp`` (mean false share of the "harmful at FDR 10%"
    set) and ``harmful_power`` (share of the truly harmful in that set)."""
    factors = tuple(int(f) for f in args.factors.split(","))
    out = Path(args.out) if args.out and "coverage.json" not in args.out else ROOT / "bench" / "results" / \
        "coverage_large.json"
    rows, start = [], time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in (int(v) for v in args.large.split(",")):
            game = data_like(n, seed=1)
            for design in DESIGNS:
                for factor in factors:
                    row = run_cell(game, factor, design, 1, args.reps, args.method, noise=0.01)
                    rows.append(row)
                    print(f"n={n:4d} {factor:2d}n {design:8s} coverage {row['coverage_identified']:.3f} ± "
                          f"{row['coverage_mc_sd']:.3f}  identified {row['identified']:.3f}  "
                          f"se/rmse {row['se_ratio']:.2f}  simultaneous {row['simultaneous_coverage']:.3f}  "
                          f"harmful FDP {row['harmful_fdp']:.3f} power {row['harmful_power']:.2f}", flush=True)
    seconds = time.time() - start
    print(f"{seconds:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"method": args.method, "level": 0.95, "noise": 0.01, "reps": args.reps,
                               "seconds": round(seconds, 1), "cells": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
