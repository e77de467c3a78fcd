"""Denoisers and noise schedulers, built from config or loaded from local folders (never downloaded).

A *model kind* (``model.kind`` in the config) is a :class:`ModelKind` registered in
:data:`contribshap.workers.registry.MODELS`; it provides four functions: build a randomly initialised model,
load one from a local folder, save one (safetensors only), and build its training noise scheduler. The
built-in kind ``unet`` (:data:`UNET`) is a diffusers ``UNet2DModel`` with a ``DDPMScheduler``; the CelebA-HQ
and ArtBench use cases add ``ldm`` and ``sd_lora`` the same way (``LDM_MODEL = ModelKind(...)`` in their
``backend.py``, declared in the use case).

Checkpoint layout (``save_pretrained``): ``<folder>/config.json`` + ``diffusion_pytorch_model.safetensors``.
A pruned model also has ``prune.json`` (see ``contribshap.workers.pruning``); ``contribshap.workers.checkpoints``
loads and saves both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from contribshap.pipeline.config.sections import Section, UNetModelConfig

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
PRUNE_NAME = "prune.json"


@dataclass(frozen=True)
class ModelKind:
    """The four functions a model kind provides.

    Attributes:
        build: ``build(model_config) -> torch.nn.Module``, random init from the global torch RNG.
        load: ``load(model_config, folder) -> torch.nn.Module`` from a local folder.
        save: ``save(model, folder) -> None``, safetensors + config, no pickles.
        scheduler: ``scheduler(model_config) -> diffusers.DDPMScheduler`` (training noise schedule).
    """

    build: Callable[[Any], torch.nn.Module]
    load: Callable[[Any, Path], torch.nn.Module]
    save: Callable[[torch.nn.Module, Path], None]
    scheduler: Callable[[Any], Any]


def model_kind(kind: str) -> ModelKind:
    """The registered functions for ``kind`` (:data:`contribshap.workers.registry.MODELS`)."""
    from contribshap.workers.registry import MODELS

    return MODELS.get(kind)


def build_model(config: Section, *, seed: int) -> torch.nn.Module:
    """A randomly initialised model for ``config`` (a model section), seeded (same seed -> same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_kind(config.kind).build(config)


def build_scheduler(config: Section) -> Any:
    """The training noise scheduler (``DDPMScheduler``) of ``config``."""
    return model_kind(config.kind).scheduler(config)


def from_pretrained_safetensors(cls: Any, folder: str | Path, *, key: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder, local_files_only=True, use_safetensors=True)``: never unpickles weights.

    Args:
        cls: a diffusers / transformers model class. folder: a local ``save_pretrained`` folder.
        key: the config key that named the folder (for the error message). kwargs: passed on.

    Raises:
        FileNotFoundError: the folder does not exist. ValueError: it holds only pickle weights (``.bin``/
        ``.pt``/``.ckpt``), with the one-line fix (re-save them as safetensors).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"{key}: {folder} does not exist; copy the model folder (save_pretrained layout) there")
    if not any(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        detail = f"only pickle weights {pickles}" if pickles else "no *.safetensors weights"
        raise ValueError(f"{key}: {folder} has {detail}; pickle files can run code when loaded, so convert them once "
                         "with save_pretrained(safe_serialization=True) on a machine you trust")
    return cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True, **kwargs)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------
# kind "unet": diffusers UNet2DModel + DDPMScheduler
# ----------------------------------------------------------------------------------------------------
def _unet_kwargs(config: UNetModelConfig) -> dict[str, Any]:
    return {
        "sample_size": config.sample_size,
        "in_channels": config.in_channels,
        "out_channels": config.in_channels,
        "layers_per_block": config.layers_per_block,
        "block_out_channels": tuple(config.block_out_channels),
        "down_block_types": tuple(config.down_block_types),
        "up_block_types": tuple(config.up_block_types),
        "norm_num_groups": config.norm_num_groups,
        "attention_head_dim": config.attention_head_dim,
    }


def _build_unet(config: UNetModelConfig) -> torch.nn.Module:
    from diffusers import UNet2DModel

    return UNet2DModel(**_unet_kwargs(config))


def _load_unet(config: UNetModelConfig, folder: Path) -> torch.nn.Module:
    from diffusers import UNet2DModel

    missing = [str(folder / name) for name in ("config.json", WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"model checkpoint {folder} lacks {missing}; point model.pretrained at a folder written by save_pretrained"
        )
    return UNet2DModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)


def _save_unet(model: torch.nn.Module, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)


def _unet_scheduler(config: UNetModelConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
    )


#: ``model.kind: unet``.
UNET = ModelKind(build=_build_unet, load=_load_unet, save=_save_unet, scheduler=_unet_scheduler)
