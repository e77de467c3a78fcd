"""The reducer: store -> estimates per property x method -> ``<store>/estimates/``.

Reads ``plan.parquet`` and the ok evaluations of the run's namespace, keeps only the ``endpoint`` and
``estimate`` sections (held-out and counterfactual rows never reach the estimators), and calls
:func:`contribshap.pipeline.core.estimators.estimate` once per property and configured method. Replicates of a coalition
are passed as identical mask rows; the estimator averages them and reports their spread as utility noise.
A two-fidelity store (``low_fidelity``) pairs each design row with its cheap twin (same coalition and
replicate, the cheap game's namespace), adds the ``control`` rows, and calls
:func:`contribshap.pipeline.core.estimators.multifidelity.combine_fidelities` per property and method instead;
while the cheap endpoints are not evaluated yet it reduces the full-fidelity rows alone, with a warning.

Outputs:
- ``estimates/estimates.json``: the ``contribshap reduce --json`` document::

      {"<property>": {"<method>": {"contributors": [{"id", "name", "value", "ci_low", "ci_high",
                                                    "stderr", "identified", "credit", "credit_low",
                                                    "credit_high", "harmful"}, ...],
                                   "v_empty": float, "v_full": float, "n_evaluations": int,
                                   "identified": bool, "more_evaluations": int,
                                   "direction": "higher" | "lower", "note": str}}}

  ``value`` / ``ci_low`` / ``ci_high`` are the raw Shapley value and its interval in the property's units
  and direction; ``credit`` is the benefit to the model (``-value`` for a lower-is-better property,
  :mod:`contribshap.pipeline.products.credit`), ``harmful`` true when its interval lies wholly below 0;
  ``note`` says it once (``"fid: lower is better; credit = reduction of fid"``).

  A contributor with ``"identified": false`` has a value or uncertainty the evaluated coalitions cannot
  pin down (its interval is (-inf, inf)): ``ci_low``, ``ci_high`` and ``stderr`` are ``null``, and
  ``value`` is only one of the values the rows allow. The method's ``identified`` is true when every
  contributor is; ``more_evaluations`` is a lower bound on the further evaluations it needs (0 when
  identified). Two-fidelity stores add ``"multifidelity": {"coefficient", "coefficient_estimated",
  "high_only_max_halfwidth", "variance_ratio", "n_high", "n_low_paired", "n_low_only", "high_seconds",
  "low_seconds"}`` per method.

- ``estimates/estimates.parquet``: the same as a long table, one row per property x method x
  contributor, plus ``credit``, ``credit_low``, ``credit_high``, ``direction``, ``harmful``, ``rank``
  (1 = largest credit = most valuable), ``level``, ``utility_noise``, ``identified`` (null
  bounds and stderr where it is false).

The printed table ranks by credit (the note under its title says the direction), lists the harmful
contributors in a second table, and shows ``not identified`` in place of such an interval, with a footnote giving
``more_evaluations``. The stopping rule (:func:`ci_target_met`) never fires while an estimate it checks
is not identified.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from contribshap.pipeline.config.schema import Config
from contribshap.pipeline.contracts.io import atomic_write_json, atomic_write_table
from contribshap.pipeline.contracts.keys import mask_from_str
from contribshap.pipeline.products.credit import credit_fields, direction_note
from contribshap.pipeline.storage.plan import ESTIMATOR_SECTIONS, read_plan
from contribshap.pipeline.storage.saved_config import read_saved_config
from contribshap.pipeline.storage.store import RESERVED_COLUMNS, Store, StoreError

__all__ = ["ci_target_met", "estimates_document", "print_table", "reduce_store"]


def _property_names(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    names = [n for n in (manifest.get("property_names") or []) if n not in RESERVED_COLUMNS]
    for row in rows:
        for name, value in row.items():
            if name not in RESERVED_COLUMNS and name not in names and isinstance(value, float):
                names.append(name)
    return names


def reduce_store(store_path: str | Path, *, cfg: Config | None = None, methods: list[str] | None = None,
                 write: bool = True, show: bool = False,
                 rows_out: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Estimates for every property x method from what the store holds now.

    Args:
        store_path: the store folder.
        cfg: the run's config (default: ``<store>/config.yaml``).
        methods: estimator methods (default: ``cfg.estimators``).
        write: write ``estimates/estimates.{json,parquet}``.
        show: print the rich table to stderr.
        rows_out: when given, filled with the rows each property was estimated from:
            ``{property: {"masks", "values", "v_empty", "v_full", "draw_counts", "two_fidelity"}}`` (what
            :mod:`contribshap.pipeline.products.shares` resamples).

    Returns:
        ``{property: {method: Estimate}}`` (:class:`contribshap.pipeline.core.estimators.Estimate`).

    Raises:
        StoreError: no ok evaluation of the empty or the full coalition yet, or too few rows for a method.
    """
    from contribshap.pipeline.core.estimators import estimate

    store = Store(store_path)
    manifest = store.read_manifest()
    cfg = cfg or read_saved_config(store.root, fix=f"run `contribshap repair {store.root} --config CONFIG` to write it again from the run's config")
    methods = methods or list(cfg.estimators)
    contributors = manifest.get("contributors") or []
    if not contributors:
        raise StoreError(f"store {store.root} was never prepared (no contributors); run `contribshap run` first")
    n = len(contributors)
    # 1. planned coalitions of the estimator sections, and their draw counts
    plan = read_plan(store)
    plan_rows = [r for r in plan if r["section"] in ESTIMATOR_SECTIONS]
    draws = {r["coalition_key"]: float(r["weight"]) for r in plan_rows}
    replicates = {r["coalition_key"]: int(r["replicates"]) for r in plan_rows}
    # 2. ok evaluations of those coalitions (replicates beyond the plan are ignored)
    scan = store.scan(manifest["config_hash"])
    rows = [r for r in scan.rows if r["coalition_key"] in draws and int(r["replicate"]) < replicates[r["coalition_key"]]]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        print(f"warning: {len(failed)} failed evaluation(s) excluded from the estimates "
              f"(e.g. {failed[0]['mask']} r{failed[0]['replicate']}: {failed[0]['error']}); "
              "`contribshap run` retries them", file=sys.stderr)
    empty, full = "0" * n, "1" * n
    two = _two_fidelity_rows(store, cfg, n, plan, ok) if cfg.low_fidelity is not None else None
    results: dict[str, dict[str, Any]] = {}
    for prop in _property_names(manifest, ok):
        # 3. one (masks, values) table per property; NaN values are left to the estimator to drop
        prop_rows = [r for r in ok if r.get(prop) is not None]
        v_empty = [r[prop] for r in prop_rows if r["mask"] == empty and math.isfinite(r[prop])]
        v_full = [r[prop] for r in prop_rows if r["mask"] == full and math.isfinite(r[prop])]
        if not v_empty or not v_full:
            missing = "empty" if not v_empty else "full"
            raise StoreError(
                f"store {store.root}: property {prop!r} has no ok evaluation of the {missing} coalition yet; "
                "run `contribshap run` to finish the plan"
            )
        masks = np.array([mask_from_str(r["mask"]) for r in prop_rows], dtype=bool).reshape(-1, n)
        values = np.array([r[prop] for r in prop_rows], dtype=float)
        if rows_out is not None:
            rows_out[prop] = {"masks": masks, "values": values, "v_empty": float(np.mean(v_empty)),
                              "v_full": float(np.mean(v_full)), "two_fidelity": two is not None,
                              "draw_counts": np.array([draws[r["coalition_key"]] for r in prop_rows])}
        results[prop] = {}
        for method in methods:
            options: dict[str, Any] = {}
            if method == "kernelshap_paper":
                options["draw_counts"] = np.array([draws[r["coalition_key"]] for r in prop_rows])
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    if two is not None:
                        est = two.estimate(prop, method=method, level=cfg.level, seed=cfg.seed)
                    else:
                        est = estimate(masks, values, float(np.mean(v_empty)), float(np.mean(v_full)),
                                       method=method, level=cfg.level, seed=cfg.seed, **options)
            except ValueError as error:
                raise StoreError(f"reduce {prop!r} with {method!r}: {str(error).rstrip('.')}") from None
            est.extras.update(v_empty=float(np.mean(v_empty)), v_full=float(np.mean(v_full)),
                              direction=cfg.direction(prop))
            results[prop][method] = est
    # 4. write
    if write:
        store.estimates_dir.mkdir(exist_ok=True)
        atomic_write_json(store.estimates_dir / "estimates.json", estimates_document(results, contributors))
        atomic_write_table(store.estimates_dir / "estimates.parquet", _long_table(results, contributors))
    if show:
        print_table(results, contributors)
    return results


class _TwoFidelityRows:
    """The rows of a two-fidelity plan (see :mod:`contribshap.pipeline.core.estimators.multifidelity`): set A's
    evaluations at both fidelities, paired by coalition and replicate, and set B's low-only ones."""

    def __init__(self, n: int, pairs: list[tuple[dict[str, Any], dict[str, Any]]], low_only: list[dict[str, Any]]):
        self.n, self.pairs, self.low_only = n, pairs, low_only
        self.seconds = {"high": _seconds(p[0] for p in pairs), "low": _seconds(p[1] for p in pairs)
                        + _seconds(r for r in low_only if 0 < r["mask"].count("1") < n)}

    def estimate(self, prop: str, *, method: str, level: float, seed: int) -> Any:
        from contribshap.pipeline.core.estimators.multifidelity import combine_fidelities

        def value(row: dict[str, Any]) -> float:
            x = row.get(prop)
            return float(x) if isinstance(x, int | float) and x is not None else math.nan

        masks_a = np.array([mask_from_str(h["mask"]) for h, _ in self.pairs], dtype=bool).reshape(-1, self.n)
        masks_b = np.array([mask_from_str(r["mask"]) for r in self.low_only], dtype=bool).reshape(-1, self.n)
        est = combine_fidelities(masks_a, np.array([value(h) for h, _ in self.pairs]),
                                 np.array([value(lo) for _, lo in self.pairs]), masks_b,
                                 np.array([value(r) for r in self.low_only]), method=method, level=level, seed=seed)
        est.extras["multifidelity"].update(high_seconds=self.seconds["high"], low_seconds=self.seconds["low"])
        return est


def _seconds(rows: Any) -> float:
    return float(sum(r["wall_s"] for r in rows if isinstance(r.get("wall_s"), float) and math.isfinite(r["wall_s"])))


def _two_fidelity_rows(store: Store, cfg: Config, n: int, plan: list[dict[str, Any]],
                       ok: list[dict[str, Any]]) -> _TwoFidelityRows | None:
    """Set A (pairs) and set B of a two-fidelity store (``plan``: every plan row, ``ok``: the run's ok
    design rows); None (with a warning: the full-fidelity rows are reduced alone) while the low-fidelity
    endpoints are not evaluated yet."""
    namespace = cfg.low_fidelity_namespace()
    low_rows = [r for r in store.scan(namespace).rows if r["status"] == "ok"] if namespace else []
    low = {(r["coalition_key"], int(r["replicate"])): r for r in low_rows}
    pairs = [(r, low[(r["coalition_key"], int(r["replicate"]))]) for r in ok
             if (r["coalition_key"], int(r["replicate"])) in low]
    control = {r["coalition_key"]: int(r["replicates"]) for r in plan if r["section"] == "control"}
    endpoints = {r["coalition_key"]: int(r["replicates"]) for r in plan if r["section"] == "endpoint"}
    low_only = [r for r in low_rows if int(r["replicate"]) < max(control.get(r["coalition_key"], 0),
                                                                 endpoints.get(r["coalition_key"], 0))]
    sizes = {r["mask"].count("1") for r in low_only}
    if 0 not in sizes or n not in sizes or not any(0 < s < n for s in sizes):
        print(f"warning: store {store.root}: the low-fidelity evaluations are not done yet (no endpoint or "
              "control row); reducing the full-fidelity rows alone — `contribshap run` finishes them",
              file=sys.stderr)
        return None
    return _TwoFidelityRows(n, pairs, low_only)


def estimates_document(results: dict[str, dict[str, Any]], contributors: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``reduce --json`` document (see the module docstring)."""
    document: dict[str, Any] = {}
    for prop, by_method in results.items():
        document[prop] = {}
        for method, est in by_method.items():
            document[prop][method] = {
                "contributors": [
                    {"id": c["id"], "name": c["name"], "value": float(est.value[i]),
                     **_interval(est, i), "identified": bool(est.identified[i]), **_credit(est, i)}
                    for i, c in enumerate(contributors)
                ],
                "v_empty": float(est.extras["v_empty"]),
                "v_full": float(est.extras["v_full"]),
                "n_evaluations": int(est.n_evaluations),
                "identified": est.all_identified,
                "more_evaluations": _more_evaluations(est),
                "direction": _direction(est),
                "note": direction_note(prop, _direction(est)),
            }
            if "multifidelity" in est.extras:
                document[prop][method]["multifidelity"] = est.extras["multifidelity"]
    return document


def _interval(est: Any, i: int) -> dict[str, float | None]:
    """``ci_low``, ``ci_high``, ``stderr`` of contributor i; None (null) when it is not identified."""
    if not est.identified[i]:
        return {"ci_low": None, "ci_high": None, "stderr": None}
    return {"ci_low": float(est.ci_low[i]), "ci_high": float(est.ci_high[i]), "stderr": float(est.stderr[i])}


def _direction(est: Any) -> str:
    """``"higher"`` or ``"lower"``: which way the estimate's property is better (set by :func:`reduce_store`)."""
    return "lower" if est.extras.get("direction") == "lower" else "higher"


def _credit(est: Any, i: int) -> dict[str, Any]:
    """Contributor i's credit fields (:func:`contribshap.pipeline.products.credit.credit_fields`)."""
    return credit_fields(est.value[i], est.ci_low[i], est.ci_high[i], bool(est.identified[i]), _direction(est))


def _credit_ranks(est: Any) -> np.ndarray:
    """Rank 1 = the largest credit (the most valuable contributor)."""
    return _ranks(np.asarray([_credit(est, i)["credit"] for i in range(len(est.value))], dtype=float))


def _more_evaluations(est: Any) -> int:
    """Lower bound on the further evaluations an estimate needs to identify every contributor (0 if none)."""
    return 0 if est.all_identified else max(int(est.extras.get("more_evaluations") or 0), 1)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(-values, kind="stable")
    ranks = np.empty(len(values), dtype=np.int32)
    ranks[order] = np.arange(1, len(values) + 1)
    return ranks


def _long_table(results: dict[str, dict[str, Any]], contributors: list[dict[str, Any]]) -> pa.Table:
    records = []
    for prop, by_method in results.items():
        for method, est in by_method.items():
            ranks = _credit_ranks(est)
            for i, c in enumerate(contributors):
                records.append({
                    "property": prop, "method": method, "contributor_id": c["id"], "name": c["name"],
                    "value": float(est.value[i]), **_interval(est, i), **_credit(est, i),
                    "direction": _direction(est), "rank": int(ranks[i]),
                    "level": float(est.level), "n_evaluations": int(est.n_evaluations),
                    "utility_noise": None if est.utility_noise is None else float(est.utility_noise),
                    "identified": bool(est.identified[i]),
                })
    schema = pa.schema([
        ("property", pa.string()), ("method", pa.string()), ("contributor_id", pa.string()), ("name", pa.string()),
        ("value", pa.float64()), ("stderr", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
        ("rank", pa.int32()), ("level", pa.float64()), ("n_evaluations", pa.int64()), ("utility_noise", pa.float64()),
        ("identified", pa.bool_()), ("credit", pa.float64()), ("credit_low", pa.float64()),
        ("credit_high", pa.float64()), ("direction", pa.string()), ("harmful", pa.bool_()),
    ])
    return pa.Table.from_pylist(records, schema=schema)


def print_table(results: dict[str, dict[str, Any]], contributors: list[dict[str, Any]]) -> None:
    """One rich table per property x method on stderr, ranked by credit (rank 1 = the most valuable
    contributor; the title's note says the property's direction): contributor, credit, its CI, the raw
    value, rank. Harmful contributors (credit interval wholly below 0) follow in a table of their own. An
    interval the evaluations cannot identify reads ``not identified``, with a footnote on the evaluations
    still needed."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    for prop, by_method in results.items():
        for method, est in by_method.items():
            ranks = _credit_ranks(est)
            credit = [_credit(est, i) for i in range(len(contributors))]
            title = (f"{prop} · {method} · {int(est.level * 100)}% CI · {est.n_evaluations} evaluations\n"
                     f"{direction_note(prop, _direction(est))}")

            def new_table(heading: str, prop: str = prop) -> Table:
                table = Table(title=heading)
                for column in ("contributor", "credit", "credit CI", f"{prop} value", "rank"):
                    table.add_column(column, justify="left" if column == "contributor" else "right")
                return table

            table, harmful = new_table(title), new_table(f"harmful for {prop}: credit interval wholly below 0")
            for i in np.argsort(ranks):
                c = contributors[i]
                interval = (f"[{credit[i]['credit_low']:.4g}, {credit[i]['credit_high']:.4g}]" if est.identified[i]
                            else "not identified *")
                (harmful if credit[i]["harmful"] else table).add_row(
                    f"{c['name']} ({c['id']})" if c["name"] != c["id"] else c["id"],
                    f"{credit[i]['credit']:.4g}", interval, f"{est.value[i]:.4g}", str(ranks[i]))
            two = est.extras.get("multifidelity")
            if two is not None:
                ratio = two.get("variance_ratio")
                table.caption = (f"two fidelities: coefficient {two['coefficient']:.3g}, {two['n_low_only']} "
                                 "low-fidelity-only evaluations"
                                 + (f"; variance x{ratio:.2f} of the full-fidelity rows alone" if ratio else ""))
            if not est.all_identified:
                table.caption = (f"* not identified: {int((~est.identified).sum())} of {len(est.identified)} "
                                 f"intervals are [-inf, inf]; {method} needs at least {_more_evaluations(est)} more "
                                 "evaluations (raise design.budget)")
            console.print(table)
            if harmful.row_count:
                console.print(harmful)


def ci_target_met(results: dict[str, dict[str, Any]], cfg: Config) -> bool:
    """True when the configured CI target holds (``stopping.ci_abs`` / ``ci_rel``) for the checked
    property (all when unset) and method (the first estimator when unset). No target, or a checked
    estimate with a contributor not identified: False."""
    from contribshap.pipeline.core.estimators import converged

    stopping = cfg.stopping
    if stopping.ci_abs is None and stopping.ci_rel is None:
        return False
    method = stopping.method or cfg.estimators[0]
    props = [stopping.property] if stopping.property else list(results)
    for prop in props:
        est = results.get(prop, {}).get(method)
        if est is None or not est.all_identified:
            return False
        if stopping.ci_abs is not None and not converged(est, stopping.ci_abs):
            return False
        if stopping.ci_rel is not None:
            total = est.extras["v_full"] - est.extras["v_empty"]
            if not converged(est, stopping.ci_rel, relative_to=total):
                return False
    return True
