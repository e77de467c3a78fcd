"""The overlap audit for people: text for ``check`` and ``status``, an HTML table for the report.

The numbers come from the workers (``contribshap.workers.audit``): at ``check`` through the game factory's
``data_summary``, after prepare from the ``artifacts/overlap-*/overlap.json`` artifact, which
:func:`read_overlap` finds (the one the manifest names, else the newest). This module only reads JSON and
formats it; it never imports torch.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["OVERLAP_JSON", "data_summary_lines", "overlap_html", "overlap_lines", "read_overlap"]

OVERLAP_JSON = "overlap.json"


def read_overlap(store: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The store's overlap table (``artifacts/overlap-*/overlap.json``, written by prepare), or None."""
    store = Path(store)
    named = None
    if manifest:
        prepared = (manifest.get("prepared") or {}).get(str(manifest.get("config_hash")), {})
        named = ((prepared.get("summary") or {}).get("overlap") or {}).get("folder")
    folders = [store / "artifacts" / named] if named else []
    folders += sorted((store / "artifacts").glob("overlap-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    for folder in folders:
        try:
            return json.loads((folder / OVERLAP_JSON).read_text())
        except (OSError, ValueError):
            continue
    return None


def _method(table: dict[str, Any]) -> str:
    if not table.get("near_searched", True):
        return "exact copies only (too many images for the all-pairs near-duplicate search)"
    return f"near = dHash within {table.get('hamming')} bits and pixel RMSE <= {table.get('rmse')}"


def overlap_lines(table: dict[str, Any] | None, *, limit: int = 20) -> list[str]:
    """Text lines: one per pair of contributors sharing images, with each side's count and fraction."""
    if table is None:
        return ["overlap: no audit yet (prepare writes it)"]
    pairs = table.get("pairs") or []
    sizes = dict(zip(table["ids"], table["n_images"], strict=True))
    if not pairs:
        lines = [f"overlap: no images shared between contributors ({_method(table)})"]
    else:
        lines = [f"overlap: {len(pairs)} pair(s) of contributors share images ({_method(table)}):"]
    for p in pairs[:limit]:
        lines.append(f"  {p['a']} <-> {p['b']}: {p['near_a']}/{sizes[p['a']]} of {p['a']} ({p['fraction_a']:.0%}, "
                     f"{p['exact_a']} exact), {p['near_b']}/{sizes[p['b']]} of {p['b']} ({p['fraction_b']:.0%}, "
                     f"{p['exact_b']} exact)")
    if len(pairs) > limit:
        lines.append(f"  ... and {len(pairs) - limit} more pair(s)")
    diagonal = table.get("inside") or [row[k] for k, row in enumerate(table.get("near") or [])]
    inside = [(cid, k) for cid, k in zip(table["ids"], diagonal, strict=False) if k]
    if inside:
        lines.append("copies inside one contributor's own images: " + ", ".join(
            f"{cid} {k}/{sizes[cid]}" for cid, k in inside[:limit]))
    return lines


def data_summary_lines(summary: dict[str, Any] | None) -> list[str]:
    """``contribshap check``'s data summary (``contribshap.pipeline.games.factory.data_summary``) as text."""
    if summary is None:
        return []
    lines = []
    files = summary.get("files")
    if files is not None:
        lines.append(f"files: {files['n_rows']} listed, {len(files['unreadable'])} unreadable, "
                     f"{sum(len(g) for g in files['duplicate_files'])} in {len(files['duplicate_files'])} group(s) "
                     "of byte-identical files")
        for file, reason in files["unreadable"][:10]:
            lines.append(f"  unreadable: {file} ({reason})")
        for group in files["duplicate_files"][:10]:
            counts = Counter(group)
            named = [f"{f} (listed {k} times)" if k > 1 else f for f, k in counts.items()]
            lines.append(f"  same bytes: {', '.join(named[:4])}{' ...' if len(named) > 4 else ''}")
    people = summary.get("contributors")
    if people:
        classes = [p["n_classes"] for p in people if p["n_classes"]]
        lines.append(f"data: {len(people)} contributors, {summary['n_images']} training images"
                     + (f", classes per contributor {min(classes)}-{max(classes)}" if classes else ", no labels"))
        for p in people:
            lines.append(f"  {p['id']}: {p['n_images']} images"
                         + ("" if p["n_classes"] is None else f", {p['n_classes']} classes" if p["n_classes"]
                            else ", no labelled image"))
    if summary.get("skipped"):
        lines.append(f"images not loaded: {summary['skipped']}")
    if summary.get("overlap") is not None:
        lines.extend(overlap_lines(summary["overlap"]))
    merged = summary.get("merged")
    if merged is not None:
        joined = [p for p in merged["players"] if "+" in p]
        lines.append(f"merge_overlapping (threshold {merged['threshold']}): {len(merged['players'])} players"
                     + (f"; merged: {', '.join(joined)}" if joined else "; nothing to merge"))
    return lines


def overlap_html(table: dict[str, Any] | None) -> str:
    """The report's section: the contributor x contributor table of shared images (fraction of the row's
    images with an exact or near copy among the column's), then the overlapping pairs; '' without an audit."""
    if table is None:
        return ""
    ids, sizes = table["ids"], table["n_images"]
    parts = ['<h2 id="overlap">Overlap between contributors</h2>',
             f"<p>Images a contributor shares with another ({html.escape(_method(table))}): row = whose images, "
             "column = found among whose images, cell = share of the row's images (exact copies in brackets). "
             "The diagonal counts copies inside one contributor's own images. A contributor that copies another's "
             "images can be paid for them as if they were new data by plain Shapley values; "
             "<code>data.merge_overlapping</code> joins such identities into one player.</p>"]
    involved = sorted({i for p in table.get("pairs") or [] for i in (ids.index(p["a"]), ids.index(p["b"]))})
    if not involved:
        parts.append("<p>No images are shared between contributors.</p>")
        return "\n".join(parts)
    head = "".join(f"<th>{html.escape(ids[j])}</th>" for j in involved)
    rows = []
    for i in involved:
        cells = []
        for j in involved:
            near, exact, frac = table["near"][i][j], table["exact"][i][j], table["near_fraction"][i][j]
            cells.append(f"<td>{frac:.0%} ({exact})</td>" if near else "<td>-</td>")
        rows.append(f"<tr><td>{html.escape(ids[i])} ({sizes[i]})</td>{''.join(cells)}</tr>")
    parts.append(f'<table class="overlap"><tr><th>images of (row), found among</th>{head}</tr>{"".join(rows)}</table>')
    parts.append("<pre>" + html.escape("\n".join(overlap_lines(table)[1:])) + "</pre>")
    return "\n".join(parts)
