"""Scenarios with known answers: does the credit come out right where the right answer is known?

Each ``configs/scenarios/<name>.yaml`` is a small digits game (n <= 5 contributors) built so that the
right answer is known by construction (``data.contributors``, see docs/workers.md). Every scenario runs
through the real pipeline (``contribshap.pipeline.products.run.run``: prepare, the exact design with two
replicates per coalition, the store, the reducer's ``exact_shapley``), and the script checks its verdict:

==================  ======================================================================================
twins               |φ_a − φ_twin| inside the combined 95% interval 1.96·sqrt(se_a² + se_twin²), every property
subset              credit(sub) <= credit(a) on every property (credit = φ, or −φ where lower is better)
graded_quality      Spearman(credit, −corruption level) >= 0.9 on fid and on quality
graded_quantity     credit strictly increasing with the number of images on fid (Spearman = 1)
near_duplicates     credit(dups) < credit(genuine) on diversity
off_distribution    noise has the least credit on fid, kid and quality
split_copy          (not in the default list) three variants: ``split`` (c's images under 3 identities, a
                    copier of a), ``unsplit`` (one c), ``merged`` (``data.merge_overlapping``); reports the
                    split identities' summed credit against c's and the copier's credit against a's, with
                    and without the merge; passes when the merge joins exactly a and its copier
==================  ======================================================================================

Every verdict is reported, passed or not, with the Spearman of each property's credit against the
construction's ordering. ``--retrain-seeds K`` (K >= 2) also runs every scenario with
``finetune.mode: retrain`` (``train.steps`` steps from scratch per coalition, run seeds 0..K−1, one
replicate) and reports the retrain verdicts and the retrain seed-to-seed Spearman (the ceiling of any
approximation) next to each figure; at ~40x the cost of a fine-tune job it is not run by default here.
A run adds its scenarios to the JSON (``--out``), keeping the entries of the scenarios it did not run.

**LDS and counterfactuals against retraining** (``--lds``, and after a run of ``graded_quality`` with
retrain seeds): with every coalition of ``graded_quality`` retrained under K seeds, both are lookups. From
the sparsified-FT store it takes every attribution the exact design gives (the default ``exact_shapley``;
``loo``; exact Banzhaf; a ``datamodel`` regression; the references ``planted_indicator`` (−1 for q8, the
most corrupted), ``random`` and ``equal_split`` (coalition size alone)), and scores each against the
retrain seeds: LDS = 100 x Spearman(Σ_{i∈S} φ_i, mean over seeds of v_retrain(S)) over the 30 proper
coalitions and over the 15 without q8, next to the ceilings (Shapley of the retrained seed mean; each
seed's v against the other seeds' mean); and the counterfactuals: remove each method's k = 1, 2 lowest-
(harmful) or highest-credit (helpful) contributors and read the retrained property's relative change over
the full coalition, mean over seeds with a t interval over seeds. Every LDS row is also scored on the
fixed-size protocol (TRAK; Lin et al. 2025): Spearman within the subsets of one size k in
:data:`LDS_SIZES` (all of them, and those without q8), then the mean over the sizes, where the share
(v(N) − v(∅)) / n common to every Shapley value is a constant and cancels (``fixed_size`` per property,
``targets_fixed_size``). Nothing is trained: it reads the stores
(``runs/scenarios/graded_quality[-quick]`` and ``...-retrain-s<seed>``), writes
``bench/results/scenario_lds.json`` (``--lds-out``) and prints the tables.

Usage::

    nice -n 10 .venv/bin/python bench/scenarios.py            # ~25-30 min on 2 shared cores
    nice -n 10 .venv/bin/python bench/scenarios.py --quick    # a few minutes: smaller model budget
    nice -n 10 .venv/bin/python bench/scenarios.py --only twins subset --retrain-seeds 2
    nice -n 10 .venv/bin/python bench/scenarios.py --quick --only graded_quality --retrain-seeds 3  # ~40 min
    nice -n 10 .venv/bin/python bench/scenarios.py --quick --only split_copy  # three games, 112 coalitions
    .venv/bin/python bench/scenarios.py --quick --lds       # rescore from the stores above (~30 s)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from contribshap.pipeline.core.metrics import spearman

REPO_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("twins", "subset", "graded_quality", "graded_quantity", "near_duplicates", "off_distribution")
#: Scenarios run only when named (``--only``).
EXTRA_SCENARIOS = ("split_copy",)
#: split_copy's variants: what each changes in ``data`` of configs/scenarios/split_copy.yaml.
SPLIT_COPY_VARIANTS = ("split", "unsplit", "merged")
LOWER_IS_BETTER = {"fid", "log_fid", "kid"}
#: --quick: the same scenarios with a smaller training budget (numbers are noisier; for a smoke check).
QUICK = {"train": {"steps": 200}, "recover": {"steps": 100}, "finetune": {"steps": 25},
         "sampling": {"n_images": 200, "batch_size": 200}, "feature_extractor": {"steps": 300}}


# --- configs -------------------------------------------------------------------------------------------------
def scenario_config(name: str, *, quick: bool, store_root: Path, mode: str = "sparsified_ft", seed: int = 0,
                    variant: str | None = None):
    """The validated config of scenario ``name`` (``--quick`` overrides, retrain mode, run seed, store;
    ``variant``: one of :data:`SPLIT_COPY_VARIANTS` for split_copy)."""
    from contribshap.pipeline.config.schema import parse_config

    path = REPO_ROOT / "configs" / "scenarios" / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text())
    game = raw["game"]
    if variant == "unsplit":  # c1, c2, c3 -> one c with their images (drawn in the same class rotation)
        specs = game["data"]["contributors"]
        split = [c for c in specs if c["name"] in ("c1", "c2", "c3")]
        at = specs.index(split[0])
        game["data"]["contributors"] = [*specs[:at], {"name": "c", "n_images": sum(c["n_images"] for c in split)},
                                        *[c for c in specs[at:] if c not in split]]
    elif variant == "merged":
        game["data"]["merge_overlapping"] = {"threshold": 0.5}
    if quick:
        for section, values in QUICK.items():
            game[section] = {**game[section], **values}
    suffix = "-quick" if quick else ""
    if mode == "retrain":
        game["finetune"] = {**game["finetune"], "mode": "retrain", "retrain_steps": game["train"]["steps"]}
        raw["replicates"] = {"coalition": 1, "endpoints": 1}
        suffix += f"-retrain-s{seed}"
    raw["seed"] = seed
    if variant is not None:
        suffix += f"-{variant}"
    raw["store"] = str(store_root / f"{name}{suffix}")
    return parse_config(raw, source=str(path))


# --- one run -------------------------------------------------------------------------------------------------
def run_scenario(cfg, *, address: str | None) -> dict[str, Any]:
    """Run ``cfg`` through the driver (resumes a finished store) and reduce: φ, se, CI per property."""
    from contribshap.pipeline.products.reduce import reduce_store
    from contribshap.pipeline.products.run import run
    from contribshap.pipeline.storage.store import Store

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


def split_copy_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the credits do under a split and a copy, with and without ``merge_overlapping``.

    Per property (credit = φ, or −φ where lower is better; ± = 1.96·sqrt(Σ se²), replicate noise only):
    ``split_sum`` = credit(c1) + credit(c2) + credit(c3) in ``split`` against ``unsplit_c`` = credit(c) in
    ``unsplit``; ``copier`` against ``original`` = credit(a) in ``split``; ``pair_unmerged`` = their sum
    against ``merged_pair`` = credit(a+copier) in ``merged``.
    """
    split, unsplit, merged = (results[v] for v in SPLIT_COPY_VARIANTS)

    def value(result: dict[str, Any], prop: str, ids: list[str]) -> dict[str, float | None]:
        at = {cid: j for j, cid in enumerate(result["ids"])}
        se = np.asarray(result["properties"][prop]["stderr"], dtype=float)
        picked = [at[i] for i in ids]
        return {"credit": _round(float(credit(result, prop)[picked].sum())),
                "ci_half_width": _round(1.96 * float(np.sqrt((se[picked] ** 2).sum())))}

    per = {}
    for prop in split["properties"]:
        per[prop] = {"split_sum": value(split, prop, ["c1", "c2", "c3"]), "unsplit_c": value(unsplit, prop, ["c"]),
                     "copier": value(split, prop, ["copier"]), "original": value(split, prop, ["a"]),
                     "pair_unmerged": value(split, prop, ["a", "copier"]),
                     "merged_pair": value(merged, prop, ["a+copier"]) if "a+copier" in merged["ids"] else None,
                     "v_full": {v: _round(results[v]["properties"][prop]["v_full"]) for v in SPLIT_COPY_VARIANTS}}
    expected = ["a+copier", "b", "c1", "c2", "c3"]
    return {"merged_players": merged["ids"], "passed": merged["ids"] == expected,
            "passed_means": f"the merge joins exactly a and its copier: players {expected}", "per_property": per}


def split_copy_table(summary: dict[str, Any]) -> str:
    """Text table of :func:`split_copy_summary` (credit ± replicate half-width)."""
    def cell(v: dict[str, Any] | None) -> str:
        return "-" if not v or v["credit"] is None else f"{v['credit']:.4g} ± {v['ci_half_width'] or 0:.2g}"

    cols = ("split_sum", "unsplit_c", "copier", "original", "pair_unmerged", "merged_pair")
    lines = ["property  " + "  ".join(f"{c:>18}" for c in cols)]
    for prop, row in summary["per_property"].items():
        lines.append(f"{prop:<9} " + "  ".join(f"{cell(row[c]):>18}" for c in cols))
    return "\n".join(lines)


def run_split_copy(*, quick: bool, store_root: Path, address: str | None) -> dict[str, Any]:
    """The three variants of split_copy, each through the real pipeline, and their summary."""
    results = {v: run_scenario(scenario_config("split_copy", quick=quick, store_root=store_root, variant=v),
                               address=address) for v in SPLIT_COPY_VARIANTS}
    summary = split_copy_summary(results)
    print(split_copy_table(summary), flush=True)
    return {"config": "configs/scenarios/split_copy.yaml", "variants": results, "verdict": summary}


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


# --- LDS and counterfactuals against multi-seed retraining ---------------------------------------------------
#: The scenario the LDS / counterfactual study runs on, and its planted (most corrupted) contributor.
LDS_SCENARIO, LDS_PLANTED = "graded_quality", "q8"
#: Attributions from the sparsified-FT store, in table order; the ceilings come from the retrain stores.
LDS_METHODS = ("shapley", "kernelshap", "loo", "banzhaf", "datamodel", "planted_indicator", "random", "equal_split")
LDS_BASELINES = ("loo", "banzhaf", "datamodel", "planted_indicator", "random")
LDS_TABLE = tuple(m for m in LDS_METHODS if m != "kernelshap")  # the same fit as shapley on the exact design
LDS_COUNTERFACTUAL = tuple(m for m in LDS_TABLE if m != "equal_split")
LDS_TARGET = 60.0
#: Fixed-size LDS (the protocol of TRAK, Park et al. 2023, and Lin et al. 2025): the subsets of one size k
#: (a fixed fraction alpha = k/n of the contributors; 0.4 and 0.6 of n = 5), Spearman within that size.
LDS_SIZES = (2, 3)
_RANDOM_SALT = 0x52414E44  # the salt `contribshap evaluate` seeds its random reference with


def all_masks(n: int) -> np.ndarray:
    """Every coalition of n players, bool (2^n, n), in binary order of the mask string ("00000", "00001", ...)."""
    return np.array([[c == "1" for c in format(j, f"0{n}b")] for j in range(2**n)], dtype=bool).reshape(2**n, n)


def _key(mask: np.ndarray) -> str:
    return "".join("1" if b else "0" for b in np.asarray(mask, dtype=bool))


def store_rows(root: Path) -> tuple[list[str], np.ndarray, dict[str, np.ndarray]]:
    """Every ok evaluation of a store's main game: contributor ids, masks (m, n) (replicates as rows), values."""
    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.storage.store import Store

    store = Store(root)
    manifest = store.read_manifest()
    ids = [c["id"] for c in manifest["contributors"]]
    rows = [r for r in store.scan(manifest["config_hash"], update_index=False, warn=False).rows if r["status"] == "ok"]
    props = list(manifest.get("property_names") or [])
    masks = np.array([mask_from_str(r["mask"]) for r in rows], dtype=bool).reshape(len(rows), len(ids))
    values = {p: np.array([float(r[p]) if r.get(p) is not None else math.nan for r in rows]) for p in props}
    return ids, masks, values


def coalition_values(masks: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean value of every coalition (2^n,), in :func:`all_masks` order (NaN where none was evaluated)."""
    index = {_key(m): j for j, m in enumerate(all_masks(n))}
    total, count = np.zeros(2**n), np.zeros(2**n)
    for mask, value in zip(masks, values, strict=True):
        if math.isfinite(value):
            total[index[_key(mask)]] += value
            count[index[_key(mask)]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def attributions(masks: np.ndarray, values: np.ndarray, *, planted: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Every attribution one property's exact-design rows give: :data:`LDS_METHODS` -> φ (n,).

    ``masks`` (m, n) / ``values`` (m,) hold every evaluation, replicates and endpoints included (the
    endpoints' means are v(∅), v(N)). ``shapley`` is the default (``exact_shapley``; ``kernelshap`` on the
    exact design is the same fit); ``banzhaf`` is ``banzhaf_msr`` with the endpoints, i.e. the exact Banzhaf
    value on all coalitions; ``planted_indicator`` is −1 for the planted contributor, 0 otherwise, oriented
    on these rows (:func:`contribshap.pipeline.core.metrics.orient`); ``random`` is seeded as ``evaluate``'s;
    ``equal_split`` gives everyone (v(N) − v(∅)) / n, so its sums rank coalitions by size alone (how much
    of an LDS the coalition size explains).
    """
    import warnings

    from contribshap.pipeline.core.estimators import estimate
    from contribshap.pipeline.core.metrics import orient

    n = masks.shape[1]
    sizes = masks.sum(axis=1)
    v_empty = float(np.nanmean(values[sizes == 0]))
    v_full = float(np.nanmean(values[sizes == n]))
    out: dict[str, np.ndarray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, method, options in (("shapley", "exact_shapley", {}), ("kernelshap", "kernelshap", {}),
                                      ("loo", "loo", {}), ("banzhaf", "banzhaf_msr", {"include_endpoints": True}),
                                      ("datamodel", "datamodel", {})):
            out[name] = np.asarray(estimate(masks, values, v_empty, v_full, method=method, seed=seed,
                                            **options).value, dtype=float)
    if planted is not None:
        indicator = np.zeros(n)
        indicator[planted] = -1.0
        inner = (sizes > 0) & (sizes < n)
        out["planted_indicator"] = orient(indicator, masks[inner], values[inner])[0]
    out["random"] = np.random.default_rng(np.random.SeedSequence([seed, _RANDOM_SALT])).normal(size=n)
    out["equal_split"] = np.full(n, (v_full - v_empty) / n)
    return out


def lds_cells(subsets: np.ndarray, retrain: np.ndarray, scores: dict[str, np.ndarray], stratum: np.ndarray,
              *, seed: int = 0, n_bootstrap: int = 1000) -> dict[str, dict[str, Any]]:
    """LDS (x100, bootstrap CI over subsets and seeds) of every attribution, on all subsets and on ``stratum``.

    ``subsets`` (m, n) bool, ``retrain`` (s, m) the retrained value of each subset under s seeds, ``stratum``
    (m,) bool. Returns method -> {"all": LdsResult dict, "stratum": LdsResult dict}.
    """
    from contribshap.pipeline.core.metrics import lds_score

    out: dict[str, dict[str, Any]] = {}
    for method, phi in scores.items():
        out[method] = {part: lds_score(subsets[rows], phi, retrain[:, rows], seed=seed,
                                       n_bootstrap=n_bootstrap).to_dict()
                       for part, rows in (("all", np.ones(len(subsets), bool)), ("stratum", stratum))}
    return out


def fixed_size_lds(subsets: np.ndarray, phi: np.ndarray, retrain: np.ndarray, *,
                   sizes: tuple[int, ...] = LDS_SIZES, seed: int = 0, n_bootstrap: int = 1000,
                   level: float = 0.95) -> dict[str, Any]:
    """Fixed-size LDS (x100): Spearman within each subset size k in ``sizes``, then the mean over the sizes.

    Within one size every Σ_{i∈S} φ_i carries the same k·c of a share c common to all φ_i, so a common
    share cancels (the all-sizes LDS of :func:`lds_cells` ranks it with |S|). ``subsets`` (m, n) bool,
    ``phi`` (n,), ``retrain`` (s, m). Per size, the point value and ``per_seed`` are
    :func:`contribshap.pipeline.core.metrics.lds_score`'s on the subsets of that size (NaN under 3 subsets or
    constant sums); the mean is NaN when a size is. The CIs come from one bootstrap with ``lds_score``'s
    resampling (seeds and subsets with replacement, percentile interval, NaN resamples skipped): each
    resample draws the seeds once and the subsets within each size, and gives every size's LDS and their
    mean. Returns ``{"value", "ci_low", "ci_high", "per_seed", "n_subsets", "n_seeds", "level",
    "by_size": {str(k): {"value", "ci_low", "ci_high", "per_seed", "n_subsets"}}}``.
    """
    subsets = np.asarray(subsets, dtype=bool)
    retrain = np.atleast_2d(np.asarray(retrain, dtype=float))
    sums = subsets.astype(float) @ np.asarray(phi, dtype=float)
    s = retrain.shape[0]
    rows = {k: np.flatnonzero(subsets.sum(axis=1) == k) for k in sizes}

    def _stat(k: int, idx: np.ndarray, seed_idx: np.ndarray) -> float:
        if len(rows[k]) < 3:
            return math.nan
        cols = rows[k][idx]
        return 100.0 * spearman(sums[cols], retrain[np.ix_(seed_idx, cols)].mean(axis=0))

    all_seeds = np.arange(s)
    point = {k: _stat(k, np.arange(len(rows[k])), all_seeds) for k in sizes}
    per_seed = {k: [_stat(k, np.arange(len(rows[k])), np.array([j])) for j in range(s)] for k in sizes}
    # the bootstrap, vectorised over resamples: seed draws as weights (B, s), subset draws per size (B, m_k)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, s, (n_bootstrap, s)) if s > 1 else np.zeros((n_bootstrap, 1), int)
    weights = np.stack([np.bincount(d, minlength=s) for d in seed_draws]) / seed_draws.shape[1]
    boot = np.full((n_bootstrap, len(sizes)), math.nan)
    for j, k in enumerate(sizes):
        m_k = len(rows[k])
        if m_k < 3:
            continue
        idx = rng.integers(0, m_k, (n_bootstrap, m_k))
        means = weights @ retrain[:, rows[k]]  # (B, m_k): each resample's seed mean of every subset of size k
        boot[:, j] = 100.0 * _spearman_rows(sums[rows[k]][idx], np.take_along_axis(means, idx, axis=1))

    def _ci(draws: np.ndarray) -> tuple[float, float]:
        draws = draws[np.isfinite(draws)]
        if len(draws) < max(10, n_bootstrap // 10):
            return math.nan, math.nan
        lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
        return float(lo), float(hi)

    by_size = {}
    for j, k in enumerate(sizes):
        lo, hi = _ci(boot[:, j])
        by_size[str(k)] = {"value": float(point[k]), "ci_low": lo, "ci_high": hi,
                           "per_seed": [float(v) for v in per_seed[k]], "n_subsets": len(rows[k])}
    lo, hi = _ci(boot.mean(axis=1))
    return {"value": float(np.mean([point[k] for k in sizes])), "ci_low": lo, "ci_high": hi,
            "per_seed": [float(np.mean([per_seed[k][j] for k in sizes])) for j in range(s)],
            "n_subsets": int(sum(len(r) for r in rows.values())), "n_seeds": s, "level": level,
            "sizes": list(sizes), "by_size": by_size}


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise :func:`spearman` of two (B, m) arrays (average ranks for ties; NaN where a row is constant)."""
    from scipy import stats

    rx, ry = stats.rankdata(x, axis=1), stats.rankdata(y, axis=1)
    rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / np.where(denom > 0, denom, 1.0), math.nan)


def fixed_size_cells(subsets: np.ndarray, retrain: np.ndarray, scores: dict[str, np.ndarray], stratum: np.ndarray,
                     *, sizes: tuple[int, ...] = LDS_SIZES, seed: int = 0,
                     n_bootstrap: int = 1000) -> dict[str, dict[str, Any]]:
    """:func:`fixed_size_lds` of every attribution on all subsets and on ``stratum``, as :func:`lds_cells`."""
    return {method: {part: fixed_size_lds(subsets[rows], phi, retrain[:, rows], sizes=sizes, seed=seed,
                                          n_bootstrap=n_bootstrap)
                     for part, rows in (("all", np.ones(len(subsets), bool)), ("stratum", stratum))}
            for method, phi in scores.items()}


def size_mean(by_size: dict[int, float]) -> dict[str, Any]:
    """A statistic computed within each subset size -> ``{"value": mean over the sizes, "by_size"}``."""
    return {"value": float(np.mean(list(by_size.values()))), "by_size": {str(k): float(v) for k, v in by_size.items()}}


def seed_to_seed_lds(retrain: np.ndarray) -> dict[str, Any]:
    """Noise ceiling: 100 x Spearman(v_seed(S), mean of the other seeds' v(S)), per seed and its mean."""
    per = []
    for j in range(retrain.shape[0]):
        others = np.delete(retrain, j, axis=0).mean(axis=0)
        per.append(100.0 * spearman(retrain[j], others))
    return {"value": float(np.mean(per)), "per_seed": per}


def counterfactual(credit_scores: np.ndarray, k: int, retrain_all: np.ndarray, prop: str, *, helpful: bool,
                   level: float = 0.95) -> dict[str, Any]:
    """Remove the k lowest-credit (``helpful=False``) or k highest-credit contributors and look the rest up.

    ``credit_scores`` (n,) in the direction of better (−φ where lower is better); ``retrain_all`` (s, 2^n)
    the retrained value of every coalition (:func:`all_masks` order) per seed. Returns the removed indices
    and the relative change of the property over the full coalition in the direction of better
    (``improvement``, mean over seeds with a t interval over seeds; for the helpful removal the ``drop`` is
    its negation), from :func:`contribshap.pipeline.core.metrics.relative_change`.
    """
    from contribshap.pipeline.core.metrics import counterfactual_sets, relative_change, removal_mask

    n = len(credit_scores)
    top, bottom = counterfactual_sets(credit_scores, k / n)
    removed = top if helpful else bottom
    index = {_key(m): j for j, m in enumerate(all_masks(n))}
    after = retrain_all[:, index[_key(removal_mask(n, removed))]]
    full = retrain_all[:, index["1" * n]]
    change = relative_change(after, full, level=level)
    sign = -1.0 if prop in LOWER_IS_BETTER else 1.0
    lo, hi = sorted((sign * change["ci_low"], sign * change["ci_high"]))
    better = {"value": sign * change["value"], "ci_low": lo, "ci_high": hi, "n_seeds": change["n_seeds"]}
    out: dict[str, Any] = {"removed": [int(i) for i in removed]}
    if helpful:
        out["drop"] = {"value": -better["value"], "ci_low": -better["ci_high"], "ci_high": -better["ci_low"],
                       "n_seeds": better["n_seeds"]}
    else:
        out["improvement"] = better
    return out


def best_removal(retrain_all: np.ndarray, k: int, prop: str) -> list[int]:
    """The k contributors whose removal improves the retrained seed mean most (the hindsight optimum)."""
    import itertools

    n = retrain_all.shape[1].bit_length() - 1
    index = {_key(m): j for j, m in enumerate(all_masks(n))}
    mean = retrain_all.mean(axis=0)
    sign = -1.0 if prop in LOWER_IS_BETTER else 1.0
    best = max(itertools.combinations(range(n), k),
               key=lambda gone: sign * mean[index[_key([i not in gone for i in range(n)])]])
    return list(best)


def _credit_of(phi: np.ndarray, prop: str) -> np.ndarray:
    return -phi if prop in LOWER_IS_BETTER else phi


def lds_study(ft: tuple[list[str], np.ndarray, dict[str, np.ndarray]],
              seeds: list[tuple[list[str], np.ndarray, dict[str, np.ndarray]]], *, planted: str,
              props: list[str] | None = None, ks: tuple[int, ...] = (1, 2), seed: int = 0,
              n_bootstrap: int = 1000, sizes: tuple[int, ...] = LDS_SIZES) -> dict[str, Any]:
    """LDS and counterfactuals of every FT attribution against the retrain seeds (pure: rows in, dict out).

    ``ft`` and each of ``seeds`` are :func:`store_rows` triples (ids, masks, values) of the sparsified-FT
    store and of one retrain store; every retrain store must hold every coalition. Each property's
    ``lds`` scores all proper coalitions at once (sizes mixed); its ``fixed_size`` block holds the same
    rows on the fixed-size protocol (:func:`fixed_size_lds` over ``sizes``), and ``targets_fixed_size``
    the targets on it.
    """
    ids, ft_masks, ft_values = ft
    n = len(ids)
    for other_ids, _, _ in seeds:
        if other_ids != ids:
            raise ValueError(f"retrain store contributors {other_ids} differ from the FT store's {ids}")
    p = ids.index(planted)
    masks = all_masks(n)
    proper = (masks.sum(axis=1) > 0) & (masks.sum(axis=1) < n)
    subsets = masks[proper]
    from contribshap.pipeline.core.metrics import without_members

    stratum = without_members(subsets, [p])
    props = props or [q for q in ft_values if all(q in s[2] for s in seeds)]
    sub_sizes = subsets.sum(axis=1)
    #: the fixed-size protocol's cells: part -> size -> the subsets of that size in that part (bool (m,))
    within = {part: {k: rows & (sub_sizes == k) for k in sizes}
              for part, rows in (("all", np.ones(len(subsets), bool)), ("stratum", stratum))}
    doc: dict[str, Any] = {"ids": ids, "planted": planted, "n_seeds": len(seeds),
                           "n_subsets": {"all": int(proper.sum()), "stratum": int(stratum.sum())},
                           "fixed_size": {"sizes": list(sizes), "alpha": [k / n for k in sizes], "n_subsets": {
                               part: {str(k): int(sel.sum()) for k, sel in cut.items()}
                               for part, cut in within.items()}},
                           "properties": {}}
    for prop in props:
        retrain_all = np.array([coalition_values(m, v[prop], n) for _, m, v in seeds])
        if np.isnan(retrain_all).any():
            missing = int(np.isnan(retrain_all).any(axis=0).sum())
            raise ValueError(f"{prop}: {missing} coalition(s) lack a retrained value in some seed")
        retrain = retrain_all[:, proper]
        scores = attributions(ft_masks, ft_values[prop], planted=p, seed=seed)
        # the ceilings: Shapley of the retrained seed mean (in sample), and of each seed alone vs the others
        rt_masks = np.concatenate([masks] * len(seeds))
        rt_values = retrain_all.reshape(-1)
        retrain_phi = attributions(rt_masks, rt_values, planted=None, seed=seed)["shapley"]
        # diagnostic: the default without its common share (v(N) − v(∅)) / n, the part that only counts |S|
        centred = scores["shapley"] - scores["shapley"].mean()
        every = {**scores, "retrain_shapley": retrain_phi, "shapley_centred": centred}
        cells = lds_cells(subsets, retrain, every, stratum, seed=seed, n_bootstrap=n_bootstrap)
        cross, cross_fixed = [], []
        for j in range(len(seeds)):
            phi_j = attributions(masks, retrain_all[j], planted=None, seed=seed)["shapley"]
            others = np.delete(retrain, j, axis=0)
            cross.append({"all": 100.0 * spearman(subsets.astype(float) @ phi_j, others.mean(axis=0)),
                          "stratum": 100.0 * spearman(subsets[stratum].astype(float) @ phi_j,
                                                      others[:, stratum].mean(axis=0))})
            cross_fixed.append({part: {k: 100.0 * spearman(subsets[sel].astype(float) @ phi_j,
                                                            others[:, sel].mean(axis=0))
                                       for k, sel in cut.items()} for part, cut in within.items()})
        ft_mean = coalition_values(ft_masks, ft_values[prop], n)[proper]
        own = subsets.astype(float) @ scores["shapley"]
        fixed: dict[str, Any] = {
            "lds": fixed_size_cells(subsets, retrain, every, stratum, sizes=sizes, seed=seed, n_bootstrap=n_bootstrap),
            "seed_to_seed": {part: size_mean({k: seed_to_seed_lds(retrain[:, sel])["value"] for k, sel in cut.items()})
                             for part, cut in within.items()},
            "retrain_shapley_other_seeds": {part: size_mean({k: float(np.mean([c[part][k] for c in cross_fixed]))
                                                             for k in sizes}) for part in within},
            "ft_vs_retrain_spearman": {part: size_mean({k: 100.0 * spearman(ft_mean[sel], retrain.mean(axis=0)[sel])
                                                        for k, sel in cut.items()}) for part, cut in within.items()},
            "shapley_vs_ft_values": {part: size_mean({k: 100.0 * spearman(own[sel], ft_mean[sel])
                                                      for k, sel in cut.items()}) for part, cut in within.items()},
        }
        entry: dict[str, Any] = {
            "phi": {m: v.tolist() for m, v in {**scores, "retrain_shapley": retrain_phi}.items()},
            "kernelshap_max_abs_diff": float(np.max(np.abs(scores["kernelshap"] - scores["shapley"]))),
            "lds": cells,
            "seed_to_seed": {"all": seed_to_seed_lds(retrain), "stratum": seed_to_seed_lds(retrain[:, stratum])},
            "retrain_shapley_other_seeds": {
                "all": float(np.mean([c["all"] for c in cross])),
                "stratum": float(np.mean([c["stratum"] for c in cross])), "per_seed": cross},
            "ft_vs_retrain_spearman": {"all": 100.0 * spearman(ft_mean, retrain.mean(axis=0)),
                                       "stratum": 100.0 * spearman(ft_mean[stratum],
                                                                   retrain.mean(axis=0)[stratum])},
            # the default scored against the FT values it was computed from (no retraining involved)
            "shapley_vs_ft_values": {"all": 100.0 * spearman(own, ft_mean),
                                     "stratum": 100.0 * spearman(own[stratum], ft_mean[stratum])},
            "fixed_size": fixed,
            "counterfactuals": {},
        }
        for k in ks:
            per: dict[str, Any] = {}
            for method, phi in {**scores, "retrain_shapley": retrain_phi}.items():
                if method == "equal_split":  # all tied: the removed set would be the index tie-break
                    continue
                credit_k = _credit_of(phi, prop)
                per[method] = {"harmful": counterfactual(credit_k, k, retrain_all, prop, helpful=False),
                               "helpful": counterfactual(credit_k, k, retrain_all, prop, helpful=True)}
            gone = best_removal(retrain_all, k, prop)
            oracle = np.zeros(n)
            oracle[gone] = -1.0
            per["hindsight_best"] = {"harmful": counterfactual(oracle, k, retrain_all, prop, helpful=False)}
            entry["counterfactuals"][str(k)] = per
        doc["properties"][prop] = entry
    doc["targets"] = lds_targets(doc)
    doc["targets_fixed_size"] = lds_targets(doc, fixed_size=True)
    return doc


def lds_targets(doc: dict[str, Any], props: tuple[str, ...] = ("fid", "quality"), *,
                fixed_size: bool = False) -> dict[str, Any]:
    """The stated targets, cell by cell: default LDS >= 60 without the planted contributor; the default's
    LDS the best among the baselines; its top-k harmful removal the largest improvement (ties when the
    same set is removed). ``fixed_size``: the two LDS targets on the fixed-size LDS (mean over the sizes,
    each size's value alongside); the counterfactuals do not depend on the protocol and are left out."""
    out: dict[str, Any] = {"lds_min": {}, "lds_best": {}}
    if not fixed_size:
        out["counterfactual_best"] = {}
    for prop in props:
        if prop not in doc["properties"]:
            continue
        entry = doc["properties"][prop]
        lds = entry["fixed_size"]["lds"] if fixed_size else entry["lds"]
        ours = lds["shapley"]["stratum"]["value"]
        out["lds_min"][prop] = {"value": _round(ours), "target": LDS_TARGET, "margin": _round(ours - LDS_TARGET),
                                "passed": bool(math.isfinite(ours) and ours >= LDS_TARGET)}
        if fixed_size:
            out["lds_min"][prop]["by_size"] = {k: _round(c["value"])
                                               for k, c in lds["shapley"]["stratum"]["by_size"].items()}
        for part in ("all", "stratum"):
            mine = lds["shapley"][part]["value"]
            rivals = {b: lds[b][part]["value"] for b in LDS_BASELINES if math.isfinite(lds[b][part]["value"])}
            if not rivals:  # e.g. a size with under 3 subsets in the stratum: nothing to compare
                out["lds_best"][f"{prop}/{part}"] = {"shapley": _round(mine), "best_baseline": None,
                                                     "baseline": None, "margin": None, "passed": None}
                continue
            best_rival = max(rivals, key=rivals.get)
            out["lds_best"][f"{prop}/{part}"] = {
                "shapley": _round(mine), "best_baseline": best_rival, "baseline": _round(rivals[best_rival]),
                "margin": _round(mine - rivals[best_rival]), "passed": bool(mine >= rivals[best_rival]),
                "margin_vs_equal_split": _round(mine - lds["equal_split"][part]["value"])}
        if fixed_size:
            continue
        for k, per in entry["counterfactuals"].items():
            mine = per["shapley"]["harmful"]
            rows = {}
            for b in LDS_BASELINES:
                theirs = per[b]["harmful"]
                tie = theirs["removed"] == mine["removed"]
                margin = mine["improvement"]["value"] - theirs["improvement"]["value"]
                rows[b] = {"margin": _round(margin), "tie": tie, "passed": bool(tie or margin > 0)}
            out["counterfactual_best"][f"{prop}/k={k}"] = {
                "rivals": rows, "passed": all(r["passed"] for r in rows.values()),
                "strict": all(r["margin"] is not None and r["margin"] > 0 and not r["tie"] for r in rows.values())}
    return out


def lds_seed_stores(name: str, *, quick: bool, store_root: Path, max_seeds: int | None = None) -> list[Path]:
    """The retrain stores of ``name`` that exist, seed 0, 1, ... until the first missing one."""
    found = []
    while max_seeds is None or len(found) < max_seeds:
        path = Path(scenario_config(name, quick=quick, store_root=store_root, mode="retrain", seed=len(found)).store)
        if not (path / "manifest.json").is_file():
            break
        found.append(path)
    return found


def _fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _interval(cell: dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
    return (f"{_fmt(scale * cell['value'], digits)} [{_fmt(scale * cell['ci_low'], digits)}, "
            f"{_fmt(scale * cell['ci_high'], digits)}]")


def lds_tables(doc: dict[str, Any]) -> str:
    """Markdown tables of an :func:`lds_study` document: LDS per method x property x {all, without planted},
    then the counterfactuals (fid and quality)."""
    props = list(doc["properties"])
    planted = doc["planted"]
    head = "| method | " + " | ".join(f"{p} all | {p} w/o {planted}" for p in props) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(props))]
    for method in (*LDS_TABLE, "retrain_shapley"):
        cells = []
        for p in props:
            for part in ("all", "stratum"):
                cells.append(_fmt(doc["properties"][p]["lds"][method][part]["value"]))
        label = {"shapley": "shapley (default)", "retrain_shapley": "retrain Shapley (ceiling, in sample)"}.get(
            method, method)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (("shapley minus its common share (diagnostic)", None),
                       ("shapley scored on its own FT values (diagnostic)", "shapley_vs_ft_values"),
                       ("retrain Shapley of one seed vs the others", "retrain_shapley_other_seeds"),
                       ("retrain seed-to-seed (noise ceiling)", "seed_to_seed"),
                       ("FT vs retrain per coalition (Spearman x100)", "ft_vs_retrain_spearman")):
        cells = []
        for p in props:
            for part in ("all", "stratum"):
                if key is None:
                    cells.append(_fmt(doc["properties"][p]["lds"]["shapley_centred"][part]["value"]))
                    continue
                block = doc["properties"][p][key][part]
                cells.append(_fmt(block["value"] if isinstance(block, dict) else block))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ids = doc["ids"]
    cf_props = [p for p in ("fid", "quality") if p in doc["properties"]]
    lines += ["", "| method | k | " + " | ".join(f"{p} removed harmful | {p} improvement % | {p} removed helpful | "
                                                 f"{p} drop %" for p in cf_props) + " |",
              "|---|---:|" + "---|---:|---|---:|" * len(cf_props)]
    ks = list(doc["properties"][cf_props[0]]["counterfactuals"]) if cf_props else []
    for k in ks:
        for method in (*LDS_COUNTERFACTUAL, "retrain_shapley", "hindsight_best"):
            cells = []
            for p in cf_props:
                per = doc["properties"][p]["counterfactuals"][k][method]
                harm = per["harmful"]
                cells += ["{" + ",".join(ids[i] for i in harm["removed"]) + "}", _interval(harm["improvement"], 100)]
                if "helpful" in per:
                    cells += ["{" + ",".join(ids[i] for i in per["helpful"]["removed"]) + "}",
                              _interval(per["helpful"]["drop"], 100)]
                else:
                    cells += ["", ""]
            lines.append(f"| {method} | {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fixed_size_tables(doc: dict[str, Any], props: list[str] | None = None) -> str:
    """Markdown tables of the fixed-size LDS of an :func:`lds_study` document: the mean over the sizes per
    method x property x {all, without planted} (the rows of :func:`lds_tables`), then each size alone."""
    props = props or list(doc["properties"])
    planted = doc["planted"]
    sizes = [str(k) for k in doc["fixed_size"]["sizes"]]
    labels = {"shapley": "shapley (default)", "retrain_shapley": "retrain Shapley (ceiling, in sample)",
              "shapley_centred": "shapley minus its common share (diagnostic)"}
    methods = (*LDS_TABLE, "retrain_shapley", "shapley_centred")
    diagnostics = (("shapley scored on its own FT values (diagnostic)", "shapley_vs_ft_values"),
                   ("retrain Shapley of one seed vs the others", "retrain_shapley_other_seeds"),
                   ("retrain seed-to-seed (noise ceiling)", "seed_to_seed"),
                   ("FT vs retrain per coalition (Spearman x100)", "ft_vs_retrain_spearman"))
    lines = ["| method | " + " | ".join(f"{p} all | {p} w/o {planted}" for p in props) + " |",
             "|---|" + "---:|" * (2 * len(props))]
    for method in methods:
        cells = [_fmt(doc["properties"][p]["fixed_size"]["lds"][method][part]["value"])
                 for p in props for part in ("all", "stratum")]
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    for label, key in diagnostics:
        cells = [_fmt(doc["properties"][p]["fixed_size"][key][part]["value"]) for p in props
                 for part in ("all", "stratum")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| method | " + " | ".join(f"{p} k={k} {'all' if part == 'all' else f'w/o {planted}'}"
                                             for p in props for part in ("all", "stratum") for k in sizes) + " |",
              "|---|" + "---:|" * (2 * len(props) * len(sizes))]
    for method in methods:
        cells = [_fmt(doc["properties"][p]["fixed_size"]["lds"][method][part]["by_size"][k]["value"])
                 for p in props for part in ("all", "stratum") for k in sizes]
        lines.append(f"| {labels.get(method, method)} | " + " | ".join(cells) + " |")
    for label, key in diagnostics:
        cells = [_fmt(doc["properties"][p]["fixed_size"][key][part]["by_size"][k]) for p in props
                 for part in ("all", "stratum") for k in sizes]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_lds(*, quick: bool, store_root: Path, out: Path, max_seeds: int | None = None) -> dict[str, Any]:
    """Score :data:`LDS_SCENARIO` from its stores (no training): write ``out`` and print the tables."""
    ft_store = Path(scenario_config(LDS_SCENARIO, quick=quick, store_root=store_root).store)
    seed_stores, seed_rows = [], []
    for path in lds_seed_stores(LDS_SCENARIO, quick=quick, store_root=store_root, max_seeds=max_seeds):
        rows = store_rows(path)
        done = np.isfinite(coalition_values(rows[1], next(iter(rows[2].values())), len(rows[0]))).sum()
        if done < 2 ** len(rows[0]):  # a seed still running (or stopped): use the seeds before it
            print(f"{path}: {done} of {2 ** len(rows[0])} coalitions retrained; it and later seeds are left out",
                  file=sys.stderr)
            break
        seed_stores.append(path)
        seed_rows.append(rows)
    if not (ft_store / "manifest.json").is_file() or len(seed_stores) < 2:
        raise SystemExit(f"--lds needs the store {ft_store} and at least 2 retrain stores next to it "
                         f"(found {len(seed_stores)}); run `bench/scenarios.py --only {LDS_SCENARIO} "
                         f"--retrain-seeds 3{' --quick' if quick else ''}` first")
    doc = lds_study(store_rows(ft_store), seed_rows, planted=LDS_PLANTED)
    doc = {"scenario": LDS_SCENARIO, "quick": quick, "ft_store": str(ft_store.relative_to(REPO_ROOT))
           if ft_store.is_relative_to(REPO_ROOT) else str(ft_store),
           "retrain_stores": [str(s.relative_to(REPO_ROOT)) if s.is_relative_to(REPO_ROOT) else str(s)
                              for s in seed_stores], **doc}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(_finite(doc), indent=1) + "\n")
    print(f"{LDS_SCENARIO}: LDS x100 against {len(seed_stores)} retrain seeds "
          f"({'quick' if quick else 'full'} budget); w/o {LDS_PLANTED}: the subsets without it")
    print(lds_tables(doc))
    print(json.dumps(doc["targets"], indent=1))
    counts = doc["fixed_size"]["n_subsets"]
    print(f"\nfixed-size LDS x100: Spearman within each size k = {doc['fixed_size']['sizes']} "
          f"({counts['all']} subsets; w/o {LDS_PLANTED}: {counts['stratum']}), then the mean over the sizes")
    print(fixed_size_tables(doc))
    print(json.dumps(doc["targets_fixed_size"], indent=1))
    print(f"wrote {out}")
    return doc


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    return obj


# --- main ----------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller training budget (a few minutes)")
    parser.add_argument("--only", nargs="+", choices=(*SCENARIOS, *EXTRA_SCENARIOS), default=list(SCENARIOS))
    parser.add_argument("--retrain-seeds", type=int, default=0, help="also retrain with this many run seeds (>= 2)")
    parser.add_argument("--store-root", type=Path, default=REPO_ROOT / "runs" / "scenarios")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default bench/results/scenarios.json, --quick: scenarios_quick.json)")
    parser.add_argument("--address", default=None, help="a Ray cluster to join (default: one local instance)")
    parser.add_argument("--rescore", action="store_true",
                        help="recompute the verdicts of the existing JSON (--out) without running anything")
    parser.add_argument("--lds", action="store_true",
                        help=f"score {LDS_SCENARIO} from its stores (FT + retrain seeds) without running anything: "
                             "LDS and counterfactuals of every attribution against retraining")
    parser.add_argument("--lds-seeds", type=int, default=None, help="--lds: use at most this many retrain seeds")
    parser.add_argument("--lds-out", type=Path, default=REPO_ROOT / "bench" / "results" / "scenario_lds.json")
    args = parser.parse_args(argv)
    if args.retrain_seeds == 1:
        parser.error("--retrain-seeds needs 0 or >= 2 seeds (a ceiling is a seed-to-seed agreement)")
    out = args.out or REPO_ROOT / "bench" / "results" / ("scenarios_quick.json" if args.quick else "scenarios.json")
    if args.lds:
        run_lds(quick=args.quick, store_root=args.store_root, out=args.lds_out, max_seeds=args.lds_seeds)
        return 0
    if args.rescore:
        report = json.loads(out.read_text())
        for name, entry in report["scenarios"].items():
            if name == "split_copy":
                entry["verdict"] = split_copy_summary(entry["variants"])
                continue
            result = {k: v for k, v in entry["sparsified_ft"].items() if k != "verdict"}
            entry["sparsified_ft"]["verdict"] = verdict(name, result)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"rescored {out}")
        return 0

    # 1. One Ray for every run (workers keep their imports across scenarios).
    from contribshap.pipeline.dispatch.ray_context import connect

    first = scenario_config(args.only[0], quick=args.quick, store_root=args.store_root)
    started = connect(args.address, first.ray)

    # 2. Every scenario: sparsified FT on the exact design, then (optionally) retraining seeds.
    report: dict[str, Any] = {"quick": args.quick, "machine": f"{platform.machine()}, {platform.python_version()}",
                              "retrain_seeds": args.retrain_seeds, "scenarios": {}}
    if out.is_file():  # keep the scenarios this run does not touch (an --only run adds to the file)
        previous = json.loads(out.read_text())
        if previous.get("quick") == args.quick:
            report["scenarios"] = {k: v for k, v in previous.get("scenarios", {}).items() if k not in args.only}
    try:
        for name in args.only:
            if name == "split_copy":
                entry = run_split_copy(quick=args.quick, store_root=args.store_root, address=args.address)
                report["scenarios"][name] = entry
                print(f"{name}: {'PASS' if entry['verdict']['passed'] else 'FAIL'} (players after the merge: "
                      f"{entry['verdict']['merged_players']})", flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(report, indent=1) + "\n")
                continue
            cfg = scenario_config(name, quick=args.quick, store_root=args.store_root)
            result = run_scenario(cfg, address=args.address)
            entry = {"config": f"configs/scenarios/{name}.yaml", "n_contributors": len(result["ids"]),
                     "sparsified_ft": {**result, "verdict": verdict(name, result)}}
            if args.retrain_seeds >= 2:
                seeds = [run_scenario(scenario_config(name, quick=args.quick, store_root=args.store_root,
                                                      mode="retrain", seed=s), address=args.address)
                         for s in range(args.retrain_seeds)]
                entry["retrain"] = {"seeds": args.retrain_seeds, **retrain_summary(name, seeds)}
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
    if args.retrain_seeds >= 2 and LDS_SCENARIO in args.only:
        run_lds(quick=args.quick, store_root=args.store_root, out=args.lds_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
