"""CelebA-HQ (the paper's demographic-diversity setting): the ``celebahq`` data source.

Data: a folder of face images plus ``labels.csv`` with the columns ``file`` (relative to the folder) and
``identity``; the 50 identities with the most images are the contributors (or an explicit list), ids
``celebahq-<identity>``. The model (latent diffusion on VQ-VAE latents, ``model.kind: ldm``) is
``contribshap.usecases.celebahq.backend``.
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
    from contribshap.usecases.celebahq.schema import CelebAHQSource


# ----------------------------------------------------------------------------------------------------------
# Data: folder + labels.csv
# ----------------------------------------------------------------------------------------------------------
def read_celebahq_index(config: CelebAHQSource) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files and owners of ``data.source: celebahq`` without reading any image.

    Returns:
        files (N,), owner int64 (N,) indexing ``identities``, identities (contributor order: sorted ids).
    """
    root = Path(config.root).expanduser()
    csv_path = Path(config.csv_path()).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"data.labels_csv: {csv_path} does not exist; write file,identity rows there")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "identity"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks columns {sorted(missing)}; the header must be file,identity")
        rows = [(row["file"], str(row["identity"])) for row in reader]
    counts: dict[str, int] = {}
    for _, identity in rows:
        counts[identity] = counts.get(identity, 0) + 1
    if config.identities is not None:
        unknown = sorted(set(config.identities) - set(counts))
        if unknown:
            raise ValueError(f"data.identities {unknown} do not occur in {csv_path}; check the ids")
        chosen = list(config.identities)
    else:
        if len(counts) < config.n_identities:
            raise ValueError(f"data.n_identities={config.n_identities} but {csv_path} has only {len(counts)} identities")
        chosen = sorted(counts, key=lambda i: (-counts[i], i))[: config.n_identities]
    identities = sorted(chosen)
    position = {identity: j for j, identity in enumerate(identities)}
    files, owner, taken = [], [], dict.fromkeys(identities, 0)
    for file, identity in rows:
        if identity in position and (config.max_per_identity is None or taken[identity] < config.max_per_identity):
            files.append(root / file)
            owner.append(position[identity])
            taken[identity] += 1
    return files, np.asarray(owner, dtype=np.int64), identities


def _contributors(owner: np.ndarray, identities: list[str]) -> list[Contributor]:
    return [Contributor(f"celebahq-{i}", f"identity {i}", int((owner == j).sum())) for j, i in enumerate(identities)]


def celebahq_index(config: CelebAHQSource) -> tuple[np.ndarray, list[Contributor]]:
    """``data.source: celebahq`` owners (N,) and contributors without reading any image."""
    _, owner, identities = read_celebahq_index(config)
    return owner, _contributors(owner, identities)


def load_celebahq(config: CelebAHQSource) -> ContributorDataset:
    """``data.source: celebahq`` -> pixels in [-1, 1] (N, 3, S, S); contributor ids ``celebahq-<identity>``."""
    files, owner, identities = read_celebahq_index(config)
    contributors = _contributors(owner, identities)
    return ContributorDataset(
        images=read_images(files, config.image_size, desc="celebahq images"),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
    )
