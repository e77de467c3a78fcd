"""Scenarios with known answers: does the credit come out right where the right answer is known?

Each ``configs/scenarios/<name>.yaml`` is a small digits game (n <= 5 contributors) built so that the
right answer is known by construction (``data.contributors``, see docs/workers.md). Every scenario runs
through the real pipeline (``contribshap.pipeline.driver.run``: prepare, the exact design with two
replicates per coalition, the store, the reducer's ``exact_shapley``), and the script checks its verdict:

==================  ======================================================================================
twins               |φ_a − φ_twin| inside the combined 95% interval 1.96·sqrt(se_a² + se_twin²), every property
subset              credit(sub) <= credit(a) on every property (credit = φ, or −φ where lower is better)
graded_quality      Spearman(credit, −corruption level) >= 0.9 on fid and on quality
graded_quantity     credit strictly increasing with the number of images on fid (Spearman = 1)
near_duplicates     credit(dups) < credit(genuine) on diversity
off_distribution    noise has the least credit on fid, kid and quality
==================  ======================================================================================

Every verdict is reported, passed or not, with the Spearman of each property's credit against the
construction's ordering. ``--retrain-seeds K`` (K >= 2) also runs every scenario with
``finetune.mode: retrain`` (``train.steps`` steps from scratch per coalition, run seeds 0..K−1, one
replicate) and reports the retrain verdicts and the retrain seed-to-seed Spearman (the ceiling of any
approximation) next to each figure; at ~40x the cost of a fine-tune job it is not run by default here.

Usage::

    nice -n 10 .venv/bin/python bench/scenarios.py            # ~25-30 min on 2 shared cores
    nice -n 10 .venv/bin/python bench/scenarios.py --quick    # a few minutes: smaller model budget
    nice -n 10 .venv/bin/python bench/scenarios.py --only twins subset --retrain-seeds 2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from contribshap.pipeline.metrics import spearman

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("twins", "subset", "graded_quality", "graded_quantity", "near_duplicates", "off_distribution")
LOWER_IS_BETTER = {"fid", "log_fid", "kid"}
#: --quick: the same scenarios with a smaller training budget (numbers are noisier; for a smoke check).
QUICK = {"train": {"steps": 200}, "recover": {"steps": 100}, "finetune": {"steps": 25},
         "sampling": {"n_images": 200, "batch_size": 200}, "feature_extractor": {"steps": 300}}


# --- configs -------------------------------------------------------------------------------------------------
def scenario_config(name: str, *, quick: bool, store_root: Path, mode: str = "sparsified_ft", seed: int = 0):
    """The validated config of scenario ``name`` (``--quick`` overrides, retrain mode, run seed, store)."""
    from contribshap.pipeline.config import parse_config

    path = REPO_ROOT / "configs" / "scenarios" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    game = raw["game"]
    if quick:
        for section, values in QUICK.items():
            game[section] = {**game[section], **values}
    suffix = "-quick" if quick else ""
    if mode == "retrain":
        game["finetune"] = {**game["finetune"], "mode": "retrain", "retrain_steps": game["train"]["steps"]}
        raw["replicates"] = {"coalition": 1, "endpoints": 1}
        suffix += f"-retrain-s{seed}"
    raw["seed"] = seed
    raw["store"] = str(store_root / f"{name}{suffix}")
    return parse_config(raw, source=str(path))


# --- one run -------------------------------------------------------------------------------------------------
def run_scenario(cfg, *, address: str | None) -> dict[str, Any]:
    """Run ``cfg`` through the driver (resumes a finished store) and reduce: φ, se, CI per property."""
    from contribshap.pipeline.driver import run
    from contribshap.pipeline.reduce import reduce_store
    from contribshap.pipeline.store import Store

    start = time.perf_counter()
    summary = run(cfg, store_path=cfg.store, address=address, progress=False)
    estimates = reduce_store(summary.store, cfg=cfg, write=True, show=False)
    ids = [c["id"] for c in Store(summary.store).read_manifest()["contributors"]]
    stages = _stage_values(Path(summary.store) / "artifacts")
    out: dict[str, Any] = {"ids": ids, "wall_s": round(time.perf_counter() - start, 1), "evaluated": summary.evaluated,
                           "stages": stages, "properties": {}}
    for prop, by_method in estimates.items():
        est = by_method["exact_shapley"]
        out["properties"][prop] = {"phi": est.value.tolist(), "stderr": est.stderr.tolist(),
                                   "v_empty": est.extras["v_empty"], "v_full": est.extras["v_full"]}
    return out


def _stage_values(artifacts: Path) -> dict[str, Any]:
    found = sorted(artifacts.glob("stages-*/artifact.json"))
    return json.loads(found[-1].read_text()).get("values", {}) if found else {}


def credit(result: dict[str, Any], prop: str) -> np.ndarray:
    """φ in the direction of better: −φ for properties where lower is better."""
    phi = np.asarray(result["properties"][prop]["phi"], dtype=float)
    return -phi if prop in LOWER_IS_BETTER else phi


# --- verdicts ------------------------------------------------------------------------------------------------
def _ordering(name: str, ids: list[str]) -> np.ndarray | None:
    """The construction's ordering of the contributors (higher = should get more credit), or None."""
    if name == "graded_quality":
        return np.array([-float(i[1:]) for i in ids])  # q0, q2, ... : level 0.0, 0.2, ...
    if name == "graded_quantity":
        return np.array([float(i[1:]) for i in ids])  # n20 ... n300
    if name == "subset":
        return np.array([1.0 if i == "a" else 0.0 if i == "sub" else np.nan for i in ids])
    if name == "near_duplicates":
        return np.array([0.0 if i == "dups" else 1.0 if i == "genuine" else np.nan for i in ids])
    if name == "off_distribution":
        return np.array([0.0 if i == "noise" else 1.0 for i in ids])
    return None


def verdict(name: str, result: dict[str, Any]) -> dict[str, Any]:
    """The scenario's checks on one result (sparsified FT, or the retrain seed mean)."""
    ids, props = result["ids"], list(result["properties"])
    at = {cid: j for j, cid in enumerate(ids)}
    checks: dict[str, Any] = {}
    order = _ordering(name, ids)
    if order is not None:
        keep = ~np.isnan(order)
        checks["spearman_with_construction"] = {
            p: _round(spearman(order[keep], credit(result, p)[keep])) if keep.sum() > 2 else None for p in props}
    if name == "twins":
        per = {}
        for p in props:
            phi, se = result["properties"][p]["phi"], result["properties"][p]["stderr"]
            gap, half = abs(phi[at["a"]] - phi[at["twin"]]), 1.96 * math.hypot(se[at["a"]], se[at["twin"]])
            per[p] = {"gap": _round(gap), "combined_ci_half_width": _round(half), "ok": bool(gap <= half)}
        checks["per_property"] = per
        checks["passed"] = all(v["ok"] for v in per.values())
    elif name == "subset":
        per = {p: bool(credit(result, p)[at["sub"]] <= credit(result, p)[at["a"]]) for p in props}
        checks["per_property"], checks["passed"] = per, all(per.values())
        checks["margin_vs_ci"] = {p: _margin(result, p, better="a", worse="sub") for p in props}
    elif name == "graded_quality":
        per = {p: bool(checks["spearman_with_construction"][p] is not None
                       and checks["spearman_with_construction"][p] >= 0.9) for p in ("fid", "quality")}
        checks["per_property"], checks["passed"] = per, all(per.values())
    elif name == "graded_quantity":
        sizes = order
        fid_credit = credit(result, "fid")[np.argsort(sizes)]
        checks["per_property"] = {p: bool(np.all(np.diff(credit(result, p)[np.argsort(sizes)]) > 0)) for p in props}
        checks["passed"] = bool(np.all(np.diff(fid_credit) > 0))
    elif name == "near_duplicates":
        per = {p: bool(credit(result, p)[at["dups"]] < credit(result, p)[at["genuine"]]) for p in props}
        checks["per_property"], checks["passed"] = per, per["diversity"]
        checks["margin_vs_ci"] = {p: _margin(result, p, better="genuine", worse="dups") for p in props}
    elif name == "off_distribution":
        per = {p: bool(np.argmin(credit(result, p)) == at["noise"]) for p in props}
        checks["per_property"], checks["passed"] = per, all(per[p] for p in ("fid", "kid", "quality"))
    else:
        raise ValueError(f"scenario {name!r} is unknown; valid: {list(SCENARIOS)}")
    checks["credit"] = {p: dict(zip(ids, np.round(credit(result, p), 6).tolist(), strict=True)) for p in props}
    return checks


def _margin(result: dict[str, Any], prop: str, *, better: str, worse: str) -> dict[str, Any]:
    """credit(better) − credit(worse) and the combined 95% half-width: is a miss inside the noise?"""
    at = {cid: j for j, cid in enumerate(result["ids"])}
    se = result["properties"][prop]["stderr"]
    margin = float(credit(result, prop)[at[better]] - credit(result, prop)[at[worse]])
    half = 1.96 * math.hypot(se[at[better]], se[at[worse]])
    return {"margin": _round(margin), "combined_ci_half_width": _round(half)}


def _round(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def retrain_summary(name: str, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdict of the retrain seed mean, and the seed-to-seed Spearman of the Shapley vectors (the ceiling)."""
    props = list(seeds[0]["properties"])
    mean = {"ids": seeds[0]["ids"], "properties": {}}
    for p in props:
        phis = np.array([s["properties"][p]["phi"] for s in seeds])
        se = phis.std(axis=0, ddof=1) / math.sqrt(len(seeds))
        mean["properties"][p] = {"phi": phis.mean(axis=0).tolist(), "stderr": se.tolist()}
    pairs = [(i, j) for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
    ceiling = {p: _round(float(np.mean([spearman(credit(seeds[i], p), credit(seeds[j], p)) for i, j in pairs])))
               for p in props}
    return {"verdict": verdict(name, mean), "seed_to_seed_spearman": ceiling,
            "wall_s": round(sum(s["wall_s"] for s in seeds), 1)}


# --- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller training budget (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--retrain-seeds", type=int, default=0, help="also retrain with this many run seeds (>= 2)")
    parser.add_argument("--store-root", type=Path, default=REPO_ROOT / "runs" / "scenarios")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default bench/results/scenarios.json, --quick: scenarios_quick.json)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: one local instance)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the verdicts of the existing JSON (--out) without running anything")
    args = parser.parse_args(argv)
    if args.retrain_seeds == 1:
        parser.error("--retrain-seeds needs 0 or >= 2 seeds (a ceiling is a seed-to-seed agreement)")
    out = args.out or REPO_ROOT / "bench" / "results" / ("scenarios_quick.json" if args.quick else "scenarios.json")
    if args.rescore:
        report = json.loads(out.read_text())
        for name, entry in report["scenarios"].items():
            result = {k: v for k, v in entry["sparsified_ft"].items() if k != "verdict"}
            entry["sparsified_ft"]["verdict"] = verdict(name, result)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"rescored {out}")
        return 0

    # 1. One Ray for every run (workers keep their imports across scenarios).
    from contribshap.pipeline.ray_context import connect

    first = scenario_config(args.only[0], quick=args.quick, store_root=args.store_root)
    started = connect(args.address, first.ray)

    # 2. Every scenario: sparsified FT on the exact design, then (optionally) retraining seeds.
    report: dict[str, Any] = {"quick": args.quick, "machine": f"{platform.machine()}, {platform.python_version()}",
                              "retrain_seeds": args.retrain_seeds, "scenarios": {}}
    try:
        for name in args.only:
            cfg = scenario_config(name, quick=args.quick, store_root=args.store_root)
            result = run_scenario(cfg, address=args.address)
            entry = {"config": f"configs/scenarios/{name}.yaml", "n_contributors": len(result["ids"]),
                     "sparsified_ft": {**result, "verdict": verdict(name, result)}}
            if args.retrain_seeds >= 2:
                seeds = [run_scenario(scenario_config(name, quick=args.quick, store_root=args.store_root,
                                                      mode="retrain", seed=s), address=args.address)
                         for s in range(args.retrain_seeds)]
                entry["retrain"] = retrain_summary(name, seeds)
            report["scenarios"][name] = entry
            passed = entry["sparsified_ft"]["verdict"]["passed"]
            print(f"{name}: {'PASS' if passed else 'FAIL'} ({result['wall_s']} s) "
                  f"{json.dumps(entry['sparsified_ft']['verdict'].get('per_property'))}", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n")  # after every scenario: partial runs keep theirs
    finally:
        if started:
            import ray

            ray.shutdown()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
