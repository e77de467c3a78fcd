"""CIFAR-20 (the paper's image-quality setting): the CIFAR-100 python pickle as a contributor dataset.

Data: the standard ``cifar-100-python/`` folder (``train``: a pickle dict with ``data`` (50000, 3072) uint8
in CHW order and ``fine_labels``; ``meta``: ``fine_label_names``). Each selected fine class is one
contributor: the paper's classes 40-44, 55-59, 60-64, 80-84 (500 images each, 20 contributors).

Model: the DDPM CIFAR-10 architecture of the paper's public code, a diffusers ``UNet2DModel`` 32x32 with
channels (128, 256, 256, 256), two ResNet blocks per level and single-head attention at 16x16
(:data:`PAPER_UNET`); it is the built-in ``model.kind: unet`` with those fields, so the whole job runs in
``contribshap.workers.game.DiffusionGame`` (this module only adds the ``cifar100`` data source).

The pickle is the dataset's official format; only open files you downloaded from the CIFAR site.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.pipeline.contracts.game import Contributor
from contribshap.workers.data import ContributorDataset

if TYPE_CHECKING:
    from contribshap.usecases.cifar20.schema import Cifar100Source

#: ``model:`` fields of the paper's CIFAR UNet (35.7M parameters before pruning).
PAPER_UNET: dict[str, Any] = {
    "kind": "unet",
    "sample_size": 32,
    "in_channels": 3,
    "block_out_channels": [128, 256, 256, 256],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
    "attention_head_dim": None,
}


def read_cifar100(root: Path, classes: list[int], *, max_per_class: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the selected fine classes from ``<root>/train``.

    Args:
        root: the ``cifar-100-python`` folder.
        classes: fine labels to keep, in contributor order.
        max_per_class: keep the first this many images of each class (None = all).

    Returns:
        images uint8 (N, 3, 32, 32), owner int64 (N,) indexing ``classes``, names (len(classes),) from
        ``meta`` (``class-<k>`` when ``meta`` is absent).
    """
    root = Path(root).expanduser()
    train = root / "train"
    if not train.is_file():
        raise FileNotFoundError(f"data.root: {train} does not exist; point data.root at the extracted cifar-100-python folder")
    with train.open("rb") as handle:
        batch = pickle.load(handle, encoding="latin1")
    missing = {"data", "fine_labels"} - set(batch)
    if missing:
        raise ValueError(f"{train} is not a CIFAR-100 train pickle (missing keys {sorted(missing)})")
    data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(batch["fine_labels"], dtype=np.int64)

    names = [f"class-{c}" for c in classes]
    meta = root / "meta"
    if meta.is_file():
        with meta.open("rb") as handle:
            fine_names = pickle.load(handle, encoding="latin1").get("fine_label_names")
        if fine_names:
            names = [str(fine_names[c]) for c in classes]

    parts, owner = [], []
    for j, c in enumerate(classes):
        idx = np.flatnonzero(labels == c)[:max_per_class]
        if len(idx) == 0:
            raise ValueError(f"data.classes: class {c} has no images in {train}; choose classes present in the file")
        parts.append(data[idx])
        owner.append(np.full(len(idx), j, dtype=np.int64))
    return np.concatenate(parts), np.concatenate(owner), names


def load_cifar100(config: Cifar100Source) -> ContributorDataset:
    """``data.source: cifar100`` -> images in [-1, 1] (N, 3, 32, 32); contributor ids ``cifar100-<class>``."""
    images, owner, names = read_cifar100(config.root, list(config.classes), max_per_class=config.max_per_class)
    contributors = [
        Contributor(f"cifar100-{c}", name, int((owner == j).sum())) for j, (c, name) in enumerate(zip(config.classes, names, strict=True))
    ]
    return ContributorDataset(
        images=torch.from_numpy(images).float().div(127.5).sub(1.0),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
        labels=torch.as_tensor(np.asarray(config.classes)[owner]),
    )
