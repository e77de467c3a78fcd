"""Fidelity of sparsified fine-tuning against retraining, free of estimator noise (6 contributors).

The demo game reduced to 5 digit classes + the planted noise contributor (n = 6, 64 coalitions). Every
coalition is evaluated with ``sparsified_ft`` (``--ft-seeds`` seeds, averaged); the coalitions chosen by
``--retrain-coalitions`` are retrained from scratch (``--retrain-seeds`` seeds, ``--retrain-steps`` steps,
averaged). Per property it reports:

- per-coalition Spearman between the two modes (common coalitions, empty coalition excluded: it is the
  null model in both modes);
- Spearman between the Shapley vectors: exact (``exact_shapley``) when retrain covers all 64 coalitions,
  else KernelSHAP on the common coalitions for BOTH modes (plus the exact FT vector for reference);
- the sign and harm rank of the noise contributor in each mode.

The full study (issue 4) is ``--retrain-coalitions all --ft-seeds 3 --retrain-seeds 3`` with
``--retrain-steps`` = ``train.steps``; on 2 shared CPU cores that takes hours, so smaller runs are labelled
``"reduced": true`` in the JSON together with what was reduced.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/fidelity.py --retrain-coalitions corners+random:6 \
        --retrain-steps 300 --ft-seeds 1 --retrain-seeds 1 --workers 2
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import itertools
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
LOWER_IS_BETTER = {"fid", "log_fid", "kid"}
_GAMES: dict[str, object] = {}


def build_config(args: argparse.Namespace):
    """The 6-contributor game config (the demo's game with ``data.classes`` = --classes)."""
    from pipeline.config import load_config

    cfg = load_config(args.config)
    raw = cfg.game.model_dump(mode="json")
    raw["data"]["classes"] = list(args.classes)
    if args.train_steps is not None:
        raw["train"]["steps"] = args.train_steps
    raw["finetune"]["retrain_steps"] = args.retrain_steps
    return type(cfg.game).model_validate(raw), cfg.seed


def _worker_evaluate(config_json: str, artifacts: str, seed: int, mode: str, mask: tuple[bool, ...], job_seed: int):
    """One evaluation in a worker process (games cached per process and mode)."""
    import torch

    from pipeline.diffusion_config import DiffusionGameConfig
    from workers.game import DiffusionGame

    torch.set_num_threads(1)
    key = f"{mode}:{config_json}"
    if key not in _GAMES:
        config = DiffusionGameConfig.model_validate_json(config_json)
        config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"mode": mode})})
        _GAMES[key] = DiffusionGame(config, artifacts_dir=Path(artifacts), seed=seed)
    start = time.perf_counter()
    result = _GAMES[key].evaluate(np.array(mask, bool), replicate=0, seed=job_seed)
    return mode, mask, job_seed, result.values, time.perf_counter() - start


def choose_retrain_masks(spec: str, all_masks: list[tuple[bool, ...]], n: int, seed: int) -> list[tuple[bool, ...]]:
    """``all`` | ``corners`` (full, singletons, leave-one-out) | ``corners+random:K`` | ``random:K``."""
    if spec == "all":
        return [m for m in all_masks if any(m)]
    chosen: list[tuple[bool, ...]] = []
    parts = spec.split("+")
    for part in parts:
        if part == "corners":
            chosen.append(tuple([True] * n))
            chosen += [tuple(i == j for j in range(n)) for i in range(n)]
            chosen += [tuple(i != j for j in range(n)) for i in range(n)]
        elif part.startswith("random:"):
            rng = np.random.default_rng(seed)
            rest = [m for m in all_masks if any(m) and m not in chosen]
            picks = rng.choice(len(rest), size=min(int(part.split(":")[1]), len(rest)), replace=False)
            chosen += [rest[i] for i in sorted(picks)]
        else:
            raise ValueError(f"--retrain-coalitions part {part!r} is unknown; valid: all, corners, random:K (joined by +)")
    return list(dict.fromkeys(chosen))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def shapley(masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, *, exact: bool) -> np.ndarray:
    from pipeline.estimators import estimate

    method = "exact_shapley" if exact else "kernelshap"
    return np.asarray(estimate(masks, values, v_empty, v_full, method=method).value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "demo.yaml")
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--artifacts", type=Path, default=REPO_ROOT / "runs" / "bench_fidelity" / "artifacts")
    parser.add_argument("--train-steps", type=int, default=None, help="θ* steps (default: the config's)")
    parser.add_argument("--ft-seeds", type=int, default=3)
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--retrain-steps", type=int, default=1200)
    parser.add_argument("--retrain-coalitions", default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "fidelity.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from tqdm.auto import tqdm

    # 1. Config and prepare (θ*, pruned, recovered, extractor, reference) once, in this process.
    config, seed = build_config(args)
    from workers.game import DiffusionGame

    start = time.perf_counter()
    game = DiffusionGame(config, artifacts_dir=args.artifacts, seed=seed)
    prepare_summary = game.prepare()
    prepare_s = time.perf_counter() - start
    contributors = [c.id for c in game.contributors()]
    n = len(contributors)
    noise = next(i for i, cid in enumerate(contributors) if "noise" in cid)
    properties = list(config.properties)

    # 2. Jobs: every coalition x FT seeds, the chosen coalitions x retrain seeds.
    all_masks = [tuple(bool(b) for b in bits) for bits in itertools.product([False, True], repeat=n)]
    retrain_masks = choose_retrain_masks(args.retrain_coalitions, all_masks, n, seed=11)
    jobs = [("sparsified_ft", m, 100 + s) for s in range(args.ft_seeds) for m in all_masks if any(m)]
    jobs += [("retrain", m, 200 + s) for s in range(args.retrain_seeds) for m in retrain_masks]
    jobs.sort(key=lambda job: job[0] != "retrain")  # the long ones first
    empty = game.evaluate(np.zeros(n, bool), replicate=0, seed=0).values

    # 3. Run them on --workers processes (each loads the artifacts once per mode).
    results: dict[str, dict[tuple[bool, ...], list[dict[str, float]]]] = {"sparsified_ft": {}, "retrain": {}}
    seconds: dict[str, list[float]] = {"sparsified_ft": [], "retrain": []}
    config_json = config.model_dump_json()
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        pending = [pool.submit(_worker_evaluate, config_json, str(args.artifacts), seed, *job) for job in jobs]
        for done in tqdm(futures.as_completed(pending), total=len(pending), desc="fidelity jobs"):
            mode, mask, _, values, wall = done.result()
            results[mode].setdefault(mask, []).append(values)
            seconds[mode].append(wall)

    # 4. Compare per property.
    def mean_values(mode: str, masks: list[tuple[bool, ...]], prop: str) -> np.ndarray:
        return np.array([np.mean([v[prop] for v in results[mode][m]]) for m in masks])

    common = [m for m in retrain_masks if m in results["sparsified_ft"]]
    exact_possible = len(common) == 2**n - 1
    full = tuple([True] * n)
    report_props = {}
    for prop in properties:
        ft_vals, rt_vals = mean_values("sparsified_ft", common, prop), mean_values("retrain", common, prop)
        inner = [i for i, m in enumerate(common) if m != full]
        masks_arr = np.array([common[i] for i in inner], dtype=bool)
        phi_ft = shapley(masks_arr, ft_vals[inner], empty[prop], float(np.mean([v[prop] for v in results["sparsified_ft"][full]])), exact=exact_possible)
        phi_rt = shapley(masks_arr, rt_vals[inner], empty[prop], float(np.mean([v[prop] for v in results["retrain"][full]])), exact=exact_possible)
        all_inner = [m for m in all_masks if any(m) and m != full]
        phi_ft_exact = shapley(np.array(all_inner, bool), mean_values("sparsified_ft", all_inner, prop), empty[prop],
                               float(np.mean([v[prop] for v in results["sparsified_ft"][full]])), exact=True)

        def harm_rank(phi: np.ndarray, prop: str = prop) -> int:
            order = np.argsort(-phi if prop in LOWER_IS_BETTER else phi, kind="stable")
            return int(np.where(order == noise)[0][0]) + 1

        report_props[prop] = {
            "per_coalition_spearman": spearman(ft_vals, rt_vals),
            "shapley_spearman": spearman(phi_ft, phi_rt),
            "shapley_method": "exact_shapley" if exact_possible else "kernelshap on the common coalitions",
            "phi_sparsified_ft": phi_ft.tolist(), "phi_retrain": phi_rt.tolist(),
            "phi_sparsified_ft_exact_all64": phi_ft_exact.tolist(),
            "noise_sign_ft": float(np.sign(phi_ft[noise])), "noise_sign_retrain": float(np.sign(phi_rt[noise])),
            "noise_harm_rank_ft": harm_rank(phi_ft), "noise_harm_rank_retrain": harm_rank(phi_rt),
            "noise_harm_rank_ft_exact_all64": harm_rank(phi_ft_exact),
        }

    reduced = not (args.retrain_coalitions == "all" and args.ft_seeds >= 3 and args.retrain_seeds >= 3
                   and args.retrain_steps >= config.train.steps)
    report = {
        "reduced": reduced,
        "settings": {"classes": args.classes, "contributors": contributors, "ft_seeds": args.ft_seeds,
                     "retrain_seeds": args.retrain_seeds, "retrain_steps": args.retrain_steps,
                     "retrain_coalitions": args.retrain_coalitions, "n_retrain_coalitions": len(retrain_masks),
                     "train_steps": config.train.steps, "finetune": config.finetune.model_dump(mode="json"),
                     "sampling": config.sampling.model_dump(mode="json")},
        "prepare_s": prepare_s, "prepare": prepare_summary,
        "seconds_per_job": {mode: float(np.mean(s)) if s else None for mode, s in seconds.items()},
        "n_jobs": {mode: len(s) for mode, s in seconds.items()},
        "properties": report_props,
        "values": {mode: {"".join("1" if b else "0" for b in m): vals for m, vals in by_mask.items()}
                   for mode, by_mask in results.items()},
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))

    # 5. Table.
    label = "REDUCED" if reduced else "full"
    print(f"\nfidelity ({label}): n = {n}, sparsified_ft on all {2**n} coalitions x {args.ft_seeds} seed(s), "
          f"retrain {args.retrain_steps} steps on {len(retrain_masks)} coalitions x {args.retrain_seeds} seed(s)")
    print(f"seconds per job: sparsified_ft {report['seconds_per_job']['sparsified_ft']:.1f}, "
          f"retrain {report['seconds_per_job']['retrain']:.1f}")
    print(f"{'property':16s} {'coalition rho':>13s} {'Shapley rho':>11s} {'noise rank ft/rt (exact ft)':>28s}")
    for prop, r in report_props.items():
        ranks = f"{r['noise_harm_rank_ft']}/{r['noise_harm_rank_retrain']} ({r['noise_harm_rank_ft_exact_all64']})"
        print(f"{prop:16s} {r['per_coalition_spearman']:13.2f} {r['shapley_spearman']:11.2f} {ranks:>28s}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
