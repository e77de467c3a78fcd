"""Benchmark: does the budget planner's projection land near the budget that actually reaches the target?
(not a test; prints a table, writes JSON).

Usage:
    nice -n 10 .venv/bin/python bench/planner.py [--seeds 4] [--out bench/results/planner.json]

Per case (data-like game from ``tests/games_core.py``, utility noise 1% of v(N) - v(∅) per evaluation,
design, plan seed): a pilot of ``--pilot`` × n coalitions (default 10n) gives :func:`contribshap.pipeline.planner.project_budget` a
target half-width h = ``shrink`` × the largest CI half-width that the same plan grown to 2x and 4x the pilot
shows (targets reachable at a known scale). The actual budget is the first prefix of the same plan (prefix-stable designs; each coalition
keeps its noise draw) on a grid of 4% steps whose largest half-width is at most h. ratio = projected /
actual; the goal is 0.7-1.3.
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

from contribshap.pipeline.estimators import estimate, max_halfwidth  # noqa: E402
from contribshap.pipeline.planner import project_budget  # noqa: E402
from contribshap.pipeline.sampling import sample_coalitions  # noqa: E402
from games_core import data_like  # noqa: E402

NOISE = 0.01


def run_case(n: int, design: str, seed: int, shrink: float, pilot_factor: int = 3, max_factor: int = 8) -> dict:
    game = data_like(n, seed=100 + seed)
    ends = np.stack([np.zeros(n, bool), np.ones(n, bool)])
    v_empty, v_full = (float(v) for v in game(ends))
    plan = sample_coalitions(n, max_factor * pilot_factor * n, design, seed=seed)
    noisy = game(plan) + np.random.default_rng([seed, 7]).normal(size=len(plan)) * NOISE * (v_full - v_empty)
    m0 = pilot_factor * n
    reference = estimate(plan[:int(shrink * m0)], noisy[:int(shrink * m0)], v_empty, v_full)
    target = max_halfwidth(reference)
    proj = project_budget(plan[:m0], noisy[:m0], v_empty, v_full, design=design, target_halfwidth=target)
    actual = None
    m = m0
    while m <= len(plan):
        if max_halfwidth(estimate(plan[:m], noisy[:m], v_empty, v_full)) <= target:
            actual = m
            break
        m = int(np.ceil(m * 1.04))
    ratio = proj.evaluations / actual if actual and proj.evaluations > 0 else float("nan")
    return {"n": n, "design": design, "seed": seed, "reference_factor": shrink, "pilot": m0, "target": target,
            "projected": proj.evaluations, "actual": actual, "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--sizes", default="30,60")
    parser.add_argument("--pilot", type=int, default=10, help="pilot size in multiples of n (default 10)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "planner.json"))
    args = parser.parse_args()
    rows = []
    start = time.time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in (int(s) for s in args.sizes.split(",")):
            for design in ("paired", "leverage"):
                for shrink in (2.0, 4.0):
                    for seed in range(args.seeds):
                        row = run_case(n, design, seed, shrink, pilot_factor=args.pilot, max_factor=5)
                        rows.append(row)
                        print(f"n={n:3d} {design:8s} reference {shrink:.0f}x seed {seed}: pilot {row['pilot']:4d} "
                              f"projected {row['projected']:5d} actual {row['actual']} ratio {row['ratio']:.2f}",
                              flush=True)
    ratios = np.array([r["ratio"] for r in rows], dtype=np.float64)
    finite = ratios[np.isfinite(ratios)]
    summary = {"cases": len(rows), "with_actual": int(finite.size),
               "within_30pct": int(np.sum((finite >= 0.7) & (finite <= 1.3))),
               "median_ratio": float(np.median(finite)) if finite.size else None,
               "min_ratio": float(finite.min()) if finite.size else None,
               "max_ratio": float(finite.max()) if finite.size else None}
    print(f"{summary['within_30pct']}/{summary['with_actual']} projections within ±30% of the actual budget; "
          f"ratio median {summary['median_ratio']:.2f}, range {summary['min_ratio']:.2f}-{summary['max_ratio']:.2f}; "
          f"{time.time() - start:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"noise": NOISE, "pilot_factor": args.pilot, "summary": summary, "cases": rows},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
