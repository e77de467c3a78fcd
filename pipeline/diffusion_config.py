"""Schema of ``game.kind: diffusion`` (pydantic only; no torch). Filled in by the workers work."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class DiffusionGameConfig(BaseModel):
    """Placeholder schema: the workers issue defines data/model/train/prune/finetune/sampling/properties."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["diffusion"] = "diffusion"
