"""LDS of sparsified-FT Shapley against held-out subsets, next to every baseline (not a test).

What it measures (default: sections 0 and 1, ~2 min; ``--demo`` adds sections 2-3 on the demo store):

0. **Exact set** (the cached path, no training): the demo game reduced to 5 digit classes + the planted
   noise contributor (n = 6), whose every coalition ``bench/fidelity.py`` evaluated with sparsified FT and
   with retraining, 3 seeds each (``bench/results/fidelity.json``). A python game looks those values up
   (:func:`fidelity_game`), so ``contribshap run`` + ``contribshap evaluate --json`` run for real (driver,
   store, Ray) in seconds: held-out subsets disjoint from every coalition a method saw, LDS overall and
   without the noise contributor, the planted-indicator reference, Banzhaf on its own uniform design,
   counterfactuals with 3 replicates. The held-out subsets are scored twice: against their
   sparsified-FT values (what ``evaluate`` measures, a self-check) and against their *retrained* values
   (the ground truth, read from the same cache).
1. LDS vs budget on a synthetic game (``synthetic_lds_vs_budget``).

With ``--demo``:

2. One table: LDS (x100 Spearman, bootstrap CI over subsets and seeds) per property x method, for the
   demo store's Shapley estimate (``kernelshap`` on sparsified fine-tuning), the store baselines (LOO,
   add-one-in, Banzhaf MSR, datamodel), the model baselines (pixel / feature similarity, TRAK) and a
   random reference. Held-out subsets are evaluated with ``--mode`` (default: as the run, i.e.
   sparsified FT; ``retrain`` is the gold standard and costs a full training per subset), and the label
   of every row says which.
3. LDS against the number of coalitions evaluated, for the default estimator (``kernelshap``) and the
   paper's estimator (``kernelshap_paper``: unweighted regression, no pairing, no stratification), both
   re-estimated on growing prefixes of the store's plan (in design order) and scored on the same
   held-out values. The rows come from the store's *paired* plan: the paper's estimator is applied to
   the same rows, not to an unpaired Shapley-kernel draw of its own (that would need another run).

Usage::

    nice -n 10 python bench/lds.py                        # exact set + synthetic (~2 min)
    python bench/lds.py --demo                            # + runs/demo (runs configs/demo.yaml if needed)
    python bench/lds.py --demo --store runs/demo --mode retrain --n-subsets 20 --seeds 0 1 2   # ground truth

Writes ``bench/results/lds.json`` (``--out``; the sections not run keep their previous content) and prints
the tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _fmt(x: float | None) -> str:
    return "   -  " if x is None or not math.isfinite(x) else f"{x:6.1f}"


FIDELITY = REPO / "bench" / "results" / "fidelity.json"
EXACT_NAMES = ["class-0", "class-1", "class-2", "class-3", "class-4", "planted-noise"]


@functools.lru_cache(maxsize=4)
def _fidelity_values(source: str) -> dict:
    return json.loads(Path(source).read_text())


def fidelity_game(mask: np.ndarray, *, replicate: int = 0, source: str = str(FIDELITY),
                  mode: str = "sparsified_ft") -> dict[str, float]:
    """The 6-contributor exact set as a python game: the cached value of ``mask`` in ``mode``.

    Replicate r reads seed ``r mod 3`` of the cache (``bench/fidelity.py`` ran 3 seeds of every coalition
    in each mode); the empty coalition is the null model of both modes (one value).
    """
    doc = _fidelity_values(source)
    key = "".join("1" if b else "0" for b in np.asarray(mask, dtype=bool))
    if not any(c == "1" for c in key):
        return dict(doc["empty_coalition"])
    seeds = doc["values"][mode][key]
    return dict(seeds[int(replicate) % len(seeds)])


def exact_set(workdir: Path, *, budget: int, n_subsets: int) -> dict:
    """Section 0: run + evaluate the exact-set lookup game through the real CLI; score against retraining too."""
    import os
    import shutil

    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.core.metrics import lds_score, without_members

    # 1. A fresh store: sparsified-FT values, paired design, 3 replicates a coalition (the 3 cached seeds).
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    store = workdir / "store"
    config = workdir / "exact_set.yaml"
    config.write_text(json.dumps({
        "name": "lds-exact-set", "store": str(store), "seed": 0,
        "game": {"kind": "python", "target": "lds:fidelity_game", "n_players": 6, "names": EXACT_NAMES,
                 "options": {"source": str(FIDELITY), "mode": "sparsified_ft"}},
        "design": {"kind": "paired", "budget": budget, "seed": 0},
        "replicates": {"coalition": 3, "endpoints": 3},
        "estimators": ["kernelshap"],
        "ray": {"local_num_cpus": 2},
        "evaluation": {"n_subsets": n_subsets, "seeds": [0, 1, 2], "stratify_exclude": ["p5"],
                       "banzhaf_uniform": True, "counterfactual_replicates": 3},
    }))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), os.environ.get("PYTHONPATH", "")])}
    cli = str(Path(sys.executable).with_name("contribshap"))
    timings = {}
    start = time.time()
    subprocess.run([cli, "run", str(config), "--no-progress"], check=True, env=env, cwd=workdir,
                   stdout=subprocess.DEVNULL)
    timings["run_s"] = time.time() - start
    start = time.time()
    done = subprocess.run([cli, "evaluate", str(store), "--json", "--no-progress", "--top-k", "0.2", "--top-k",
                           "0.4"], check=True, env=env, cwd=workdir, capture_output=True, text=True)
    timings["evaluate_s"] = time.time() - start
    doc = json.loads(done.stdout)
    # 2. The same held-out subsets against their retrained values (3 seeds), overall and without the noise.
    cache = _fidelity_values(str(FIDELITY))
    masks = np.array([mask_from_str(m) for m in doc["holdout"]["masks"]], dtype=bool)
    stratum = without_members(masks, [5])
    rows = []
    for prop, per in doc["lds"].items():
        retrain = np.array([[cache["values"]["retrain"][m][s][prop] for m in doc["holdout"]["masks"]]
                            for s in range(3)])
        for method, entry in per.items():
            phi = np.nan_to_num(np.array(doc["attributions"][prop][method]["value"], dtype=float))
            overall = lds_score(masks, phi, retrain, seed=0)
            strat = lds_score(masks[stratum], phi, retrain[:, stratum], seed=0)
            ft_strat = doc["lds_stratified"][prop][method]
            rows.append({"property": prop, "method": method, "kind": entry["kind"],
                         "ft": entry["value"], "ft_ci": [entry["ci_low"], entry["ci_high"]],
                         "ft_without_noise": ft_strat["value"], "ft_without_noise_ci": [ft_strat["ci_low"],
                                                                                        ft_strat["ci_high"]],
                         "retrain": overall.value, "retrain_ci": [overall.ci_low, overall.ci_high],
                         "retrain_without_noise": strat.value,
                         "retrain_without_noise_ci": [strat.ci_low, strat.ci_high]})
    return {"game": "digits 0-4 + planted noise (n = 6), every coalition cached by bench/fidelity.py",
            "design": f"paired, budget {budget} (endpoints included), 3 replicates a coalition",
            "n_subsets": len(masks), "n_subsets_without_noise": int(stratum.sum()),
            "holdout_rejected": doc["holdout"]["rejected"], "holdout_seeds": 3,
            "banzhaf_uniform_rows": (doc.get("banzhaf_uniform") or {}).get("n_draws"),
            "table": rows, "counterfactual": doc["counterfactual"], "notes": doc["notes"],
            "evaluation_settings": doc["settings"], "timings_s": timings}


def _print_exact(section: dict) -> None:
    print(f"\nExact set: {section['game']}; {section['design']}; {section['n_subsets']} held-out subsets "
          f"({section['n_subsets_without_noise']} without the noise contributor, {section['holdout_rejected']} "
          f"draws rejected), 3 seeds")
    print(f"{'property':<16} {'method':<25} {'FT':>6} {'FT-noise':>9} {'retrain':>8} {'retr-noise':>10}")
    for r in section["table"]:
        print(f"{r['property']:<16} {r['method']:<25} {_fmt(r['ft'])} {_fmt(r['ft_without_noise']):>9} "
              f"{_fmt(r['retrain']):>8} {_fmt(r['retrain_without_noise']):>10}")
    print("\nCounterfactuals (relative change of the property, mean [95% CI] over 3 replicates)")
    for prop, per in section["counterfactual"].items():
        for method in ("kernelshap", "planted_indicator", "banzhaf_uniform"):
            for e in per.get(method, []):
                print(f"{prop:<16} {method:<20} {e['action']:<14} k={e['k']:<4} {','.join(e['removed']):<10} "
                      f"{_fmt(100 * e['value'] if e['value'] is not None else None)}%")


def lds_table(doc: dict, label: str) -> list[dict]:
    """Rows ``{property, method, kind, lds, ci_low, ci_high, n_subsets, n_seeds, holdout}``, best first."""
    rows = []
    for prop, per in doc["lds"].items():
        for method, entry in per.items():
            rows.append({"property": prop, "method": method, "kind": entry.get("kind"),
                         "lds": entry.get("value"), "ci_low": entry.get("ci_low"), "ci_high": entry.get("ci_high"),
                         "n_subsets": entry.get("n_subsets"), "n_seeds": entry.get("n_seeds"), "holdout": label})
    rows.sort(key=lambda r: (r["property"], -(r["lds"] if r["lds"] is not None else -1e9)))
    return rows


def lds_vs_coalitions(store: Path, doc: dict, methods: tuple[str, ...], n_points: int = 8) -> list[dict]:
    """Re-estimate on prefixes of the plan (design order) and score each prefix on the held-out values."""
    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.core.estimators import estimate
    from contribshap.pipeline.core.metrics import lds_score
    from contribshap.pipeline.products.readers import main_rows, read_all_evals
    from contribshap.pipeline.storage.store import Store

    manifest = Store(store).read_manifest()
    rows_by_ns, _ = read_all_evals(store)
    main = main_rows(store, manifest, rows_by_ns.get(str(manifest["config_hash"]), []))
    masks_h = np.array([mask_from_str(s) for s in doc["holdout"]["masks"]], dtype=bool)
    m, n = main.masks.shape
    sizes = sorted({round(float(x)) for x in np.geomspace(min(m, 2 * n), m, n_points)} | {m})
    sizes = sorted({s + (s % 2) if s < m else s for s in sizes})  # whole pairs of a paired plan
    out = []
    for prop in doc["lds"]:
        values_h = np.array(doc["holdout"]["values"][prop], dtype=float)
        for method in methods:
            for size in sizes:
                try:
                    est = estimate(main.masks[:size], main.values[prop][:size], main.v_empty[prop],
                                   main.v_full[prop], method=method)
                except ValueError as error:
                    out.append({"property": prop, "method": method, "coalitions": size + 2, "lds": None,
                                "error": str(error)})
                    continue
                result = lds_score(masks_h, est.value, values_h, n_bootstrap=300)
                out.append({"property": prop, "method": method, "coalitions": size + 2, "lds": result.value,
                            "ci_low": result.ci_low, "ci_high": result.ci_high})
    return out


def synthetic_lds_vs_budget(n: int = 20, budgets_x: tuple[int, ...] = (2, 5, 10, 20, 50), seeds: int = 10,
                            n_subsets: int = 100) -> dict:
    """The same comparison, done properly, on a cheap game: our default vs the paper's *unpaired* design.

    Game: bench/estimators.py's data-valuation game (ridge classifier on n groups of digits rows, 20% of
    the groups with shuffled labels; validation accuracy). Ours: ``kernelshap`` on the ``leverage``
    design; the paper's: ``kernelshap_paper`` on unpaired Shapley-kernel draws (weights = draw counts).
    Each budget counts sampled coalitions (the endpoints are extra, for both). LDS on ``n_subsets``
    held-out subsets (alpha 0.5), mean and sd over ``seeds`` plan seeds.
    """
    import importlib.util

    from contribshap.pipeline.core.designs import sample_coalitions
    from contribshap.pipeline.core.metrics import lds_score

    spec = importlib.util.spec_from_file_location("bench_estimators", REPO / "bench" / "estimators.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    game, _, _ = module.data_valuation_game(n)
    holdout = np.asarray(sample_coalitions(n, n_subsets, "datamodel", seed=987, alpha=0.5), dtype=bool)
    values = game(holdout)
    rows = []
    for factor in budgets_x:
        budget = factor * n
        for label, run in (("kernelshap@leverage (default)", lambda b, s: module.run_ours(module.DEFAULT, game, b, s)),
                           ("kernelshap_paper@shapley_kernel (paper)", lambda b, s: module.run_paper(game, b, s))):
            lds = [lds_score(holdout, run(budget, seed), values, n_bootstrap=20).value for seed in range(seeds)]
            rows.append({"method": label, "budget": budget, "lds_mean": float(np.mean(lds)),
                         "lds_sd": float(np.std(lds, ddof=1)), "lds_per_seed": lds})
    reference = lds_score(holdout, module.run_ours(module.DEFAULT, game, 200 * n, 0), values, n_bootstrap=200)
    rows.append({"method": "reference: kernelshap@leverage", "budget": 200 * n, "lds_mean": reference.value,
                 "lds_sd": 0.0, "lds_ci": [reference.ci_low, reference.ci_high]})
    return {"game": f"data-valuation (bench/estimators.py), n={n}", "n_subsets": n_subsets, "seeds": seeds,
            "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "demo.yaml")
    parser.add_argument("--store", type=Path, default=None, help="default: the config's store")
    parser.add_argument("--n-subsets", type=int, default=30)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--mode", default=None, help="held-out fine-tune mode (default: as the run)")
    parser.add_argument("--address", default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "lds.json")
    parser.add_argument("--synthetic-only", action="store_true", help="only the cheap synthetic comparison")
    parser.add_argument("--demo", action="store_true", help="also the demo store (sections 2-3; a diffusion run)")
    parser.add_argument("--exact-budget", type=int, default=20, help="exact set: design budget (endpoints incl.)")
    parser.add_argument("--workdir", type=Path, default=REPO / "runs" / "bench_lds_exact")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}

    # 0. The synthetic default-vs-paper comparison (seconds).
    start = time.time()
    synthetic = synthetic_lds_vs_budget()
    print(f"\nLDS vs budget on a synthetic game ({synthetic['game']}; {synthetic['n_subsets']} held-out "
          f"subsets, mean ± sd over {synthetic['seeds']} plan seeds)")
    for r in synthetic["rows"]:
        print(f"  {r['method']:<42} budget {r['budget']:>4}: LDS {r['lds_mean']:6.1f} ± {r['lds_sd']:.1f}")
    synthetic["seconds"] = time.time() - start
    from contribshap.pipeline.products.evaluate import _jsonable, run_evaluate

    if args.synthetic_only:
        args.out.write_text(json.dumps({**previous, "synthetic_lds_vs_budget": synthetic}, indent=2))
        print(f"\nwrote {args.out}")
        return
    # 0. The exact set through the real CLI (cached evaluations; about a minute).
    exact = exact_set(args.workdir, budget=args.exact_budget, n_subsets=50)
    _print_exact(exact)
    if not args.demo:
        note = ("store, settings, table, lds_vs_coalitions, counterfactual: the --demo section of an earlier run, "
                "not re-run here (its held-out subsets were not checked against the plan; no stratified LDS)")
        args.out.write_text(json.dumps(_jsonable({**previous, "demo_note": note, "exact_set": exact,
                                                  "synthetic_lds_vs_budget": synthetic}), indent=2))
        print(f"\nwrote {args.out}")
        return

    from contribshap.pipeline.config.schema import load_config, resolve_store

    # 1. The demo store (run it if it has no estimates yet).
    store = args.store or resolve_store(load_config(args.config))
    timings: dict[str, float] = {}
    if not (store / "estimates" / "estimates.json").is_file():
        start = time.time()
        subprocess.run([str(Path(sys.executable).with_name("contribshap")), "run", str(args.config), "--store",
                        str(store), "--no-progress"], check=True)
        timings["run_s"] = time.time() - start
    # 2. LDS of every method on held-out subsets.
    start = time.time()
    doc = run_evaluate(store, n_subsets=args.n_subsets, alpha=args.alpha, mode=args.mode, seeds=args.seeds,
                       address=args.address, progress=True)
    timings["evaluate_s"] = time.time() - start
    label = f"{doc['settings']['mode']} held-out ({doc['settings']['game_kind']})"
    table = lds_table(doc, label)
    # 3. LDS against the number of coalitions: default estimator vs the paper's.
    start = time.time()
    curve = lds_vs_coalitions(store, doc, ("kernelshap", "kernelshap_paper"))
    timings["curve_s"] = time.time() - start

    print(f"\nLDS on {doc['settings']['n_subsets']} held-out subsets (alpha {args.alpha}), seeds {args.seeds}, "
          f"held-out mode: {doc['settings']['mode']}")
    print(f"{'property':<16} {'method':<14} {'kind':<15} {'LDS':>6} {'CI':>17}")
    for r in table:
        print(f"{r['property']:<16} {r['method']:<14} {r['kind'] or '':<15} {_fmt(r['lds'])} "
              f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]")
    print("\nLDS vs coalitions evaluated (prefixes of the plan, same held-out values)")
    for prop in doc["lds"]:
        sizes = sorted({r["coalitions"] for r in curve if r["property"] == prop})
        print(f"{prop:<16} {'coalitions':<18}" + "".join(f"{s:>7}" for s in sizes))
        for method in ("kernelshap", "kernelshap_paper"):
            by = {r["coalitions"]: r["lds"] for r in curve if r["property"] == prop and r["method"] == method}
            print(f"{'':<16} {method:<18}" + "".join(f" {_fmt(by.get(s))}" for s in sizes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"store": str(store), "settings": doc["settings"], "holdout_label": label, "table": table,
               "lds_stratified": doc.get("lds_stratified", {}), "lds_vs_coalitions": curve, "timings_s": timings,
               "notes": doc["notes"], "counterfactual": doc.get("counterfactual", {}),
               "exact_set": exact, "synthetic_lds_vs_budget": synthetic}
    args.out.write_text(json.dumps(_jsonable(payload), indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
