"""Model folders, pruned or not: :func:`load_model` and :func:`save_model` (config + safetensors, no pickles)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from contribshap.workers.models import PRUNE_NAME, model_kind
from contribshap.workers.pruning import load_pruned

if TYPE_CHECKING:
    from contribshap.pipeline.config.sections import Section

__all__ = ["load_model", "save_model"]


def load_model(config: Section, folder: Path) -> torch.nn.Module:
    """Load a model saved by :func:`save_model` (or a pruned one, see ``contribshap.workers.pruning``) from ``folder``."""
    folder = Path(folder).expanduser()
    if (folder / PRUNE_NAME).is_file():
        return load_pruned(config, folder)
    return model_kind(config.kind).load(config, folder)


def save_model(config: Section, model: torch.nn.Module, folder: Path) -> None:
    """Save ``model`` to ``folder`` (created) as config + safetensors."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_kind(config.kind).save(model, folder)
