"""Two fidelities: when do cheap evaluations buy the same interval for less compute?

The target: the same largest 95% CI half-width as today's single-fidelity paired design at <= half its
compute. Two parts, both written to ``bench/results/multifidelity.json``:

1. ``synthetic`` (numpy only, a few minutes): a known game at n = 12 with a strong size effect and
   interactions; the cheap game is ``0.8·v_H + drift·D + noise`` (D another interaction game; the same
   job seed, so part of the noise is shared), at cost ``w`` of a full evaluation; ρ_c is the correlation
   of the two games after removing each coalition size's mean (what the cheap game can add: the size
   effect is removed by the estimator's size-centred fit anyway). For every (drift, w)
   cell: the single-fidelity paired design at budget 200 (as the demo; compute 202 with the endpoints)
   against every two-fidelity allocation (m_A, m_B) cheaper than it; median over seeds of the largest
   half-width, RMS error to the exact values and coverage of the 95% intervals. Reported: the cheapest
   allocation whose median largest half-width is no wider than the single-fidelity one (its compute as
   a share of the single run's); a cell passes when that share is <= 0.5.
2. ``demo`` (``--demo-store STORE``: a finished ``contribshap run configs/demo.yaml`` store): copies it,
   adds ``low_fidelity`` (``--low`` overrides, default 10 fine-tune steps and 100 samples) with
   ``design.budget`` 100 and a control budget of 300, and runs it through the real driver (the design is
   prefix-stable, so the full-fidelity rows of the copy are reused; only the cheap jobs run). Then, from
   that store, every prefix allocation (m_A of the design order, m_B of the control draws) against the
   single-fidelity estimate on all 200 rows: largest half-width per property, and the compute of each
   side as evaluations used times the median ``wall_s`` per fidelity, measured back to back on 16
   coalitions under the same load (the stored rows ran at other times; their medians are reported too).

Usage::

    nice -n 10 .venv/bin/python bench/multifidelity.py                     # synthetic part only
    nice -n 10 .venv/bin/python bench/multifidelity.py --demo-store runs/demo
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from contribshap.pipeline.core.designs import sample_coalitions  # noqa: E402
from contribshap.pipeline.core.estimators import estimate, max_halfwidth  # noqa: E402
from contribshap.pipeline.core.estimators.multifidelity import combine_fidelities  # noqa: E402

from tests.games_core import size_effect, unanimity_sum  # noqa: E402

N = 12
SINGLE_BUDGET = 200  # like the demo: 11 contributors, 200 coalitions
DRIFTS = (0.05, 0.2, 0.5)
COSTS = (0.1, 0.25, 0.5)
SEEDS = 8
NOISE = 1.0


# --- part 1: synthetic ---------------------------------------------------------------------------------------
def _games():
    high = size_effect(unanimity_sum(N, 40, 3, seed=11), lambda k: 30.0 * np.sqrt(k))
    drift = unanimity_sum(N, 40, 3, seed=12)
    return high, drift


def _with_endpoints(masks: np.ndarray, reps: int = 2) -> np.ndarray:
    return np.vstack([np.zeros((reps, N), bool), np.ones((reps, N), bool), masks])


def _evaluate(high, drift, masks: np.ndarray, rng: np.random.Generator, drift_level: float,
              *, both: bool) -> tuple[np.ndarray, np.ndarray | None]:
    shared = rng.normal(scale=NOISE, size=len(masks))
    v_high = high(masks) + shared
    v_low = 0.8 * high(masks) + drift_level * drift(masks) + 0.8 * shared + rng.normal(scale=NOISE / 2, size=len(masks))
    return (v_high, v_low) if both else (v_low, None)


#: Two-fidelity allocations tried in every cell: design draws evaluated at both fidelities (m_A) and
#: low-only draws (m_B).
M_A = (60, 80, 100, 120, 150)
M_B = (100, 200, 400, 800)


def size_centred_corr(masks: np.ndarray, high: np.ndarray, low: np.ndarray) -> float:
    """Correlation of v_H and v_L after removing each coalition size's mean: the part of the cheap game
    that can help (the size effect is what the estimator's size-centred fit already removes)."""
    sizes = masks.sum(axis=1)
    h, lo = high.astype(float).copy(), low.astype(float).copy()
    for k in np.unique(sizes):
        h[sizes == k] -= h[sizes == k].mean()
        lo[sizes == k] -= lo[sizes == k].mean()
    return float(np.corrcoef(h, lo)[0, 1]) if h.std() > 0 and lo.std() > 0 else float("nan")


def _allocations(cost: float) -> list[tuple[int, int]]:
    """(m_A, m_B) pairs whose compute m_A·(1 + w) + m_B·w (+ the endpoints) is below the single run's."""
    return [(m_a, m_b) for m_a in M_A for m_b in M_B if _compute(m_a, m_b, cost) < SINGLE_BUDGET + 2]


def _compute(m_a: int, m_b: int, cost: float) -> float:
    return m_a * (1 + cost) + m_b * cost + 4 * (1 + cost)


def synthetic() -> dict[str, Any]:
    high, drift = _games()
    truth = high.shapley
    cells = []
    start = time.perf_counter()
    for drift_level in DRIFTS:
        for cost in COSTS:
            single_half, single_err, single_cover = [], [], []
            per_alloc: dict[tuple[int, int], dict[str, list[float]]] = {}
            corr = []
            for seed in range(SEEDS):
                rng = np.random.default_rng(seed)
                masks = _with_endpoints(sample_coalitions(N, SINGLE_BUDGET - 2, "paired", seed=seed))
                v_high, v_low = _evaluate(high, drift, masks, rng, drift_level, both=True)
                corr.append(size_centred_corr(masks[4:], v_high[4:], v_low[4:]))
                est = estimate(masks, v_high, v_high[:2].mean(), v_high[2:4].mean())
                single_half.append(max_halfwidth(est))
                single_err.append(float(np.sqrt(np.mean((est.value - truth) ** 2))))
                single_cover.append(float(np.mean((est.ci_low <= truth) & (truth <= est.ci_high))))
                for m_a, m_b in _allocations(cost):
                    masks_a = _with_endpoints(sample_coalitions(N, m_a, "paired", seed=seed))
                    masks_b = _with_endpoints(sample_coalitions(N, m_b, "paired", seed=50_000 + seed))
                    high_a, low_a = _evaluate(high, drift, masks_a, rng, drift_level, both=True)
                    low_b, _ = _evaluate(high, drift, masks_b, rng, drift_level, both=False)
                    low_b[:4] = low_a[:4]  # the same low endpoint evaluations
                    two = combine_fidelities(masks_a, high_a, low_a, masks_b, low_b)
                    slot = per_alloc.setdefault((m_a, m_b), {"half": [], "err": [], "cover": []})
                    slot["half"].append(max_halfwidth(two))
                    slot["err"].append(float(np.sqrt(np.mean((two.value - truth) ** 2))))
                    slot["cover"].append(float(np.mean((two.ci_low <= truth) & (truth <= two.ci_high))))
            reference = float(np.median(single_half))
            rows = []
            for (m_a, m_b), slot in per_alloc.items():
                rows.append({"m_a": m_a, "m_b": m_b, "compute": round(_compute(m_a, m_b, cost), 1),
                             "median_max_halfwidth": float(np.median(slot["half"])),
                             "rms_error": float(np.mean(slot["err"])), "coverage": float(np.mean(slot["cover"])),
                             "identified_share": float(np.mean(np.isfinite(slot["half"])))})
            matching = [r for r in rows if r["median_max_halfwidth"] <= reference]
            best = min(matching, key=lambda r: r["compute"]) if matching else \
                min(rows, key=lambda r: r["median_max_halfwidth"]) if rows else None
            cells.append({
                "drift": drift_level, "cost_ratio": cost, "size_centred_corr": round(float(np.mean(corr)), 3),
                "single": {"budget": SINGLE_BUDGET, "compute": SINGLE_BUDGET + 2,
                           "median_max_halfwidth": reference, "rms_error": float(np.mean(single_err)),
                           "coverage": float(np.mean(single_cover))},
                "two_fidelity": rows, "best": best,
                "compute_to_match": None if not matching else round(best["compute"] / (SINGLE_BUDGET + 2), 3),
                "passes": bool(matching and best["compute"] <= (SINGLE_BUDGET + 2) / 2),
            })
    return {"n": N, "seeds": SEEDS, "noise_sd": NOISE, "cells": cells, "seconds": round(time.perf_counter() - start, 1)}


def print_synthetic(doc: dict[str, Any]) -> None:
    print(f"synthetic n={doc['n']}: single-fidelity paired budget {SINGLE_BUDGET} against the cheapest two-fidelity "
          f"allocation with a median largest half-width no wider (median over {doc['seeds']} seeds)")
    print(f"{'drift':>6} {'w':>5} {'ρ_c':>5} | {'single h':>9} {'rmse':>7} {'cov':>5} | {'(mA,mB)':>10} "
          f"{'compute':>7} {'h':>9} {'rmse':>7} {'cov':>5} | verdict (<= 0.5 compute)")
    for c in doc["cells"]:
        s, b = c["single"], c["best"]
        where = f"({b['m_a']},{b['m_b']})" if b else "none"
        best = (f"{where:>10} {b['compute'] / s['compute']:7.2f} {b['median_max_halfwidth']:9.3f} "
                f"{b['rms_error']:7.3f} {b['coverage']:5.2f}") if b else f"{where:>10}"
        verdict = "pass" if c["passes"] else ("MISS: no allocation matches" if c["compute_to_match"] is None
                                              else f"MISS: matches at {c['compute_to_match']:.2f}")
        print(f"{c['drift']:6.2f} {c['cost_ratio']:5.2f} {c['size_centred_corr']:5.2f} | {s['median_max_halfwidth']:9.3f} "
              f"{s['rms_error']:7.3f} {s['coverage']:5.2f} | {best} | {verdict}")


# --- part 2: the demo ----------------------------------------------------------------------------------------
def demo(source: Path, work: Path, low: dict[str, Any], *, design_budget: int, control_budget: int) -> dict[str, Any]:
    import yaml
    from contribshap.pipeline.config.schema import load_config, parse_config
    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.products.readers import design_order
    from contribshap.pipeline.products.run import run
    from contribshap.pipeline.storage.store import Store

    if not (source / "config.yaml").is_file():
        raise SystemExit(f"{source}: not a finished store (no config.yaml); run `contribshap run configs/demo.yaml` first")
    single_cfg = load_config(source / "config.yaml", check_paths=False)
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("report", "driver.lock"))
    raw = yaml.safe_load((source / "config.yaml").read_text())
    raw.update(store=str(work), low_fidelity={"game": low, "budget": control_budget})
    raw["design"] = {**raw["design"], "budget": design_budget}
    cfg = parse_config(raw, source="demo+low_fidelity", check_paths=False)
    clock = time.perf_counter()
    summary = run(cfg, store_path=work, progress=True)
    wall = time.perf_counter() - clock

    store = Store(work)
    n = len(store.read_manifest()["contributors"])
    high_rows = {(r["mask"], int(r["replicate"])): r for r in store.scan(store.read_manifest()["config_hash"]).rows
                 if r["status"] == "ok"}
    low_rows = {(r["mask"], int(r["replicate"])): r for r in store.scan(cfg.low_fidelity_namespace()).rows
                if r["status"] == "ok"}
    from contribshap.pipeline.storage.plan import read_plan

    plan = read_plan(store)
    empty, full = "0" * n, "1" * n
    single_keys = design_order(sorted({m for m, _ in high_rows if m not in (empty, full)}), source)
    design_keys = [m for m in single_keys if (m, 0) in low_rows]
    control_keys = [r["mask"] for r in plan if r["section"] == "control"]
    from contribshap.pipeline.contracts.keys import mask_to_str
    from contribshap.pipeline.core.designs import sample_coalitions
    from contribshap.pipeline.storage.plan import control_seed

    stream = [mask_to_str(m) for m in sample_coalitions(n, len(control_keys) * 2, cfg.design.kind,
                                                         seed=control_seed(cfg.plan_seed()), **cfg.design.options)]
    position = {m: i for i, m in enumerate(stream)}
    control_keys = sorted(control_keys, key=lambda m: position.get(m, len(position)))
    # the cost ratio measured under the same load: 16 coalitions at both fidelities, back to back (another
    # sampling noise seed, so neither reuses the stored rows)
    from contribshap.pipeline.dispatch.driver import evaluate_coalitions

    probe = np.array([mask_from_str(m) for m in single_keys[:16]], dtype=bool)
    fresh = {"sampling": {"noise_seed": 4321}}
    calibration = {}
    for name, game in (("high", fresh), ("low", {**low, "sampling": {**low.get("sampling", {}), **fresh["sampling"]}})):
        rows = evaluate_coalitions(cfg, work, probe, section="holdout", overrides={"game": game}, progress=False)
        calibration[name] = float(np.median([r["wall_s"] for r in rows if r["status"] == "ok"]))
    high_s, low_s = calibration["high"], calibration["low"]
    stored = {"high": float(np.median([r["wall_s"] for r in high_rows.values()])),
              "low": float(np.median([r["wall_s"] for r in low_rows.values()]))}
    props = [p for p in single_cfg.game.properties]
    ends = [k for k in high_rows if k[0] in (empty, full)]

    def table(keys, rows, prop):
        masks = np.array([mask_from_str(m) for m, _ in keys], dtype=bool)
        return masks, np.array([rows[k][prop] for k in keys], dtype=float)

    out: dict[str, Any] = {"store": str(source), "low": low, "design_budget": design_budget,
                           "control_budget": control_budget, "run_wall_s": round(wall, 1),
                           "low_evaluated": summary.evaluated, "median_wall_s": {"high": high_s, "low": low_s},
                           "median_wall_s_of_stored_rows": stored,
                           "cost_ratio": round(low_s / high_s, 3), "properties": {}}
    for prop in props:
        keys = ends + [(m, 0) for m in single_keys]
        masks, values = table(keys, high_rows, prop)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            single = estimate(masks, values, values[[k[0] == empty for k in keys]].mean(),
                              values[[k[0] == full for k in keys]].mean())
        reference = {"coalitions": len(single_keys) + 2, "compute_s": round(high_s * len(keys), 1),
                     "max_halfwidth": max_halfwidth(single)}
        rows = []
        for m_a in (40, 60, 100):
            for m_b in (100, 200, 300):
                a = ends + [(m, 0) for m in design_keys[:m_a]]
                b = [k for k in ends if k in low_rows] + [(m, 0) for m in control_keys[:m_b] if (m, 0) in low_rows]
                masks_a, high_a = table(a, high_rows, prop)
                _, low_a = table(a, low_rows, prop)
                masks_b, low_b = table(b, low_rows, prop)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    two = combine_fidelities(masks_a, high_a, low_a, masks_b, low_b)
                compute = high_s * len(a) + low_s * (len(a) + len(b) - len(ends))
                info = two.extras["multifidelity"]
                rows.append({"m_a": m_a, "m_b": m_b, "compute_s": round(compute, 1),
                             "compute_vs_single": round(compute / reference["compute_s"], 3),
                             "max_halfwidth": max_halfwidth(two),
                             "halfwidth_vs_single": round(max_halfwidth(two) / reference["max_halfwidth"], 3),
                             "coefficient": round(info["coefficient"], 3),
                             "high_only_max_halfwidth": info["high_only_max_halfwidth"]})
        at_half = [r for r in rows if r["compute_vs_single"] <= 0.5 and math.isfinite(r["max_halfwidth"])]
        pairs = [(m, 0) for m in design_keys]
        masks_p, high_p = table(pairs, high_rows, prop)
        _, low_p = table(pairs, low_rows, prop)
        out["properties"][prop] = {"single": reference, "two_fidelity": rows,
                                   "corr": round(float(np.corrcoef(high_p, low_p)[0, 1]), 3),
                                   "size_centred_corr": round(size_centred_corr(masks_p, high_p, low_p), 3),
                                   "passes": any(r["halfwidth_vs_single"] <= 1.0 for r in at_half)}
    return out


def print_demo(doc: dict[str, Any]) -> None:
    print(f"demo: low fidelity {doc['low']}, median wall {doc['median_wall_s']['low']:.2f} s vs "
          f"{doc['median_wall_s']['high']:.2f} s (ratio {doc['cost_ratio']})")
    for prop, entry in doc["properties"].items():
        s = entry["single"]
        print(f"{prop}: corr {entry['corr']}, size-centred {entry['size_centred_corr']}; single {s['coalitions']} "
              f"coalitions, {s['compute_s']} s, max half-width {s['max_halfwidth']:.4g}"
              f" -> {'pass' if entry['passes'] else 'MISS'}")
        for r in entry["two_fidelity"]:
            print(f"   A={r['m_a']:3d} B={r['m_b']:3d}  compute x{r['compute_vs_single']:.2f}  half-width "
                  f"x{r['halfwidth_vs_single']:.2f}  (A alone {r['high_only_max_halfwidth']:.4g}, c={r['coefficient']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo-store", type=Path, default=None, help="a finished store of configs/demo.yaml")
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "runs" / "bench_multifidelity")
    parser.add_argument("--low", default='{"finetune": {"steps": 10}, "sampling": {"n_images": 100, "batch_size": 100}}',
                        help="JSON overrides of game for the cheap game")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "multifidelity.json")
    args = parser.parse_args(argv)
    doc: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if not args.skip_synthetic:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            doc["synthetic"] = synthetic()
        print_synthetic(doc["synthetic"])
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    if args.demo_store is not None:
        doc["demo"] = demo(args.demo_store, args.work, json.loads(args.low), design_budget=100, control_budget=300)
        print_demo(doc["demo"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
