"""Pixel-space backend (``model.kind: unet``): a diffusers ``UNet2DModel`` denoising images directly.

θ* = the UNet trained on all images (or ``model.pretrained``); θ~* = torch-pruning structured pruning;
the recovered model = θ~* fine-tuned on all images. The model space is the image space: encode and
decode are the identity, samples are clamped to [-1, 1]. Used by the digits demo, the ``folder`` source
and CIFAR-20.

Artifact hashes (unchanged since the first stores)::

    theta_star = hash(data, model, train, seed)      or hash("pretrained", model)
    pruned     = hash(theta_star, prune, seed)
    recovered  = hash(pruned, recover, data, seed)
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.workers.backends import DatasetFn
from contribshap.workers.checkpoints import load_model, save_model
from contribshap.workers.data import load_dataset
from contribshap.workers.models import build_model, build_scheduler, count_parameters
from contribshap.workers.training import resolve_device, train

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig


def null_model(config: DiffusionGameConfig, theta_star: torch.nn.Module, *, seed: int) -> torch.nn.Module:
    """v(∅)'s model for a UNet: ``random_init`` (seeded full architecture) or ``base`` (θ*)."""
    if config.null_model == "random_init":
        return build_model(config.model, seed=seed + 7919)
    if config.null_model == "base":
        return theta_star
    raise ValueError(f"null_model={config.null_model!r} is unknown; valid: ['random_init', 'base']")


class UNetStages:
    """θ*, θ~* and the recovered θ~* of a ``UNet2DModel`` trained on tensors of the model space.

    Shared by the pixel and the LDM backend (the LDM's UNet is the same model on latents).

    Args:
        config: ``DiffusionGameConfig`` (``model`` is a UNet section). seed: the run's seed.
        noise_scheduler: the training scheduler. device: where training runs.
    """

    def __init__(self, config: DiffusionGameConfig, *, seed: int, noise_scheduler: Any, device: torch.device) -> None:
        self.config, self.seed, self.noise_scheduler, self.device = config, int(seed), noise_scheduler, device
        self.theta_star: torch.nn.Module | None = None
        self.recovered: torch.nn.Module | None = None
        self._paths: dict[str, Path] = {}

    def prepare(self, paths: dict[str, Path], data: Any, *, progress: bool, first: int = 1, total: int = 6) -> dict[str, Any]:
        """Stages θ*, θ~*, recovered θ~* (``data()`` -> training tensor (N, C, h, w), called when needed)."""
        from contribshap.workers.artifacts import stage
        from contribshap.workers.pruning import prune_model, save_pruned

        c, seed, device = self.config, self.seed, self.device
        out: dict[str, Any] = {}

        # θ*: the full model on all data (or the pretrained folder).
        def make_theta(folder: Path) -> dict[str, Any]:
            if c.model.pretrained is not None:
                model = load_model(c.model, Path(c.model.pretrained))
                stats = {"source": str(c.model.pretrained)}
            else:
                model = build_model(c.model, seed=seed).to(device)
                run = train(model, self.noise_scheduler, data(), c.train, seed=seed, device=device, precision=c.precision,
                            progress=f"prepare {first}/{total} train θ*" if progress else None)
                stats = {"steps": run.steps, "final_loss": run.final_loss}
            save_model(c.model, model.cpu(), folder)
            return {**stats, "parameters": count_parameters(model)}

        out["theta_star"] = stage(paths["theta_star"], make_theta)

        # θ~*: structured pruning.
        def make_pruned(folder: Path) -> dict[str, Any]:
            model = load_model(c.model, paths["theta_star"])
            before = count_parameters(model)
            prune_model(model, c.prune, seed=seed)
            save_pruned(model, folder, model_config=c.model, prune=c.prune, base_folder=paths["theta_star"])
            return {"ratio": c.prune.ratio, "parameters": count_parameters(model), "parameters_before": before}

        out["pruned"] = stage(paths["pruned"], make_pruned)

        # Recovery fine-tuning of θ~* on all data.
        def make_recovered(folder: Path) -> dict[str, Any]:
            model = load_model(c.model, paths["pruned"]).to(device)
            run = train(model, self.noise_scheduler, data(), c.recover, seed=seed + 1, device=device, precision=c.precision,
                        progress=f"prepare {first + 2}/{total} recover" if progress else None)
            save_pruned(model.cpu(), folder, model_config=c.model, prune=c.prune, base_folder=paths["theta_star"])
            return {"steps": run.steps, "final_loss": run.final_loss, "parameters": count_parameters(model)}

        out["recovered"] = stage(paths["recovered"], make_recovered)
        return out

    def load(self, paths: dict[str, Path]) -> None:
        if self.theta_star is None or self._paths != paths:
            self.theta_star = load_model(self.config.model, paths["theta_star"]).to(self.device).eval()
            self.recovered = load_model(self.config.model, paths["recovered"]).to(self.device).eval()
            self._paths = dict(paths)

    def model(self, name: str) -> torch.nn.Module:
        """A prepared model on the device: ``null``, ``theta_star``, ``pruned`` or ``recovered``."""
        if name == "null":
            return null_model(self.config, self.theta_star, seed=self.seed).to(self.device)
        if name == "theta_star":
            return self.theta_star
        if name == "pruned":
            return load_model(self.config.model, self._paths["pruned"]).to(self.device)
        if name == "recovered":
            return self.recovered
        raise ValueError(f"stage model {name!r} is unknown; valid: ['null', 'theta_star', 'pruned', 'recovered']")

    def fresh(self, seed: int) -> torch.nn.Module:
        return build_model(self.config.model, seed=seed % (2**31)).to(self.device)


class PixelBackend:
    """``model.kind: unet``: the diffusion runs on the images themselves.

    Args:
        config: a ``DiffusionGameConfig`` with ``model.kind: unet``. seed: the run's seed.
    """

    clamp = True

    def __init__(self, config: DiffusionGameConfig, *, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = resolve_device(config.device)
        self.noise_scheduler = build_scheduler(config.model)
        self.unet = UNetStages(config, seed=seed, noise_scheduler=self.noise_scheduler, device=self.device)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the training images (the dataset is cached per process)."""
        return tuple(load_dataset(self.config.data).images.shape[1:])

    def artifact_hashes(self) -> dict[str, str]:
        from contribshap.workers.artifacts import config_hash

        c = self.config
        if c.model.pretrained is not None:
            theta = config_hash("pretrained", c.model)
        else:
            theta = config_hash(c.data, c.model, c.train, self.seed)
        pruned = config_hash(theta, c.prune, self.seed)
        recovered = config_hash(pruned, c.recover, c.data, self.seed)
        return {"theta_star": theta, "pruned": pruned, "recovered": recovered}

    def prepare(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray, *, progress: bool) -> dict[str, Any]:
        return self.unet.prepare(paths, lambda: dataset().images, progress=progress)

    def load(self, paths: dict[str, Path]) -> None:
        self.unet.load(paths)

    def training_data(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray) -> torch.Tensor:
        return dataset().images

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return samples

    def theta_star_start(self) -> torch.nn.Module:
        return copy.deepcopy(self.unet.theta_star)

    def recovered_start(self) -> torch.nn.Module:
        return copy.deepcopy(self.unet.recovered)

    def fresh_start(self, seed: int) -> torch.nn.Module:
        return self.unet.fresh(seed)

    def sampling_model(self, trained: torch.nn.Module) -> torch.nn.Module:
        return trained

    def stage_model(self, name: str) -> torch.nn.Module:
        return self.unet.model(name)
