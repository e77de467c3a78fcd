"""Benchmark of the embedded demo: wall time, where the time goes, is the noise contributor singled out,
and what a coalition costs with sparsified fine-tuning vs fine-tuning the unpruned model vs retraining.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/demo.py                      # the full demo (configs/demo.yaml)
    .venv/bin/python bench/demo.py --config configs/demo_ci.yaml --store /tmp/ci --cost-coalitions 1

Steps:
 1. ``contribshap run CONFIG --store STORE`` (the real CLI: Ray, prepare, plan, dispatch, reduce), timed.
 2. Per-coalition timings from the store (fine-tune / sample / properties / wall).
 3. Estimates (``contribshap.pipeline.products.reduce.reduce_store``): for every property, is the planted noise contributor
    (the ``planted-*`` one, else the first whose name says noise) the
    most harmful one (largest value for fid/log_fid/kid, smallest for inception_score/quality/diversity),
    and does its CI exclude zero?
 4. Cost per coalition of ``sparsified_ft``, ``ft`` and ``retrain`` measured in this process, one thread,
    on the same coalitions, from the artifacts of step 1 (retrain = ``train.steps`` steps from scratch).
Prints a table and writes ``bench/results/demo.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
LOWER_IS_BETTER = {"fid", "log_fid", "kid"}


def run_demo(config: Path, store: Path, *, fresh: bool) -> float:
    """Step 1: the real CLI end to end; returns its wall time in seconds."""
    if fresh and store.exists():
        shutil.rmtree(store)
    script = Path(sys.executable).with_name("contribshap")
    env = dict(os.environ)  # Ray token auth stays on (the local instance makes and uses its token)
    start = time.perf_counter()
    subprocess.run([str(script), "run", str(config), "--store", str(store)], check=True, env=env, cwd=REPO_ROOT)
    return time.perf_counter() - start


def timing_summary(store: Path) -> dict[str, object]:
    """Step 2: median / mean seconds per stage over the ok evaluations of non-empty coalitions."""
    from contribshap.pipeline.storage.store import Store

    manifest = Store(store).read_manifest()
    rows = [r for r in Store(store).scan(manifest["config_hash"]).rows if r["status"] == "ok" and int(r["size"]) > 0]
    out: dict[str, object] = {"n_evaluations": len(rows)}
    for stage in ("finetune_s", "sample_s", "eval_s", "wall_s"):
        values = [float(r[stage]) for r in rows if r.get(stage) is not None and np.isfinite(r[stage])]
        out[stage] = {"median": statistics.median(values), "mean": statistics.fmean(values)} if values else None
    prepared = manifest.get("prepared") or {}
    out["prepare"] = next(iter(prepared.values()), {}).get("summary")
    return out


def noise_verdicts(store: Path) -> dict[str, dict[str, object]]:
    """Step 3: per property, the noise contributor's value, CI, rank and whether it is singled out."""
    from contribshap.pipeline.products.reduce import reduce_store
    from contribshap.pipeline.storage.store import Store

    contributors = Store(store).read_manifest()["contributors"]
    planted = [i for i, c in enumerate(contributors) if c["id"].startswith("planted-")]
    noise = planted or [i for i, c in enumerate(contributors) if "noise" in c["name"].lower() or "noise" in c["id"].lower()]
    results = reduce_store(store, write=True, show=False)
    verdicts = {}
    for prop, by_method in results.items():
        method, est = next(iter(by_method.items()))
        values = np.asarray(est.value)
        harmful_first = np.argsort(-values if prop in LOWER_IS_BETTER else values, kind="stable")
        entry = {"method": method, "v_empty": est.extras.get("v_empty"), "v_full": est.extras.get("v_full")}
        if noise:
            i = noise[0]
            rank = int(np.where(harmful_first == i)[0][0]) + 1
            excludes_zero = bool(est.ci_low[i] > 0 or est.ci_high[i] < 0)
            entry.update(noise_value=float(values[i]), noise_ci=[float(est.ci_low[i]), float(est.ci_high[i])],
                         noise_harm_rank=rank, singled_out=bool(rank == 1 and excludes_zero),
                         ci_excludes_zero=excludes_zero)
        entry["values"] = {c["id"]: float(v) for c, v in zip(contributors, values, strict=True)}
        verdicts[prop] = entry
    return verdicts


def print_noise_table(noise: dict[str, dict[str, object]]) -> None:
    """The noise contributor's value, CI, harm rank and verdict per property (from :func:`noise_verdicts`)."""
    print(f"\n{'property':16s} {'noise value':>12s} {'CI':>26s} {'harm rank':>9s} {'singled out':>11s}")
    for prop, v in noise.items():
        if "noise_value" in v:
            ci = f"[{v['noise_ci'][0]:.4g}, {v['noise_ci'][1]:.4g}]"
            print(f"{prop:16s} {v['noise_value']:12.4g} {ci:>26s} {v['noise_harm_rank']:9d} {v['singled_out']!s:>11s}")


def cost_per_mode(config_path: Path, store: Path, *, n_coalitions: int, n_retrain: int, seed: int) -> dict[str, object]:
    """Step 4: seconds per coalition of each fine-tune mode on the same coalitions (one thread).

    ``retrain`` runs on the first ``n_retrain`` of them only (its cost hardly depends on the coalition:
    the step count is fixed).
    """
    import torch
    from contribshap.pipeline.config.schema import load_config
    from contribshap.workers.game import DiffusionGame

    torch.set_num_threads(1)
    cfg = load_config(config_path)
    n = cfg.game.n_contributors()
    rng = np.random.default_rng(seed)
    masks = [np.ones(n, bool)] + [rng.random(n) < 0.5 for _ in range(max(0, n_coalitions - 1))]
    masks = [m if m.any() else np.eye(n, dtype=bool)[0] for m in masks]
    out: dict[str, object] = {"coalition_sizes": [int(m.sum()) for m in masks]}
    for mode in ("sparsified_ft", "ft", "retrain"):
        game_cfg = cfg.game.model_copy(update={"finetune": cfg.game.finetune.model_copy(update={"mode": mode})})
        game = DiffusionGame(game_cfg, artifacts_dir=store / "artifacts", seed=cfg.seed)
        game._load()  # loading artifacts is once per worker process, not per coalition
        walls, stages = [], []
        for j, mask in enumerate(masks[:n_retrain] if mode == "retrain" else masks):
            start = time.perf_counter()
            result = game.evaluate(mask, replicate=0, seed=1000 + j)
            walls.append(time.perf_counter() - start)
            stages.append(result.timings)
            print(f"  cost {mode:14s} coalition {j} size {int(mask.sum())}: {walls[-1]:.1f} s", file=sys.stderr)
        out[mode] = {
            "wall_s_mean": statistics.fmean(walls),
            "finetune_s_mean": statistics.fmean(t["finetune_s"] for t in stages),
            "sample_s_mean": statistics.fmean(t["sample_s"] for t in stages),
            "eval_s_mean": statistics.fmean(t["eval_s"] for t in stages),
            "steps": game_cfg.retrain_steps() if mode == "retrain" else game_cfg.finetune.steps,
            "walls": walls,
        }
    out["retrain_over_sparsified_ft"] = out["retrain"]["wall_s_mean"] / out["sparsified_ft"]["wall_s_mean"]
    out["retrain_over_ft"] = out["retrain"]["wall_s_mean"] / out["ft"]["wall_s_mean"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "demo.yaml")
    parser.add_argument("--store", type=Path, default=REPO_ROOT / "runs" / "bench_demo")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "demo.json")
    parser.add_argument("--cost-coalitions", type=int, default=3, help="coalitions per mode in the cost comparison")
    parser.add_argument("--retrain-coalitions", type=int, default=1, help="of those, how many are also retrained")
    parser.add_argument("--keep", action="store_true", help="reuse an existing store (resume) instead of starting fresh")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--reduce-only", action="store_true",
                        help="recompute steps 2-3 on the finished store with the current reducer and update --out "
                             "(keeps the measured wall time and cost; for an estimator change)")
    args = parser.parse_args()
    if args.reduce_only:
        report = json.loads(args.out.read_text())
        report["timings"] = timing_summary(args.store)
        report["noise"] = noise_verdicts(args.store)
        report["reduced_again_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        args.out.write_text(json.dumps(report, indent=1, default=str))
        print_noise_table(report["noise"])
        print(f"updated {args.out}")
        return

    report: dict[str, object] = {"config": str(args.config), "store": str(args.store), "cpu_count": os.cpu_count(),
                                 "load_average_before": os.getloadavg()}
    report["demo_wall_s"] = run_demo(args.config, args.store, fresh=not args.keep)
    report["load_average_after_demo"] = os.getloadavg()
    report["timings"] = timing_summary(args.store)
    report["noise"] = noise_verdicts(args.store)
    if not args.skip_cost:
        report["cost"] = cost_per_mode(args.config, args.store, n_coalitions=args.cost_coalitions,
                                       n_retrain=args.retrain_coalitions, seed=7)
    report["load_average_after"] = os.getloadavg()

    # Table.
    t = report["timings"]
    print(f"\ndemo wall time (prepare + {t['n_evaluations']} evaluations + reduce): {report['demo_wall_s']:.0f} s")
    print("per coalition (median s): " + ", ".join(
        f"{k} {t[k]['median']:.2f}" for k in ("finetune_s", "sample_s", "eval_s", "wall_s") if t.get(k)))
    print_noise_table(report["noise"])
    if "cost" in report:
        c = report["cost"]
        print(f"\n{'mode':14s} {'steps':>6s} {'wall s/coalition':>17s} {'finetune s':>11s} {'sample s':>9s}")
        for mode in ("sparsified_ft", "ft", "retrain"):
            m = c[mode]
            print(f"{mode:14s} {m['steps']:6d} {m['wall_s_mean']:17.2f} {m['finetune_s_mean']:11.2f} {m['sample_s_mean']:9.2f}")
        print(f"retrain / sparsified_ft = {c['retrain_over_sparsified_ft']:.1f}x, retrain / ft = {c['retrain_over_ft']:.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
