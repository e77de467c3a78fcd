"""A self-contained HTML report of a store: contributors with their images, credit with CIs, generated
samples, convergence, LDS, counterfactuals, cost.

``build_report(store)`` writes ``<store>/report/`` (or ``out``)::

    index.html        one page, no scripts, no external assets (every image is a PNG file next to it)
    thumb_<k>.png     diffusion stores: a few of contributor k's own images (written by prepare into
                      ``artifacts/thumbnails-*``; the report only copies PNGs and never imports torch)
    samples_full.png, samples_null.png   diffusion stores: the first generated images of the full and the
                      null model from the shared noise (saved by the worker that evaluated them)
    samples_without.png  the full model next to the model without the top contributors and without each
                      flagged (planted) one (``contribshap demo`` makes it; :func:`sample_panels`)
    samples_counterfactual.png  the same after ``contribshap evaluate`` with counterfactuals (top / bottom)
    ranking_<p>.png   per property: contributors ranked by the default estimate's credit, with CI error bars
    convergence_<p>.png  per property: estimates re-computed on growing prefixes of the plan
    lds_<p>.png       per property: held-out scatter (sum of attributions vs measured value) and LDS by
                      method, when ``contribshap evaluate`` ran
    cost.png          hours by stage (fine-tune / sample / properties) per kind of evaluation
    table.csv, table.parquet   the final table: property, method, direction, rank (1 = largest credit),
                      contributor, credit and its CI, the raw value and its CI, stderr, harmful

The "Payout shares" section shows ``estimates/shares.json`` (``contribshap reduce STORE --shares``, with
its pool and rule); without it, the default rule (shares of 1 in proportion to non-negative credit, 200
draws) for the headline property (:mod:`contribshap.pipeline.products.shares`).

Every table, card and plot ranks by **credit**, the benefit to the model (:mod:`contribshap.pipeline.products.credit`:
the raw Shapley value, sign-flipped once for a lower-is-better property such as fid); harmful contributors
(credit interval wholly below 0) get sections of their own.

Inputs (read-only): ``manifest.json``, ``config.yaml``, ``plan.parquet``, ``evals/*/*.parquet`` (the
``info["samples"]`` of the full / empty coalition rows), ``artifacts/thumbnails-*/``,
``artifacts/samples/``, ``estimates/estimates.json`` (written by ``contribshap reduce``; made here when
missing) and ``estimates/evaluation.json`` (optional).
"""

from __future__ import annotations

import html
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.contracts.errors import ContribshapError
from contribshap.pipeline.contracts.keys import is_planted, mask_to_str
from contribshap.pipeline.products.credit import direction_note, is_harmful, oriented_people, sign
from contribshap.pipeline.products.readers import load_estimates, load_evaluation, main_rows, read_all_evals
from contribshap.pipeline.storage.saved_config import read_saved_config

_STAGES = ("finetune_s", "sample_s", "eval_s")
_MAX_RANKED = 20  # the ranking plot shows at most 2 x this many contributors
_MAX_LINES = 12  # the convergence plot draws every contributor up to this many, else the largest 8
_LARGE_POOL = 200  # beyond this many contributors the convergence plot refits on 3 prefixes, not 8 (each refit
#                    of a 1,000-contributor plan costs seconds)
_MAX_CARDS = 24  # up to this many contributors every one gets a card; beyond, only the ends and the flagged
_CARDS_TOP, _CARDS_BOTTOM = 10, 5  # cards of a large pool: the most and least valuable (the table lists everyone)
#: Store paths of the sample grid that ``contribshap demo`` makes (:func:`sample_panels`) and its caption.
SAMPLES_WITHOUT_PNG = "artifacts/samples/without-top.png"
SAMPLES_WITHOUT_JSON = "artifacts/samples/without-top.json"
#: Contributor ids of this prefix hold data the source planted (e.g. pure noise): "flagged" contributors.
NOT_IDENTIFIED = "CI ∞ · not identified"
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
.note{color:#666;font-size:.9rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(235px,1fr));gap:.7rem;margin:.8rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.55rem .65rem;background:#fcfcfc;font-size:.88rem}
.card img{display:block;width:100%;image-rendering:pixelated;margin:0 0 .35rem 0;border:0;background:#000}
.card.flag{border-color:#c55;background:#fff7f6}
.rank{float:right;font-weight:600;color:#555}.cid{color:#777;font-size:.8rem}
.badge{background:#c55;color:#fff;border-radius:3px;padding:0 .3rem;font-size:.75rem;margin-left:.3rem}
.ni{color:#a40;font-weight:600;white-space:nowrap}
.grids{display:flex;flex-wrap:wrap;gap:1.2rem}
figure{margin:.6rem 0}figure img{image-rendering:pixelated}
figcaption{font-size:.85rem;color:#444;max-width:520px}
.read{background:#f6f8fa;border-left:4px solid #8ab;padding:.4rem 1rem;font-size:.92rem}
"""


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return html.escape(str(x))


# --------------------------------------------------------------------------------------------------------
# table
# --------------------------------------------------------------------------------------------------------
def final_table(estimates: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten the ``reduce --json`` document into rows (rank 1 = largest credit = most valuable).

    Args:
        estimates: ``{property: {method: {"contributors": [{"id","name","value","ci_low","ci_high",
            "stderr", "credit", "credit_low", "credit_high"}, ...], "v_empty", "v_full", "n_evaluations",
            "direction"}}}`` (credit fields are derived from ``value`` and ``direction`` when missing).

    Returns:
        one dict per (property, method, contributor) with keys ``property, method, direction, rank,
        contributor_id, name, credit, credit_low, credit_high, value, ci_low, ci_high, stderr,
        n_evaluations, identified, harmful, ci``: ``credit`` is the benefit (``-value`` for a
        lower-is-better property), ``value`` the raw Shapley value; ``identified`` False when the
        evaluations cannot pin the value or its interval down (bounds NaN; documents written before the
        key existed count as identified); ``ci`` is the credit interval as display text, ``not identified
        (...)`` with the evaluations still needed.
    """
    rows = []
    for prop, by_method in estimates.items():
        for method, doc in by_method.items():
            if not isinstance(doc, dict) or "contributors" not in doc:
                continue
            people = oriented_people(doc)
            order = sorted(range(len(people)), key=lambda i: -np.nan_to_num(_num(people[i].get("credit")),
                                                                             nan=-np.inf))
            rank = {i: r + 1 for r, i in enumerate(order)}
            for i, person in enumerate(people):
                known = bool(person.get("identified", True))
                rows.append(
                    {
                        "property": prop,
                        "method": method,
                        "direction": "lower" if doc.get("direction") == "lower" else "higher",
                        "rank": rank[i],
                        "contributor_id": str(person.get("id")),
                        "name": str(person.get("name", person.get("id"))),
                        "credit": _num(person.get("credit")),
                        "credit_low": _num(person.get("credit_low")),
                        "credit_high": _num(person.get("credit_high")),
                        "value": _num(person.get("value")),
                        "ci_low": _num(person.get("ci_low")),
                        "ci_high": _num(person.get("ci_high")),
                        "stderr": _num(person.get("stderr")),
                        "n_evaluations": int(doc.get("n_evaluations") or 0),
                        "identified": known,
                        "harmful": is_harmful(person),
                        "ci": (f"[{_fmt(_num(person.get('credit_low')))}, {_fmt(_num(person.get('credit_high')))}]"
                               if known else
                               f"not identified (needs ≥ {int(doc.get('more_evaluations') or 1)} more evaluations)"),
                    }
                )
    rows.sort(key=lambda r: (r["property"], r["method"], r["rank"]))
    return rows


def _num(x: Any) -> float:
    try:
        return float(x) if x is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def write_table(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """Write ``table.csv`` and ``table.parquet`` into ``out``; returns both paths."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["property", "method", "direction", "rank", "contributor_id", "name", "credit", "credit_low",
               "credit_high", "value", "ci_low", "ci_high", "stderr", "n_evaluations", "harmful"]
    csv_path, pq_path = out / "table.csv", out / "table.parquet"
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})
    pq.write_table(pa.table({c: [row[c] for row in rows] for c in columns}), pq_path)
    return csv_path, pq_path


# --------------------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------------------
def _plot_ranking(prop: str, by_method: dict[str, Any], methods: list[str], path: Path) -> None:
    """Horizontal error bars of credit: contributors sorted by the first method's credit (the most valuable
    on top), up to 3 methods side by side."""
    plt = _plt()
    first = oriented_people(by_method[methods[0]])
    order = sorted(range(len(first)), key=lambda i: np.nan_to_num(_num(first[i].get("credit")), nan=-np.inf))
    shown_note = ""
    if len(order) > 2 * _MAX_RANKED:  # many contributors: the two ends of the ranking (the table has all)
        shown_note = f" — lowest and highest {_MAX_RANKED} of {len(order)}"
        order = order[:_MAX_RANKED] + order[-_MAX_RANKED:]
    n = len(order)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.32 * n + 1.2)))
    shown = methods[:3]
    for j, method in enumerate(shown):
        people = oriented_people(by_method[method])
        y = np.arange(n) + (j - (len(shown) - 1) / 2) * 0.25
        val = np.array([_num(people[i].get("credit")) for i in order])
        lo = np.array([_num(people[i].get("credit_low")) for i in order])
        hi = np.array([_num(people[i].get("credit_high")) for i in order])
        known = np.array([bool(people[i].get("identified", True)) for i in order])
        err = np.vstack([np.nan_to_num(val - lo), np.nan_to_num(hi - val)])
        if known.any():
            ax.errorbar(val[known], y[known], xerr=np.clip(err[:, known], 0, None), fmt="o", ms=4, capsize=2,
                        color=f"C{j}", label=method)
        if not known.all():  # no interval to draw: an open marker, and the legend says why
            ax.plot(val[~known], y[~known], "o", ms=5, mfc="none", color=f"C{j}",
                    label=f"{method}: not identified (CI ∞)")
    ax.axvline(0.0, color="#999", lw=0.8)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([str(first[i].get("name", first[i].get("id"))) for i in order], fontsize=8)
    ax.set_xlabel(f"credit ({direction_note(prop, by_method[methods[0]].get('direction')).split('; ')[1]}; "
                  "CI at the estimator's level)")
    ax.set_title(f"{prop}: contributors ranked ({methods[0]}){shown_note}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_forest(prop: str, doc: dict[str, Any], path: Path) -> None:
    """Every contributor's credit with its interval, sorted (a forest plot: the whole pool at a glance;
    names on the axis up to 60 contributors, ranks beyond)."""
    plt = _plt()
    people = oriented_people(doc)
    order = sorted(range(len(people)), key=lambda i: np.nan_to_num(_num(people[i].get("credit")), nan=-np.inf))
    n = len(order)
    val = np.array([_num(people[i].get("credit")) for i in order])
    lo = np.array([_num(people[i].get("credit_low")) for i in order])
    hi = np.array([_num(people[i].get("credit_high")) for i in order])
    known = np.array([bool(people[i].get("identified", True)) for i in order])
    harm = np.array([is_harmful(people[i]) for i in order])
    fig, ax = plt.subplots(figsize=(7.5, min(30.0, max(3.0, 0.13 * n + 1.5))))
    y = np.arange(n)
    colors = np.where(harm, "C3", np.where(np.nan_to_num(lo, nan=-np.inf) > 0, "C2", "C0"))
    for color in ("C0", "C2", "C3"):
        pick = (colors == color) & known
        if pick.any():
            ax.hlines(y[pick], lo[pick], hi[pick], color=color, lw=0.8)
            ax.plot(val[pick], y[pick], "o", ms=2.5, color=color)
    if not known.all():
        ax.plot(val[~known], y[~known], "o", ms=3, mfc="none", color="#777", label="not identified (CI ∞)")
        ax.legend(fontsize=8, loc="lower right")
    ax.axvline(0.0, color="#999", lw=0.8)
    if n <= 60:
        ax.set_yticks(y)
        ax.set_yticklabels([str(people[i].get("name", people[i].get("id"))) for i in order], fontsize=7)
    else:
        ax.set_ylabel("rank (bottom = least valuable)")
        ax.set_yticks(y[:: max(1, n // 10)])
        ax.set_yticklabels([str(n - k) for k in y[:: max(1, n // 10)]], fontsize=7)
    ax.set_xlabel("credit (green: surely valuable, red: surely harmful, blue: not resolved from 0)")
    ax.set_title(f"{prop}: all {n} contributors", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def convergence_curve(
    masks: np.ndarray,
    values: np.ndarray,
    v_empty: float,
    v_full: float,
    method: str,
    *,
    n_points: int = 8,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Re-estimate on growing prefixes of the plan's estimate rows.

    Args:
        masks: bool array (m, n) in plan order (replicates allowed); values: float array (m,).
        v_empty, v_full: endpoint values. method: estimator name for ``contribshap.pipeline.core.estimators.estimate``.
        n_points: number of prefix lengths (geometric from ~n+2 to m, rounded to even for paired plans).

    Returns:
        ``{"sizes": [p...], "value": [[n]...], "ci_low": [[n]...], "ci_high": [[n]...], "skipped": [p...]}``:
        prefixes the estimator refused (too few rows) are listed in ``skipped``.
    """
    from contribshap.pipeline.core.estimators import estimate

    m, n = masks.shape
    start = min(m, max(n + 2, 4))
    sizes = sorted({round(float(x)) for x in np.geomspace(start, m, n_points)} | {m}) if m else []
    sizes = sorted({s + (s % 2) if s < m else s for s in sizes})
    out: dict[str, Any] = {"sizes": [], "value": [], "ci_low": [], "ci_high": [], "skipped": []}
    for size in sizes:
        try:
            est = estimate(masks[:size], values[:size], v_empty, v_full, method=method, level=level, seed=seed)
        except (ValueError, np.linalg.LinAlgError):
            out["skipped"].append(size)
            continue
        out["sizes"].append(size)
        out["value"].append(np.asarray(est.value, dtype=float).tolist())
        out["ci_low"].append(np.asarray(est.ci_low, dtype=float).tolist())
        out["ci_high"].append(np.asarray(est.ci_high, dtype=float).tolist())
    return out


def convergence_lines(final: np.ndarray) -> list[int]:
    """Contributors the convergence plot draws, each with its legend entry: all of them up to 12, else the
    8 with the largest |final estimate| (in contributor order). ``final``: float (n,)."""
    n = len(final)
    if n <= _MAX_LINES:
        return list(range(n))
    return sorted(np.argsort(-np.abs(np.nan_to_num(final)))[:8].tolist())


def _plot_convergence(prop: str, method: str, curve: dict[str, Any], names: list[str], path: Path,
                      direction: str | None = None) -> None:
    """Credit (the raw estimates times :func:`~contribshap.pipeline.products.credit.sign`) on growing prefixes."""
    plt = _plt()
    sizes = np.array(curve["sizes"])
    s = sign(direction)
    value = s * np.array(curve["value"])
    lo, hi = np.sort([s * np.array(curve["ci_low"]), s * np.array(curve["ci_high"])], axis=0)
    fig, ax = plt.subplots(figsize=(9.0, 4.2))
    n = value.shape[1]
    drawn = convergence_lines(value[-1])
    colours = plt.get_cmap("tab20" if len(drawn) > 10 else "tab10")
    for j, i in enumerate(drawn):  # every drawn line has its legend entry, and only those are drawn
        colour = colours(j % colours.N)
        ax.plot(sizes, value[:, i], marker=".", lw=1.2, color=colour, label=names[i])
        band = np.isfinite(lo[:, i]) & np.isfinite(hi[:, i])  # no band where the CI is infinite
        ax.fill_between(sizes, np.where(band, lo[:, i], np.nan), np.where(band, hi[:, i], np.nan),
                        color=colour, alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("coalitions evaluated (prefix of the plan)")
    ax.set_ylabel(f"{method} credit ({'reduction' if s < 0 else 'increase'} of {prop})")
    shown = "" if len(drawn) == n else f"; the {len(drawn)} largest |credit| of {n}"
    ax.set_title(f"{prop}: convergence of {method} (bands: CI{shown})", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_lds(prop: str, lds_doc: dict[str, Any], method: str, path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    entry = lds_doc[method]
    scatter = entry.get("scatter") or {}
    ax1.scatter(scatter.get("sum", []), scatter.get("value", []), s=14, alpha=0.8)
    ax1.set_xlabel(f"sum of {method} attributions over the subset")
    ax1.set_ylabel(f"measured {prop} (held-out subset, seed mean)")
    ax1.set_title(f"LDS {_fmt(entry['value'], 3)} [{_fmt(entry['ci_low'], 3)}, {_fmt(entry['ci_high'], 3)}]")
    names = sorted(lds_doc, key=lambda k: np.nan_to_num(_num(lds_doc[k]["value"]), nan=-1e9))  # best on top
    vals = np.array([_num(lds_doc[k]["value"]) for k in names])
    lo = np.array([_num(lds_doc[k]["ci_low"]) for k in names])
    hi = np.array([_num(lds_doc[k]["ci_high"]) for k in names])
    err = np.clip(np.nan_to_num(np.vstack([vals - lo, hi - vals])), 0, None)
    y = np.arange(len(names))
    ax2.barh(y, np.nan_to_num(vals), xerr=err, color=["#2a6" if k == method else "#89a" for k in names])
    ax2.set_yticks(y)
    ax2.set_yticklabels(names, fontsize=8)
    ax2.axvline(0, color="#999", lw=0.8)
    ax2.set_xlim(-100, 100)
    ax2.set_xlabel("LDS (x100 Spearman)")
    ax2.set_title(f"{prop}: LDS by method")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cost_summary(rows_by_namespace: dict[str, list[dict[str, Any]]], main_namespace: str) -> list[dict[str, Any]]:
    """Hours by stage per namespace, with evaluations done / failed.

    Returns:
        one dict per namespace: ``namespace, role ("main" or "derived"), ok, failed, finetune_h, sample_h,
        eval_h, wall_h, device`` (device from the ``info`` JSON when a worker recorded it, else "unknown").
    """
    out = []
    for namespace, rows in sorted(rows_by_namespace.items()):
        entry: dict[str, Any] = {
            "namespace": namespace,
            "role": "main" if namespace == main_namespace else "derived",
            "ok": sum(1 for r in rows if r.get("status") == "ok"),
            "failed": sum(1 for r in rows if r.get("status") != "ok"),
        }
        for stage in (*_STAGES, "wall_s"):
            total = sum(_num(r.get(stage)) for r in rows if math.isfinite(_num(r.get(stage))))
            entry[stage.replace("_s", "_h")] = total / 3600.0
        devices = set()
        for r in rows:
            try:
                info = json.loads(r.get("info") or "{}")
            except (TypeError, ValueError):
                info = {}
            if isinstance(info, dict) and info.get("device"):
                devices.add(str(info["device"]))
        entry["device"] = ",".join(sorted(devices)) or "unknown"
        out.append(entry)
    return out


def _plot_cost(cost: list[dict[str, Any]], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(cost) + 1.8))
    left = np.zeros(len(cost))
    for stage, colour in zip(("finetune_h", "sample_h", "eval_h"), ("#4a7", "#47b", "#c74"), strict=True):
        widths = np.array([c[stage] for c in cost])
        ax.barh(np.arange(len(cost)), widths, left=left, color=colour, label=stage.removesuffix("_h"))
        left += widths
    ax.set_yticks(np.arange(len(cost)))
    ax.set_yticklabels([f"{c['namespace']} ({c['role']})" for c in cost], fontsize=8)
    ax.set_xlabel("hours (summed over evaluations)")
    ax.legend(fontsize=8)
    ax.set_title("cost by stage")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------------
def _html_table(headers: list[str], rows: list[list[Any]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if j < left else ""}">{html.escape(h)}</th>' for j, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f'<td class="{"l" if j < left else ""}">{_fmt(v)}</td>' for j, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# --------------------------------------------------------------------------------------------------------
# images of the store (PNGs written by the workers; read here, never made here)
# --------------------------------------------------------------------------------------------------------
def ordered(estimates: dict[str, Any], *, properties: list[str] | None = None,
            methods: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """``estimates`` with properties and methods in the run's order (``estimates.json`` sorts its keys).

    Args:
        estimates: ``{property: {method: doc}}``. properties: the manifest's ``property_names`` (the game's
            order). methods: the config's ``estimators`` (the first is the default). Names missing from
            them follow in their own order.
    """
    def rank(names: list[str] | None, key: str) -> int:
        return names.index(key) if names and key in names else len(names or [])

    return {prop: {m: estimates[prop][m] for m in sorted(estimates[prop], key=lambda m: rank(methods, m))}
            for prop in sorted(estimates, key=lambda p: rank(properties, p))}


def headline(estimates: dict[str, Any]) -> tuple[str, str] | None:
    """(property, method) the report and the console lead with: the first property and its first method
    of :func:`ordered` estimates (the game's first property, the default estimator), or None."""
    for prop, by_method in estimates.items():
        for method, doc in by_method.items():
            if isinstance(doc, dict) and "contributors" in doc:
                return prop, method
    return None


def flagged(ids: list[str]) -> list[int]:
    """Indices of the flagged contributors: those whose data the source planted (ids ``planted-<name>``)."""
    return [i for i, cid in enumerate(ids) if is_planted(cid)]


def _names_list(names: list[str], limit: int = 4) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def sample_panels(store: Path, *, fraction: float = 0.2, max_panels: int = 4) -> tuple[list[tuple[str, np.ndarray]], dict[str, Any]]:
    """Panels of the "without the top contributors" sample grid of a store (what ``contribshap demo`` draws).

    The full coalition; without the top ``max(1, round(fraction * n))`` contributors by the headline
    credit (:func:`headline`); and without each flagged (planted) contributor not already removed alone,
    up to ``max_panels`` panels. The grid itself is one Ray task
    (``contribshap.pipeline.dispatch.driver.run_counterfactual_samples``) writing :data:`SAMPLES_WITHOUT_PNG`;
    the returned document is its caption file :data:`SAMPLES_WITHOUT_JSON`.

    Args:
        store: a store with ``estimates/estimates.json``. fraction: share of contributors removed, in (0, 1).
        max_panels: at most this many panels (>= 2).

    Returns:
        ``(panels, doc)``: panels are ``(title, mask)`` with mask bool (n,) in manifest order; ``doc`` has
        ``property, method, k, removed`` (ids), ``flagged`` (ids), ``panels`` (titles) and ``caption``.
        No panels (and an empty doc) when the store has no estimate.
    """
    from contribshap.pipeline.storage.store import Store

    manifest = Store(store).read_manifest()
    contributors = manifest.get("contributors") or []
    estimates = load_ordered_estimates(store, manifest)
    lead = headline(estimates)
    if lead is None or not contributors:
        return [], {}
    prop, method = lead
    ids = [str(c["id"]) for c in contributors]
    names = [str(c.get("name", c["id"])) for c in contributors]
    by_id = {str(p["id"]): _num(p.get("credit")) for p in oriented_people(estimates[prop][method])}
    value = np.array([by_id.get(cid, math.nan) for cid in ids])
    n = len(ids)
    k = min(n - 1, max(1, round(fraction * n)))
    top = [int(i) for i in np.argsort(-np.nan_to_num(value, nan=-np.inf), kind="stable")[:k]]
    full = np.ones(n, dtype=bool)

    def without(members: list[int]) -> np.ndarray:
        mask = full.copy()
        mask[members] = False
        return mask

    panels = [("full coalition (all contributors)", full),
              (f"without the top {k} by {method} credit for {prop}:\n{_names_list([names[i] for i in top])}",
               without(top))]
    marked = flagged(ids)
    for i in marked:
        if len(panels) >= max_panels:
            break
        if top != [i]:
            panels.append((f"without {names[i]} (flagged: planted data)", without([i])))
    doc = {
        "property": prop, "method": method, "k": k, "removed": [ids[i] for i in top],
        "flagged": [ids[i] for i in marked], "panels": [title for title, _ in panels],
        "masks": [mask_to_str(mask) for _, mask in panels],
        "caption": (f"Generated samples from the same noise: the full coalition, without the {k} contributors "
                    f"with the highest {method} credit for {prop} (the most valuable; "
                    f"{direction_note(prop, estimates[prop][method].get('direction'))})"
                    + (", and without each flagged (planted) contributor" if len(panels) > 2 else "")
                    + ". Each model is fine-tuned as in the run, with the job seed of its coalition."),
    }
    return panels, doc


def _thumbnails(store: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """contributor id -> its thumbnail PNG (``artifacts/thumbnails-*/``, written by prepare); {} if none."""
    prepared = (manifest.get("prepared") or {}).get(str(manifest.get("config_hash")), {})
    named = ((prepared.get("summary") or {}).get("thumbnails") or {}).get("folder")
    folders = [store / "artifacts" / named] if named else []
    folders += sorted((store / "artifacts").glob("thumbnails-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders:
        try:
            index = json.loads((folder / "index.json").read_text())
        except (OSError, ValueError):
            continue
        return {str(e["id"]): folder / str(e["png"]) for e in index.get("contributors", [])
                if (folder / str(e["png"])).is_file()}
    return {}


def _model_grids(store: Path, rows: list[dict[str, Any]], n: int) -> dict[str, Path]:
    """``{"full": png, "null": png}``: the grids the workers saved for the full / empty coalition (replicate 0)."""
    out = {}
    for which, mask in (("full", "1" * n), ("null", "0" * n)):
        for row in rows:
            if row.get("mask") != mask or int(row.get("replicate", -1)) != 0 or row.get("status") != "ok":
                continue
            try:
                path = json.loads(row.get("info") or "{}").get("samples")
            except (TypeError, ValueError, AttributeError):
                path = None
            if path and (store / path).is_file():
                out[which] = store / path
    return out


def _saved_config(store: Path) -> dict[str, Any]:
    """The store's resolved ``config.yaml`` as plain data ({} when unreadable: the report still renders)."""
    try:
        return read_saved_config(store).model_dump(mode="json")
    except ContribshapError:
        return {}


def load_ordered_estimates(store: Path, manifest: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """``estimates/estimates.json`` (reduced first when missing) in the run's order (:func:`ordered`)."""
    from contribshap.pipeline.storage.store import Store

    manifest = manifest if manifest is not None else Store(store).read_manifest()
    methods = _saved_config(store).get("estimators")
    estimates = ordered(load_estimates(store, reduce_if_missing=True),
                        properties=list(manifest.get("property_names") or []),
                        methods=list(methods) if isinstance(methods, list) else None)
    _fill_directions(store, estimates)
    return estimates


def _fill_directions(store: Path, estimates: dict[str, Any]) -> None:
    """Give a document written before ``direction`` existed the direction of the store's config (in place)."""
    missing = [doc for by_method in estimates.values() for doc in by_method.values()
               if isinstance(doc, dict) and "contributors" in doc and "direction" not in doc]
    if not missing:
        return
    try:
        cfg = read_saved_config(store)
    except ContribshapError:
        cfg = None
    for prop, by_method in estimates.items():
        for doc in by_method.values():
            if isinstance(doc, dict) and "contributors" in doc and "direction" not in doc:
                if cfg is not None:
                    doc["direction"] = cfg.direction(prop)
                else:
                    from contribshap.pipeline.config.diffusion import PROPERTY_DIRECTIONS

                    doc["direction"] = PROPERTY_DIRECTIONS.get(prop, "higher")


# --------------------------------------------------------------------------------------------------------
# sections of the page
# --------------------------------------------------------------------------------------------------------
def _interval_html(person: dict[str, Any], more: int) -> str:
    if not person.get("identified", True):
        return (f'<span class="ni" title="the evaluations cannot pin this value down; at least {more} more '
                f'evaluations are needed">{NOT_IDENTIFIED}</span>')
    if "credit_low" in person:
        return f"[{_fmt(_num(person.get('credit_low')))}, {_fmt(_num(person.get('credit_high')))}]"
    return f"[{_fmt(_num(person.get('ci_low')))}, {_fmt(_num(person.get('ci_high')))}]"


def _how_to_read(estimates: dict[str, Any], lead: tuple[str, str], evaluation: dict[str, Any] | None) -> str:
    """The "how to read this" section, with the headline property's own numbers."""
    prop, method = lead
    doc = estimates[prop][method]
    people = oriented_people(doc)
    values = np.array([_num(p.get("credit")) for p in people])
    widths = np.array([_num(p.get("ci_high")) - _num(p.get("ci_low")) for p in people if p.get("identified", True)])
    widths = widths[np.isfinite(widths)]
    spread = float(np.nanmax(values) - np.nanmin(values)) if np.isfinite(values).any() else math.nan
    if len(widths) and math.isfinite(spread) and spread > 0:
        ratio = float(np.median(widths)) / spread
        verdict = ("narrow: the ranking is resolved except between close neighbours" if ratio < 0.25 else
                   "comparable to the differences: only the ends of the ranking are resolved" if ratio < 1 else
                   "wider than the spread: the ranking is not resolved; raise design.budget")
        numbers = (f"For <b>{html.escape(prop)}</b> the median {html.escape(method)} interval is {_fmt(float(np.median(widths)), 3)} "
                   f"wide and the credits span {_fmt(spread, 3)} (largest minus smallest), a ratio of {ratio:.2f}: {verdict}.")
    else:
        numbers = (f"For <b>{html.escape(prop)}</b> no interval is identified yet, so the ranking is not resolved.")
    unknown = sum(1 for p in people if not p.get("identified", True))
    ni = (f" Here {unknown} of {len(people)} contributors are not identified; {html.escape(method)} needs at least "
          f"{int(doc.get('more_evaluations') or 1)} more evaluations (raise <code>design.budget</code>)." if unknown else "")
    strat = ""
    if evaluation and evaluation.get("lds_stratified"):
        excluded = ", ".join((evaluation.get("stratify") or {}).get("exclude") or [])
        strat = (f"<li><b>Stratified LDS</b> repeats the LDS on the held-out subsets that contain none of the flagged "
                 f"contributors ({html.escape(excluded)}). One contributor with a large effect (planted noise) makes "
                 "any ranking that puts it first look good; the stratified LDS says whether the credit also orders "
                 "the remaining contributors correctly. A high overall LDS with a stratified LDS near 0 means the "
                 "method finds the obvious contributor and little else.</li>")
    return (
        '<h2 id="read">How to read this</h2><div class="read"><ul>'
        f"<li><b>Credit</b> is the benefit to the model, in the property's units: the Shapley value (the average "
        f"change of the property when a contributor's data joins a random group of the others), sign-flipped "
        f"once for a lower-is-better property. {_directions_html(estimates, method)} Rank 1 is the most valuable "
        f"contributor; positive credit improves the property, and a contributor whose credit interval lies wholly "
        f"below 0 is listed as <b>harmful</b>. The raw values add up to v(full) − v(empty); table.csv and "
        f"estimates.json keep them next to the credit.</li>"
        f"<li><b>Confidence intervals</b> cover the estimation noise of the sampled coalitions (and the training "
        f"noise of replicates), at the estimator's level. Compare their width with the spread of the credits: two "
        f"contributors are ranked apart only when their intervals do not overlap. {numbers} A small interval is "
        f"not accuracy: the LDS and counterfactual sections check the credit against fresh evaluations.</li>"
        f'<li><span class="ni">{NOT_IDENTIFIED}</span>: the evaluated coalitions cannot pin the value down (too few '
        f"evaluations for the estimator, or a contributor never seen in and out of enough coalitions). The value "
        f"shown is only one of many that fit; its interval is (−∞, ∞).{ni}</li>"
        "<li><b>LDS</b> (linear datamodeling score): Spearman correlation ×100 between the summed credit of held-out "
        "groups and the property measured when training on them; 100 = the credit ranks unseen groups exactly.</li>"
        f"{strat}</ul></div>"
    )


def _directions_html(estimates: dict[str, Any], method: str) -> str:
    """Each property's direction, said once: "fid: lower is better; credit = reduction of fid." ..."""
    notes = [direction_note(prop, by_method[method].get("direction")) for prop, by_method in estimates.items()
             if isinstance(by_method.get(method), dict)]
    return " ".join(html.escape(note) + "." for note in notes)


def _headline_html(estimates: dict[str, Any], lead: tuple[str, str]) -> str:
    """One line under the title: the most valuable contributor of the headline, and the harmful ones."""
    prop, method = lead
    doc = estimates[prop][method]
    people = sorted(oriented_people(doc), key=lambda p: -np.nan_to_num(_num(p.get("credit")), nan=-np.inf))
    if not people:
        return ""
    top = people[0]
    harmful = [str(p.get("name", p.get("id"))) for p in people if is_harmful(p)]
    more = int(doc.get("more_evaluations") or 1)
    return (f'<p class="read"><b>Most valuable for {html.escape(prop)}</b> ({html.escape(method)}): '
            f"{html.escape(str(top.get('name', top.get('id'))))}, credit {_fmt(_num(top.get('credit')))} "
            f"{_interval_html(top, more)} ({html.escape(direction_note(prop, doc.get('direction')))}). "
            + (f"<b>Harmful</b> (credit interval below 0): {html.escape(_names_list(harmful))}."
               if harmful else "No contributor is harmful at this level." if any(p.get("identified", True) for p in people)
               else "No interval is identified yet, so no contributor can be called harmful.") + "</p>")


def _cards(estimates: dict[str, Any], lead: tuple[str, str], contributors: list[dict[str, Any]],
           thumbs: dict[str, str], flagged_ids: set[str]) -> str:
    """One card per contributor, in headline rank order (by credit): own images, credit with CI, rank,
    images owned; the harmful contributors (credit interval wholly below 0) in a section of their own."""
    prop, method = lead
    doc = estimates[prop][method]
    more = int(doc.get("more_evaluations") or 1)
    people = {str(p["id"]): p for p in oriented_people(doc)}
    ranks: dict[str, dict[str, int]] = {}
    for other, by_method in estimates.items():
        entry = by_method.get(method) if isinstance(by_method.get(method), dict) else None
        if not entry or "contributors" not in entry:
            continue
        order = sorted(oriented_people(entry), key=lambda p: -np.nan_to_num(_num(p.get("credit")), nan=-np.inf))
        for r, person in enumerate(order, start=1):
            ranks.setdefault(str(person["id"]), {})[other] = r
    n = len(people)
    ordered = sorted(contributors, key=lambda c: ranks.get(str(c["id"]), {}).get(prop, n + 1))
    cards: list[str] = []
    harmful_cards: list[str] = []
    shown = _card_selection(ordered, people, flagged_ids)
    for c in shown:
        cid = str(c["id"])
        person = people.get(cid, {})
        name = str(c.get("name", cid))
        image = (f'<img src="{thumbs[cid]}" alt="own images of {html.escape(name)}">' if cid in thumbs else "")
        badge = '<span class="badge">flagged: planted</span>' if cid in flagged_ids else ""
        others = " · ".join(f"{html.escape(p)} #{r}" for p, r in ranks.get(cid, {}).items() if p != prop)
        images = f"{int(c['n_samples'])} images · " if int(c.get("n_samples") or 0) else ""
        (harmful_cards if is_harmful(person) else cards).append(
            f'<div class="card{" flag" if cid in flagged_ids else ""}">{image}'
            f'<span class="rank">#{ranks.get(cid, {}).get(prop, "–")} of {n}</span>'
            f'<b>{html.escape(name)}</b>{badge}<br><span class="cid">{html.escape(cid)}</span><br>'
            f"{html.escape(prop)} credit <b>{_fmt(_num(person.get('credit')))}</b> {_interval_html(person, more)}<br>"
            f'<span class="note">{images}{("ranks: " + others) if others else ""}</span></div>'
        )
    hidden = (f'<p class="note">Cards for the {_CARDS_TOP} most and {_CARDS_BOTTOM} least valuable, the flagged and '
              f'the harmful contributors; all {len(ordered)} are in the ranked table and the forest plot below and in '
              '<a href="table.csv">table.csv</a>.</p>' if len(shown) < len(ordered) else "")
    harmful = (f'<h3 id="harmful">Harmful for {html.escape(prop)}</h3><p>Their credit interval lies wholly below 0: '
               f"at this level their data makes {html.escape(prop)} worse.</p>"
               f'<div class="cards">{"".join(harmful_cards)}</div>' if harmful_cards else "")
    return (f'<h2 id="contributors">Contributors</h2><p>Ranked by {html.escape(method)} credit for '
            f'<b>{html.escape(prop)}</b> (rank 1 = largest credit = the most valuable; '
            f"{html.escape(direction_note(prop, doc.get('direction')))}); "
            f"ranks for the other properties below each card.</p>"
            f'<p class="resolved">{html.escape(resolved_line(list(people.values())))}</p>'
            f'<div class="cards">{"".join(cards)}</div>{harmful}{hidden}')


def _card_selection(ordered: list[dict[str, Any]], people: dict[str, dict[str, Any]], flagged_ids: set[str]
                    ) -> list[dict[str, Any]]:
    """Contributors that get a card, in rank order: everyone up to :data:`_MAX_CARDS`, else the
    :data:`_CARDS_TOP` most and :data:`_CARDS_BOTTOM` least valuable, the flagged and the harmful."""
    if len(ordered) <= _MAX_CARDS:
        return ordered
    ends = {str(c["id"]) for c in ordered[:_CARDS_TOP] + ordered[-_CARDS_BOTTOM:]}
    return [c for c in ordered if str(c["id"]) in ends or str(c["id"]) in flagged_ids
            or is_harmful(people.get(str(c["id"]), {}))]


def resolved_line(people: list[dict[str, Any]]) -> str:
    """One line: how many contributors have an interval, and how many the budget resolves from zero."""
    n = len(people)
    known = [p for p in people if p.get("identified", True)]
    helpful = sum(1 for p in known if _num(p.get("credit_low")) > 0)
    harmful = sum(1 for p in known if is_harmful(p))
    return (f"Resolved: {len(known)} of {n} contributors have an interval; {helpful} are surely valuable and "
            f"{harmful} surely harmful (interval wholly above / below 0); the budget cannot tell the other "
            f"{n - helpful - harmful} from zero.")


def _plan_section(store: Path) -> str:
    """What the budget buys: the last ``contribshap plan`` projection, or how to make one."""
    from contribshap.pipeline.products.planning import plan_lines, read_plan_projection

    doc = read_plan_projection(store)
    if doc is None:
        return ('<h2 id="plan">Budget</h2><p class="note">No projection yet: <code>contribshap plan '
                f'{html.escape(str(store))} --halfwidth H</code> (or <code>--top-k K</code>, <code>--harmful-fdr Q'
                "</code>) projects the evaluations and GPU-hours that reach a target from this store.</p>")
    return '<h2 id="plan">Budget</h2>' + "".join(f"<p>{html.escape(line)}</p>" for line in plan_lines(doc))


def _shares_section(store: Path, lead: tuple[str, str]) -> str:
    """Payout shares: ``estimates/shares.json`` when ``reduce --shares`` wrote it, else the default rule
    computed here for the headline property (a note says how to state a pool)."""
    from contribshap.pipeline.products.shares import shares_document, store_shares

    head = '<h2 id="shares">Payout shares</h2>'
    prop, method = lead
    path = store / "estimates" / "shares.json"
    document: dict[str, Any] | None = None
    try:
        document = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        document = None
    stated = document is not None and prop in (document.get("properties") or {})
    if not stated:
        from contribshap.pipeline.products.reduce import reduce_store
        from contribshap.pipeline.storage.store import Store

        try:
            rows: dict[str, Any] = {}
            results = reduce_store(store, methods=[method], write=False, rows_out=rows)
            shares = store_shares(results, rows, method=method, seed=int(_saved_config(store).get("seed") or 0),
                                  properties=[prop])
            document = shares_document(shares, Store(store).read_manifest().get("contributors") or [], method=method)
        except (ContribshapError, ValueError) as error:
            return head + f'<p class="note">No shares: {html.escape(str(error))}</p>'
    assert document is not None
    entry = document["properties"][prop]
    pool = float(document["pool"])
    people = sorted(entry["contributors"], key=lambda c: -_num(c.get("share")))
    rows_html = [[c["name"], _num(c.get("credit")), _num(c.get("share")),
                  (f"[{_fmt(_num(c.get('share_low')))}, {_fmt(_num(c.get('share_high')))}]"
                   if c.get("share_low") is not None else NOT_IDENTIFIED),
                  f"{100 * _num(c.get('share')) / pool:.1f}%"] for c in people]
    how = {"units": f"{entry['n_draws']} half-samples of the sampling units (coalition + complement), re-estimated",
           "normal": f"{entry['n_draws']} draws of the normal approximation of the estimate",
           "none": "none: the estimate is not identified"}[entry["resample"]]
    origin = ("as stated by <code>contribshap reduce --shares</code>" if stated else
              f"default rule; state your pool with <code>contribshap reduce {html.escape(str(store))} --shares "
              "--pool AMOUNT [--floor F] [--cap C]</code>")
    resolved = (f"Unresolved at this budget: <b>{_fmt(_num(entry['unresolved']))}</b> of {_fmt(pool)} "
                f"({100 * _num(entry['unresolved']) / pool:.1f}%: half the summed widths of the share intervals, the "
                f"money the intervals leave free to move); {_fmt(_num(entry['uncertain_payees']))} is held by "
                "contributors whose interval reaches the floor." if entry["identified"] else
                "The estimate is not identified: the whole pool is unresolved (raise <code>design.budget</code>).")
    return (head + f"<p>{html.escape(str(document.get('rule', '')))} ({origin}). Property <b>{html.escape(prop)}</b> by "
            f"{html.escape(method)}; {html.escape(direction_note(prop, entry.get('direction')))}. Intervals at "
            f"{int(100 * float(document.get('level', 0.95)))}%: {how}"
            + (f" ({int(entry['n_dropped'])} not identified, dropped)" if entry.get("n_dropped") else "")
            + (f"; {html.escape(str(entry['note']))}" if entry.get("note") else "") + f". {resolved}</p>"
            + _html_table(["contributor", "credit", "share", "interval", "% of pool"], rows_html, left=1)
            + '<p class="note">Files: <code>estimates/shares.csv</code>, <code>estimates/shares.parquet</code> '
              "(written by <code>reduce --shares</code>).</p>")


def _overlap_section(store: Path, manifest: dict[str, Any]) -> str:
    """Contributor x contributor table of shared images (prepare's overlap audit); '' when the store has none."""
    from contribshap.pipeline.products.overlap import overlap_html, read_overlap

    return overlap_html(read_overlap(store, manifest))


def _figure(src: str, alt: str, caption: str) -> str:
    return (f'<figure><img src="{src}" alt="{html.escape(alt)}"><figcaption>{caption}</figcaption></figure>')


def _samples_section(store: Path, out: Path, *, game_kind: str, grids: dict[str, Path], lead: tuple[str, str] | None,
                     estimates: dict[str, Any], evaluation: dict[str, Any] | None) -> str:
    """Generated samples: full and null model grids, the "without the top contributors" grids."""
    head = '<h2 id="samples">Generated samples</h2>'
    if game_kind == "python":
        return head + '<p class="note">Skipped: a python game has no images.</p>'
    parts = [head, "<p>Every grid starts from the same noise (common random numbers): image i of one grid and "
                   "image i of another differ only by the model that denoised it.</p>"]
    values = ""
    if lead is not None:
        prop, method = lead
        doc = estimates[prop][method]
        values = (f" ({html.escape(prop)} v(full) = {_fmt(_num(doc.get('v_full')))}, "
                  f"v(empty) = {_fmt(_num(doc.get('v_empty')))})")
    pairs = []
    for which, alt, caption in (
        ("full", "samples of the full model", "<b>Full model</b> v(N): fine-tuned on every contributor's data"),
        ("null", "samples of the null model", "<b>Null model</b> v(∅): the model no contributor's data reached"),
    ):
        if which in grids:
            shutil.copyfile(grids[which], out / f"samples_{which}.png")
            pairs.append(_figure(f"samples_{which}.png", alt, caption))
    if pairs:
        parts.append(f'<div class="grids">{"".join(pairs)}</div>'
                     f'<p class="note">The first images of each model{values}.</p>')
    else:
        parts.append('<p class="note">No full / null model grid in this store (the workers save them when they '
                     "evaluate the full and the empty coalition; stores made by an older version lack them).</p>")
    without_png, without_json = store / SAMPLES_WITHOUT_PNG, store / SAMPLES_WITHOUT_JSON
    if without_png.is_file():
        try:
            caption = str(json.loads(without_json.read_text()).get("caption", ""))
        except (OSError, ValueError):
            caption = "The full model next to the model without the top contributors."
        shutil.copyfile(without_png, out / "samples_without.png")
        parts.append(_figure("samples_without.png", "samples without the top contributors", html.escape(caption)))
    samples = (evaluation or {}).get("samples") or {}
    if samples.get("png") and (store / samples["png"]).is_file():
        shutil.copyfile(store / samples["png"], out / "samples_counterfactual.png")
        parts.append(_figure("samples_counterfactual.png", "samples without the top / bottom contributors",
                             html.escape(samples.get("caption", ""))))
    if not without_png.is_file() and not samples.get("png"):
        parts.append('<p class="note">Without the top contributors: run <code>contribshap evaluate STORE</code> '
                     "with counterfactuals (or <code>contribshap demo</code>) to add these grids.</p>")
    return "\n".join(parts)


def _lds_table(lds_doc: dict[str, Any], strat_doc: dict[str, Any] | None, label: str) -> str:
    headers = ["method", "kind", "LDS", "CI", "subsets", "seeds"]
    if strat_doc:
        headers += [f"LDS {label}", "CI ", "subsets "]
    rows = []
    for method, v in lds_doc.items():
        row = [method, v.get("kind", ""), _num(v.get("value")), f"[{_fmt(_num(v.get('ci_low')), 3)}, {_fmt(_num(v.get('ci_high')), 3)}]",
               v.get("n_subsets"), v.get("n_seeds")]
        if strat_doc:
            s = strat_doc.get(method) or {}
            row += [_num(s.get("value")), f"[{_fmt(_num(s.get('ci_low')), 3)}, {_fmt(_num(s.get('ci_high')), 3)}]",
                    s.get("n_subsets")]
        rows.append(row)
    return _html_table(headers, rows, left=2)


def build_report(store: Path, *, out: Path | None = None) -> Path:
    """Write the HTML report of ``store`` and return the path of ``index.html``.

    Args:
        store: a store folder (``estimates/estimates.json`` is made by a reduce when missing).
        out: output folder (default ``<store>/report``); created if missing; files in it are overwritten.

    Returns:
        Path of ``index.html``. Every image it references is a PNG in the same folder.

    Raises:
        FileNotFoundError: one line naming the missing file and the command that writes it.

    Example:
        >>> build_report(Path("runs/demo"))  # doctest: +SKIP
        PosixPath('runs/demo/report/index.html')
    """
    # 1. Load what the store has.
    store = Path(store)
    out = Path(out) if out is not None else store / "report"
    out.mkdir(parents=True, exist_ok=True)
    from contribshap.pipeline.storage.store import Store

    manifest = Store(store).read_manifest()
    estimates = load_ordered_estimates(store, manifest)
    evaluation = load_evaluation(store)
    contributors = manifest.get("contributors", [])
    names = [str(c.get("name", c.get("id"))) for c in contributors]
    ids = [str(c.get("id")) for c in contributors]
    main_ns = str(manifest.get("config_hash", ""))
    rows_by_ns, unreadable = read_all_evals(store)
    game_kind = str((_saved_config(store).get("game") or {}).get("kind", "unknown"))
    lead = headline(estimates)
    sections: list[str] = []
    notes: list[str] = []
    if unreadable:
        notes.append(f"{len(unreadable)} unreadable evaluation file(s) skipped: {', '.join(map(str, unreadable[:5]))}")

    # 2. The final table.
    table = final_table(estimates)
    write_table(table, out)

    # 3. How to read this; the contributors with their own images (thumbnails written by prepare).
    thumbs: dict[str, str] = {}
    for k, (cid, path) in enumerate(sorted(_thumbnails(store, manifest).items(), key=lambda kv: ids.index(kv[0])
                                           if kv[0] in ids else len(ids))):
        thumbs[cid] = f"thumb_{k:05d}.png"
        shutil.copyfile(path, out / thumbs[cid])
    if lead is not None:
        sections.append(_headline_html(estimates, lead))
        sections.append(_how_to_read(estimates, lead, evaluation))
        sections.append(_cards(estimates, lead, contributors, thumbs, {ids[i] for i in flagged(ids)}))
        if game_kind == "diffusion" and not thumbs:
            sections.append('<p class="note">No contributor images: prepare writes them (stores prepared by an older '
                            "version lack them).</p>")

    sections.append(_overlap_section(store, manifest))
    # 3b. Payout shares of the headline property; the last budget projection (`contribshap plan`).
    if lead is not None:
        sections.append(_shares_section(store, lead))
    sections.append(_plan_section(store))

    # 4. Generated samples (diffusion stores): full / null model grids, without the top contributors.
    sections.append(_samples_section(store, out, game_kind=game_kind,
                                     grids=_model_grids(store, rows_by_ns.get(main_ns, []), len(contributors)),
                                     lead=lead, estimates=estimates, evaluation=evaluation))

    # 5. Per property: ranking, convergence, LDS, counterfactuals.
    main = main_rows(store, manifest, rows_by_ns.get(main_ns, []))
    for prop, by_method in estimates.items():
        methods = [m for m, d in by_method.items() if isinstance(d, dict) and "contributors" in d]
        if not methods:
            continue
        parts = [f'<h2 id="{_safe(prop)}">{html.escape(prop)}</h2>']
        ranking_png = f"ranking_{_safe(prop)}.png"
        _plot_ranking(prop, by_method, methods, out / ranking_png)
        doc = by_method[methods[0]]
        parts.append(
            f'<p>v(empty) = {_fmt(_num(doc.get("v_empty")))}, v(full) = {_fmt(_num(doc.get("v_full")))}, '
            f'{int(doc.get("n_evaluations") or 0)} evaluations. '
            f'{html.escape(direction_note(prop, doc.get("direction")))}: larger credit = more valuable.</p>'
        )
        parts.append(f'<img src="{ranking_png}" alt="ranking of contributors for {html.escape(prop)}">')
        if len(doc.get("contributors") or []) > 2 * _MAX_RANKED:
            forest_png = f"forest_{_safe(prop)}.png"
            _plot_forest(prop, doc, out / forest_png)
            parts.append(f'<img src="{forest_png}" alt="forest plot of every contributor for {html.escape(prop)}">')
        prop_rows = [r for r in table if r["property"] == prop and r["method"] == methods[0]]
        headers = ["rank", "contributor", "credit", "credit CI", f"{prop} value", "stderr"]
        parts.append(_html_table(headers, [[r["rank"], r["name"], r["credit"], r["ci"], r["value"], r["stderr"]]
                                           for r in prop_rows if not r["harmful"]], left=2))
        if len(prop_rows) > _MAX_CARDS:  # a large pool: the same rows by name, to look someone up
            by_name = sorted(prop_rows, key=lambda r: str(r["name"]).lower())
            parts.append(f"<details><summary>The same {len(by_name)} contributors by name (the page has no "
                         "scripts; table.csv sorts in any spreadsheet)</summary>"
                         + _html_table(headers, [[r["rank"], r["name"], r["credit"], r["ci"], r["value"], r["stderr"]]
                                                 for r in by_name], left=2) + "</details>")
        harmful_rows = [r for r in prop_rows if r["harmful"]]
        if harmful_rows:
            parts.append(f"<p><b>Harmful for {html.escape(prop)}</b> (credit interval wholly below 0):</p>")
            parts.append(_html_table(headers, [[r["rank"], r["name"], r["credit"], r["ci"], r["value"], r["stderr"]]
                                               for r in harmful_rows], left=2))
        # 5b. convergence on prefixes of the plan
        values = main.values.get(prop)
        if values is not None and len(values) >= 2:
            curve = convergence_curve(
                main.masks, values, _num(doc.get("v_empty")), _num(doc.get("v_full")), methods[0],
                n_points=8 if main.masks.shape[1] <= _LARGE_POOL else 3,
            )
            if len(curve["sizes"]) >= 2:
                conv_png = f"convergence_{_safe(prop)}.png"
                _plot_convergence(prop, methods[0], curve, names, out / conv_png, doc.get("direction"))
                parts.append(f'<img src="{conv_png}" alt="convergence of {html.escape(methods[0])} for {html.escape(prop)}">')
            else:
                parts.append('<p class="note">Convergence: too few estimate rows to re-estimate on prefixes.</p>')
        else:
            parts.append('<p class="note">Convergence: no estimate rows in the plan/store.</p>')
        # 5c. LDS (overall and stratified)
        lds_doc = (evaluation or {}).get("lds", {}).get(prop)
        if lds_doc:
            main_method = methods[0] if methods[0] in lds_doc else next(iter(lds_doc))
            lds_png = f"lds_{_safe(prop)}.png"
            _plot_lds(prop, lds_doc, main_method, out / lds_png)
            settings = (evaluation or {}).get("settings", {})
            strat_doc = ((evaluation or {}).get("lds_stratified") or {}).get(prop)
            excluded = ", ".join(((evaluation or {}).get("stratify") or {}).get("exclude") or [])
            parts.append(
                f"<p>LDS on {settings.get('n_subsets')} held-out subsets (alpha {settings.get('alpha')}), "
                f"{len(settings.get('seeds') or [])} training seed(s), held-out fine-tune mode "
                f"<b>{html.escape(str(settings.get('mode')))}</b> (retrain is the ground truth; as_run is a "
                "self-consistency check). CI: bootstrap over subsets and seeds."
                + (f" Stratified: the subsets without {html.escape(excluded)}." if strat_doc else "") + "</p>"
            )
            parts.append(f'<img src="{lds_png}" alt="LDS scatter for {html.escape(prop)}">')
            parts.append(_lds_table(lds_doc, strat_doc, f"without {excluded}" if excluded else "stratified"))
        else:
            parts.append('<p class="note">LDS: run <code>contribshap evaluate STORE</code> to add it.</p>')
        cf_doc = (evaluation or {}).get("counterfactual", {}).get(prop)
        if cf_doc:
            cf_rows = [
                [method, e["action"], e["k"], e["value"], e["ci_low"], e["ci_high"], e.get("n_seeds")]
                for method, entries in cf_doc.items() for e in entries
            ]
            parts.append("<p>Counterfactual: relative change of the property after removing contributors "
                         "(remove_top: those with the largest raw value, which for a lower-is-better property are "
                         "the ones that raise it most; remove_bottom: keep only those).</p>")
            parts.append(_html_table(["method", "action", "k", "relative change", "ci_low", "ci_high", "seeds"],
                                     cf_rows, left=2))
        sections.append("\n".join(parts))

    # 6. Cost summary.
    cost = cost_summary(rows_by_ns, main_ns)
    if cost:
        _plot_cost(cost, out / "cost.png")
        sections.append(
            '<h2 id="cost">Cost</h2>'
            + _html_table(
                ["namespace", "role", "device", "ok", "failed", "finetune h", "sample h", "properties h", "wall h"],
                [[c["namespace"], c["role"], c["device"], c["ok"], c["failed"], c["finetune_h"], c["sample_h"],
                  c["eval_h"], c["wall_h"]] for c in cost]
                + [["total", "", "", sum(c["ok"] for c in cost), sum(c["failed"] for c in cost),
                    *(sum(c[k] for c in cost) for k in ("finetune_h", "sample_h", "eval_h", "wall_h"))]],
                left=3,
            )
            + '<img src="cost.png" alt="cost by stage">'
        )

    # 7. Assemble the page.
    title = html.escape(str(manifest.get("name", store.name)))
    links = [("read", "how to read this"), ("contributors", "contributors"), ("shares", "payout shares"),
             ("samples", "samples")]
    links = [(a, t) for a, t in links if f'id="{a}"' in "".join(sections)]
    toc = " · ".join([f'<a href="#{a}">{t}</a>' for a, t in links]
                     + [f'<a href="#{_safe(p)}">{html.escape(p)}</a>' for p in estimates]
                     + (['<a href="#cost">cost</a>'] if cost else []))
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>contribshap report: {title}</title><style>{_CSS}</style></head><body>"
        f"<h1>contribshap report: {title}</h1>"
        f"<p>{len(contributors)} contributors · {html.escape(game_kind)} game · config {html.escape(main_ns)} · "
        f"generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · table: "
        '<a href="table.csv">table.csv</a>, <a href="table.parquet">table.parquet</a></p>'
        f"<p>Sections: {toc}</p>{note_html}"
        + "\n".join(sections)
        + '<p class="note">A small CI is not accuracy: check the LDS and counterfactual sections.</p>'
        "</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page)
    return index
