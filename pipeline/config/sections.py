"""Base classes of config sections, shared by the built-in schema and every use case's schema.

May import: pydantic. Nothing else of contribshap (use cases import it while the schema builds its unions).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

__all__ = ["OmitNewDefaults", "Section", "UNetModelConfig"]


class Section(BaseModel):
    """Base of every section: unknown keys are errors (a typo never silently falls back to a default)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    def paths(self) -> dict[str, Path | None]:
        """Local paths this section needs, as ``{dotted key: path}`` (None = not configured)."""
        return {}


class OmitNewDefaults(Section):
    """Base of sections that grew keys: keys in ``omit_at_default`` are left out of the dump while they hold their default.

    Artifact hashes are hashes of section dumps; a key added later must not change the hash (and so force
    a rebuild of θ*) of every existing config that does not use it. Loading a dump without the key gives
    the default back, so the round trip stays exact.
    """

    omit_at_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler):  # handler: pydantic's SerializerFunctionWrapHandler
        data = handler(self)
        for key in self.omit_at_default:
            if isinstance(data, dict) and getattr(self, key) == type(self).model_fields[key].get_default(
                    call_default_factory=True):
                data.pop(key, None)
        return data


class UNetModelConfig(Section):
    """A diffusers ``UNet2DModel`` with a ``DDPMScheduler`` (pixel-space DDPM).

    Attributes:
        pretrained: local folder written by ``save_pretrained`` (``config.json`` +
            ``diffusion_pytorch_model.safetensors``); when set it is θ* and ``train`` is skipped.
        sample_size: image side (default 8 for the digits).
        in_channels: image channels (default 1).
        block_out_channels: channels per resolution (default (16, 32): 164k parameters).
        layers_per_block: ResNet blocks per resolution (default 1).
        down_block_types / up_block_types: diffusers block names (default one attention block at the
            lowest resolution).
        norm_num_groups: GroupNorm groups (default 4; must divide every channel count).
        attention_head_dim: None = one head per attention layer (diffusers' default 8 breaks after pruning).
        num_train_timesteps / beta_schedule / beta_start / beta_end: the DDPM noise schedule.
    """

    kind: Literal["unet"] = "unet"
    pretrained: Path | None = None
    sample_size: int = Field(8, ge=4)
    in_channels: int = Field(1, ge=1)
    block_out_channels: list[int] = Field(default_factory=lambda: [16, 32])
    layers_per_block: int = Field(1, ge=1)
    down_block_types: list[str] = Field(default_factory=lambda: ["DownBlock2D", "AttnDownBlock2D"])
    up_block_types: list[str] = Field(default_factory=lambda: ["AttnUpBlock2D", "UpBlock2D"])
    norm_num_groups: int = Field(4, ge=1)
    attention_head_dim: int | None = None
    num_train_timesteps: int = Field(1000, ge=10)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02

    @model_validator(mode="after")
    def _check_shape(self) -> UNetModelConfig:
        n = len(self.block_out_channels)
        if len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"model: block_out_channels has {n} entries but down_block_types has "
                f"{len(self.down_block_types)} and up_block_types {len(self.up_block_types)}; give one per resolution"
            )
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(
                f"model.block_out_channels {bad} are not divisible by norm_num_groups={self.norm_num_groups}"
            )
        return self

    def paths(self) -> dict[str, Path | None]:
        return {"model.pretrained": self.pretrained}
