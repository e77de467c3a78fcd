"""Simulate a GPU cluster run at scale: the real driver, a sleeping python game, random preemptions.

What runs: :func:`contribshap.pipeline.products.run.run` (plan, LPT ordering, bounded in-flight window, retries, store writes)
against ``tests.games_cluster:sleep_by_size`` on a local Ray instance with many *logical* GPUs
(``ray.init(num_gpus=G, num_cpus=G)``; each evaluation asks for 1 GPU and 1 CPU, so G run at once). Each
evaluation sleeps for its simulated cost times a time scale, so an hour of cluster time runs in seconds.

Cost model (simulated seconds per evaluation): ``cost(S) = (base_s + per_member_s * |S|) * exp(jitter * z)``,
z ~ N(0, 1) seeded by the coalition. When ``bench/results/demo.json`` (written by ``bench/demo.py``) exists,
``base_s`` is the measured mean ``wall_s`` of the demo's evaluations and ``per_member_s`` is 0 (sparsified
fine-tuning runs K steps whatever the coalition size). Otherwise the documented model: base_s = 6.0 and
per_member_s = 0.06 for n = 20 (6.0-7.2 s, mean ~6.6 s, the per-coalition job measured in the project's
facts: 50 fine-tune steps 3.3 s + 500 DDIM-20 samples 2.8 s + FID 0.2 s; the size term stands for data
loading). The jitter (0.15) stands for machine noise. ``--base-s`` etc. override.

Time scale: the ideal makespan is compressed to about ``--target-real-s`` real seconds, but never so far
that this machine's Ray processes become the bottleneck. Every logical GPU is a real worker process here,
and all of them share this machine's few cores: at 128 logical GPUs on 2 cores the idle workers alone use
about one core (measured: 0.94), and each evaluation costs ~8 ms of CPU in the driver, raylet, GCS and
worker. So after the warm-up a calibration measures the idle CPU of the Ray processes (``idle_cores``)
and the completion rate this machine sustains (``max_rate_per_s``: a run of 2 x G evaluations of 0.1 s
each), and the time scale is raised until the measured run demands at most ``--cpu-headroom`` (0.15) of
that rate: ``G / (mean_cost * scale) <= headroom * max_rate_per_s``. The measured run then reports the
machine's CPU busy share (``cpu_busy_share``): well below 1, the cores were not the limit. A real cluster
has its own cores per node (8 GPUs and dozens of cores), so this overhead is not the driver's.
``--time-scale`` forces a scale (``1.0``: simulated seconds are real seconds).

Warm workers: before the clock, driver runs on scratch stores start one worker process per logical GPU
(a running cluster has started its workers). The raylet starts workers only a few at a time (at most as
many at once as the node has cores: 2 here), so this repeats until G distinct workers have evaluated
(``warm_workers``), and each row reports the workers that first started inside the measured run
(``workers_started_during_run``: 0 without preemption; the replacements of killed workers with it). An
earlier version warmed with one short run: part of the 128 workers then started inside the measured run,
which showed up as a 6 s ramp to full concurrency and an 89% utilization, and inside the calibration,
which then measured worker start-up instead of dispatch (84 instead of 8 ms of CPU per evaluation).

Preemption: a thread preempts one of the G GPUs, chosen uniformly, at Poisson times, ``--preemptions`` per
GPU-hour of simulated time (a reclaimed spot GPU). When that GPU is running an evaluation, its worker
process is killed (SIGKILL); an idle GPU loses nothing (``preemptions_of_idle_gpus``). Ray retries the task
on a new worker (``ray.max_retries``); the time the killed attempt had run is *lost work*. (An earlier
version picked among the running evaluations only, so the last few of a run were preempted at G times the
per-GPU rate, and each such kill added a whole evaluation to the makespan.)

Measured per (GPUs, preemption rate):
- makespan (simulated s): the dispatch span (first evaluation start to last evaluation end, real seconds
  divided by the time scale) plus the driver's fixed setup (store, prepare task, plan) in real seconds,
  unscaled, since it takes seconds on any cluster. Workers are warm before the clock (above); restarts
  after kills are inside the clock;
- utilization: useful GPU time (sum of the simulated cost of every evaluation that landed) / (G x makespan);
- lost work: simulated GPU seconds of killed attempts (and their share of the useful time);
- integrity: every planned evaluation has exactly one file, status ok, and the known value (none lost,
  none double-counted); how many coalitions were started more than once.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/simulate_cluster.py      # 8/32/128 GPUs x 0, 1, 10 per GPU-h
    .venv/bin/python bench/simulate_cluster.py --gpus 8 --coalitions 200 --preemptions 0 20   # quick look

Writes a table to stdout and ``bench/results/simulate_cluster.json``.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import math
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from contribshap.pipeline.config.schema import parse_config  # noqa: E402
from games_cluster import MARKERS_ENV, known_value, read_marker, simulated_cost  # noqa: E402

BASE_S, PER_MEMBER_S, JITTER, N_PLAYERS = 6.0, 0.06, 0.15, 20


def _config(store: Path, *, coalitions: int, time_scale: float, args: argparse.Namespace) -> object:
    """A python-game config: ``coalitions`` evaluations in all (the design's budget counts the endpoints)."""
    return parse_config(
        {
            "name": "simulate-cluster",
            "store": str(store),
            "seed": 0,
            "game": {
                "kind": "python",
                "target": "games_cluster:sleep_by_size",
                "n_players": N_PLAYERS,
                "options": {"base_s": args.base_s, "per_member_s": args.per_member_s, "jitter": args.jitter,
                            "time_scale": time_scale},
            },
            "design": {"kind": "uniform", "budget": coalitions},
            "ray": {"num_cpus": 1, "num_gpus": 1, "max_retries": 20},
        },
        source="simulate_cluster",
        check_paths=False,
    )


def _constant_cost(args: argparse.Namespace, seconds: float) -> argparse.Namespace:
    """``args`` with a cost model of ``seconds`` per evaluation, whatever the coalition (no jitter)."""
    return argparse.Namespace(**{**vars(args), "base_s": seconds, "per_member_s": 0.0, "jitter": 0.0})


def _prestart_workers(gpus: int, tmp_path: Path, markers: Path, args: argparse.Namespace,
                      sleep_s: float = 2.0, max_rounds: int = 60) -> tuple[float, set[int]]:
    """Warm one worker per logical GPU, as on a running cluster; returns (seconds, the warm pids).

    Driver runs on scratch stores (worker processes started, modules imported, game built), G evaluations
    of ``sleep_s`` each, repeated until G distinct worker processes have evaluated. One run is not enough:
    the raylet starts workers only a few at a time (at most as many at once as this machine has cores), so
    a single short run ends with part of the workers started, and the rest would start inside the measured
    run, which is what an early version of this bench measured as a slow ramp.
    """
    from contribshap.pipeline.products.run import run

    clock = time.perf_counter()
    warm = _constant_cost(args, sleep_s)
    pids: set[int] = set()
    for round_index in range(max_rounds):
        cfg = _config(tmp_path / f"warmup-store-{round_index}", coalitions=max(N_PLAYERS + 2, gpus),
                      time_scale=1.0, args=warm)
        run(cfg, progress=False, reduce=False)
        pids = {read_marker(p).pid for p in markers.iterdir()}
        if len(pids) >= gpus:
            break
    return time.perf_counter() - clock, pids


def _cpu_seconds(processes: list) -> float:
    """Summed user + system CPU seconds of ``processes`` (psutil), skipping those that ended."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except Exception:  # psutil.NoSuchProcess / AccessDenied: it ended
            continue
    return total


def _ray_processes() -> list:
    """This driver process and every process under it (ray.init's GCS, raylet, and the workers)."""
    import psutil

    me = psutil.Process()
    return [me, *me.children(recursive=True)]


def _calibrate(gpus: int, tmp_path: Path, args: argparse.Namespace, idle_s: float = 5.0,
               sleep_s: float = 0.1) -> dict[str, float]:
    """This machine's Ray overhead with G warm workers: idle CPU (cores) and the sustained completion rate.

    Idle: CPU of every Ray process over ``idle_s`` seconds with nothing to do. Rate: a driver run of 2 x G
    evaluations that sleep ``sleep_s`` each on a scratch store (evaluations / wall; at small G the sleep
    bounds it, at large G the cores do); also its CPU per evaluation (everything the Ray processes used).
    """
    from contribshap.pipeline.products.run import run

    processes = _ray_processes()
    before, clock = _cpu_seconds(processes), time.perf_counter()
    time.sleep(idle_s)
    idle_cores = (_cpu_seconds(processes) - before) / (time.perf_counter() - clock)
    zero = _constant_cost(args, sleep_s)
    evaluations = max(N_PLAYERS + 2, 2 * gpus)
    cfg = _config(tmp_path / "calibration-store", coalitions=evaluations, time_scale=1.0, args=zero)
    processes = _ray_processes()
    before, clock = _cpu_seconds(processes), time.perf_counter()
    run(cfg, progress=False, reduce=False)
    wall = time.perf_counter() - clock
    used = _cpu_seconds(processes) - before
    return {"idle_cores": round(idle_cores, 3), "cpu_s_per_eval": round(used / evaluations, 4),
            "calibration_evals": evaluations, "calibration_wall_s": round(wall, 2),
            "max_rate_per_s": round(evaluations / wall, 1)}


def _concurrency(rows: list[dict], gpus: int, time_scale: float) -> dict[str, float]:
    """Where the GPU time went, from the rows' [started_at, finished_at] (real seconds, in the worker).

    ``mean_running``: evaluations running at once on average over the span; ``ramp_sim_s``: from the first
    start until G run at once; ``median_gap_ms``: real time between one evaluation's end and the next start
    on the same worker process (the dispatch round trip); ``tail_sim_s``: from the last start to the end.
    """
    starts = sorted(r["started_at"] for r in rows)
    ends = sorted(r["finished_at"] for r in rows)
    span = ends[-1] - starts[0]
    events = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    running, full_at = 0, None
    for at, step in events:
        running += step
        if full_at is None and running >= gpus:
            full_at = at
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        by_worker.setdefault(row["worker"], []).append((row["started_at"], row["finished_at"]))
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        gaps += [nxt[0] - prev[1] for prev, nxt in itertools.pairwise(spans)]
    return {
        "mean_running": round(sum(r["finished_at"] - r["started_at"] for r in rows) / span, 1),
        "ramp_sim_s": round((full_at - starts[0]) / time_scale, 2) if full_at is not None else None,
        "median_gap_ms": round(1000 * float(np.median(gaps)), 1) if gaps else None,
        "tail_sim_s": round((ends[-1] - starts[-1]) / time_scale, 2),
    }


def _list_schedule(costs: list[float], gpus: int) -> float:
    """Makespan of greedy list scheduling: each job, in the given order, on the GPU that frees first, with
    no dispatch overhead at all (the best any dispatcher can do when it sends jobs in that order)."""
    free_at = [0.0] * gpus
    for cost in costs:
        heapq.heapreplace(free_at, free_at[0] + cost)
    return max(free_at)


class Preempter(threading.Thread):
    """Preempt one of the G GPUs, chosen uniformly, at Poisson times (rate per real second, all GPUs).

    A GPU that is running an evaluation loses it (its worker process is killed); an idle one loses nothing.
    Choosing among running evaluations only would hit the last few of a run at G times their rate.
    """

    def __init__(self, markers: Path, gpus: int, rate_per_real_s: float, seed: str) -> None:
        super().__init__(daemon=True)
        self.markers, self.gpus, self.rate, self.rng = markers, gpus, rate_per_real_s, random.Random(seed)
        self.stop = threading.Event()
        self.kills: list[dict[str, float]] = []
        self.killed: set[str] = set()  # markers of killed attempts (they keep their .run name)
        self.idle_hits = 0

    def run(self) -> None:
        if self.rate <= 0:
            return
        while not self.stop.wait(self.rng.expovariate(self.rate)):
            running = [m for m in sorted(self.markers.glob("*.run")) if m.name not in self.killed]
            slot = self.rng.randrange(self.gpus)
            if slot >= len(running):
                self.idle_hits += 1
                continue
            victim = running[slot]
            marker = read_marker(victim)
            now = time.time()
            try:
                os.kill(marker.pid, signal.SIGKILL)
            except ProcessLookupError:  # it finished in between
                self.idle_hits += 1
                continue
            self.killed.add(victim.name)
            self.kills.append({"pid": marker.pid, "mask": marker.bits, "at": now,
                               "ran_s": now - marker.started_ns / 1e9})


def simulate(gpus: int, preemptions_per_gpu_hour: float, args: argparse.Namespace) -> dict[str, object]:
    """One simulated run; returns its measured row."""
    import psutil
    import ray
    from contribshap.pipeline.dispatch.driver import lpt_order
    from contribshap.pipeline.products.run import run
    from contribshap.pipeline.storage.plan import jobs_for, read_plan
    from contribshap.pipeline.storage.store import Store

    mean_cost = args.base_s + args.per_member_s * N_PLAYERS / 2
    # time scale: real seconds per simulated second, so that the ideal makespan takes ~target real seconds
    # (raised after the calibration when this machine's cores could not keep up, see the module docstring)
    ideal_makespan = args.coalitions * mean_cost / gpus
    target_scale = min(1.0, args.target_real_s / ideal_makespan)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="contribshap-sim-") as tmp:
        tmp_path = Path(tmp)
        markers = tmp_path / "markers"
        markers.mkdir()
        os.environ[MARKERS_ENV] = str(markers)
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT)])
        os.environ.setdefault("RAY_AUTH_MODE", "token")  # every client of the bench uses the token
        # 1. a local Ray with G logical GPUs, workers pre-started
        ray.init(num_cpus=gpus, num_gpus=gpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 _temp_dir=str(tmp_path / "ray"), object_store_memory=200 * 1024**2,
                 logging_level=logging.WARNING, log_to_driver=False)
        try:
            prestart_s, warm_pids = _prestart_workers(gpus, tmp_path, markers, args)
            calibration = _calibrate(gpus, tmp_path, args)
            needed_scale = gpus / (mean_cost * args.cpu_headroom * calibration["max_rate_per_s"])
            time_scale = args.time_scale if args.time_scale is not None else max(target_scale, needed_scale)
            calibration.update(cores=cores, target_time_scale=round(target_scale, 4),
                               needed_time_scale=round(needed_scale, 4),
                               demanded_rate_per_s=round(gpus / (mean_cost * time_scale), 2))
            cfg = _config(tmp_path / "store", coalitions=args.coalitions, time_scale=time_scale, args=args)
            for marker in markers.iterdir():  # count starts of the measured run only
                marker.unlink()
            # 2. the real driver, with the preempter running
            rate_real = preemptions_per_gpu_hour * gpus / 3600.0 / time_scale
            preempter = Preempter(markers, gpus, rate_real, seed=f"{args.seed}-{gpus}-{preemptions_per_gpu_hour}")
            preempter.start()
            cpu_before, clock = psutil.cpu_times(), time.perf_counter()
            summary = run(cfg, progress=False, reduce=False)
            makespan_real = time.perf_counter() - clock
            cpu_after = psutil.cpu_times()
            preempter.stop.set()
            preempter.join()
        finally:
            ray.shutdown()
        # 3. integrity: one ok file per planned evaluation, with the known value
        store = Store(cfg.store)
        plan_rows = read_plan(store)
        jobs = jobs_for(plan_rows, seed=cfg.seed, sections=("endpoint", "estimate"))
        folder = store.evals_dir(summary.namespace)
        files = [p for p in folder.glob("*.parquet") if not p.name.startswith("_")]
        scan = store.scan(summary.namespace, update_index=False, warn=False)
        by_job = Counter((r["coalition_key"], int(r["replicate"])) for r in scan.rows)
        wanted = {(j.coalition_key, j.replicate) for j in jobs}
        masks = {(j.coalition_key, j.replicate): j.mask for j in jobs}
        lost_jobs = sorted(wanted - set(by_job))
        doubled = sorted(k for k, c in by_job.items() if c > 1)
        extra = sorted(set(by_job) - wanted)
        not_ok = [r for r in scan.rows if r["status"] != "ok"]
        wrong = [r for r in scan.rows if r["status"] == "ok"
                 and not math.isclose(r["value"], known_value(np.array([c == "1" for c in r["mask"]])))]
        run_markers = [read_marker(p) for p in markers.iterdir()]
        starts = Counter(m.bits for m in run_markers)
        run_pids = {m.pid for m in run_markers}
        # 4. utilization in simulated time. The dispatch span (first evaluation start to last finish) is
        #    cluster time and scales; the driver's fixed setup (store, prepare task, plan; ~seconds on any
        #    cluster) does not, so it is added unscaled.
        def cost_of(mask_bits: str) -> float:
            return simulated_cost(np.array([c == "1" for c in mask_bits]), base_s=args.base_s,
                                  per_member_s=args.per_member_s, jitter=args.jitter)

        useful_sim = sum(cost_of(masks[k]) for k in wanted)
        ok_rows = [r for r in scan.rows if r["status"] == "ok"]
        # scheduling bounds, no overhead: the driver's order (LPT by size on a fresh store; it cannot know a
        # coalition's jitter) and a clairvoyant LPT that knows every cost
        ordered = [cost_of(job.mask) for job in lpt_order(jobs, [])]
        list_bound_sim = _list_schedule(ordered, gpus)
        lpt_bound_sim = _list_schedule(sorted(ordered, reverse=True), gpus)
        span_real = max(r["finished_at"] for r in ok_rows) - min(r["started_at"] for r in ok_rows)
        setup_real = max(0.0, makespan_real - span_real)
        concurrency = _concurrency(ok_rows, gpus, time_scale)
        if args.trace is not None:  # every evaluation's span and every kill, for a closer look
            args.trace.mkdir(parents=True, exist_ok=True)
            trace = {"gpus": gpus, "time_scale": time_scale, "kills": preempter.kills,
                     "rows": [{k: r[k] for k in ("mask", "worker", "started_at", "finished_at", "attempt")}
                              for r in ok_rows]}
            (args.trace / f"trace-{gpus}-{preemptions_per_gpu_hour:g}.json").write_text(json.dumps(trace))
        makespan_sim = span_real / time_scale + setup_real
        lost_sim = sum(k["ran_s"] for k in preempter.kills) / time_scale
        spent = {name: getattr(cpu_after, name) - getattr(cpu_before, name) for name in cpu_after._fields}
        idle_total = spent.get("idle", 0.0) + spent.get("iowait", 0.0)
        cpu_busy_share = 1.0 - idle_total / max(sum(spent.values()), 1e-9)
        return {
            "gpus": gpus,
            "preemptions_per_gpu_hour": preemptions_per_gpu_hour,
            "evaluations": len(wanted),
            "time_scale": time_scale,
            "prestart_real_s": round(prestart_s, 2),
            "warm_workers": len(warm_pids),
            "workers_started_during_run": len(run_pids - warm_pids),
            "calibration": calibration,
            "cpu_busy_share": round(cpu_busy_share, 3),
            **concurrency,
            "makespan_real_s": round(makespan_real, 2),
            "setup_real_s": round(setup_real, 2),
            "makespan_sim_s": round(makespan_sim, 1),
            "ideal_makespan_sim_s": round(useful_sim / gpus, 1),
            "utilization": round(useful_sim / (gpus * makespan_sim), 4),
            "list_schedule_bound_sim_s": round(list_bound_sim, 1),
            "list_schedule_bound_utilization": round(useful_sim / (gpus * list_bound_sim), 4),
            "clairvoyant_lpt_bound_utilization": round(useful_sim / (gpus * lpt_bound_sim), 4),
            "kills": len(preempter.kills),
            "preemptions_of_idle_gpus": preempter.idle_hits,
            "gpu_hours_sim": round(gpus * makespan_sim / 3600, 3),
            "lost_work_sim_s": round(lost_sim, 1),
            "lost_work_share": round(lost_sim / useful_sim, 4),
            "started_more_than_once": sum(1 for c in starts.values() if c > 1),
            "worker_processes": len({r["worker"] for r in scan.rows}),
            "files": len(files),
            "lost_evaluations": len(lost_jobs),
            "double_counted": len(doubled) + len(extra),
            "not_ok": len(not_ok),
            "wrong_values": len(wrong),
            "integrity_ok": not (lost_jobs or doubled or extra or not_ok or wrong) and len(files) == len(wanted),
        }


def _demo_wall_s(path: Path) -> float | None:
    """Mean measured seconds per evaluation from ``bench/demo.py``'s JSON, or None."""
    try:
        timings = json.loads(path.read_text())["timings"]["wall_s"]
        return float(timings["mean"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[8, 32, 128], help="logical GPU counts")
    parser.add_argument("--preemptions", type=float, nargs="+", default=[0.0, 1.0, 10.0],
                        help="preemptions per GPU-hour of simulated time (10: a stress rate, so that every row "
                             "count has kills)")
    parser.add_argument("--trace", type=Path, default=None,
                        help="folder for one JSON per row: every evaluation's start/finish/worker and every kill")
    parser.add_argument("--seed", type=int, default=0, help="seed of the preemption times (with GPUs and rate)")
    parser.add_argument("--coalitions", type=int, default=1000, help="evaluations per run (design budget)")
    parser.add_argument("--target-real-s", type=float, default=40.0,
                        help="real seconds the ideal makespan should take (sets the time scale)")
    parser.add_argument("--time-scale", type=float, default=None,
                        help="force real seconds per simulated second (default: from --target-real-s and the calibration)")
    parser.add_argument("--cpu-headroom", type=float, default=0.15,
                        help="share of the calibrated completion rate that the measured run may demand")
    parser.add_argument("--base-s", type=float, default=None, help="default: demo.json mean wall_s, else 6.0")
    parser.add_argument("--per-member-s", type=float, default=None, help="default: 0 with demo.json, else 0.06")
    parser.add_argument("--jitter", type=float, default=JITTER)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "simulate_cluster.json")
    parser.add_argument("--cost-from", type=Path, default=ROOT / "bench" / "results" / "demo.json",
                        help="bench/demo.py results to take the per-evaluation cost from (if the file exists)")
    args = parser.parse_args()
    source = "documented model (per-coalition job of the project's facts)"
    measured = _demo_wall_s(args.cost_from)
    if args.base_s is None and measured is not None:
        args.base_s, source = measured, f"{args.cost_from.name}: mean wall_s of the demo's evaluations"
        args.per_member_s = 0.0 if args.per_member_s is None else args.per_member_s
    args.base_s = BASE_S if args.base_s is None else args.base_s
    args.per_member_s = PER_MEMBER_S if args.per_member_s is None else args.per_member_s
    print(f"cost model: base {args.base_s:.2f} s + {args.per_member_s:.3f} s/member, jitter {args.jitter} ({source})")

    rows = []
    header = (f"{'GPUs':>5} {'preempt/GPU-h':>13} {'evals':>5} {'scale':>6} {'makespan s':>10} {'ideal s':>8} "
              f"{'util':>6} {'kills':>5} {'lost s':>7} {'lost %':>6} {'retried':>7} {'integrity':>9} "
              f"{'idle cores':>10} {'CPU ms/eval':>11} {'CPU busy':>8}")
    print(header, flush=True)
    for gpus in args.gpus:
        for rate in args.preemptions:
            row = simulate(gpus, rate, args)
            rows.append(row)
            print(f"{row['gpus']:>5} {row['preemptions_per_gpu_hour']:>13g} {row['evaluations']:>5} "
                  f"{row['time_scale']:>6.3f} {row['makespan_sim_s']:>10.1f} {row['ideal_makespan_sim_s']:>8.1f} "
                  f"{row['utilization']:>6.1%} {row['kills']:>5} {row['lost_work_sim_s']:>7.1f} "
                  f"{row['lost_work_share']:>6.1%} {row['started_more_than_once']:>7} "
                  f"{'ok' if row['integrity_ok'] else 'BROKEN':>9} {row['calibration']['idle_cores']:>10.2f} "
                  f"{1000 * row['calibration']['cpu_s_per_eval']:>11.1f} {row['cpu_busy_share']:>8.0%}", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            payload = {
                "bench": "simulate_cluster",
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "cost_model": {"base_s": args.base_s, "per_member_s": args.per_member_s, "jitter": args.jitter,
                               "n_players": N_PLAYERS, "source": source},
                "targets": {"utilization_no_preemption": 0.90, "utilization_1_per_gpu_hour": 0.80},
                "rows": rows,
            }
            tmp = args.out.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(payload, indent=2))
            os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
