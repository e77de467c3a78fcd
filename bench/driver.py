"""Driver benchmark: orchestration overhead of the Ray driver, and the resume scan of a large store.

    python bench/driver.py              # 200 coalitions x 2 s for 1 and 2 workers (~10 min), 10,000-file scan
    python bench/driver.py --quick      # 0.2 s per coalition (~1.5 min)

1. Overhead: a python game sleeps ``--sleep`` seconds per coalition; 200 evaluations (198 sampled +
   empty + full) run through the real driver (prepare task, plan, dispatch, reduce) on a local Ray with
   ``--workers`` CPUs. ideal = 200 x sleep / workers; overhead = (wall - ideal) / wall, where wall is
   ``run()`` on an already started Ray (Ray's own start-up is reported apart).
2. Resume scan: a store with 10,000 evaluation files; time for the driver's resume step (scan the store,
   build todo = plan x replicates - ok) when (a) the scan cache is fresh (a normal resume), (b) the last
   10 s of results are missing from it (a resume after kill -9: 500 files read), (c) there is no cache at
   all (a store copied without it: every file read, on 8 threads).

Prints a table and writes ``bench/results/driver.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from contribshap.pipeline.config.schema import parse_config  # noqa: E402
from contribshap.pipeline.contracts.keys import derive_seed  # noqa: E402
from contribshap.pipeline.storage.plan import PlanRequest, extend_plan, jobs_for, read_plan, write_plan  # noqa: E402
from contribshap.pipeline.storage.store import Store  # noqa: E402


def overhead(workers: int, sleep: float, n_evals: int, tmp: Path) -> dict:
    """Run the sleep game through ``contribshap.pipeline.products.run.run`` on a fresh local Ray with ``workers`` CPUs."""
    import ray
    from contribshap.pipeline.products.run import run

    os.environ.setdefault("RAY_AUTH_MODE", "token")  # every client of the bench uses the token
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
    cfg = parse_config({
        "name": f"bench-{workers}", "store": str(tmp / f"store-{workers}-{sleep}"),
        "game": {"kind": "python", "target": "sleep_game:sleep_game", "n_players": 12, "options": {"seconds": sleep}},
        "design": {"kind": "paired", "budget": n_evals},
        "estimators": ["kernelshap"],
        "ray": {"num_cpus": 1},
    }, check_paths=False)
    clock = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level=logging.WARNING,
             log_to_driver=False)
    ray_start = time.perf_counter() - clock
    try:
        clock = time.perf_counter()
        summary = run(cfg, progress=False)
        wall = time.perf_counter() - clock
    finally:
        ray.shutdown()
    assert summary.evaluated == n_evals, summary
    ideal = n_evals * sleep / workers
    return {"workers": workers, "sleep_s": sleep, "evaluations": n_evals, "ray_start_s": round(ray_start, 2),
            "wall_s": round(wall, 2), "ideal_s": round(ideal, 2), "overhead": round((wall - ideal) / wall, 4)}


def build_store(root: Path, n_files: int) -> tuple[Store, list]:
    """A store with a plan of ``n_files`` coalitions (n = 20) and one ok evaluation file for each."""
    store = Store(root)
    store.create(name="scan", config_hash="bench", plan_hash="bench")
    ids = [f"p{i}" for i in range(20)]
    rows, _ = extend_plan([], ids, PlanRequest("uniform", 20, n_files - 2, 0, {}, 1, 1), round_index=0)
    write_plan(store, rows)
    jobs = jobs_for(rows, seed=0)
    for job in tqdm(jobs, desc="writing evaluation files", unit="file", mininterval=5):
        store.write_eval("bench", {
            **job.to_dict(), "status": "ok", "error": None, "attempt": 1, "fid": float(job.size),
            "finetune_s": 1.0, "sample_s": 1.0, "eval_s": 0.1, "wall_s": 2.1, "worker": "bench:0",
            "started_at": 0.0, "finished_at": 1.0, "info": "{}",
        })
    return store, jobs


def resume_step(store: Store) -> tuple[float, int, int]:
    """What the driver does to resume: read the plan, scan the store, compute todo. Returns (s, ok, todo)."""
    clock = time.perf_counter()
    jobs = jobs_for(read_plan(store), seed=0)
    done = store.scan("bench").ok_jobs()
    todo = [j for j in jobs if (j.coalition_key, j.replicate) not in done]
    return time.perf_counter() - clock, len(done), len(todo)


def scan_bench(n_files: int, tmp: Path) -> list[dict]:
    store, jobs = build_store(tmp / "scan-store", n_files)
    folder = store.evals_dir("bench")
    index = folder / "_index.parquet"
    results = []
    # (c) no cache at all
    index.unlink(missing_ok=True)
    seconds, ok, todo = resume_step(store)
    results.append({"case": "no cache (every file read)", "files": n_files, "seconds": round(seconds, 3), "ok": ok, "todo": todo})
    # (a) fresh cache
    seconds, ok, todo = resume_step(store)
    results.append({"case": "fresh cache (normal resume)", "files": n_files, "seconds": round(seconds, 3), "ok": ok, "todo": todo})
    # (b) last 500 results missing from the cache (kill -9 between two 10 s flushes)
    rows = store.scan("bench").rows
    store.remember("bench", rows[:-500])
    seconds, ok, todo = resume_step(store)
    results.append({"case": "cache missing 500 (after kill -9)", "files": n_files, "seconds": round(seconds, 3), "ok": ok, "todo": todo})
    # the derived seeds are what a run would use (sanity)
    assert jobs[0].seed == derive_seed(0, jobs[0].coalition_key, 0)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0.2 s per coalition instead of 2 s")
    parser.add_argument("--sleep", type=float, default=None, help="seconds per coalition (default 2, quick 0.2)")
    parser.add_argument("--evaluations", type=int, default=200)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    sleep = args.sleep if args.sleep is not None else (0.2 if args.quick else 2.0)
    tmp = Path(tempfile.mkdtemp(prefix="contribshap-bench-"))
    report: dict = {"machine": f"{os.cpu_count()} CPUs", "load_avg_1min_at_start": os.getloadavg()[0]}
    try:
        if not args.skip_overhead:
            report["overhead"] = [overhead(w, sleep, args.evaluations, tmp) for w in (1, 2)]
        report["resume_scan"] = scan_bench(args.files, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    # print the tables
    if "overhead" in report:
        print(f"\norchestration overhead ({args.evaluations} evaluations x {sleep} s)")
        print("| workers | ideal s | wall s | overhead | Ray start s |")
        print("|---|---|---|---|---|")
        for r in report["overhead"]:
            print(f"| {r['workers']} | {r['ideal_s']:.1f} | {r['wall_s']:.1f} | {100 * r['overhead']:.1f}% | {r['ray_start_s']:.1f} |")
    print(f"\nresume scan ({args.files} evaluation files)")
    print("| case | seconds | ok found | todo |")
    print("|---|---|---|---|")
    for r in report["resume_scan"]:
        print(f"| {r['case']} | {r['seconds']:.3f} | {r['ok']} | {r['todo']} |")
    out = ROOT / "bench" / "results" / ("driver_quick.json" if args.quick else "driver.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**report, "sleep_s": sleep, "numpy": np.__version__}, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
