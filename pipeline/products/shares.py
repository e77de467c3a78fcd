"""``contribshap reduce STORE --shares``: payout shares of a pool, per property, with intervals.

The rule and its intervals are :mod:`contribshap.pipeline.core.shares` (Shapley Royalty Share, arXiv
2404.13964: shares in proportion to non-negative credit; optional floor and cap as fractions of the pool).
Here: the rows each property was estimated from (:func:`contribshap.pipeline.products.reduce.reduce_store`),
the credit's direction (``credit = -value`` for a lower-is-better property), the files and the table.

Outputs under ``<store>/estimates/``:

- ``shares.csv``, ``shares.parquet``: one row per property x contributor: ``property, method, direction,
  contributor_id, name, credit, share, share_low, share_high, pool, floor, cap, level, resample, n_draws,
  unresolved, uncertain_payees, identified, rule`` (``share_low``/``share_high`` empty when the estimate
  is not identified).
- ``shares.json``: ``{"rule", "pool", "floor", "cap", "method", "seed", "properties": {property:
  {"direction", "resample", "n_draws", "n_dropped", "unresolved", "uncertain_payees", "identified",
  "contributors": [{"id", "name", "credit", "share", "share_low", "share_high"}]}}}`` (the report reads it).

A two-fidelity store takes its intervals from the normal approximation of the combined estimate (its rows
are not resampled).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["print_shares", "shares_document", "store_shares", "write_shares"]


def store_shares(results: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], *, method: str,
                 pool: float = 1.0, floor: float = 0.0, cap: float | None = None, n_draws: int = 200,
                 seed: int = 0, properties: list[str] | None = None) -> dict[str, Any]:
    """Shares per property from a reduce's estimates and rows.

    Args:
        results: ``reduce_store``'s ``{property: {method: Estimate}}``; rows: its ``rows_out``.
        method: the estimator whose credit is shared (one of the reduced methods).
        pool, floor, cap: the rule (:func:`contribshap.pipeline.core.shares.payout_shares`).
        n_draws, seed: of the intervals. properties: which (default: every reduced one).

    Returns:
        ``{property: Shares}`` (:class:`contribshap.pipeline.core.shares.Shares`, with ``extras["direction"]``).

    Raises:
        ValueError: a bad rule (the message names the option and its bound).
    """
    from contribshap.pipeline.core.shares import bootstrap_shares, normal_shares
    from contribshap.pipeline.products.credit import sign

    out: dict[str, Any] = {}
    for prop in properties or list(results):
        est = results[prop][method]
        direction = est.extras.get("direction", "higher")
        data = rows[prop]
        if data["two_fidelity"]:
            shares = normal_shares(est.value, est.stderr, est.identified, sign=sign(direction), pool=pool,
                                   floor=floor, cap=cap, level=est.level, n_draws=n_draws, seed=seed)
        else:
            options = {"draw_counts": data["draw_counts"]} if method == "kernelshap_paper" else {}
            shares = bootstrap_shares(data["masks"], data["values"], data["v_empty"], data["v_full"],
                                      sign=sign(direction), pool=pool, floor=floor, cap=cap, method=method,
                                      level=est.level, n_draws=n_draws, seed=seed, estimate_options=options,
                                      full_estimate=est)
        shares.extras.update(direction=direction, value=[float(v) for v in np.asarray(est.value)])
        out[prop] = shares
    return out


def _opt(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def shares_document(shares: dict[str, Any], contributors: list[dict[str, Any]], *, method: str) -> dict[str, Any]:
    """The ``shares.json`` document (module docstring)."""
    from contribshap.pipeline.core.shares import rule_text
    from contribshap.pipeline.products.credit import sign

    first = next(iter(shares.values()), None)
    doc: dict[str, Any] = {"method": method, "properties": {}}
    if first is not None:
        doc.update(rule=rule_text(first.pool, first.floor, first.cap), pool=first.pool, floor=first.floor,
                   cap=first.cap, seed=first.extras.get("seed"), level=first.level)
    for prop, s in shares.items():
        direction = s.extras.get("direction", "higher")
        credit = [sign(direction) * v for v in s.extras.get("value", [])]
        doc["properties"][prop] = {
            "direction": direction, "resample": s.resample, "n_draws": s.n_draws, "n_dropped": s.n_dropped,
            "unresolved": s.unresolved, "uncertain_payees": s.uncertain_payees, "identified": s.identified,
            "note": s.extras.get("fallback"),
            "contributors": [
                {"id": c["id"], "name": c.get("name", c["id"]), "credit": credit[i] if credit else None,
                 "share": float(s.share[i]), "share_low": _opt(s.low[i]), "share_high": _opt(s.high[i])}
                for i, c in enumerate(contributors)
            ],
        }
    return doc


def write_shares(store: Path, document: dict[str, Any]) -> tuple[Path, Path, Path]:
    """Write ``shares.json``, ``shares.csv`` and ``shares.parquet`` under ``<store>/estimates/``."""
    import csv

    import pyarrow as pa
    from contribshap.pipeline.contracts.io import atomic_write_json, atomic_write_table

    folder = Path(store) / "estimates"
    folder.mkdir(exist_ok=True)
    records = []
    for prop, entry in document["properties"].items():
        for c in entry["contributors"]:
            records.append({
                "property": prop, "method": document["method"], "direction": entry["direction"],
                "contributor_id": str(c["id"]), "name": str(c["name"]), "credit": c["credit"], "share": c["share"],
                "share_low": c["share_low"], "share_high": c["share_high"], "pool": document["pool"],
                "floor": document["floor"], "cap": document["cap"], "level": document["level"],
                "resample": entry["resample"], "n_draws": entry["n_draws"], "unresolved": entry["unresolved"],
                "uncertain_payees": entry["uncertain_payees"], "identified": entry["identified"],
                "rule": document["rule"],
            })
    schema = pa.schema([
        ("property", pa.string()), ("method", pa.string()), ("direction", pa.string()),
        ("contributor_id", pa.string()), ("name", pa.string()), ("credit", pa.float64()), ("share", pa.float64()),
        ("share_low", pa.float64()), ("share_high", pa.float64()), ("pool", pa.float64()), ("floor", pa.float64()),
        ("cap", pa.float64()), ("level", pa.float64()), ("resample", pa.string()), ("n_draws", pa.int64()),
        ("unresolved", pa.float64()), ("uncertain_payees", pa.float64()), ("identified", pa.bool_()),
        ("rule", pa.string()),
    ])
    json_path, csv_path, pq_path = folder / "shares.json", folder / "shares.csv", folder / "shares.parquet"
    atomic_write_json(json_path, document)
    atomic_write_table(pq_path, pa.Table.from_pylist(records, schema=schema))
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=schema.names)
        writer.writeheader()
        writer.writerows(records)
    tmp.replace(csv_path)
    return json_path, csv_path, pq_path


def print_shares(document: dict[str, Any], *, properties: list[str] | None = None) -> None:
    """One rich table per property (default: the first) on stderr: contributor, credit, share and its
    interval, sorted by share; the caption says the rule, the draws and the unresolved share."""
    from contribshap.pipeline.products.credit import direction_note
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    names = list(document["properties"])
    for prop in properties or names[:1]:
        entry = document["properties"][prop]
        pool = document["pool"]
        table = Table(title=f"payout shares · {prop} · {document['method']} · {document['rule']}\n"
                            f"{direction_note(prop, entry['direction'])}")
        for column in ("contributor", "credit", "share", f"{int(document['level'] * 100)}% interval", "% of pool"):
            table.add_column(column, justify="left" if column == "contributor" else "right")
        people = sorted(entry["contributors"], key=lambda c: -c["share"])
        for c in people:
            interval = (f"[{c['share_low']:.4g}, {c['share_high']:.4g}]" if c["share_low"] is not None
                        else "not identified")
            label = f"{c['name']} ({c['id']})" if c["name"] != c["id"] else str(c["id"])
            credit = "-" if c["credit"] is None else f"{c['credit']:.4g}"
            table.add_row(label, credit, f"{c['share']:.4g}", interval, f"{100 * c['share'] / pool:.1f}%")
        if entry["identified"]:
            how = ("half-samples of the sampling units" if entry["resample"] == "units"
                   else "normal approximation of the estimate")
            table.caption = (f"intervals: {entry['n_draws']} draws, {how}"
                             + (f" ({entry['n_dropped']} not identified, dropped)" if entry["n_dropped"] else "")
                             + (f"; {entry['note']}" if entry.get("note") else "")
                             + f". Unresolved: {entry['unresolved']:.4g} of {pool:g} ({100 * entry['unresolved'] / pool:.1f}%"
                             f" = half the summed interval widths); {entry['uncertain_payees']:.4g} is held by "
                             "contributors whose interval reaches the floor")
        else:
            table.caption = ("the estimate is not identified: the shares follow one of the values the rows allow and "
                             f"the whole pool ({pool:g}) is unresolved; raise design.budget")
        console.print(table)
    if len(names) > 1:
        console.print(f"shares of {', '.join(n for n in names if n not in (properties or names[:1]))}: "
                      "estimates/shares.csv", highlight=False)
