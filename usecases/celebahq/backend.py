"""Latent diffusion backend (``model.kind: ldm``): a ``UNet2DModel`` on the latents of a local ``VQModel``.

The CompVis LDM CelebA-HQ layout: ``VQModel.from_pretrained(<ldm-celebahq-256>/vqvae)`` maps 256x256
images to 3x64x64 latents. Training images are encoded once and cached (``latents-*``); θ*, θ~* and the
recovered model are the pixel backend's UNet stages run on the latents; generated latents are decoded by
the VQ decoder for the properties. The noise scheduler keeps latents unclipped (``clip_sample=False``, as
the LDM scheduler) and samples are not clamped.

Artifact hashes::

    latents    = hash(data, model codec fields)
    theta_star = hash(latents, model, train, seed)   or hash("pretrained", model)
    pruned     = hash(theta_star, prune, seed)
    recovered  = hash(pruned, recover, latents, seed)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.workers.backends import DatasetFn
from contribshap.workers.backends.latents import encode_stage, latent_stage_hashes, read_latents
from contribshap.workers.backends.pixel import PixelBackend
from contribshap.workers.models import (
    ModelKind,
    from_pretrained_safetensors,
    model_kind,
)
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig
    from contribshap.usecases.celebahq.schema import LDMModelConfig


class VQCodec:
    """Encode images to VQ latents and decode latents to images (``latent_scale`` applied both ways).

    Args:
        folder: local ``VQModel`` folder (``config.json`` + safetensors weights).
        latent_scale: z_diffusion = latent_scale * vq.encode(x).latents (default 1.0, as the LDM pipeline).
        device / batch_size: where and how many images per call.
    """

    def __init__(self, folder: str | Path, *, latent_scale: float = 1.0, device: torch.device | str = "cpu", batch_size: int = 16):
        from diffusers import VQModel

        self.folder = Path(folder).expanduser()
        self.vq = from_pretrained_safetensors(VQModel, self.folder, key="model.vqvae").to(device).eval()
        self.latent_scale = float(latent_scale)
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) in [-1, 1] -> latents (N, C, h, w) on CPU (pre-quantisation, as the LDM)."""
        outs = [
            self.vq.encode(images[i : i + self.batch_size].to(self.device)).latents.float().cpu()
            for i in tqdm(range(0, len(images), self.batch_size), desc="encode", leave=False, disable=len(images) < 500)
        ]
        return torch.cat(outs) * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, C, h, w) -> images float (N, 3, H, W) in [-1, 1] on CPU (quantised by the VQ decoder)."""
        outs = [
            self.vq.decode(latents[i : i + self.batch_size].to(self.device) / self.latent_scale).sample.float().clamp(-1, 1).cpu()
            for i in range(0, len(latents), self.batch_size)
        ]
        return torch.cat(outs)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vq.config.block_out_channels) - 1)
        return (int(self.vq.config.latent_channels), image_size // factor, image_size // factor)


# model.kind: ldm = the UNet2DModel functions of kind unet + an unclipped noise schedule
_unet = model_kind("unet")


def _ldm_scheduler(config: LDMModelConfig) -> Any:
    """Kind unet's DDPM schedule with ``clip_sample=False``: latents are not bounded to [-1, 1]."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(_unet.scheduler(config).config, clip_sample=False)


#: ``model.kind: ldm``.
LDM_MODEL = ModelKind(build=_unet.build, load=_unet.load, save=_unet.save, scheduler=_ldm_scheduler)


class LDMBackend(PixelBackend):
    """``model.kind: ldm``: the UNet stages of the pixel backend on cached VQ latents.

    Everything about the UNet (loading, start models, stage models, sampling model) is the pixel
    backend's; this class adds the VQ codec, the latent cache and the latent artifact hashes.

    Args:
        config: a ``DiffusionGameConfig`` with ``model.kind: ldm``. seed: the run's seed.
    """

    clamp = False

    def __init__(self, config: DiffusionGameConfig, *, seed: int) -> None:
        super().__init__(config, seed=seed)
        self.codec = VQCodec(config.model.vqvae, latent_scale=config.model.latent_scale, device=self.device,
                             batch_size=config.model.encode_batch_size)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent."""
        return self.codec.latent_shape(self.config.data.image_size)

    def artifact_hashes(self) -> dict[str, str]:
        model = self.config.model
        return latent_stage_hashes(self.config, seed=self.seed, given=("pretrained", model) if model.pretrained else None)

    def prepare(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray, *, progress: bool) -> dict[str, Any]:
        out = {"latents": encode_stage(paths["latents"], self, dataset, owner)}
        latents = read_latents(paths["latents"], owner)
        out.update(self.unet.prepare(paths, lambda: latents, progress=progress, first=2, total=7))
        return out

    def training_data(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray) -> torch.Tensor:
        return read_latents(paths["latents"], owner)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(images)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(samples)
