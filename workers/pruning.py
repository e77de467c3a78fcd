"""Structured pruning of the denoiser with torch-pruning (the paper's θ* -> θ~*).

:func:`prune_model` removes a fraction ``prune.ratio`` of the channels of every prunable layer, ranked by
the L-p magnitude of their weights, keeping coupled layers consistent through torch-pruning's dependency
graph (residual adds, skip concatenations, GroupNorm groups, the single attention head). The output
convolution is never pruned, so the model still predicts noise of the image's shape.

Saving: a pruned module no longer matches its diffusers config, and saving it whole would need pickle.
:func:`save_pruned` writes the unpruned config (``config.json``), the pruning options (``prune.json``)
and the pruned weights (safetensors). :func:`load_pruned` rebuilds the unpruned architecture, prunes it
again with the same options (with per-layer pruning the channel counts depend only on the ratio, not on
the weights), checks every shape against the file and loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from contribshap.pipeline.config.diffusion import PruneConfig
from contribshap.workers.models import PRUNE_NAME, WEIGHTS_NAME, build_model, model_kind

if TYPE_CHECKING:
    from contribshap.pipeline.config.sections import Section


def _example_inputs(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    config = model.config
    sample = torch.randn(1, config.in_channels, config.sample_size, config.sample_size)
    return {"sample": sample, "timestep": torch.tensor([10])}


def _fix_diffusers_attributes(model: torch.nn.Module) -> None:
    """Make diffusers' cached channel counts match the pruned convolutions (they are checked in forward)."""
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    for module in model.modules():
        if isinstance(module, Upsample2D | Downsample2D):
            conv = getattr(module, "conv", None)
            if isinstance(conv, torch.nn.Conv2d):
                module.channels = conv.in_channels
                module.out_channels = conv.out_channels


def prune_model(model: torch.nn.Module, prune: PruneConfig, *, seed: int = 0) -> torch.nn.Module:
    """Prune ``model`` in place and return it.

    Args:
        model: a diffusers ``UNet2DModel`` (any module whose ``conv_out`` is the output conv).
        prune: the ``prune`` config section (ratio, importance, norm_p, round_to, global_pruning).
        seed: seed for ``importance: random``.

    Returns:
        The same module, with fewer channels; it still maps (B, C, H, W) noise + timesteps to (B, C, H, W).
    """
    import torch_pruning as tp

    if prune.ratio == 0.0:
        return model
    # 1. Importance criterion.
    if prune.importance == "magnitude":
        importance = tp.importance.MagnitudeImportance(p=prune.norm_p)
    elif prune.importance == "random":
        torch.manual_seed(seed)
        importance = tp.importance.RandomImportance()
    else:
        raise ValueError(f"prune.importance={prune.importance!r} is unknown; valid: ['magnitude', 'random']")

    # 2. Dependency graph on an example input; the output conv stays whole.
    pruner = tp.pruner.MetaPruner(
        model,
        _example_inputs(model),
        importance=importance,
        pruning_ratio=prune.ratio,
        global_pruning=prune.global_pruning,
        round_to=prune.round_to,
        ignored_layers=[model.conv_out],
    )

    # 3. Prune every group, then fix the attributes diffusers caches.
    model.eval()
    with torch.no_grad():
        for group in pruner.step(interactive=True):
            group.prune()
    _fix_diffusers_attributes(model)
    model.zero_grad(set_to_none=True)
    return model


def save_pruned(model: torch.nn.Module, folder: Path, *, model_config: Section, prune: PruneConfig, base_folder: Path | None) -> None:
    """Save a pruned model: ``config.json`` (unpruned architecture) + ``prune.json`` + safetensors weights.

    ``base_folder`` (the unpruned θ*) is recorded and needed again only for ``global_pruning``, where the
    channel counts depend on the weights.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    meta = {"prune": prune.model_dump(mode="json"), "base_folder": str(base_folder) if base_folder else None, "shapes": shapes}
    (folder / PRUNE_NAME).write_text(json.dumps(meta, indent=1))
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS_NAME))


def load_pruned(model_config: Section, folder: Path) -> torch.nn.Module:
    """Rebuild and load a model saved by :func:`save_pruned` (exact weights)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"pruned checkpoint {folder} lacks {weights}; re-run prepare to rebuild it")
    meta = json.loads((folder / PRUNE_NAME).read_text())
    prune = PruneConfig.model_validate(meta["prune"])

    # 1. The unpruned architecture (θ* weights only when the structure depends on them).
    if prune.global_pruning:
        if not meta["base_folder"]:
            raise ValueError(f"{folder / PRUNE_NAME} uses global_pruning but names no base_folder; re-run prepare")
        model = model_kind(model_config.kind).load(model_config, Path(meta["base_folder"]))
    else:
        from diffusers import UNet2DModel

        model = UNet2DModel.from_config(UNet2DModel.load_config(folder)) if model_config.kind == "unet" else build_model(model_config, seed=0)

    # 2. Prune again, compare shapes, load the weights.
    prune_model(model, prune)
    state = load_file(str(weights))
    wrong = [k for k, v in model.state_dict().items() if k not in state or list(state[k].shape) != list(v.shape)]
    if wrong:
        raise ValueError(f"pruned checkpoint {folder} does not match the re-pruned architecture at {wrong[:3]}; re-run prepare")
    model.load_state_dict(state, strict=True)
    return model
