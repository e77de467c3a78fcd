"""``contribshap check``'s data summary of a diffusion game (through ``contribshap.pipeline.games.factory``).

Images and classes per contributor, unreadable and byte-identical files (folder sources, without decoding
them), and the overlap between contributors (:mod:`contribshap.workers.audit`), for the sources cheap
enough to load at check time (:data:`CHECKED_SOURCES`); the use cases' sources are audited at prepare.

May import: contracts, config declarations, :mod:`contribshap.workers.audit`; ``workers.data`` (torch) only
inside :func:`data_summary`, when images are loaded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from contribshap.workers.audit import folder_file_summary, merge_contributors, merge_groups, overlap_table

__all__ = ["CHECKED_SOURCES", "data_summary"]

#: Sources cheap enough to load at ``check`` (the use cases' sources read many files: audited at prepare).
CHECKED_SOURCES = ("digits", "folder")


def data_summary(config: Any) -> dict[str, Any]:
    """``contribshap check``'s data summary of a diffusion game config (``DiffusionGameConfig``).

    Returns ``{"source", "files" (folder only: :func:`folder_file_summary`), "contributors": [{"id",
    "n_images", "n_classes"}], "n_images", "overlap" (:func:`overlap_table` of the contributors as listed,
    before any merge), "merged" (the players after ``merge_overlapping``, or None), "skipped" (why the
    images were not loaded, or None)}``. Loads the built-in sources only (:data:`CHECKED_SOURCES`).
    """
    data = config.data
    out: dict[str, Any] = {"source": data.source, "files": None, "contributors": None, "n_images": None,
                           "overlap": None, "merged": None, "skipped": None}
    if data.source == "folder":
        out["files"] = folder_file_summary(data.csv_path(), data.root, label_column="label" if data.labels else None)
        if out["files"]["unreadable"]:
            out["skipped"] = "unreadable files"
            return out
    if data.source not in CHECKED_SOURCES:
        out["skipped"] = f"data.source={data.source} is audited at prepare (contribshap status shows it)"
        return out
    from contribshap.workers.data import load_dataset

    dataset = load_dataset(data.model_copy(update={"merge_overlapping": None}))
    owner = dataset.contributor_index.cpu().numpy()
    labels = dataset.labels.cpu().numpy() if dataset.labels is not None else None
    out["n_images"] = len(owner)
    out["contributors"] = [{"id": c.id, "n_images": int((owner == j).sum()),
                            "n_classes": None if labels is None else len(set(labels[(owner == j) & (labels >= 0)].tolist()))}
                           for j, c in enumerate(dataset.contributors)]
    merge = data.merge_overlapping
    kwargs = {} if merge is None else {"hamming": merge.hamming, "rmse": merge.rmse}
    out["overlap"] = overlap_table(dataset.images.cpu().numpy(), owner, dataset.contributors, **kwargs)
    if merge is not None:
        groups = merge_groups(np.asarray(out["overlap"]["near_fraction"]), merge.threshold)
        out["merged"] = {"threshold": merge.threshold,
                         "players": [merge_contributors(owner, dataset.contributors, [g])[1][0].id for g in groups]}
    return out
