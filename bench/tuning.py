"""What sparsified fine-tuning needs: recovery length, K, learning rate and EMA against cost.

The fidelity game of ``bench/fidelity.py`` (5 digit classes + the planted noise contributor, n = 6, all 63
non-empty coalitions, exact Shapley): every variant changes one setting of the default fine-tune
(K = 50, lr 3e-4, no EMA, recovery 600 steps) and is scored against the same retrain values, the seed mean
that ``bench/fidelity.py`` left in its job cache. Per variant it reports

- the per-coalition and the exact-Shapley Spearman against retraining, per property and averaged;
- how often the noise contributor gets the same harm rank as under retraining;
- the cost: median seconds per coalition (fine-tune + sample + properties) and the one-off recovery seconds.

Each variant runs one fine-tune seed (job seed 100, the first seed of ``bench/fidelity.py``), so the
default row here is that seed alone and differences below the seed-to-seed spread are noise.

Usage (after ``bench/fidelity.py``, with the same ``--train-steps`` / ``--retrain-steps``)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/tuning.py --train-steps 800 --retrain-steps 800

Writes a table to stdout and ``bench/results/tuning.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fidelity

REPO_ROOT = fidelity.REPO_ROOT

#: name -> (section, overrides): one change from the default each.
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "default (K=50, lr 3e-4)": ("finetune", {}),
    "K=25": ("finetune", {"steps": 25}),
    "K=100": ("finetune", {"steps": 100}),
    "lr 1e-4": ("finetune", {"lr": 1e-4}),
    "lr 1e-3": ("finetune", {"lr": 1e-3}),
    "EMA 0.9": ("finetune", {"ema_decay": 0.9}),
    "recovery 200": ("recover", {"steps": 200}),
    "recovery 1200": ("recover", {"steps": 1200}),
}


def variant_config(config, section: str, overrides: dict[str, object]):
    raw = config.model_dump(mode="json")
    raw[section] = {**raw[section], **overrides}
    return type(config).model_validate(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fidelity.add_game_arguments(parser)
    parser.add_argument("--retrain-seeds", type=int, default=3, help="retrain seeds to average (from the cache)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help=f"names among {list(VARIANTS)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "tuning.json")
    args = parser.parse_args()
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"--variants: {unknown} unknown; valid: {list(VARIANTS)}")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from contribshap.workers.game import DiffusionGame

    # 1. The base game and its retrain values (must be in the cache already).
    base, seed = fidelity.build_config(args)
    cache = fidelity.JobCache(args.cache)
    game = DiffusionGame(base, artifacts_dir=args.artifacts, seed=seed)
    game.prepare()
    contributors = [c.id for c in game.contributors()]
    n = len(contributors)
    noise = next(i for i, cid in enumerate(contributors) if "noise" in cid)
    masks = [m for m in itertools.product([False, True], repeat=n) if any(m)]
    rt_seeds = [fidelity.RETRAIN_SEED0 + s for s in range(args.retrain_seeds)]
    rt = fidelity.collect(cache, base, "retrain", masks, rt_seeds, seed)
    missing = [fidelity.bits(m) for m in masks if not rt[m]]
    if missing:
        raise SystemExit(f"{args.cache}: no retrain values for {len(missing)} coalitions (e.g. {missing[0]}); "
                         "run bench/fidelity.py with the same --train-steps/--retrain-steps first")
    empty = game.evaluate(np.zeros(n, bool), replicate=0, seed=0).values
    properties = list(base.properties)

    # 2. Per variant: prepare (a recovery variant recovers anew), run the 63 fine-tunes, compare.
    rows = []
    for name in args.variants:
        section, overrides = VARIANTS[name]
        config = variant_config(base, section, overrides)
        clock = time.perf_counter()
        summary = DiffusionGame(config, artifacts_dir=args.artifacts, seed=seed).prepare()
        prepare_s = time.perf_counter() - clock
        jobs = [(config, "sparsified_ft", m, fidelity.FT_SEED0) for m in masks]
        fidelity.run_jobs(jobs, artifacts=args.artifacts, seed=seed, workers=args.workers, cache=cache,
                          description=name)
        ft = fidelity.collect(cache, config, "sparsified_ft", masks, [fidelity.FT_SEED0], seed)
        per_prop = fidelity.compare(ft, rt, masks, empty, properties, noise, exact=True)
        seconds = [r["seconds"] for by_mask in ft.values() for r in by_mask]
        rows.append({
            "variant": name, "section": section, "overrides": overrides,
            "finetune": config.finetune.model_dump(mode="json"), "recover": config.recover.model_dump(mode="json"),
            "seconds_per_coalition": float(np.median(seconds)),
            "recovery_s": summary["recovered"]["seconds"], "prepare_s_this_run": prepare_s,
            "recovered_values": summary["stages"]["values"]["recovered"],
            "mean_coalition_spearman": float(np.mean([p["per_coalition_spearman"] for p in per_prop.values()])),
            "mean_shapley_spearman": float(np.mean([p["shapley_spearman"] for p in per_prop.values()])),
            "noise_rank_agrees": sum(p["noise_harm_rank_ft"] == p["noise_harm_rank_retrain"] for p in per_prop.values()),
            "properties": {prop: {k: p[k] for k in ("per_coalition_spearman", "shapley_spearman",
                                                     "noise_harm_rank_ft", "noise_harm_rank_retrain")}
                           for prop, p in per_prop.items()},
        })

    # 3. Table and JSON.
    retrain_s = [r["seconds"] for by_mask in rt.values() for r in by_mask if r["source"] == "run"]
    report = {
        "bench": "tuning", "contributors": contributors, "train_steps": base.train.steps,
        "retrain_steps": base.retrain_steps(), "retrain_seeds_averaged": min(len(v) for v in rt.values()),
        "retrain_seconds_per_coalition": float(np.median(retrain_s)) if retrain_s else None,
        "ft_seed": fidelity.FT_SEED0, "rows": rows, "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    short = {"fid": "fid", "log_fid": "logfid", "kid": "kid", "inception_score": "IS", "diversity": "div",
             "quality": "qual"}
    print(f"\ntuning: sparsified FT variants vs retrain ({report['retrain_seeds_averaged']} seed mean, "
          f"{base.retrain_steps()} steps); Spearman per coalition / exact Shapley")
    head = " ".join(f"{short.get(p, p)[:6]:>11s}" for p in properties)
    print(f"{'variant':24s} {'s/coal':>6s} {'recov s':>7s} {head} {'mean':>11s} {'noise ok':>8s}")
    for row in rows:
        cells = " ".join(f"{row['properties'][p]['per_coalition_spearman']:5.2f}/{row['properties'][p]['shapley_spearman']:5.2f}"
                         for p in properties)
        print(f"{row['variant']:24s} {row['seconds_per_coalition']:6.1f} {row['recovery_s']:7.0f} {cells} "
              f"{row['mean_coalition_spearman']:5.2f}/{row['mean_shapley_spearman']:5.2f} "
              f"{row['noise_rank_agrees']:>5d}/{len(properties)}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
