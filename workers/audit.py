"""Overlap between contributors: exact and near-duplicate images shared across identities.

A contributor can upload another contributor's images, or split its own images over several identities; a
plain Shapley value then pays the copy (and the shell companies) as if they were new data. This module
finds shared images, numpy only (no torch import at module level):

- exact: byte-identical image tensors;
- near: a perceptual difference hash (:func:`dhash`, 64 bits by default) within ``hamming`` bits, and,
  where a feature extractor is configured, cosine similarity of the extractor's features >= ``cosine``.

:func:`overlap_table` returns the contributor x contributor table (JSON-able): for each ordered pair
(i, j), how many of i's images have an exact / near copy among j's images, and that count as a fraction of
i's images; the diagonal counts images with a copy inside the contributor's own set. :func:`merge_groups`
turns the table into groups of identities whose overlap reaches a fraction (``data.merge_overlapping``),
:func:`merge_contributors` applies the groups to an owner vector. :func:`folder_file_summary` checks a
folder source's files without decoding them into tensors (PIL and hashlib): images and classes per
contributor, unreadable files, byte-identical files. :func:`data_summary` is ``contribshap check``'s data
summary (through ``contribshap.pipeline.games.factory.data_summary``).

May import: contracts (and PIL, and ``workers.data`` for the built-in sources, inside functions). No torch at
module level.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from contribshap.pipeline.contracts.game import Contributor

__all__ = ["DEFAULT_COSINE", "DEFAULT_HAMMING", "DEFAULT_RMSE", "HASH_SIZE", "MAX_NEAR_IMAGES", "dhash",
           "folder_file_summary", "merge_contributors", "merge_groups", "overlap_table"]

#: Side of the difference hash: ``HASH_SIZE ** 2`` bits.
HASH_SIZE = 8
#: Near-duplicate candidates: Hamming distance of the two dHashes at most this many of the 64 bits.
DEFAULT_HAMMING = 6
#: A candidate is a near duplicate when the root mean square difference of the two images (channel mean,
#: at most 16 x 16, values in [-1, 1]) is at most this: a 64-bit hash alone cannot tell apart small images
#: (two different 8x8 digits of one class often share a hash).
DEFAULT_RMSE = 0.1
_VERIFY_SIDE = 16
#: Near duplicate in feature space: cosine similarity of the extractor's features at least this.
DEFAULT_COSINE = 0.999
#: Above this many images the all-pairs near-duplicate search is skipped (exact copies are still found).
MAX_NEAR_IMAGES = 20_000
_CHUNK = 1024


# ----------------------------------------------------------------------------------------------------
# hashes
# ----------------------------------------------------------------------------------------------------
def _resize(gray: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a batch (N, H, W) to (N, height, width) (pixel centres aligned, edges clamped)."""
    _, h, w = gray.shape

    def axis(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0.0, src - 1.0)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, src - 1)
        return low, high, pos - low

    r0, r1, fr = axis(h, height)
    c0, c1, fc = axis(w, width)
    rows = gray[:, r0, :] * (1.0 - fr)[None, :, None] + gray[:, r1, :] * fr[None, :, None]
    return rows[:, :, c0] * (1.0 - fc)[None, None, :] + rows[:, :, c1] * fc[None, None, :]


def dhash(images: np.ndarray, hash_size: int = HASH_SIZE) -> np.ndarray:
    """Difference hashes of images (N, C, H, W) in [-1, 1]: uint64 (N,) for ``hash_size`` 8.

    The channel mean is resized (bilinear) to ``hash_size`` x ``hash_size + 1``; bit (r, c) is set when
    pixel (r, c + 1) is brighter than pixel (r, c). Brightness and contrast changes keep the hash; two
    images are near duplicates when their hashes differ in few bits.
    """
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4:
        raise ValueError(f"images have shape {images.shape}; expected (N, C, H, W)")
    small = _resize(images.mean(axis=1), hash_size, hash_size + 1)
    bits = (small[:, :, 1:] > small[:, :, :-1]).reshape(len(images), -1)
    weights = np.left_shift(np.uint64(1), np.arange(bits.shape[1], dtype=np.uint64))
    return (bits.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)


def _exact_groups(images: np.ndarray) -> np.ndarray:
    """Group id (int64 (N,)) of every image; equal ids = byte-identical float32 tensors."""
    flat = np.ascontiguousarray(np.asarray(images, dtype=np.float32).reshape(len(images), -1))
    keys = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
    _, group = np.unique(np.asarray(keys, dtype=object).astype("S16"), return_inverse=True)
    return group.astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------
def _counts_from_pairs(near_rows: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, n) int: [i, j] = images of i with at least one match among j's images (``near_rows``: (N, n) bool)."""
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, owner, near_rows.astype(np.int64))
    return counts


def _near_by_owner(similar, n_images: int, owner: np.ndarray, n: int) -> np.ndarray:
    """(N, n) bool: image k has a match (``similar(rows) -> (len(rows), N) bool``) owned by j, itself excluded."""
    onehot = np.zeros((n_images, n), dtype=np.float32)
    onehot[np.arange(n_images), owner] = 1.0
    out = np.zeros((n_images, n), dtype=bool)
    for begin in range(0, n_images, _CHUNK):
        rows = np.arange(begin, min(begin + _CHUNK, n_images))
        match = similar(rows)
        match[np.arange(len(rows)), rows] = False
        out[rows] = (match.astype(np.float32) @ onehot) > 0
    return out


def overlap_table(images: np.ndarray, owner: np.ndarray, contributors: list[Contributor], *,
                  hamming: int = DEFAULT_HAMMING, rmse: float = DEFAULT_RMSE, features: np.ndarray | None = None,
                  cosine: float = DEFAULT_COSINE, max_near_images: int = MAX_NEAR_IMAGES) -> dict[str, Any]:
    """Contributor x contributor overlap of ``images`` (N, C, H, W) owned by ``owner`` (int (N,)).

    Args:
        images: the training images in [-1, 1]. owner: index into ``contributors`` of each image.
        hamming / rmse: near duplicate = dHash distance <= ``hamming`` bits (64-bit hash) and root mean
            square pixel difference <= ``rmse`` (channel mean, resized to at most 16 x 16).
        features: optional (N, d) extractor features of the same images: adds ``embedding`` (cosine >= ``cosine``).
        max_near_images: above this many images, near duplicates are not searched (``near`` = ``exact``).

    Returns:
        ``{"ids", "names", "n_images", "hamming", "exact", "near", "near_fraction", "pairs", "embedding",
        "near_searched"}``: ``exact[i][j]`` / ``near[i][j]`` = how many of i's images have an exact / near
        copy among j's (i = j: inside i's own set; near includes exact), ``near_fraction[i][j]`` = near[i][j]
        / n_images[i]; ``pairs``: every pair i < j with a shared image, largest overlap first.
    """
    images = np.asarray(images)
    owner = np.asarray(owner, dtype=np.int64)
    n, n_images = len(contributors), len(images)
    sizes = np.bincount(owner, minlength=n)
    group = _exact_groups(images)
    presence = np.zeros((group.max() + 1 if n_images else 0, n), dtype=np.int64)
    np.add.at(presence, (group, owner), 1)
    exact_rows = presence[group] > 0
    exact_rows[np.arange(n_images), owner] = presence[group, owner] > 1  # a second copy inside the own set
    exact = _counts_from_pairs(exact_rows, owner, n)

    near_searched = n_images <= max_near_images
    if near_searched and n_images:
        hashes = dhash(images)
        gray = images.astype(np.float32).mean(axis=1)
        if max(gray.shape[1:]) > _VERIFY_SIDE:
            gray = _resize(gray, _VERIFY_SIDE, _VERIFY_SIDE).astype(np.float32)
        gray = gray.reshape(n_images, -1)

        def close(rows: np.ndarray) -> np.ndarray:
            match = np.bitwise_count(hashes[rows, None] ^ hashes[None, :]) <= hamming
            r, c = np.nonzero(match)
            diff = np.sqrt(((gray[rows[r]] - gray[c]) ** 2).mean(axis=1)) if len(r) else np.zeros(0)
            match[r[diff > rmse], c[diff > rmse]] = False
            return match

        near = _counts_from_pairs(_near_by_owner(close, n_images, owner, n) | exact_rows, owner, n)
    else:
        near = exact.copy()

    embedding = None
    if features is not None and near_searched and n_images:
        unit = np.asarray(features, dtype=np.float64)
        unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        similar = _near_by_owner(lambda rows: unit[rows] @ unit.T >= cosine, n_images, owner, n) | exact_rows
        counts = _counts_from_pairs(similar, owner, n)
        embedding = {"cosine": cosine, "near": counts.tolist(),
                     "near_fraction": np.round(counts / np.maximum(sizes, 1)[:, None], 4).tolist()}

    fraction = near / np.maximum(sizes, 1)[:, None]
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            if near[i, j] or near[j, i]:
                pairs.append({"a": contributors[i].id, "b": contributors[j].id,
                              "exact_a": int(exact[i, j]), "exact_b": int(exact[j, i]),
                              "near_a": int(near[i, j]), "near_b": int(near[j, i]),
                              "fraction_a": round(float(fraction[i, j]), 4), "fraction_b": round(float(fraction[j, i]), 4)})
    pairs.sort(key=lambda p: -max(p["fraction_a"], p["fraction_b"]))
    return {"ids": [c.id for c in contributors], "names": [c.name for c in contributors], "n_images": sizes.tolist(),
            "hash": f"dhash-{HASH_SIZE * HASH_SIZE}", "hamming": hamming, "rmse": rmse, "near_searched": near_searched,
            "exact": exact.tolist(), "near": near.tolist(), "near_fraction": np.round(fraction, 4).tolist(),
            "pairs": pairs, "embedding": embedding}


# ----------------------------------------------------------------------------------------------------
# merging overlapping identities into one player
# ----------------------------------------------------------------------------------------------------
def merge_groups(near_fraction: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of contributor indices joined when either side's overlap fraction reaches ``threshold``.

    Union-find over the pairs (i, j) with max(near_fraction[i, j], near_fraction[j, i]) >= threshold;
    groups are sorted by their first member, members ascending; singletons included.
    """
    fraction = np.asarray(near_fraction, dtype=float)
    n = len(fraction)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if max(fraction[i, j], fraction[j, i]) >= threshold:
                a, b = root(i), root(j)
                parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        groups[root(i)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def merge_contributors(owner: np.ndarray, contributors: list[Contributor], groups: list[list[int]]
                       ) -> tuple[np.ndarray, list[Contributor]]:
    """(new owner (N,), merged players): each group becomes one player, ids joined with ``+``, names with `` + ``."""
    new_index = np.empty(len(contributors), dtype=np.int64)
    merged = []
    for k, group in enumerate(groups):
        new_index[group] = k
        members = [contributors[i] for i in group]
        merged.append(Contributor("+".join(c.id for c in members), " + ".join(c.name for c in members),
                                  sum(c.n_samples for c in members)))
    return new_index[np.asarray(owner, dtype=np.int64)], merged


# ----------------------------------------------------------------------------------------------------
# the files of a folder source (no tensors)
# ----------------------------------------------------------------------------------------------------
def folder_file_summary(csv_path: Path, root: Path, *, label_column: str | None = None) -> dict[str, Any]:
    """Images and classes per contributor, unreadable files and byte-identical files of a folder source.

    Reads each listed file once (sha256 of its bytes; PIL ``verify`` for readability); decodes nothing
    into tensors. Returns ``{"n_rows", "contributors": [{"id", "n_images", "n_classes"}], "unreadable":
    [(file, reason)], "duplicate_files": [[file, ...]] (same bytes), "shared_files": [(file-group,
    contributors)] (byte-identical files owned by different contributors)}``.
    """
    from PIL import Image

    csv_path, root = Path(csv_path).expanduser(), Path(root).expanduser()
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    per_contributor: dict[str, Counter] = defaultdict(Counter)
    unreadable: list[tuple[str, str]] = []
    by_digest: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        file, cid = row.get("file") or "", row.get("contributor") or ""
        per_contributor[cid][row.get(label_column) if label_column else None] += 1
        path = root / file
        try:
            data = path.read_bytes()
            with Image.open(path) as image:
                image.verify()
        except FileNotFoundError:
            unreadable.append((file, "missing"))
            continue
        except Exception as error:  # PIL raises many kinds for a bad file
            unreadable.append((file, type(error).__name__))
            continue
        by_digest[hashlib.sha256(data).hexdigest()].append((file, cid))
    duplicates = [sorted(f for f, _ in group) for group in by_digest.values() if len(group) > 1]
    shared = [(sorted(f for f, _ in group), sorted({c for _, c in group})) for group in by_digest.values()
              if len({c for _, c in group}) > 1]
    return {
        "n_rows": len(rows),
        "contributors": [{"id": cid, "n_images": sum(c.values()), "n_classes": len(c) if label_column else None}
                         for cid, c in sorted(per_contributor.items())],
        "unreadable": unreadable,
        "duplicate_files": sorted(duplicates),
        "shared_files": sorted(shared),
    }
