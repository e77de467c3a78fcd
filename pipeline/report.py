"""A self-contained HTML report of a store: rankings with CIs, convergence, LDS, samples, cost.

``build_report(store)`` writes ``<store>/report/`` (or ``out``)::

    index.html        one page, no scripts, no external assets (images are files next to it)
    ranking_<p>.png   per property: contributors ranked by the default estimate, with CI error bars
    convergence_<p>.png  per property: estimates re-computed on growing prefixes of the plan
    lds_<p>.png       per property: held-out scatter (sum of attributions vs measured value) and LDS by
                      method, when ``contribshap evaluate`` ran
    samples.png       diffusion stores: generated samples of the full model next to the model without
                      the top contributors, when ``contribshap evaluate --counterfactual`` saved them
    cost.png          hours by stage (fine-tune / sample / properties) per kind of evaluation
    table.csv, table.parquet   the final table: property, method, rank, contributor, value, CI, stderr

Inputs (read-only): ``manifest.json``, ``plan.parquet``, ``evals/*/*.parquet``, ``estimates/estimates.json``
(written by ``contribshap reduce``; required) and ``estimates/evaluation.json`` (optional).
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.readers import load_estimates, load_evaluation, main_rows, read_all_evals

_STAGES = ("finetune_s", "sample_s", "eval_s")
_MAX_RANKED = 20  # the ranking plot shows at most 2 x this many contributors
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
img{max-width:100%;border:1px solid #eee;margin:.4rem 0}
.note{color:#666;font-size:.9rem}
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
    """Flatten the ``reduce --json`` document into rows (rank 1 = largest value).

    Args:
        estimates: ``{property: {method: {"contributors": [{"id","name","value","ci_low","ci_high",
            "stderr"}, ...], "v_empty", "v_full", "n_evaluations"}}}``.

    Returns:
        one dict per (property, method, contributor) with keys ``property, method, rank, contributor_id,
        name, value, ci_low, ci_high, stderr, n_evaluations, identified, ci``: ``identified`` False when the
        evaluations cannot pin the value or its interval down (bounds NaN; documents written before the
        key existed count as identified); ``ci`` is the interval as display text, ``not identified (...)``
        with the evaluations still needed.
    """
    rows = []
    for prop, by_method in estimates.items():
        for method, doc in by_method.items():
            if not isinstance(doc, dict) or "contributors" not in doc:
                continue
            people = doc["contributors"]
            order = sorted(range(len(people)), key=lambda i: -_num(people[i].get("value")))
            rank = {i: r + 1 for r, i in enumerate(order)}
            for i, person in enumerate(people):
                rows.append(
                    {
                        "property": prop,
                        "method": method,
                        "rank": rank[i],
                        "contributor_id": str(person.get("id")),
                        "name": str(person.get("name", person.get("id"))),
                        "value": _num(person.get("value")),
                        "ci_low": _num(person.get("ci_low")),
                        "ci_high": _num(person.get("ci_high")),
                        "stderr": _num(person.get("stderr")),
                        "n_evaluations": int(doc.get("n_evaluations") or 0),
                        "identified": bool(person.get("identified", True)),
                        "ci": (f"[{_fmt(_num(person.get('ci_low')))}, {_fmt(_num(person.get('ci_high')))}]"
                               if person.get("identified", True) else
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

    columns = ["property", "method", "rank", "contributor_id", "name", "value", "ci_low", "ci_high",
               "stderr", "n_evaluations"]
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
    """Horizontal error bars: contributors sorted by the first method, up to 3 methods side by side."""
    plt = _plt()
    first = by_method[methods[0]]["contributors"]
    order = sorted(range(len(first)), key=lambda i: _num(first[i].get("value")))
    shown_note = ""
    if len(order) > 2 * _MAX_RANKED:  # many contributors: the two ends of the ranking (the table has all)
        shown_note = f" — lowest and highest {_MAX_RANKED} of {len(order)}"
        order = order[:_MAX_RANKED] + order[-_MAX_RANKED:]
    n = len(order)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.32 * n + 1.2)))
    shown = methods[:3]
    for j, method in enumerate(shown):
        people = by_method[method]["contributors"]
        y = np.arange(n) + (j - (len(shown) - 1) / 2) * 0.25
        val = np.array([_num(people[i].get("value")) for i in order])
        lo = np.array([_num(people[i].get("ci_low")) for i in order])
        hi = np.array([_num(people[i].get("ci_high")) for i in order])
        err = np.vstack([np.nan_to_num(val - lo), np.nan_to_num(hi - val)])
        ax.errorbar(val, y, xerr=np.clip(err, 0, None), fmt="o", ms=4, capsize=2, label=method)
    ax.axvline(0.0, color="#999", lw=0.8)
    ax.set_yticks(np.arange(n))
    ax.set_yticklabels([str(first[i].get("name", first[i].get("id"))) for i in order], fontsize=8)
    ax.set_xlabel(f"credit for {prop} (property units; CI at the estimator's level)")
    ax.set_title(f"{prop}: contributors ranked ({methods[0]}){shown_note}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
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
        v_empty, v_full: endpoint values. method: estimator name for ``contribshap.pipeline.estimators.estimate``.
        n_points: number of prefix lengths (geometric from ~n+2 to m, rounded to even for paired plans).

    Returns:
        ``{"sizes": [p...], "value": [[n]...], "ci_low": [[n]...], "ci_high": [[n]...], "skipped": [p...]}``:
        prefixes the estimator refused (too few rows) are listed in ``skipped``.
    """
    from contribshap.pipeline.estimators import estimate

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


def _plot_convergence(prop: str, method: str, curve: dict[str, Any], names: list[str], path: Path) -> None:
    plt = _plt()
    sizes = np.array(curve["sizes"])
    value = np.array(curve["value"])
    lo, hi = np.array(curve["ci_low"]), np.array(curve["ci_high"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    final = value[-1]
    labelled = set(np.argsort(-np.abs(final))[:5].tolist())
    for i in range(value.shape[1]):
        (line,) = ax.plot(sizes, value[:, i], marker=".", lw=1.2, label=names[i] if i in labelled else None)
        ax.fill_between(sizes, lo[:, i], hi[:, i], color=line.get_color(), alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("coalitions evaluated (prefix of the plan)")
    ax.set_ylabel(f"{method} estimate of {prop}")
    ax.set_title(f"{prop}: convergence of {method} (bands: CI)")
    ax.legend(fontsize=8, loc="best", title="largest 5")
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


def build_report(store: Path, *, out: Path | None = None) -> Path:
    """Write the HTML report of ``store`` and return the path of ``index.html``.

    Args:
        store: a store folder with ``estimates/estimates.json`` (run ``contribshap reduce STORE`` first).
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
    from contribshap.pipeline.store import Store

    manifest = Store(store).read_manifest()
    estimates = load_estimates(store, reduce_if_missing=True)
    evaluation = load_evaluation(store)
    contributors = manifest.get("contributors", [])
    names = [str(c.get("name", c.get("id"))) for c in contributors]
    main_ns = str(manifest.get("config_hash", ""))
    rows_by_ns, unreadable = read_all_evals(store)
    sections: list[str] = []
    notes: list[str] = []
    if unreadable:
        notes.append(f"{len(unreadable)} unreadable evaluation file(s) skipped: {', '.join(map(str, unreadable[:5]))}")

    # 2. The final table.
    table = final_table(estimates)
    write_table(table, out)

    # 3. Per property: ranking, convergence, LDS.
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
            f'{int(doc.get("n_evaluations") or 0)} evaluations. Larger credit = the contributor raises {html.escape(prop)}.</p>'
        )
        parts.append(f'<img src="{ranking_png}" alt="ranking of contributors for {html.escape(prop)}">')
        prop_rows = [r for r in table if r["property"] == prop and r["method"] == methods[0]]
        parts.append(
            _html_table(
                ["rank", "contributor", "value", "CI", "stderr"],
                [[r["rank"], r["name"], r["value"], r["ci"], r["stderr"]] for r in prop_rows],
                left=2,
            )
        )
        # 3b. convergence on prefixes of the plan
        values = main.values.get(prop)
        if values is not None and len(values) >= 2:
            curve = convergence_curve(
                main.masks, values, _num(doc.get("v_empty")), _num(doc.get("v_full")), methods[0]
            )
            if len(curve["sizes"]) >= 2:
                conv_png = f"convergence_{_safe(prop)}.png"
                _plot_convergence(prop, methods[0], curve, names, out / conv_png)
                parts.append(f'<img src="{conv_png}" alt="convergence of {html.escape(methods[0])} for {html.escape(prop)}">')
            else:
                parts.append('<p class="note">Convergence: too few estimate rows to re-estimate on prefixes.</p>')
        else:
            parts.append('<p class="note">Convergence: no estimate rows in the plan/store.</p>')
        # 3c. LDS
        lds_doc = (evaluation or {}).get("lds", {}).get(prop)
        if lds_doc:
            main_method = methods[0] if methods[0] in lds_doc else next(iter(lds_doc))
            lds_png = f"lds_{_safe(prop)}.png"
            _plot_lds(prop, lds_doc, main_method, out / lds_png)
            settings = (evaluation or {}).get("settings", {})
            parts.append(
                f"<p>LDS on {settings.get('n_subsets')} held-out subsets (alpha {settings.get('alpha')}), "
                f"{len(settings.get('seeds') or [])} training seed(s), held-out fine-tune mode "
                f"<b>{html.escape(str(settings.get('mode')))}</b> (retrain is the ground truth; as_run is a "
                "self-consistency check). CI: bootstrap over subsets and seeds.</p>"
            )
            parts.append(f'<img src="{lds_png}" alt="LDS scatter for {html.escape(prop)}">')
            parts.append(
                _html_table(
                    ["method", "kind", "LDS", "ci_low", "ci_high", "subsets", "seeds"],
                    [[k, v.get("kind", ""), _num(v["value"]), _num(v["ci_low"]), _num(v["ci_high"]),
                      v.get("n_subsets"), v.get("n_seeds")] for k, v in lds_doc.items()],
                    left=2,
                )
            )
        else:
            parts.append('<p class="note">LDS: run <code>contribshap evaluate STORE</code> to add it.</p>')
        cf_doc = (evaluation or {}).get("counterfactual", {}).get(prop)
        if cf_doc:
            cf_rows = [
                [method, e["action"], e["k"], e["value"], e["ci_low"], e["ci_high"], e.get("n_seeds")]
                for method, entries in cf_doc.items() for e in entries
            ]
            parts.append("<p>Counterfactual: relative change of the property after removing contributors "
                         "(remove_top: the highest-credit ones; remove_bottom: keep only the top).</p>")
            parts.append(_html_table(["method", "action", "k", "relative change", "ci_low", "ci_high", "seeds"],
                                     cf_rows, left=2))
        sections.append("\n".join(parts))

    # 4. Generated samples (diffusion stores).
    samples = (evaluation or {}).get("samples")
    sample_png = out / "samples.png"
    if samples and samples.get("png") and (store / samples["png"]).is_file():
        sample_png.write_bytes((store / samples["png"]).read_bytes())
        sections.append(
            f'<h2>Generated samples</h2><p>{html.escape(samples.get("caption", ""))}</p>'
            '<img src="samples.png" alt="samples of the full model and of the model without the top contributors">'
        )
    else:
        reason = (samples or {}).get("note") or "no saved samples (python game, or evaluate ran without --counterfactual)"
        sections.append(f'<h2>Generated samples</h2><p class="note">Skipped: {html.escape(reason)}.</p>')

    # 5. Cost summary.
    cost = cost_summary(rows_by_ns, main_ns)
    if cost:
        _plot_cost(cost, out / "cost.png")
        sections.append(
            "<h2>Cost</h2>"
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

    # 6. Assemble the page.
    title = html.escape(str(manifest.get("name", store.name)))
    toc = " · ".join(f'<a href="#{_safe(p)}">{html.escape(p)}</a>' for p in estimates)
    note_html = "".join(f'<p class="note">{html.escape(n)}</p>' for n in notes)
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>contribshap report: {title}</title><style>{_CSS}</style></head><body>"
        f"<h1>contribshap report: {title}</h1>"
        f"<p>{len(contributors)} contributors · config {html.escape(main_ns)} · generated "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · table: "
        '<a href="table.csv">table.csv</a>, <a href="table.parquet">table.parquet</a></p>'
        f"<p>Properties: {toc}</p>{note_html}"
        + "\n".join(sections)
        + '<p class="note">A small CI is not accuracy: check the LDS and counterfactual sections.</p>'
        "</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page)
    return index
