"""Fidelity of sparsified fine-tuning against retraining, free of estimator noise (6 contributors).

The digits-by-class game (configs/examples/digits_by_class.yaml, the demo until it became a mix)
reduced to 5 digit classes + the planted noise contributor (n = 6, 64 coalitions). Every
coalition is evaluated with ``sparsified_ft`` (``--ft-seeds`` seeds, averaged); the coalitions chosen by
``--retrain-coalitions`` are retrained from scratch (``--retrain-seeds`` seeds, ``--retrain-steps`` steps,
averaged). Per property it reports:

- per-coalition Spearman between the two modes (common coalitions, empty coalition excluded: it is the
  null model in both modes);
- Spearman between the Shapley vectors: exact (``exact_shapley``) when retrain covers all 64 coalitions,
  else KernelSHAP on the common coalitions for BOTH modes (plus the exact FT vector for reference);
- the sign and harm rank of the noise contributor in each mode.

The full study is ``--retrain-coalitions all --ft-seeds 3 --retrain-seeds 3`` with
``--retrain-steps`` = ``train.steps``; on 2 shared CPU cores that takes hours, so smaller runs are labelled
``"reduced": true`` in the JSON together with what was reduced.

Finished evaluations go to a job cache (``--cache``, default ``bench/results/fidelity_jobs.jsonl``,
committed; JSONL keyed by a hash of what each evaluation depends on, the version of the property formulas
included), so a rerun with more seeds runs only the new ones; ``--import-report`` fills it from an earlier
``fidelity.json`` measured with the same formulas. The committed entries were measured before metrics
version 2 (standardised KID, held-out reference) and no longer match: a rerun evaluates them again.

Usage (the run in docs/workers.md, the full protocol; ~1 h on 2 cores from an empty cache)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/fidelity.py --train-steps 800 --retrain-steps 800 \
        --ft-seeds 3 --retrain-seeds 3 --workers 2
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
from contribshap.pipeline.core.metrics import spearman

REPO_ROOT = Path(__file__).resolve().parent.parent
LOWER_IS_BETTER = {"fid", "log_fid", "kid"}
_GAMES: dict[str, object] = {}


def build_config(args: argparse.Namespace):
    """The 6-contributor game config (the demo's game with ``data.classes`` = --classes)."""
    from contribshap.pipeline.config.schema import load_config

    cfg = load_config(args.config)
    raw = cfg.game.model_dump(mode="json")
    raw["data"]["classes"] = list(args.classes)
    if args.train_steps is not None:
        raw["train"]["steps"] = args.train_steps
    raw["finetune"]["retrain_steps"] = args.retrain_steps
    return type(cfg.game).model_validate(raw), cfg.seed


#: job seeds: fine-tune seed k is FT_SEED0 + k, retrain seed k is RETRAIN_SEED0 + k (shared with bench/tuning.py)
FT_SEED0, RETRAIN_SEED0 = 100, 200


def add_game_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`build_config` and the job cache read (shared with ``bench/tuning.py``)."""
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs" / "examples" / "digits_by_class.yaml")
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--artifacts", type=Path, default=REPO_ROOT / "runs" / "bench_fidelity" / "artifacts")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "bench" / "results" / "fidelity_jobs.jsonl",
                        help="finished evaluations (JSONL); a rerun evaluates only what it lacks")
    parser.add_argument("--train-steps", type=int, default=None, help="θ* steps (default: the config's)")
    parser.add_argument("--retrain-steps", type=int, default=1200)


# --- the job cache ------------------------------------------------------------------------------------------
RETRAIN_FIELDS = ("data", "model", "sampling", "properties", "feature_extractor", "reference", "precision")


def job_key(config, mode: str, seed: int) -> str:
    """Hash of everything an evaluation in ``mode`` depends on (so cached jobs are reused exactly when valid).

    ``retrain`` starts from a random init: it depends on the data, model, sampling, properties (extractor,
    reference) and its own optimiser settings, not on θ*, pruning, recovery or the fine-tune K / lr.
    ``sparsified_ft`` / ``ft`` depend on the whole game config. Both depend on the version of the property
    formulas (``contribshap.workers.artifacts.METRICS_VERSION``), so a metric change invalidates cached jobs.
    """
    import hashlib

    from contribshap.workers.artifacts import METRICS_VERSION

    raw = config.model_dump(mode="json")
    if mode == "retrain":
        ft = raw["finetune"]
        keyed = {name: raw[name] for name in RETRAIN_FIELDS}
        keyed["retrain"] = {"steps": config.retrain_steps(), "lr": config.retrain_lr(),
                            **{k: ft[k] for k in ("batch_size", "weight_decay", "warmup_steps", "ema_decay")}}
    else:
        keyed = {k: v for k, v in raw.items() if k != "device"}
        keyed["finetune"] = {k: v for k, v in raw["finetune"].items() if k not in ("retrain_steps", "retrain_lr")}
    keyed.update(mode=mode, seed=seed, metrics_version=METRICS_VERSION)
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]


class JobCache:
    """Append-only JSONL of finished evaluations: one line ``{key, mode, mask, job_seed, values, seconds}``.

    A rerun (more seeds, another variant, after a crash) evaluates only what the cache lacks.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[tuple[str, str, int], dict] = {}
        if path.is_file():
            for number, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    record = json.loads(line)
                    self.records[(record["key"], record["mask"], int(record["job_seed"]))] = record
                except (ValueError, KeyError) as error:
                    print(f"{path}:{number}: unreadable cache line skipped ({error})", file=sys.stderr)

    def get(self, key: str, mask: tuple[bool, ...], job_seed: int) -> dict | None:
        return self.records.get((key, bits(mask), job_seed))

    def add(self, key: str, mode: str, mask: tuple[bool, ...], job_seed: int, values: dict, seconds: float,
            source: str = "run") -> None:
        record = {"key": key, "mode": mode, "mask": bits(mask), "job_seed": job_seed, "values": values,
                  "seconds": seconds, "source": source}
        self.records[(key, record["mask"], job_seed)] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def bits(mask: tuple[bool, ...]) -> str:
    return "".join("1" if b else "0" for b in mask)


def import_report(cache: JobCache, report_path: Path, config, seed: int, prepare_summary: dict) -> dict[str, int]:
    """Import every evaluation of an earlier ``fidelity.json`` into the cache (both modes, every seed).

    The report's settings (classes, θ* steps, fine-tune, sampling) must give the same :func:`job_key` as
    ``config`` in each mode. Fine-tune values also depend on the prepared θ* and recovered model: they are
    imported only when this run's prepare reproduced the report's final training losses exactly (same
    seeds, same thread count), so a machine that trains θ* differently re-evaluates them instead. Seed k of
    the report's list for a mode is job seed ``FT_SEED0 + k`` / ``RETRAIN_SEED0 + k``. A report measured
    with other property formulas (``settings.metrics_version``; absent in reports older than the field) is
    not imported at all. Returns the count imported per mode.
    """
    from contribshap.workers.artifacts import METRICS_VERSION

    report = json.loads(report_path.read_text())
    settings = report["settings"]
    if settings.get("metrics_version") != METRICS_VERSION:
        print(f"{report_path}: measured with metrics version {settings.get('metrics_version', 'unknown')}, this "
              f"code computes version {METRICS_VERSION}; nothing is imported", file=sys.stderr)
        return {}
    raw = config.model_dump(mode="json")
    raw["data"]["classes"] = settings["classes"]
    raw["train"]["steps"] = settings["train_steps"]
    raw["finetune"] = {**settings["finetune"], "retrain_steps": settings["retrain_steps"]}
    raw["sampling"] = settings["sampling"]
    theirs_config = type(config).model_validate(raw)
    same_artifacts = all(
        report["prepare"][stage]["final_loss"] == prepare_summary[stage]["final_loss"]
        for stage in ("theta_star", "recovered"))
    counts: dict[str, int] = {}
    for mode, seed0 in (("retrain", RETRAIN_SEED0), ("sparsified_ft", FT_SEED0)):
        key = job_key(theirs_config, mode, seed)
        if key != job_key(config, mode, seed):
            print(f"{report_path}: its {mode} settings differ from this run's; its {mode} values are not imported",
                  file=sys.stderr)
            continue
        if mode != "retrain" and not same_artifacts:
            print(f"{report_path}: this prepare did not reproduce its θ* / recovery losses; its {mode} values "
                  "are re-evaluated, not imported", file=sys.stderr)
            continue
        counts[mode] = 0
        for mask_bits, per_seed in report["values"][mode].items():
            mask = tuple(c == "1" for c in mask_bits)
            for k, values in enumerate(per_seed):
                if cache.get(key, mask, seed0 + k) is None:
                    cache.add(key, mode, mask, seed0 + k, values, float(report["seconds_per_job"][mode]),
                              source=f"imported from {report_path.name}")
                    counts[mode] += 1
    return counts


def _worker_evaluate(config_json: str, artifacts: str, seed: int, mode: str, mask: tuple[bool, ...], job_seed: int):
    """One evaluation in a worker process (games cached per process and mode)."""
    import torch
    from contribshap.pipeline.config.schema.diffusion import DiffusionGameConfig
    from contribshap.workers.game import DiffusionGame

    torch.set_num_threads(1)
    key = f"{mode}:{config_json}"
    if key not in _GAMES:
        config = DiffusionGameConfig.model_validate_json(config_json)
        config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"mode": mode})})
        _GAMES[key] = DiffusionGame(config, artifacts_dir=Path(artifacts), seed=seed)
    start = time.perf_counter()
    result = _GAMES[key].evaluate(np.array(mask, bool), replicate=0, seed=job_seed)
    return mode, mask, job_seed, result.values, time.perf_counter() - start


def run_jobs(jobs: list[tuple[object, str, tuple[bool, ...], int]], *, artifacts: Path, seed: int, workers: int,
             cache: JobCache, description: str) -> None:
    """Evaluate every ``(config, mode, mask, job_seed)`` the cache lacks on ``workers`` processes."""
    from tqdm.auto import tqdm

    keyed = [(job_key(config, mode, seed), config, mode, mask, job_seed) for config, mode, mask, job_seed in jobs]
    todo = [job for job in keyed if cache.get(job[0], job[3], job[4]) is None]
    todo.sort(key=lambda job: job[2] != "retrain")  # the long ones first
    print(f"{description}: {len(jobs) - len(todo)} of {len(jobs)} evaluations cached, {len(todo)} to run",
          file=sys.stderr)
    if not todo:
        return
    context = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = {pool.submit(_worker_evaluate, config.model_dump_json(), str(artifacts), seed, mode, mask,
                               job_seed): key
                   for key, config, mode, mask, job_seed in todo}
        for done in tqdm(futures.as_completed(pending), total=len(pending), desc=description):
            mode, mask, job_seed, values, wall = done.result()
            cache.add(pending[done], mode, mask, job_seed, values, wall)


def collect(cache: JobCache, config, mode: str, masks: list[tuple[bool, ...]], job_seeds: list[int],
            seed: int) -> dict[tuple[bool, ...], list[dict]]:
    """Cached records per mask (one per job seed found)."""
    key = job_key(config, mode, seed)
    out = {}
    for mask in masks:
        found = [cache.get(key, mask, s) for s in job_seeds]
        out[mask] = [r for r in found if r is not None]
    return out


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


def shapley(masks: np.ndarray, values: np.ndarray, v_empty: float, v_full: float, *, exact: bool) -> np.ndarray:
    from contribshap.pipeline.core.estimators import estimate

    method = "exact_shapley" if exact else "kernelshap"
    return np.asarray(estimate(masks, values, v_empty, v_full, method=method).value)


def harm_rank(phi: np.ndarray, prop: str, player: int) -> int:
    """1 = ``player`` is the most harmful contributor for ``prop`` (largest φ when lower is better)."""
    order = np.argsort(-phi if prop in LOWER_IS_BETTER else phi, kind="stable")
    return int(np.where(order == player)[0][0]) + 1


def shapley_vector(records: dict[tuple[bool, ...], list[dict]], masks: list[tuple[bool, ...]], prop: str,
                   v_empty: float, *, exact: bool, which: int | None = None) -> np.ndarray:
    """Shapley vector from the seed mean (``which`` = None) or from one seed's values (index ``which``)."""
    n = len(masks[0])
    full = tuple([True] * n)

    def value(mask: tuple[bool, ...]) -> float:
        vals = [r["values"][prop] for r in records[mask]]
        return float(np.mean(vals) if which is None else vals[which])

    inner = [m for m in masks if m != full]
    return shapley(np.array(inner, bool), np.array([value(m) for m in inner]), v_empty, value(full), exact=exact)


def mean_pairwise(pairs: list[float]) -> float | None:
    return float(np.mean(pairs)) if pairs else None


def compare(ft: dict, rt: dict, masks: list[tuple[bool, ...]], empty: dict[str, float], properties: list[str],
            noise: int, *, exact: bool) -> dict[str, dict]:
    """Per property: per-coalition and Shapley Spearman (seed means), noise sign/rank, seed-to-seed ceilings."""
    report = {}
    for prop in properties:
        ft_vals = np.array([np.mean([r["values"][prop] for r in ft[m]]) for m in masks])
        rt_vals = np.array([np.mean([r["values"][prop] for r in rt[m]]) for m in masks])
        phi_ft = shapley_vector(ft, masks, prop, empty[prop], exact=exact)
        phi_rt = shapley_vector(rt, masks, prop, empty[prop], exact=exact)
        # seed-to-seed agreement of retraining itself: the ceiling any approximation can reach
        k_rt = min(len(rt[m]) for m in masks)
        per_seed = [np.array([rt[m][a]["values"][prop] for m in masks]) for a in range(k_rt)]
        per_seed_phi = [shapley_vector(rt, masks, prop, empty[prop], exact=exact, which=a) for a in range(k_rt)]
        pairs = list(itertools.combinations(range(k_rt), 2))
        rt_pairs = [spearman(per_seed[a], per_seed[b]) for a, b in pairs]
        rt_phi_pairs = [spearman(per_seed_phi[a], per_seed_phi[b]) for a, b in pairs]
        report[prop] = {
            "per_coalition_spearman": spearman(ft_vals, rt_vals),
            "shapley_spearman": spearman(phi_ft, phi_rt),
            "shapley_method": "exact_shapley" if exact else "kernelshap on the common coalitions",
            "phi_sparsified_ft": phi_ft.tolist(), "phi_retrain": phi_rt.tolist(),
            "noise_sign_ft": float(np.sign(phi_ft[noise])), "noise_sign_retrain": float(np.sign(phi_rt[noise])),
            "noise_harm_rank_ft": harm_rank(phi_ft, prop, noise),
            "noise_harm_rank_retrain": harm_rank(phi_rt, prop, noise),
            "retrain_seed_to_seed_coalition_spearman": mean_pairwise(rt_pairs),
            "retrain_seed_to_seed_shapley_spearman": mean_pairwise(rt_phi_pairs),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_game_arguments(parser)
    parser.add_argument("--import-report", type=Path, default=None,
                        help="an earlier fidelity.json whose evaluations to import into the cache (same settings)")
    parser.add_argument("--ft-seeds", type=int, default=3)
    parser.add_argument("--retrain-seeds", type=int, default=3)
    parser.add_argument("--retrain-coalitions", default="all")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "fidelity.json")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    # 1. Config and prepare (θ*, pruned, recovered, extractor, reference) once, in this process.
    config, seed = build_config(args)
    from contribshap.workers.artifacts import METRICS_VERSION
    from contribshap.workers.game import DiffusionGame

    start = time.perf_counter()
    game = DiffusionGame(config, artifacts_dir=args.artifacts, seed=seed)
    prepare_summary = game.prepare()
    prepare_s = time.perf_counter() - start
    contributors = [c.id for c in game.contributors()]
    n = len(contributors)
    noise = next(i for i, cid in enumerate(contributors) if "noise" in cid)
    properties = list(config.properties)
    cache = JobCache(args.cache)
    if args.import_report is not None:
        counts = import_report(cache, args.import_report, config, seed, prepare_summary)
        print(f"imported from {args.import_report}: {counts}", file=sys.stderr)

    # 2. Jobs: every coalition x FT seeds, the chosen coalitions x retrain seeds (cached ones are skipped).
    all_masks = [tuple(bool(b) for b in bits) for bits in itertools.product([False, True], repeat=n)]
    nonempty = [m for m in all_masks if any(m)]
    retrain_masks = choose_retrain_masks(args.retrain_coalitions, all_masks, n, seed=11)
    ft_seeds = [FT_SEED0 + s for s in range(args.ft_seeds)]
    rt_seeds = [RETRAIN_SEED0 + s for s in range(args.retrain_seeds)]
    jobs = [(config, "retrain", m, s) for s in rt_seeds for m in retrain_masks]
    jobs += [(config, "sparsified_ft", m, s) for s in ft_seeds for m in nonempty]
    run_jobs(jobs, artifacts=args.artifacts, seed=seed, workers=args.workers, cache=cache, description="fidelity jobs")
    empty = game.evaluate(np.zeros(n, bool), replicate=0, seed=0).values

    # 3. Compare per property (seed means; exact Shapley when retrain covers every coalition).
    ft = collect(cache, config, "sparsified_ft", nonempty, ft_seeds, seed)
    rt = collect(cache, config, "retrain", retrain_masks, rt_seeds, seed)
    common = [m for m in retrain_masks if ft[m] and rt[m]]
    exact = len(common) == 2**n - 1
    report_props = compare(ft, rt, common, empty, properties, noise, exact=exact)

    seconds = {mode: [r["seconds"] for by_mask in records.values() for r in by_mask if r["source"] == "run"]
               for mode, records in (("sparsified_ft", ft), ("retrain", rt))}
    reduced = not (args.retrain_coalitions == "all" and args.ft_seeds >= 3 and args.retrain_seeds >= 3
                   and args.retrain_steps >= config.train.steps)
    report = {
        "reduced": reduced,
        "settings": {"classes": args.classes, "contributors": contributors, "ft_seeds": args.ft_seeds,
                     "retrain_seeds": args.retrain_seeds, "retrain_steps": args.retrain_steps,
                     "retrain_coalitions": args.retrain_coalitions, "n_retrain_coalitions": len(retrain_masks),
                     "train_steps": config.train.steps, "finetune": config.finetune.model_dump(mode="json"),
                     "sampling": config.sampling.model_dump(mode="json"), "metrics_version": METRICS_VERSION},
        "prepare_s": prepare_s, "prepare": prepare_summary,
        "seconds_per_job": {mode: float(np.median(s)) if s else None for mode, s in seconds.items()},
        "seconds_per_job_statistic": "median over the evaluations this cache ran itself (not imported ones)",
        "n_evaluations": {"sparsified_ft": sum(len(v) for v in ft.values()),
                          "retrain": sum(len(v) for v in rt.values())},
        "empty_coalition": empty,
        "properties": report_props,
        "values": {mode: {bits(m): [r["values"] for r in by_mask] for m, by_mask in records.items()}
                   for mode, records in (("sparsified_ft", ft), ("retrain", rt))},
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))

    # 4. Table.
    label = "REDUCED" if reduced else "full"
    print(f"\nfidelity ({label}): n = {n}, sparsified_ft on all {2**n - 1} non-empty coalitions x {args.ft_seeds} "
          f"seed(s), retrain {args.retrain_steps} steps on {len(retrain_masks)} coalitions x {args.retrain_seeds} seed(s)")
    per_job = report["seconds_per_job"]
    print("seconds per job (median): " + ", ".join(f"{m} {v:.1f}" for m, v in per_job.items() if v is not None))
    print(f"{'property':16s} {'coalition rho':>13s} {'Shapley rho':>11s} {'noise rank ft/rt':>16s} "
          f"{'retrain seed-seed rho (coal/Shapley)':>37s}")
    for prop, r in report_props.items():
        ceiling = (f"{r['retrain_seed_to_seed_coalition_spearman']:.2f} / {r['retrain_seed_to_seed_shapley_spearman']:.2f}"
                   if r["retrain_seed_to_seed_coalition_spearman"] is not None else "-")
        print(f"{prop:16s} {r['per_coalition_spearman']:13.2f} {r['shapley_spearman']:11.2f} "
              f"{r['noise_harm_rank_ft']:>7d}/{r['noise_harm_rank_retrain']:<8d} {ceiling:>37s}")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
