"""Size the ArtBench setting (258 artists) with the planner: from a pilot of the 258-player data-like game
(tests/games_scale.py), the coalitions and GPU-hours (at the paper's 635 s a coalition) that reach each target.

    .venv/bin/python bench/plan_artbench.py            # prints a table, writes bench/results/plan_artbench.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from contribshap.pipeline.core.designs import sample_coalitions  # noqa: E402
from contribshap.pipeline.core.planner import project_budget  # noqa: E402
from games_scale import datalike  # noqa: E402

N, SECONDS = 258, 635.0
TARGETS = [{"target_halfwidth": 0.01, "relative": True}, {"target_halfwidth": 0.005, "relative": True},
           {"target_halfwidth": 0.0025, "relative": True}, {"top_k": 10}, {"harmful_q": 0.1}]


def main() -> None:
    rows = []
    for noise in (0.005, 0.01, 0.02):
        for pilot in (2, 3):
            masks = sample_coalitions(N, pilot * N, "leverage", seed=0)
            values = np.array([datalike(m, seed=i, noise=noise)["value"] for i, m in enumerate(masks)])
            v0 = datalike(np.zeros(N, bool), seed=10**6, noise=noise)["value"]
            v1 = datalike(np.ones(N, bool), seed=10**6 + 1, noise=noise)["value"]
            for target in TARGETS:
                clock = time.perf_counter()
                p = project_budget(masks, values, v0, v1, method="kernelshap", design="leverage", **target)
                rows.append({"noise": noise, "pilot": f"{pilot}n", "target": target, "coalitions": p.evaluations,
                             "reached": p.reached, "gpu_hours": (p.evaluations + 2) * SECONDS / 3600 if p.reached else None,
                             "seconds": time.perf_counter() - clock})
                r = rows[-1]
                print(f"noise {noise:.3f}  pilot {pilot}n  {json.dumps(target):52s} coalitions "
                      f"{r['coalitions'] if r['reached'] else 'not reached':>12}  GPU-h "
                      f"{'-' if r['gpu_hours'] is None else round(r['gpu_hours'])}", flush=True)
    out = REPO / "bench/results/plan_artbench.json"
    out.write_text(json.dumps({"n": N, "seconds_per_coalition": SECONDS, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
