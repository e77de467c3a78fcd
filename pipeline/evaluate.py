"""Trust the numbers: linear datamodeling score (LDS) and counterfactual removal, for every method.

Two checks of an attribution vector ``phi`` (shape (n,), one score per contributor) against fresh
evaluations of the game that the estimators never saw:

- **LDS** (Ilyas et al. 2022; Lin et al. 2025, Sec. 5): draw held-out subsets S_1..S_m, each keeping a
  fraction ``alpha`` of the contributors; evaluate v(S_j) under one or more training seeds; then
  ``LDS = 100 * Spearman( sum_{i in S_j} phi_i ,  mean_seed v(S_j) )``. A CI comes from a bootstrap that
  resamples subsets and seeds together; per-seed LDS values are reported too.
- **Counterfactual**: remove the top-k fraction of contributors by ``phi`` (largest scores) and, separately,
  keep only the top (remove the bottom-k fraction); re-evaluate, and report the relative change
  ``(v(N minus R) - v(N)) / |v(N)|`` per seed with a t-interval over seeds. A good attribution makes removing
  the top lower the property the most, removing the bottom raise it (scores are in the property's units:
  for a lower-is-better property such as FID the "top" contributors are the ones that raise FID).

Notation map: ``masks`` (m, n) bool = the held-out subsets S_j; ``values`` (s, m) = v_seed(S_j);
``scores`` (n,) = phi; ``sums`` (m,) = masks @ phi.

The held-out subsets go through the same plan/driver/store as everything else (plan section ``holdout``
and ``counterfactual``, their own store namespace when the fine-tune mode or seed is overridden) and never
reach the estimators. The numpy part of this module (``lds_score``, ``counterfactual_sets``,
``relative_change``) needs no store.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.config import ContribshapError
from scipy import stats


class EvaluationError(ContribshapError, ValueError):
    """Bad ``evaluate`` settings; the CLI prints the message as one line (exit code 2)."""


class MissingEstimatesError(ContribshapError, FileNotFoundError):
    """``estimates/estimates.json`` is missing and cannot be made; the message names the fix."""

# --------------------------------------------------------------------------------------------------------
# numpy core
# --------------------------------------------------------------------------------------------------------


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties); NaN if either is constant."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-D arrays of equal length, got shapes {x.shape} and {y.shape}")
    if len(x) < 2:
        return math.nan
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return math.nan
    return float(rx @ ry) / denom


@dataclass
class LdsResult:
    """LDS of one attribution vector on one property.

    Attributes:
        value: 100 x Spearman(sum of attributions over each subset, seed-averaged measured value); NaN when
            the sums or the values are constant.
        ci_low, ci_high: percentile bootstrap CI at ``level`` (subsets and seeds resampled together).
        per_seed: LDS computed with each seed's values alone (length n_seeds).
        n_subsets: subsets with at least one finite value; n_seeds: seeds (rows of ``values``).
        level: confidence level of the CI.
    """

    value: float
    ci_low: float
    ci_high: float
    per_seed: list[float] = field(default_factory=list)
    n_subsets: int = 0
    n_seeds: int = 0
    level: float = 0.95

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lds_score(
    masks: np.ndarray,
    scores: np.ndarray,
    values: np.ndarray,
    *,
    level: float = 0.95,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> LdsResult:
    """Linear datamodeling score with a bootstrap CI over subsets and seeds.

    Args:
        masks: bool array (m, n): held-out subsets.
        scores: float array (n,): attribution per contributor (any method).
        values: float array (m,) or (s, m): measured property of each subset under s training seeds; NaN for
            a failed evaluation (a subset with no finite value is dropped).
        level: CI level in (0, 1), default 0.95.
        n_bootstrap: bootstrap resamples (default 1000); each resamples the m subsets and the s seeds with
            replacement and recomputes the statistic; resamples that give NaN (constant ranks) are skipped.
        seed: bootstrap seed.

    Returns:
        :class:`LdsResult` (values on the 0..100 scale; -100 for a perfectly reversed ranking).

    Example:
        >>> masks = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]], dtype=bool)
        >>> lds_score(masks, np.array([1.0, 2.0, 3.0]), masks @ np.array([1.0, 2.0, 3.0])).value
        100.0
    """
    # 1. Validate shapes.
    masks = np.asarray(masks, dtype=bool)
    scores = np.asarray(scores, dtype=float)
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if masks.ndim != 2 or scores.shape != (masks.shape[1],) or values.shape[1] != masks.shape[0]:
        raise ValueError(
            f"lds_score needs masks (m, n), scores (n,), values (s, m); got {masks.shape}, {scores.shape}, "
            f"{values.shape}"
        )
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    # 2. Drop subsets without any finite value; seed means ignore NaN.
    keep = np.isfinite(values).any(axis=0)
    masks, values = masks[keep], values[:, keep]
    m, s = masks.shape[0], values.shape[0]
    sums = masks.astype(float) @ scores
    if m < 3:
        return LdsResult(math.nan, math.nan, math.nan, [math.nan] * s, m, s, level)

    def _stat(idx: np.ndarray, seed_idx: np.ndarray) -> float:
        sub = values[np.ix_(seed_idx, idx)]
        if np.isnan(sub).any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns -> NaN, dropped below
                mean = np.nanmean(sub, axis=0)
        else:
            mean = sub.mean(axis=0)
        ok = np.isfinite(mean)
        return 100.0 * spearman(sums[idx][ok], mean[ok])

    # 3. Point estimate and per-seed LDS.
    all_idx, all_seeds = np.arange(m), np.arange(s)
    point = _stat(all_idx, all_seeds)
    per_seed = [_stat(all_idx, np.array([j])) for j in range(s)]
    # 4. Bootstrap over subsets and seeds together.
    rng = np.random.default_rng(seed)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        boot[b] = _stat(rng.integers(0, m, m), rng.integers(0, s, s) if s > 1 else all_seeds)
    boot = boot[np.isfinite(boot)]
    if len(boot) < max(10, n_bootstrap // 10):
        lo = hi = math.nan
    else:
        lo, hi = (float(q) for q in np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]))
    return LdsResult(float(point), lo, hi, [float(v) for v in per_seed], m, s, level)


def counterfactual_sets(scores: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Contributors to remove for the two counterfactuals at one fraction.

    Args:
        scores: float array (n,): attribution per contributor (NaN counts as the lowest score).
        fraction: k in (0, 1): share of contributors to remove; ``max(1, round(k * n))`` are removed
            (at most n - 1).

    Returns:
        ``(top, bottom)``: index arrays (sorted) of the highest-scoring and lowest-scoring contributors.
        Ties are broken by contributor index (lower index first among the top), so results are
        deterministic.
    """
    scores = np.asarray(scores, dtype=float)
    n = len(scores)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"top_k fraction must be in (0, 1), got {fraction}; e.g. 0.1 for the top 10%")
    if n < 2:
        raise ValueError(f"counterfactuals need at least 2 contributors, got {n}")
    k = min(n - 1, max(1, round(fraction * n)))
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    order = np.lexsort((np.arange(n), -filled))  # descending score, then ascending index
    return np.sort(order[:k]), np.sort(order[::-1][:k])


def removal_mask(n: int, removed: np.ndarray) -> np.ndarray:
    """Bool mask (n,) of the full coalition without the ``removed`` indices."""
    mask = np.ones(n, dtype=bool)
    mask[np.asarray(removed, dtype=int)] = False
    return mask


def relative_change(v_after: np.ndarray, v_full: np.ndarray, *, level: float = 0.95) -> dict[str, float]:
    """Relative change ``(v_after - v_full) / |v_full|`` per seed, its mean and a t-interval over seeds.

    Args:
        v_after: float array (s,): property after the removal, one per seed.
        v_full: float array (s,): property of the full coalition under the same seeds.
        level: CI level.

    Returns:
        ``{"value", "ci_low", "ci_high", "n_seeds", "absolute"}`` where ``absolute`` is the mean of
        ``v_after - v_full``. With one seed the CI is NaN (no spread to estimate); a zero ``v_full`` gives
        NaN relative values.
    """
    v_after = np.asarray(v_after, dtype=float)
    v_full = np.asarray(v_full, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (v_after - v_full) / np.abs(v_full)
    ok = np.isfinite(rel)
    rel, diff = rel[ok], (v_after - v_full)[ok]
    s = len(rel)
    if s == 0:
        return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_seeds": 0, "absolute": math.nan}
    mean = float(rel.mean())
    if s > 1:
        half = float(stats.t.ppf((1 + level) / 2, s - 1) * rel.std(ddof=1) / math.sqrt(s))
        lo, hi = mean - half, mean + half
    else:
        lo = hi = math.nan
    return {"value": mean, "ci_low": lo, "ci_high": hi, "n_seeds": s, "absolute": float(diff.mean())}


def orient(scores: np.ndarray, masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, float]:
    """Give an unsigned score (e.g. a similarity) the sign that fits the property, on training rows.

    The sign is that of Spearman(masks @ scores, values) on the *estimate* rows (never on held-out rows),
    so a similarity that lowers FID is turned into a negative credit for FID, like a Shapley value.

    Args:
        scores: float array (n,). masks: bool array (m, n). values: float array (m,) (NaN skipped).

    Returns:
        ``(sign * scores, sign)`` with sign in {+1.0, -1.0} (+1 when the correlation is NaN).
    """
    masks = np.asarray(masks, dtype=bool)
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    rho = spearman(masks[ok].astype(float) @ np.nan_to_num(scores), values[ok]) if ok.sum() >= 3 else math.nan
    sign = -1.0 if (math.isfinite(rho) and rho < 0) else 1.0
    return sign * np.asarray(scores, dtype=float), sign


# --------------------------------------------------------------------------------------------------------
# reading a store (shared with contribshap.pipeline.report)
# --------------------------------------------------------------------------------------------------------
def mask_from_string(text: str) -> np.ndarray:
    """'0101' -> bool array (n,) (the store's mask encoding)."""
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def mask_to_string(mask: np.ndarray) -> str:
    """bool array (n,) -> '0101'."""
    return "".join("1" if b else "0" for b in np.asarray(mask, dtype=bool))


def load_estimates(root: Path, *, reduce_if_missing: bool = False) -> dict[str, Any]:
    """``<store>/estimates/estimates.json`` (the ``reduce --json`` document).

    Args:
        root: store folder.
        reduce_if_missing: run ``contribshap.pipeline.reduce.reduce_store`` first when the file is missing (and the
            store has a config), as ``contribshap reduce STORE`` would.

    Raises:
        FileNotFoundError: one line naming the file and the command that writes it.
    """
    path = Path(root) / "estimates" / "estimates.json"
    if not path.is_file() and reduce_if_missing and (Path(root) / "config.yaml").is_file():
        from contribshap.pipeline.reduce import reduce_store

        reduce_store(root, write=True)
    if not path.is_file():
        raise MissingEstimatesError(f"{path} does not exist; run `contribshap reduce {root}` first")
    doc = json.loads(path.read_text())
    return doc.get("properties", doc) if isinstance(doc, dict) else {}


def load_evaluation(root: Path) -> dict[str, Any] | None:
    """``<store>/estimates/evaluation.json`` or None when ``contribshap evaluate`` has not run."""
    path = Path(root) / "estimates" / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_plan(root: Path) -> list[dict[str, Any]]:
    """Rows of ``plan.parquet`` in plan order ([] when there is no plan)."""
    import pyarrow.parquet as pq

    path = Path(root) / "plan.parquet"
    return pq.read_table(path).to_pylist() if path.is_file() else []


def read_all_evals(root: Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Every readable evaluation row of every namespace, and the unreadable file names (read-only)."""
    from contribshap.pipeline.store import Store

    store = Store(root)
    rows: dict[str, list[dict[str, Any]]] = {}
    unreadable: list[str] = []
    for namespace in store.namespaces():
        scan = store.scan(namespace, update_index=False, warn=False)
        rows[namespace] = scan.rows
        unreadable += [f"{namespace}/{name}" for name in scan.unreadable]
    return rows, unreadable


@dataclass
class MainRows:
    """The main game's evaluations, arranged for estimators and baselines.

    Attributes:
        masks: bool (m, n): one row per ok evaluation of an ``estimate``-section coalition, in plan order
            (replicates next to each other).
        values: property -> float (m,).
        other_masks / other_values: ok evaluations of the main namespace outside the estimate section
            (e.g. LOO and singleton rows), same layout.
        v_empty / v_full: property -> mean over ok replicates of the endpoints (NaN if missing).
    """

    masks: np.ndarray
    values: dict[str, np.ndarray]
    other_masks: np.ndarray
    other_values: dict[str, np.ndarray]
    v_empty: dict[str, float]
    v_full: dict[str, float]


def main_rows(root: Path, manifest: dict[str, Any], rows: list[dict[str, Any]]) -> MainRows:
    """Split the main namespace's ok rows into estimate rows (plan order) and the rest.

    Args:
        root: store folder (its ``plan.parquet`` gives the order and the sections).
        manifest: the store manifest (contributors, property names).
        rows: the main namespace's evaluation rows (``Store.scan(config_hash).rows``).
    """
    n = len(manifest.get("contributors") or [])
    props = list(manifest.get("property_names") or [])
    if not props:  # python games learn their names from the first evaluation
        reserved = {"coalition_key", "mask", "size", "replicate", "seed", "status", "error", "attempt",
                    "finetune_s", "sample_s", "eval_s", "wall_s", "worker", "started_at", "finished_at", "info",
                    "section", "namespace"}
        props = sorted({k for r in rows for k in r if k not in reserved})
    ok = [r for r in rows if r.get("status") == "ok"]
    by_mask: dict[str, list[dict[str, Any]]] = {}
    for r in ok:
        by_mask.setdefault(r["mask"], []).append(r)
    plan = read_plan(root)
    estimate_keys = design_order([p["mask"] for p in plan if p.get("section", "estimate") == "estimate"], root)
    estimate_set = set(estimate_keys)
    empty, full = "0" * n, "1" * n

    def _arrange(mask_strings: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        picked = [r for s in mask_strings for r in sorted(by_mask.get(s, []), key=lambda r: r["replicate"])]
        masks = np.array([mask_from_string(r["mask"]) for r in picked], dtype=bool).reshape(len(picked), n)
        return masks, {p: np.array([_float(r.get(p)) for r in picked]) for p in props}

    masks, values = _arrange(list(dict.fromkeys(estimate_keys)))
    others = [s for s in by_mask if s not in estimate_set and s not in (empty, full)]
    other_masks, other_values = _arrange(others)
    v_empty = {p: _mean_of(by_mask.get(empty, []), p) for p in props}
    v_full = {p: _mean_of(by_mask.get(full, []), p) for p in props}
    return MainRows(masks, values, other_masks, other_values, v_empty, v_full)


def design_order(mask_strings: list[str], root: Path) -> list[str]:
    """Order planned estimate masks as the design drew them (plan.parquet sorts rows by key).

    The design stream is prefix-stable, so re-drawing it from the store's resolved config gives the order
    in which a smaller budget would have planned the rows; prefixes of that order are what
    "estimate vs number of coalitions" means. Masks the stream does not reproduce keep their plan order at
    the end. ``exact`` designs (and stores without a readable config) get a seeded random order.
    """
    n = len(mask_strings[0]) if mask_strings else 0
    if n == 0:
        return mask_strings
    kind, seed, options = "", 0, {}
    try:
        from contribshap.pipeline.config import load_config

        cfg = load_config(Path(root) / "config.yaml", check_paths=False)
        kind, seed, options = cfg.design.kind, cfg.plan_seed(), dict(cfg.design.options)
    except Exception:  # no/old config: fall back to a seeded shuffle
        kind = ""
    if kind and kind != "exact":
        from contribshap.pipeline.sampling import sample_coalitions

        try:
            stream = sample_coalitions(n, len(mask_strings), kind, seed=seed, **options)
            position = {mask_to_string(m): i for i, m in enumerate(stream)}
            return sorted(mask_strings, key=lambda s: position.get(s, len(position)))
        except Exception:
            pass
    perm = np.random.default_rng(seed).permutation(len(mask_strings))
    return [mask_strings[i] for i in perm]


def _float(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _mean_of(rows: list[dict[str, Any]], prop: str) -> float:
    vals = [_float(r.get(prop)) for r in rows]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


# --------------------------------------------------------------------------------------------------------
# run_evaluate: the `contribshap evaluate STORE` command
# --------------------------------------------------------------------------------------------------------
MODEL_BASELINES = ("pixel_mean", "pixel_max", "feature_mean", "feature_max", "trak")
"""Baselines that need the diffusion model and data (computed by ``contribshap.workers.baselines``)."""
REFERENCE_METHODS = ("random",)
"""A seeded random attribution, scored like every method (its LDS should be ~0)."""
_MODES = ("sparsified_ft", "ft", "retrain")
_HOLDOUT_SEED_SALT = 0x4C445300  # "LDS\0": held-out subsets never coincide with the plan's stream


def _print(progress: bool, text: str) -> None:
    print(text, flush=True)


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
    from contribshap.pipeline.driver import evaluate_coalitions

    out = {p: np.full((len(seeds), len(masks)), math.nan) for p in props}
    index = {mask_to_string(m): j for j, m in enumerate(masks)}
    rows = evaluate_coalitions(cfg, store, masks, section=section, replicates=len(seeds),
                               overrides=_overrides(mode), address=address, progress=progress)
    for row in rows:
        replicate = int(row.get("replicate", 0))
        if row.get("status") != "ok" or row.get("mask") not in index or replicate >= len(seeds):
            continue
        for p in props:
            out[p][replicate, index[row["mask"]]] = _float(row.get(p))
    return out


def collect_attributions(
    root: Path, manifest: dict[str, Any], main: MainRows, estimates: dict[str, Any], *, methods: list[str] | None,
    level: float = 0.95, seed: int = 0, model_scores: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every method's attribution per property: estimates, store baselines, model baselines, random.

    Args:
        root: store folder. manifest: its manifest. main: :func:`main_rows` of the main namespace.
        estimates: the ``reduce --json`` document. methods: names to keep (None: all available).
        model_scores: ``contribshap.workers.baselines`` output, method -> float (n,) (property-independent, unsigned).

    Returns:
        property -> method -> :class:`contribshap.pipeline.baselines.Attribution`.
    """
    from contribshap.pipeline.baselines import STORE_BASELINES, store_baselines

    n = len(manifest.get("contributors") or [])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x52414E44]))
    random_scores = rng.normal(size=n)
    out: dict[str, dict[str, Any]] = {}
    from contribshap.pipeline.baselines import Attribution

    for prop in main.values:
        per: dict[str, Any] = {}
        # 1. estimator outputs from the reducer
        for method, doc in (estimates.get(prop) or {}).items():
            if not isinstance(doc, dict) or "contributors" not in doc:
                continue
            people = doc["contributors"]
            per[method] = Attribution(
                method,
                np.array([_float(c.get("value")) for c in people]),
                np.array([_float(c.get("ci_low")) for c in people]),
                np.array([_float(c.get("ci_high")) for c in people]),
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
        # 3. model baselines: unsigned, oriented on the estimate rows
        for method, scores in (model_scores or {}).items():
            oriented, sign = orient(scores, main.masks, main.values[prop])
            per[method] = Attribution(method, oriented, signed=False, kind="model_baseline",
                                      note=f"sign {sign:+.0f} fitted on estimate rows")
        # 4. the random reference
        per["random"] = Attribution("random", random_scores.copy(), kind="reference")
        if methods is not None:
            per = {k: v for k, v in per.items() if k in methods}
        out[prop] = per
    return out


def run_evaluate(
    store: Path,
    *,
    n_subsets: int | None = None,
    alpha: float | None = None,
    mode: str | None = None,
    seeds: list[int] | tuple[int, ...] | None = None,
    methods: list[str] | tuple[str, ...] | None = None,
    counterfactual: bool = False,
    top_k: tuple[float, ...] = (0.1, 0.2),
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
        counterfactual: also remove the top-k / bottom-k contributors of each method and re-evaluate.
        top_k: removal fractions in (0, 1) for the counterfactuals.
        address: Ray address (None: a local instance).
        progress: progress bars and printed lines.

    Returns:
        The evaluation document also written to ``<store>/estimates/evaluation.json``: ``settings``,
        ``holdout`` (masks, values), ``lds[property][method]`` (``LdsResult`` fields + ``kind`` and
        ``scatter``), ``counterfactual[property][method]`` (list of entries), ``attributions``, ``notes``.

    Example:
        >>> doc = run_evaluate(Path("runs/airport-6"), n_subsets=30)  # doctest: +SKIP
        LDS kernelshap value: 97.1 [93.0, 99.2]
    """
    from contribshap.pipeline.config import load_config
    from contribshap.pipeline.store import Store

    # 1. Open the store and resolve the settings (config `evaluation` section fills the gaps).
    root = Path(store).expanduser().resolve()
    st = Store(root)
    manifest = st.read_manifest()
    cfg = load_config(root / "config.yaml", check_paths=False)
    ev = cfg.evaluation
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
    if mode is not None and mode not in _MODES:
        problems.append(f"mode={mode!r}: valid modes are {', '.join(_MODES)} (or omit it: as the run)")
    if mode is not None and game_kind == "python":
        problems.append(f"mode={mode!r}: python games have no fine-tune mode; omit --mode")
    bad_k = [k for k in top_k if not 0.0 < float(k) < 1.0]
    if bad_k:
        problems.append(f"top_k={list(top_k)}: fractions must be in (0, 1), e.g. 0.1,0.2")
    if problems:
        raise EvaluationError("; ".join(problems))
    contributors = manifest.get("contributors") or []
    n = len(contributors)
    ids = [str(c.get("id")) for c in contributors]
    notes: list[str] = []

    # 2. Attributions: the reducer's estimates, store baselines, model baselines, random.
    estimates = load_estimates(root, reduce_if_missing=True)
    rows_by_ns, unreadable = read_all_evals(root)
    if unreadable:
        notes.append(f"skipped {len(unreadable)} unreadable evaluation file(s)")
    main_ns = str(manifest.get("config_hash"))
    main = main_rows(root, manifest, rows_by_ns.get(main_ns, []))
    props = [p for p in main.values if p in estimates] or list(main.values)
    # 2a. LOO / add-one-in need the n leave-one-out and n singleton coalitions of the main game.
    from contribshap.pipeline.baselines import required_masks

    probe = required_masks(n, [b for b in ("loo", "add_one_in") if methods is None or b in methods])
    have = {mask_to_string(m) for m in np.concatenate([main.masks, main.other_masks], axis=0)}
    missing = np.array([m for m in probe if mask_to_string(m) not in have], dtype=bool).reshape(-1, n)
    if len(missing):
        _print(progress, f"evaluate: {len(missing)} leave-one-out / singleton coalitions for the LOO and "
                         "add-one-in baselines (main game)")
        extra = _evaluate(cfg, root, missing, section="counterfactual", seeds=[cfg.seed], mode=None,
                          address=address, progress=progress, props=props)
        main.other_masks = np.concatenate([main.other_masks, missing], axis=0)
        for p in props:
            main.other_values[p] = np.concatenate([main.other_values[p], extra[p][0]])
    model_scores = None
    want_model = [m for m in MODEL_BASELINES if methods is None or m in methods]
    if game_kind == "diffusion" and want_model:
        cached = root / "estimates" / "model_baselines.json"
        saved = json.loads(cached.read_text()) if cached.is_file() else {}
        if saved.get("contributors") == ids and set(want_model) <= set(saved.get("scores", {})):
            model_scores = {m: np.asarray(saved["scores"][m], dtype=float) for m in want_model}
            notes.append(f"model baselines reused from {cached.name} (delete it to recompute)")
        else:
            from contribshap.workers.baselines import model_baselines  # torch: only for diffusion stores

            model_scores = model_baselines(cfg, root, methods=want_model, progress=progress)
    attributions = collect_attributions(
        root, manifest, main, estimates, methods=list(methods) if methods is not None else None,
        level=cfg.level, seed=cfg.seed, model_scores=model_scores,
    )
    for prop, per in attributions.items():
        for method, att in per.items():
            if att.note:
                notes.append(f"{prop}/{method}: {att.note}")

    # 3. Held-out subsets: datamodel design (fixed fraction alpha), seeded apart from the plan.
    from contribshap.pipeline.sampling import sample_coalitions

    holdout_seed = int(np.random.SeedSequence([cfg.seed, _HOLDOUT_SEED_SALT]).generate_state(1)[0])
    masks = np.asarray(sample_coalitions(n, n_subsets, "datamodel", seed=holdout_seed, alpha=alpha), dtype=bool)
    if len(masks) < n_subsets:
        notes.append(f"only {len(masks)} distinct held-out subsets exist for n={n}, alpha={alpha}")
    _print(progress, f"evaluate: {len(masks)} held-out subsets x {len(seeds)} seed(s), mode "
                     f"{mode or 'as the run'} ({game_kind} game)")
    holdout = _evaluate(cfg, root, masks, section="holdout", seeds=seeds, mode=mode, address=address,
                        progress=progress, props=props)

    # 4. LDS per property x method.
    lds_doc: dict[str, dict[str, Any]] = {}
    for prop in props:
        lds_doc[prop] = {}
        for method, att in attributions.get(prop, {}).items():
            result = lds_score(masks, np.nan_to_num(att.value), holdout[prop], level=cfg.level, seed=cfg.seed)
            sums = masks.astype(float) @ np.nan_to_num(att.value)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                measured = np.nanmean(holdout[prop], axis=0)
            lds_doc[prop][method] = {
                **result.to_dict(), "kind": att.kind, "signed": att.signed,
                "scatter": {"sum": sums.tolist(), "value": [_float(v) for v in measured]},
            }
            _print(progress, f"{prop} {method}: LDS {result.value:.1f} [{result.ci_low:.1f}, {result.ci_high:.1f}]")

    # 5. Counterfactuals: remove the top-k / bottom-k of each ranking; the full coalition as reference.
    cf_doc: dict[str, dict[str, list[dict[str, Any]]]] = {}
    if counterfactual:
        plans: list[tuple[str, str, float, str, np.ndarray]] = []
        for prop in props:
            for method, att in attributions.get(prop, {}).items():
                for k in top_k:
                    top, bottom = counterfactual_sets(att.value, float(k))
                    plans.append((prop, method, float(k), "remove_top", top))
                    plans.append((prop, method, float(k), "remove_bottom", bottom))
        unique = list(dict.fromkeys([mask_to_string(np.ones(n, bool))]
                                    + [mask_to_string(removal_mask(n, r)) for *_, r in plans]))
        cf_masks = np.array([mask_from_string(s) for s in unique], dtype=bool)
        _print(progress, f"counterfactual: {len(cf_masks)} coalitions x {len(seeds)} seed(s)")
        cf_values = _evaluate(cfg, root, cf_masks, section="counterfactual", seeds=seeds, mode=mode,
                              address=address, progress=progress, props=props)
        position = {s: j for j, s in enumerate(unique)}
        for prop, method, k, action, removed in plans:
            after = cf_values[prop][:, position[mask_to_string(removal_mask(n, removed))]]
            change = relative_change(after, cf_values[prop][:, 0], level=cfg.level)
            cf_doc.setdefault(prop, {}).setdefault(method, []).append(
                {"k": k, "action": action, "removed": [ids[i] for i in removed], **change}
            )

    # 5b. Diffusion stores: samples of the full model next to the model without the top / bottom contributors.
    samples: dict[str, Any] = {"note": "python game: no images" if game_kind != "diffusion" else
                               "run with --counterfactual to save samples"}
    if game_kind == "diffusion" and counterfactual and props:
        prop = props[0]
        method = next((m for m, a in attributions[prop].items() if a.kind == "estimator"), None)
        if method is not None:
            k = float(top_k[0])
            top, bottom = counterfactual_sets(attributions[prop][method].value, k)
            names = [str(c.get("name", c.get("id"))) for c in contributors]
            panels = [("full coalition", np.ones(n, bool)),
                      (f"without top {k:.0%} by {method} for {prop}:\n{', '.join(names[i] for i in top)}",
                       removal_mask(n, top)),
                      (f"without bottom {k:.0%}:\n{', '.join(names[i] for i in bottom)}", removal_mask(n, bottom))]
            try:
                from contribshap.workers.baselines import counterfactual_samples

                counterfactual_samples(cfg, root, panels, root / "estimates" / "samples.png")
                samples = {"png": "estimates/samples.png", "property": prop, "method": method, "k": k,
                           "caption": f"Generated samples (shared noise, {cfg.game.finetune.mode}) of the full "
                                      f"coalition, and without the top / bottom {k:.0%} of contributors by "
                                      f"{method} credit for {prop} (highest credit = raises {prop} most)."}
            except Exception as error:  # the report says why the grid is missing
                samples = {"note": f"samples failed: {type(error).__name__}: {error}"}

    # 6. Write the document (JSON + long Parquet table) and return it.
    doc = {
        "settings": {"n_subsets": n_subsets, "alpha": alpha, "mode": mode or "as_run", "seeds": seeds,
                     "methods": sorted({m for per in attributions.values() for m in per}),
                     "top_k": [float(k) for k in top_k], "level": cfg.level, "game_kind": game_kind,
                     "holdout_seed": holdout_seed, "counterfactual": counterfactual},
        "contributors": contributors,
        "holdout": {"masks": [mask_to_string(m) for m in masks],
                    "values": {p: holdout[p].tolist() for p in props}},
        "lds": lds_doc,
        "counterfactual": cf_doc,
        "attributions": {p: {m: {"value": a.value.tolist(), "kind": a.kind, "signed": a.signed, "note": a.note}
                             for m, a in per.items()} for p, per in attributions.items()},
        "samples": samples,
        "notes": notes,
        "created": time.time(),
    }
    doc = _jsonable(doc)
    write_evaluation(root, doc)
    return doc


def _jsonable(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def evaluation_table(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Long table of an evaluation document: one row per (property, method, metric, k)."""
    rows = []
    for prop, per in doc.get("lds", {}).items():
        for method, e in per.items():
            rows.append({"property": prop, "method": method, "kind": e.get("kind"), "metric": "lds", "k": None,
                         "value": e.get("value"), "ci_low": e.get("ci_low"), "ci_high": e.get("ci_high"),
                         "n_subsets": e.get("n_subsets"), "n_seeds": e.get("n_seeds")})
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
    from contribshap.pipeline.store import atomic_write_json, atomic_write_table

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
