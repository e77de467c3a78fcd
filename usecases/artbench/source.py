"""ArtBench Post-Impressionism (the paper's aesthetic-quality setting): the ``artbench`` data source.

Data: an ArtBench-10 style folder. The artist of a painting comes from ``metadata_csv`` (ArtBench-10.csv:
``name``, ``artist``, ``label`` = style) or, without it, from the file name ``<artist>_<title>.jpg``.
Every artist is one contributor (id ``artist-<name>``); every image is captioned with the same
``data.prompt``. The model (Stable Diffusion 1.x + LoRA, ``model.kind: sd_lora``) is
``contribshap.usecases.artbench.backend``.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from contribshap.pipeline.contracts.game import Contributor
from contribshap.workers.data import ContributorDataset, read_images

if TYPE_CHECKING:
    from contribshap.usecases.artbench.schema import ArtBenchSource

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


# ----------------------------------------------------------------------------------------------------------
# Data: ArtBench folder (+ optional metadata CSV)
# ----------------------------------------------------------------------------------------------------------
def artist_from_filename(path: Path) -> str:
    """ArtBench names files ``<artist>_<title>.jpg`` (e.g. ``vincent-van-gogh_the-starry-night.jpg``)."""
    return path.stem.split("_", 1)[0]


def read_artbench_index(config: ArtBenchSource) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files, owner int64 (N,) indexing ``artists``, and artists (sorted ids) of ``data.source: artbench``."""
    root = Path(config.root).expanduser()
    base = root / config.style if config.style and (root / config.style).is_dir() else root
    pairs: list[tuple[Path, str]] = []
    if config.metadata_csv is not None:
        csv_path = Path(config.metadata_csv).expanduser()
        with csv_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            name_col = "name" if "name" in columns else "file"
            if name_col not in columns or "artist" not in columns:
                raise ValueError(f"{csv_path} needs the columns name (or file) and artist; found {sorted(columns)}")
            for row in reader:
                if config.style and "label" in columns and row["label"] != config.style:
                    continue
                path = base / row[name_col]
                pairs.append((path if path.exists() else root / row[name_col], row["artist"]))
    else:
        files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [(p, artist_from_filename(p)) for p in files]
    if not pairs:
        raise ValueError(f"data.root: no images found under {base} (style={config.style!r}); check data.root and data.style")

    counts: dict[str, int] = {}
    for _, artist in pairs:
        counts[artist] = counts.get(artist, 0) + 1
    if config.artists is not None:
        unknown = sorted(set(config.artists) - set(counts))
        if unknown:
            raise ValueError(f"data.artists {unknown} have no images under {base}; check the names")
        artists = sorted(config.artists)
    else:
        artists = sorted(a for a, k in counts.items() if k >= config.min_images)
    if not artists:
        raise ValueError(f"no artist has >= data.min_images={config.min_images} images under {base}")
    position = {a: j for j, a in enumerate(artists)}
    files, owner, taken = [], [], dict.fromkeys(artists, 0)
    for path, artist in pairs:
        if artist in position and (config.max_per_artist is None or taken[artist] < config.max_per_artist):
            files.append(path)
            owner.append(position[artist])
            taken[artist] += 1
    return files, np.asarray(owner, dtype=np.int64), artists


def _contributors(owner: np.ndarray, artists: list[str]) -> list[Contributor]:
    return [Contributor(f"artist-{a}", a.replace("-", " ").title(), int((owner == j).sum())) for j, a in enumerate(artists)]


def artbench_index(config: ArtBenchSource) -> tuple[np.ndarray, list[Contributor]]:
    """``data.source: artbench`` owners (N,) and contributors without reading any image."""
    _, owner, artists = read_artbench_index(config)
    return owner, _contributors(owner, artists)


def load_artbench(config: ArtBenchSource) -> ContributorDataset:
    """``data.source: artbench`` -> pixels in [-1, 1]; contributor ids ``artist-<name>``; prompts as conditioning."""
    files, owner, artists = read_artbench_index(config)
    contributors = _contributors(owner, artists)
    return ContributorDataset(
        images=read_images(files, config.image_size, desc="artbench images"),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
        conditioning=[config.prompt] * len(files),
    )
