"""``contribshap evaluate STORE``: LDS on held-out subsets and counterfactual removals, for every method.

Two checks of an attribution vector phi (one score per contributor) against fresh evaluations of the
game that the estimators never saw (the maths is in :mod:`contribshap.pipeline.core.metrics`):

- **LDS**: held-out subsets S_1..S_m keeping a fraction ``alpha`` of the contributors, evaluated under one
  or more training seeds; ``LDS = 100 * Spearman( sum_{i in S_j} phi_i , mean_seed v(S_j) )``. The subsets
  are drawn in their own seed namespace and a draw equal to a coalition any method saw (estimate rows,
  endpoints, LOO / singleton rows, Banzhaf's uniform rows) is rejected and redrawn. The LDS is reported
  overall and *stratified*: on the subsets that contain no planted (or listed) contributor, next to the
  ``planted_indicator`` reference (-1 for planted contributors, 0 otherwise), so an attribution that
  only flags the obvious contributor is visible as such.
- **Counterfactual** (on by default): remove the top-k / bottom-k contributors by phi, re-evaluate
  ``counterfactual_replicates`` times, report the relative change ``(v(N minus R) - v(N)) / |v(N)|`` with a
  t-interval over replicates.

Methods scored: the reducer's estimates, the store baselines (:mod:`contribshap.pipeline.core.store_baselines`), the
model baselines of diffusion stores (``contribshap.workers.model_baselines``, run as a Ray task) and a seeded
random reference. Every evaluation goes through the driver and the store (plan sections ``holdout`` and
``counterfactual``, their own store namespace when the fine-tune mode is overridden) and never reaches
the estimators. Store reading: :mod:`contribshap.pipeline.products.readers`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config.diffusion import FINETUNE_MODES
from contribshap.pipeline.config.schema import Config
from contribshap.pipeline.contracts.errors import ContribshapError
from contribshap.pipeline.contracts.keys import is_planted, mask_from_str, mask_to_str
from contribshap.pipeline.contracts.plain import jsonable
from contribshap.pipeline.core.metrics import (
    counterfactual_sets,
    holdout_subsets,
    lds_score,
    orient,
    relative_change,
    removal_mask,
    without_members,
)
from contribshap.pipeline.products.readers import (
    MainRows,
    float_or_nan,
    load_estimates,
    main_rows,
    read_all_evals,
)

__all__ = [
    "MODEL_BASELINES",
    "REFERENCE_METHODS",
    "EvaluationError",
    "collect_attributions",
    "evaluation_table",
    "run_evaluate",
    "write_evaluation",
]

MODEL_BASELINES = ("pixel_mean", "pixel_max", "feature_mean", "feature_max", "trak")
"""Baselines that need the diffusion model and data (computed by ``contribshap.workers.model_baselines``)."""
REFERENCE_METHODS = ("random", "planted_indicator")
"""References scored like every method: a seeded random attribution (LDS ~0) and the planted indicator
(-1 for each stratified-out contributor, 0 otherwise, oriented on the estimate rows; only when some exist)."""
_HOLDOUT_SEED_SALT = 0x4C445300  # "LDS\0": the held-out subsets' own seed namespace
_BANZHAF_SEED_SALT = 0x425A4600  # "BZF\0": the uniform design of the Banzhaf baseline


class EvaluationError(ContribshapError, ValueError):
    """Bad ``evaluate`` settings; the CLI prints the message as one line (exit code 2)."""


@dataclass
class _Settings:
    """Resolved ``evaluate`` settings (CLI value, else the config's ``evaluation`` section)."""

    n_subsets: int
    alpha: float
    mode: str | None
    seeds: list[int]
    game_kind: str
    counterfactual: bool = True
    counterfactual_replicates: int = 3
    banzhaf_uniform: bool = False
    stratify_exclude: list[str] | None = None


def run_evaluate(
    store: Path,
    *,
    n_subsets: int | None = None,
    alpha: float | None = None,
    mode: str | None = None,
    seeds: list[int] | tuple[int, ...] | None = None,
    methods: list[str] | tuple[str, ...] | None = None,
    counterfactual: bool | None = None,
    top_k: tuple[float, ...] = (0.1, 0.2),
    counterfactual_replicates: int | None = None,
    banzhaf_uniform: bool | None = None,
    stratify_exclude: list[str] | None = None,
    address: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """LDS (and counterfactuals) of every method on a store; writes ``estimates/evaluation.{json,parquet}``.

    Args:
        store: a store that ``contribshap run`` filled and ``contribshap reduce`` summarised.
        n_subsets: held-out subsets (default: config ``evaluation.n_subsets``, 50; the paper uses 100).
        alpha: fraction of contributors in each held-out subset (default: ``evaluation.holdout_alpha``, 0.5).
        mode: fine-tune mode of the held-out/counterfactual game: None = as the run (``sparsified_ft`` for
            diffusion), or ``sparsified_ft``, ``ft``, ``retrain`` (the gold standard; diffusion games only).
            ``"finetune"`` (the config's spelling of "as the run") is accepted.
        seeds: training seeds (default: ``evaluation.seeds``, [0]); their number counts: seed i is
            replicate i of each held-out job (job seed derived from (config seed, coalition, i), sampling
            noise shifted by i), so the run's prepared artifacts are reused.
        methods: methods to score (default: every estimator in the estimates, the store baselines, the
            model baselines for diffusion stores, and ``random``).
        counterfactual: remove the top-k / bottom-k contributors of each method and re-evaluate (default:
            ``evaluation.counterfactual``, True).
        top_k: removal fractions in (0, 1) for the counterfactuals.
        counterfactual_replicates: evaluations of each counterfactual coalition and of the full one
            (default: ``evaluation.counterfactual_replicates``, 3); the interval is over these replicates.
        banzhaf_uniform: evaluate a uniform design of the run's size (plan section ``banzhaf_uniform``) and
            score ``banzhaf_uniform`` on it (default: ``evaluation.banzhaf_uniform``, False).
        stratify_exclude: contributor ids left out of the stratified LDS (default:
            ``evaluation.stratify_exclude``, else every ``planted-*`` contributor; [] = none).
        address: Ray address (None: a local instance).
        progress: progress bars and printed lines.

    Returns:
        The evaluation document also written to ``<store>/estimates/evaluation.json``: ``settings``,
        ``holdout`` (masks, values, rejected), ``lds[property][method]`` (``LdsResult`` fields + ``kind`` and
        ``scatter``), ``stratify`` (exclude, n_subsets, masks), ``lds_stratified[property][method]``,
        ``banzhaf_uniform`` (masks, n_draws, seed), ``counterfactual[property][method]`` (list of entries),
        ``attributions``, ``notes``.

    Example:
        >>> doc = run_evaluate(Path("runs/airport-6"), n_subsets=30)  # doctest: +SKIP
        LDS kernelshap value: 97.1 [93.0, 99.2]
    """
    from contribshap.pipeline.storage.saved_config import read_saved_config
    from contribshap.pipeline.storage.store import Store

    # 1. Open the store and resolve the settings (config `evaluation` section fills the gaps).
    root = Path(store).expanduser().resolve()
    manifest = Store(root).read_manifest()
    cfg = read_saved_config(root)
    contributors = manifest.get("contributors") or []
    n = len(contributors)
    ids = [str(c.get("id")) for c in contributors]
    settings = _resolve_settings(cfg, n_subsets=n_subsets, alpha=alpha, mode=mode, seeds=seeds, top_k=top_k,
                                 counterfactual=counterfactual, counterfactual_replicates=counterfactual_replicates,
                                 banzhaf_uniform=banzhaf_uniform, stratify_exclude=stratify_exclude, ids=ids)
    flagged = [ids.index(i) for i in settings.stratify_exclude or []]
    notes: list[str] = []

    # 2. The run's estimates and the main game's rows.
    estimates = load_estimates(root, reduce_if_missing=True)
    rows_by_ns, unreadable = read_all_evals(root)
    if unreadable:
        notes.append(f"skipped {len(unreadable)} unreadable evaluation file(s)")
    main = main_rows(root, manifest, rows_by_ns.get(str(manifest.get("config_hash")), []))
    props = [p for p in main.values if p in estimates] or list(main.values)

    # 3. LOO / add-one-in need the n leave-one-out and n singleton coalitions of the main game.
    _add_probe_rows(cfg, root, main, n, methods=methods, props=props, address=address, progress=progress)

    # 4. Model baselines (diffusion stores): one Ray task, cached in estimates/model_baselines.json.
    model_scores = _model_scores(cfg, root, ids, settings.game_kind, methods=methods, notes=notes,
                                 address=address, progress=progress)

    # 5. Banzhaf's own uniform design (optional): a uniform sample of the design's size, main game.
    banzhaf_seed = int(np.random.SeedSequence([cfg.seed, _BANZHAF_SEED_SALT]).generate_state(1)[0])
    uniform = _banzhaf_rows(cfg, root, main, n, seed=banzhaf_seed, settings=settings, methods=methods,
                            props=props, address=address, progress=progress)

    # 6. Attributions of every method: estimates, store baselines, model baselines, references.
    attributions = collect_attributions(
        root, manifest, main, estimates, methods=list(methods) if methods is not None else None,
        level=cfg.level, seed=cfg.seed, model_scores=model_scores, flagged=flagged, uniform=uniform,
    )
    for prop, per in attributions.items():
        for method, att in per.items():
            if att.note:
                notes.append(f"{prop}/{method}: {att.note}")

    # 7. Held-out subsets: datamodel design (fixed fraction alpha) in their own seed namespace; a draw equal
    #    to a coalition any method saw (plan estimate rows, endpoints, LOO / singleton rows, Banzhaf's
    #    uniform rows) is rejected and redrawn.
    holdout_seed = int(np.random.SeedSequence([cfg.seed, _HOLDOUT_SEED_SALT]).generate_state(1)[0])
    seen = _seen_coalitions(root, main, uniform, n)
    masks, rejected = _holdout_masks(n, settings, seed=holdout_seed, seen=seen, notes=notes)
    _print(progress, f"evaluate: {len(masks)} held-out subsets x {len(settings.seeds)} seed(s), mode "
                     f"{settings.mode or 'as the run'} ({settings.game_kind} game)")
    holdout = _evaluate(cfg, root, masks, section="holdout", seeds=settings.seeds, mode=settings.mode,
                        address=address, progress=progress, props=props)

    # 8. LDS per property x method: overall, and on the stratum without the flagged (planted) contributors.
    stratum = without_members(masks, flagged) if flagged else np.zeros(len(masks), bool)
    if flagged and stratum.sum() < 3:
        notes.append(f"only {int(stratum.sum())} held-out subset(s) without {', '.join(settings.stratify_exclude or [])}"
                     f": the stratified LDS needs at least 3; raise --n-subsets (about (1 - alpha)^{len(flagged)} of "
                     "the subsets fall in the stratum)")
    lds_doc, lds_strat = _lds(masks, holdout, attributions, props, level=cfg.level, seed=cfg.seed,
                              stratum=stratum if flagged else None, label=_stratum_label(settings),
                              progress=progress)

    # 9. Counterfactuals: remove the top-k / bottom-k of each ranking; the full coalition as reference.
    cf_doc: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if settings.counterfactual:
        cf_doc = _counterfactuals(cfg, root, attributions, props, ids, top_k=top_k, settings=settings,
                                  address=address, progress=progress)

    # 10. Diffusion stores: samples of the full model next to the model without the top / bottom contributors.
    samples = _samples(cfg, root, attributions, props, contributors, settings.game_kind,
                       counterfactual=settings.counterfactual, top_k=top_k, address=address)

    # 11. Write the document (JSON + long Parquet table) and return it.
    doc = _document(
        settings, cfg, top_k, attributions, contributors=contributors, masks=masks, holdout=holdout, props=props,
        rejected=rejected, seen=len(seen), holdout_seed=holdout_seed, banzhaf_seed=banzhaf_seed, uniform=uniform,
        lds_doc=lds_doc, lds_strat=lds_strat, stratum=stratum, cf_doc=cf_doc, samples=samples, notes=notes)
    write_evaluation(root, doc)
    return doc


def _holdout_masks(n: int, settings: _Settings, *, seed: int, seen: set[str], notes: list[str]
                   ) -> tuple[np.ndarray, int]:
    """Held-out subsets (m, n) apart from every coalition a method saw, and the number of draws rejected."""
    masks, rejected = holdout_subsets(n, settings.n_subsets, alpha=settings.alpha, seed=seed, exclude=seen)
    if rejected:
        notes.append(f"{rejected} held-out draw(s) equal to a coalition the methods saw were rejected and redrawn")
    if len(masks) < settings.n_subsets:
        notes.append(f"only {len(masks)} distinct held-out subsets exist for n={n}, alpha={settings.alpha} "
                     f"apart from the {len(seen)} coalitions the methods saw")
    if len(masks) < 3:
        raise EvaluationError(
            f"only {len(masks)} held-out subsets of size {max(1, round(settings.alpha * n))} differ from the "
            f"{len(seen)} coalitions the estimators and baselines saw (n={n}); LDS needs at least 3: use "
            "another --alpha, or a smaller design budget"
        )
    return masks, rejected


def _document(settings: _Settings, cfg: Config, top_k: tuple[float, ...], attributions: dict[str, Any], *,
              contributors: list[dict[str, Any]], masks: np.ndarray, holdout: dict[str, np.ndarray],
              props: list[str], rejected: int, seen: int, holdout_seed: int, banzhaf_seed: int, uniform: Any,
              lds_doc: dict[str, Any], lds_strat: dict[str, Any], stratum: np.ndarray, cf_doc: dict[str, Any],
              samples: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The evaluation document (strict JSON data: NaN and inf as None)."""
    doc = {
        "settings": {"n_subsets": settings.n_subsets, "alpha": settings.alpha, "mode": settings.mode or "as_run",
                     "seeds": settings.seeds, "methods": sorted({m for per in attributions.values() for m in per}),
                     "top_k": [float(k) for k in top_k], "level": cfg.level, "game_kind": settings.game_kind,
                     "holdout_seed": holdout_seed, "counterfactual": settings.counterfactual,
                     "counterfactual_replicates": settings.counterfactual_replicates,
                     "banzhaf_uniform": settings.banzhaf_uniform, "banzhaf_seed": banzhaf_seed,
                     "stratify_exclude": settings.stratify_exclude or []},
        "contributors": contributors,
        "holdout": {"masks": [mask_to_str(m) for m in masks],
                    "values": {p: holdout[p].tolist() for p in props}, "rejected": rejected,
                    "excluded_coalitions": seen},
        "lds": lds_doc,
        "stratify": {"exclude": settings.stratify_exclude or [], "n_subsets": int(stratum.sum()),
                     "masks": [mask_to_str(m) for m in masks[stratum]],
                     "rule": "held-out subsets that contain none of the excluded contributors"},
        "lds_stratified": lds_strat,
        "banzhaf_uniform": ({"masks": [mask_to_str(m) for m in uniform[0]], "n_draws": len(uniform[0]),
                             "seed": banzhaf_seed} if uniform is not None else None),
        "counterfactual": cf_doc,
        "attributions": {p: {m: {"value": a.value.tolist(), "kind": a.kind, "signed": a.signed, "note": a.note}
                             for m, a in per.items()} for p, per in attributions.items()},
        "samples": samples,
        "notes": notes,
        "created": time.time(),
    }
    return jsonable(doc, strict=True)


# --------------------------------------------------------------------------------------------------------
# the steps of run_evaluate
# --------------------------------------------------------------------------------------------------------
def _resolve_settings(cfg: Config, *, n_subsets: int | None, alpha: float | None, mode: str | None,
                      seeds: list[int] | tuple[int, ...] | None, top_k: tuple[float, ...],
                      counterfactual: bool | None = None, counterfactual_replicates: int | None = None,
                      banzhaf_uniform: bool | None = None, stratify_exclude: list[str] | None = None,
                      ids: list[str] | None = None) -> _Settings:
    """CLI values, else the config's ``evaluation`` section; :class:`EvaluationError` lists every problem."""
    ev = cfg.evaluation
    ids = list(ids or [])
    counterfactual = bool(counterfactual if counterfactual is not None else ev.counterfactual)
    replicates = int(counterfactual_replicates if counterfactual_replicates is not None
                     else ev.counterfactual_replicates)
    banzhaf_uniform = bool(banzhaf_uniform if banzhaf_uniform is not None else ev.banzhaf_uniform)
    exclude = stratify_exclude if stratify_exclude is not None else ev.stratify_exclude
    if exclude is None:  # default: the planted contributors (ids `planted-<name>`, see the digits source)
        exclude = [i for i in ids if is_planted(i)]
    exclude = [str(i) for i in exclude]
    n_subsets = int(n_subsets if n_subsets is not None else ev.n_subsets)
    alpha = float(alpha if alpha is not None else ev.holdout_alpha)
    seeds = [int(s) for s in (seeds if seeds is not None else ev.seeds)]
    if mode is None and getattr(ev, "mode", None) == "retrain":
        mode = "retrain"
    if mode == "finetune":
        mode = None
    game_kind = getattr(cfg.game, "kind", "python")
    problems = []
    if n_subsets < 3:
        problems.append(f"n_subsets={n_subsets}: LDS needs at least 3 held-out subsets; use e.g. 50")
    if not 0.0 < alpha < 1.0:
        problems.append(f"alpha={alpha}: must be in (0, 1); use 0.5 (the paper's choice)")
    if not seeds:
        problems.append("seeds: give at least one training seed, e.g. --seeds 0,1,2")
    if mode is not None and mode not in FINETUNE_MODES:
        problems.append(f"mode={mode!r}: valid modes are {', '.join(FINETUNE_MODES)} (or omit it: as the run)")
    if mode is not None and game_kind == "python":
        problems.append(f"mode={mode!r}: python games have no fine-tune mode; omit --mode")
    bad_k = [k for k in top_k if not 0.0 < float(k) < 1.0]
    if bad_k:
        problems.append(f"top_k={list(top_k)}: fractions must be in (0, 1), e.g. 0.1,0.2")
    if replicates < 1:
        problems.append(f"counterfactual_replicates={replicates}: give at least 1 (3 for an interval)")
    unknown = [i for i in exclude if i not in ids]
    if unknown and ids:
        problems.append(f"stratify_exclude={unknown}: not contributor ids of this store; valid ids: "
                        f"{', '.join(ids)}")
    if ids and len(set(exclude)) >= len(ids):
        problems.append(f"stratify_exclude={exclude}: excludes every contributor; list the planted ones only")
    if problems:
        raise EvaluationError("; ".join(problems))
    return _Settings(n_subsets, alpha, mode, seeds, game_kind, counterfactual, replicates, banzhaf_uniform,
                     list(dict.fromkeys(exclude)))


def _stratum_label(settings: _Settings) -> str:
    """``without planted-noise`` (printed next to the overall LDS)."""
    return "without " + ", ".join(settings.stratify_exclude or [])


def _print(progress: bool, text: str) -> None:
    print(text, flush=True)


def _seen_coalitions(root: Path, main: MainRows, uniform: tuple[np.ndarray, dict[str, np.ndarray]] | None,
                     n: int) -> set[str]:
    """Mask strings of every coalition a method reads: plan estimate rows and endpoints (and the control
    rows of a two-fidelity plan), the main game's LOO / singleton rows, and Banzhaf's uniform rows
    (held-out subsets must differ from all of them)."""
    from contribshap.pipeline.storage.plan import ESTIMATOR_SECTIONS, read_plan
    from contribshap.pipeline.storage.store import Store

    seen = {str(r["mask"]) for r in read_plan(Store(root)) if r.get("section") in (*ESTIMATOR_SECTIONS, "control")}
    seen |= {mask_to_str(m) for m in main.masks}
    seen |= {"0" * n, "1" * n}
    from contribshap.pipeline.core.store_baselines import required_masks

    probes = {mask_to_str(m) for m in required_masks(n, ["loo", "add_one_in"])}
    seen |= probes & {mask_to_str(m) for m in main.other_masks}
    if uniform is not None:
        seen |= {mask_to_str(m) for m in uniform[0]}
    return seen


def _banzhaf_rows(cfg: Config, root: Path, main: MainRows, n: int, *, seed: int, settings: _Settings,
                  methods: list[str] | tuple[str, ...] | None, props: list[str], address: str | None,
                  progress: bool) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Banzhaf's own design: as many distinct uniform coalitions as the run's estimate draws (each
    contributor kept with probability 1/2, repeats redrawn), evaluated in the main game (plan section
    ``banzhaf_uniform``, one replicate). Returns (masks (m, n), property -> values (m,))."""
    if not settings.banzhaf_uniform or (methods is not None and "banzhaf_uniform" not in methods):
        return None
    from contribshap.pipeline.core.designs import sample_coalitions
    from contribshap.pipeline.storage.plan import read_plan
    from contribshap.pipeline.storage.store import Store

    draws = int(sum(float(r.get("weight") or 1.0) for r in read_plan(Store(root)) if r.get("section") == "estimate"))
    draws = max(draws, len({mask_to_str(m) for m in main.masks}), 4)
    masks = np.asarray(sample_coalitions(n, draws, "uniform", seed=seed), dtype=bool).reshape(-1, n)  # distinct
    _print(progress, f"evaluate: {len(masks)} uniform coalitions for banzhaf_uniform (main game)")
    values = _evaluate(cfg, root, masks, section="banzhaf_uniform", seeds=[cfg.seed], mode=None,
                       address=address, progress=progress, props=props)
    return masks, {p: values[p][0] for p in props}


def _overrides(mode: str | None) -> dict[str, Any] | None:
    """Config overrides of the derived game (None: the main game itself, rows shared with the run)."""
    return {"game": {"finetune": {"mode": mode}}} if mode is not None else None


def _evaluate(
    cfg: Any, store: Any, masks: np.ndarray, *, section: str, seeds: list[int], mode: str | None,
    address: str | None, progress: bool, props: list[str],
) -> dict[str, np.ndarray]:
    """Evaluate ``masks`` (k, n) under ``len(seeds)`` training seeds; property -> values (s, k), NaN = failed.

    Training seed i is replicate i of the job: its seed is ``derive_seed(config seed, coalition, i)`` (data
    order, timesteps, a retrained model's init) and its sampling noise is shifted by i. Replicates keep
    the prepared artifacts (θ*, pruned model, reference statistics) of the run: changing the config seed
    instead would re-train them.
    """
    from contribshap.pipeline.dispatch.driver import evaluate_coalitions

    out = {p: np.full((len(seeds), len(masks)), math.nan) for p in props}
    index = {mask_to_str(m): j for j, m in enumerate(masks)}
    rows = evaluate_coalitions(cfg, store, masks, section=section, replicates=len(seeds),
                               overrides=_overrides(mode), address=address, progress=progress)
    for row in rows:
        replicate = int(row.get("replicate", 0))
        if row.get("status") != "ok" or row.get("mask") not in index or replicate >= len(seeds):
            continue
        for p in props:
            out[p][replicate, index[row["mask"]]] = float_or_nan(row.get(p))
    return out


def _add_probe_rows(cfg: Config, root: Path, main: MainRows, n: int, *, methods: list[str] | tuple[str, ...] | None,
                    props: list[str], address: str | None, progress: bool) -> None:
    """Evaluate the leave-one-out / singleton coalitions the main game lacks; add them to ``main``'s other rows."""
    from contribshap.pipeline.core.store_baselines import required_masks

    probe = required_masks(n, [b for b in ("loo", "add_one_in") if methods is None or b in methods])
    have = {mask_to_str(m) for m in np.concatenate([main.masks, main.other_masks], axis=0)}
    missing = np.array([m for m in probe if mask_to_str(m) not in have], dtype=bool).reshape(-1, n)
    if not len(missing):
        return
    _print(progress, f"evaluate: {len(missing)} leave-one-out / singleton coalitions for the LOO and "
                     "add-one-in baselines (main game)")
    extra = _evaluate(cfg, root, missing, section="counterfactual", seeds=[cfg.seed], mode=None,
                      address=address, progress=progress, props=props)
    main.other_masks = np.concatenate([main.other_masks, missing], axis=0)
    for p in props:
        main.other_values[p] = np.concatenate([main.other_values[p], extra[p][0]])


def _model_scores(cfg: Config, root: Path, ids: list[str], game_kind: str, *, methods: list[str] | tuple[str, ...] | None,
                  notes: list[str], address: str | None, progress: bool) -> dict[str, np.ndarray] | None:
    """Model baselines of a diffusion store (None for python games or when none is asked)."""
    want = [m for m in MODEL_BASELINES if methods is None or m in methods]
    if game_kind != "diffusion" or not want:
        return None
    cached = root / "estimates" / "model_baselines.json"
    saved = json.loads(cached.read_text()) if cached.is_file() else {}
    if saved.get("contributors") == ids and set(want) <= set(saved.get("scores", {})):
        notes.append(f"model baselines reused from {cached.name} (delete it to recompute)")
        return {m: np.asarray(saved["scores"][m], dtype=float) for m in want}
    from contribshap.pipeline.dispatch.driver import run_model_baselines

    return run_model_baselines(cfg, root, methods=want, address=address, progress=progress)


def collect_attributions(
    root: Path, manifest: dict[str, Any], main: MainRows, estimates: dict[str, Any], *, methods: list[str] | None,
    level: float = 0.95, seed: int = 0, model_scores: dict[str, np.ndarray] | None = None,
    flagged: list[int] | None = None, uniform: tuple[np.ndarray, dict[str, np.ndarray]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every method's attribution per property: estimates, store baselines, model baselines, references.

    Args:
        root: store folder. manifest: its manifest. main: :func:`main_rows` of the main namespace.
        estimates: the ``reduce --json`` document. methods: names to keep (None: all available).
        model_scores: ``contribshap.workers.model_baselines`` output, method -> float (n,) (property-independent, unsigned).
        flagged: indices of the planted (stratified-out) contributors; when given, the reference
            ``planted_indicator`` (-1 for them, 0 otherwise, oriented on the estimate rows) is added.
        uniform: Banzhaf's uniform rows ``(masks (m, n), property -> values (m,))``; when given,
            ``banzhaf_uniform`` is added.

    Returns:
        property -> method -> :class:`contribshap.pipeline.core.store_baselines.Attribution`.
    """
    from contribshap.pipeline.core.store_baselines import STORE_BASELINES, store_baselines

    n = len(manifest.get("contributors") or [])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x52414E44]))
    random_scores = rng.normal(size=n)
    out: dict[str, dict[str, Any]] = {}
    from contribshap.pipeline.core.store_baselines import Attribution, banzhaf_uniform

    for prop in main.values:
        per: dict[str, Any] = {}
        # 1. estimator outputs from the reducer
        for method, doc in (estimates.get(prop) or {}).items():
            if not isinstance(doc, dict) or "contributors" not in doc:
                continue
            people = doc["contributors"]
            per[method] = Attribution(
                method,
                np.array([float_or_nan(c.get("value")) for c in people]),
                np.array([float_or_nan(c.get("ci_low")) for c in people]),
                np.array([float_or_nan(c.get("ci_high")) for c in people]),
                kind="estimator",
            )
        # 2. store baselines (on every main-game row; MSR / datamodel regress on the estimate rows)
        all_masks = np.concatenate([main.masks, main.other_masks], axis=0)
        all_values = np.concatenate([main.values[prop], main.other_values[prop]])
        rows = np.concatenate([np.ones(len(main.masks), bool), np.zeros(len(main.other_masks), bool)])
        wanted = [b for b in STORE_BASELINES if methods is None or b in methods]
        if wanted and len(all_masks):
            per.update(store_baselines(all_masks, all_values, main.v_empty[prop], main.v_full[prop], wanted,
                                       estimate_rows=rows, level=level, seed=seed))
        # 3. Banzhaf on its own uniform design (with the endpoints)
        if uniform is not None:
            per["banzhaf_uniform"] = banzhaf_uniform(uniform[0], uniform[1][prop], main.v_empty[prop],
                                                     main.v_full[prop], level=level, seed=seed)
        # 4. model baselines: unsigned, oriented on the estimate rows
        for method, scores in (model_scores or {}).items():
            oriented, sign = orient(scores, main.masks, main.values[prop])
            per[method] = Attribution(method, oriented, signed=False, kind="model_baseline",
                                      note=f"sign {sign:+.0f} fitted on estimate rows")
        # 5. the references: random scores; the planted indicator ("only flag the obvious one")
        per["random"] = Attribution("random", random_scores.copy(), kind="reference")
        if flagged:
            indicator = np.zeros(n)
            indicator[np.asarray(flagged, dtype=int)] = -1.0
            oriented, sign = orient(indicator, main.masks, main.values[prop])
            per["planted_indicator"] = Attribution("planted_indicator", oriented, signed=False, kind="reference",
                                                   note=f"sign {sign:+.0f} fitted on estimate rows")
        if methods is not None:
            per = {k: v for k, v in per.items() if k in methods}
        out[prop] = per
    return out


def _lds(masks: np.ndarray, holdout: dict[str, np.ndarray], attributions: dict[str, dict[str, Any]],
         props: list[str], *, level: float, seed: int, progress: bool, stratum: np.ndarray | None = None,
         label: str = "") -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """LDS entries per property x method (``LdsResult`` fields, kind, signed, scatter), printed one per line.

    With ``stratum`` (bool (m,)), also the LDS on those held-out subsets alone (second dict, ``LdsResult``
    fields and kind; empty without a stratum), printed after the overall one as ``; <label>: LDS ...``.
    """
    lds_doc: dict[str, dict[str, Any]] = {}
    strat_doc: dict[str, dict[str, Any]] = {}
    for prop in props:
        lds_doc[prop] = {}
        if stratum is not None:
            strat_doc[prop] = {}
        for method, att in attributions.get(prop, {}).items():
            result = lds_score(masks, np.nan_to_num(att.value), holdout[prop], level=level, seed=seed)
            sums = masks.astype(float) @ np.nan_to_num(att.value)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                measured = np.nanmean(holdout[prop], axis=0)
            lds_doc[prop][method] = {
                **result.to_dict(), "kind": att.kind, "signed": att.signed,
                "scatter": {"sum": sums.tolist(), "value": [float_or_nan(v) for v in measured]},
            }
            line = f"{prop} {method}: LDS {result.value:.1f} [{result.ci_low:.1f}, {result.ci_high:.1f}]"
            if stratum is not None:
                part = lds_score(masks[stratum], np.nan_to_num(att.value), holdout[prop][:, stratum],
                                 level=level, seed=seed)
                strat_doc[prop][method] = {**part.to_dict(), "kind": att.kind, "signed": att.signed}
                line += (f"; {label}: LDS {part.value:.1f} [{part.ci_low:.1f}, {part.ci_high:.1f}] "
                         f"({part.n_subsets} subsets)")
            _print(progress, line)
    return lds_doc, strat_doc


def _counterfactuals(cfg: Config, root: Path, attributions: dict[str, dict[str, Any]], props: list[str],
                     ids: list[str], *, top_k: tuple[float, ...], settings: _Settings, address: str | None,
                     progress: bool) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Remove the top-k / bottom-k of every ranking, evaluate once per distinct coalition, relative changes."""
    n = len(ids)
    plans: list[tuple[str, str, float, str, np.ndarray]] = []
    for prop in props:
        for method, att in attributions.get(prop, {}).items():
            for k in top_k:
                top, bottom = counterfactual_sets(att.value, float(k))
                plans.append((prop, method, float(k), "remove_top", top))
                plans.append((prop, method, float(k), "remove_bottom", bottom))
    unique = list(dict.fromkeys([mask_to_str(np.ones(n, bool))]
                                + [mask_to_str(removal_mask(n, r)) for *_, r in plans]))
    cf_masks = np.array([mask_from_str(s) for s in unique], dtype=bool)
    replicates = list(range(settings.counterfactual_replicates))
    _print(progress, f"counterfactual: {len(cf_masks)} coalitions x {len(replicates)} replicate(s)")
    cf_values = _evaluate(cfg, root, cf_masks, section="counterfactual", seeds=replicates, mode=settings.mode,
                          address=address, progress=progress, props=props)
    position = {s: j for j, s in enumerate(unique)}
    cf_doc: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for prop, method, k, action, removed in plans:
        after = cf_values[prop][:, position[mask_to_str(removal_mask(n, removed))]]
        change = relative_change(after, cf_values[prop][:, 0], level=cfg.level)
        cf_doc.setdefault(prop, {}).setdefault(method, []).append(
            {"k": k, "action": action, "removed": [ids[i] for i in removed], **change}
        )
    for prop, per in cf_doc.items():
        for method, entries in per.items():
            _print(progress, f"{prop} {method}: " + "; ".join(
                f"{e['action']} {e['k']:g} ({', '.join(e['removed'])}) {_pct(e['value'])} "
                f"[{_pct(e['ci_low'])}, {_pct(e['ci_high'])}]" for e in entries))
    return cf_doc


def _pct(x: float) -> str:
    return "nan" if x is None or not math.isfinite(x) else f"{100.0 * x:+.1f}%"


def _samples(cfg: Config, root: Path, attributions: dict[str, dict[str, Any]], props: list[str],
             contributors: list[dict[str, Any]], game_kind: str, *, counterfactual: bool, top_k: tuple[float, ...],
             address: str | None) -> dict[str, Any]:
    """Diffusion stores with ``--counterfactual``: ``estimates/samples.png`` (one Ray task), else a note."""
    samples: dict[str, Any] = {"note": "python game: no images" if game_kind != "diffusion" else
                               "run with --counterfactual to save samples"}
    if game_kind != "diffusion" or not counterfactual or not props:
        return samples
    prop = props[0]
    method = next((m for m, a in attributions[prop].items() if a.kind == "estimator"), None)
    if method is None:
        return samples
    n = len(contributors)
    k = float(top_k[0])
    top, bottom = counterfactual_sets(attributions[prop][method].value, k)
    names = [str(c.get("name", c.get("id"))) for c in contributors]
    panels = [("full coalition", np.ones(n, bool)),
              (f"without top {k:.0%} by {method} for {prop}:\n{', '.join(names[i] for i in top)}",
               removal_mask(n, top)),
              (f"without bottom {k:.0%}:\n{', '.join(names[i] for i in bottom)}", removal_mask(n, bottom))]
    from contribshap.pipeline.dispatch.driver import run_counterfactual_samples

    try:
        run_counterfactual_samples(cfg, root, panels, root / "estimates" / "samples.png", address=address)
    except ContribshapError as error:  # the report says why the grid is missing
        return {"note": str(error)}
    return {"png": "estimates/samples.png", "property": prop, "method": method, "k": k,
            "caption": f"Generated samples (shared noise, {cfg.game.finetune.mode}) of the full "
                       f"coalition, and without the top / bottom {k:.0%} of contributors by "
                       f"{method} credit for {prop} (highest credit = raises {prop} most)."}


# --------------------------------------------------------------------------------------------------------
# the evaluation document
# --------------------------------------------------------------------------------------------------------
def evaluation_table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Long table of an evaluation document: one row per (property, method, metric, k)."""
    rows = []
    for metric in ("lds", "lds_stratified"):
        for prop, per in (doc.get(metric) or {}).items():
            for method, e in per.items():
                rows.append({"property": prop, "method": method, "kind": e.get("kind"), "metric": metric,
                             "k": None, "value": e.get("value"), "ci_low": e.get("ci_low"),
                             "ci_high": e.get("ci_high"), "n_subsets": e.get("n_subsets"),
                             "n_seeds": e.get("n_seeds")})
    for prop, per in doc.get("counterfactual", {}).items():
        for method, entries in per.items():
            for e in entries:
                rows.append({"property": prop, "method": method, "kind": None, "metric": e["action"],
                             "k": e["k"], "value": e.get("value"), "ci_low": e.get("ci_low"),
                             "ci_high": e.get("ci_high"), "n_subsets": None, "n_seeds": e.get("n_seeds")})
    return rows


def write_evaluation(root: Path, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``estimates/evaluation.json`` and ``estimates/evaluation.parquet`` atomically."""
    import pyarrow as pa
    from contribshap.pipeline.contracts.io import atomic_write_json, atomic_write_table

    folder = Path(root) / "estimates"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "evaluation.json", doc)
    rows = evaluation_table(doc)
    schema = pa.schema([("property", pa.string()), ("method", pa.string()), ("kind", pa.string()),
                        ("metric", pa.string()), ("k", pa.float64()), ("value", pa.float64()),
                        ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("n_subsets", pa.int64()),
                        ("n_seeds", pa.int64())])
    atomic_write_table(folder / "evaluation.parquet", pa.Table.from_pylist(rows, schema=schema))
    return folder / "evaluation.json", folder / "evaluation.parquet"
