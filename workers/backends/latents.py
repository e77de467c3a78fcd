"""The latent cache shared by the latent backends (``ldm``, ``sd_lora``): every training image encoded once.

Artifact ``latents-<hash>`` (hash of the data section and the codec fields of ``model``) holds
``latents.safetensors`` with ``latents`` float32 (N, C, h, w) and ``owner`` int64 (N,); a worker reads it
instead of decoding tens of thousands of images, and checks that the owners still match the data index.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

LATENTS_NAME = "latents.safetensors"


class LatentCodec(Protocol):
    """Images <-> latents (a VQ-VAE or SD's KL VAE)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) in [-1, 1] -> latents float32 (N, C, h, w) on CPU."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, C, h, w) -> images float32 (N, 3, H, W) in [-1, 1] on CPU."""
        ...

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        """(C, h, w) of the latents of an ``image_size`` x ``image_size`` image."""
        ...


def latents_hash(config: DiffusionGameConfig) -> str:
    """Hash of what the cached latents depend on: the data section and the codec fields of ``model``."""
    from contribshap.workers.artifacts import config_hash

    codec = config.model.model_dump(mode="json", include={"kind", "vqvae", "latent_scale", "pipeline"})
    return config_hash(config.data, codec)


def latent_stage_hashes(config: DiffusionGameConfig, *, seed: int, given: tuple[str, Any] | None) -> dict[str, str]:
    """Artifact hashes of a latent backend: the latent cache, θ*, the pruned and the recovered model.

    Args:
        config: ``DiffusionGameConfig``. seed: the run's seed.
        given: ``(tag, model_section)`` when θ* comes from a local file (its hash then covers only the
            tag and the model section: ``("pretrained", model)`` for ldm, ``("lora", model)`` for sd_lora);
            ``None`` when prepare trains θ* on the latents.
    """
    from contribshap.workers.artifacts import config_hash

    latents = latents_hash(config)
    theta = config_hash(*given) if given else config_hash(latents, config.model, config.train, seed)
    pruned = config_hash(theta, config.prune, seed)
    recovered = config_hash(pruned, config.recover, latents, seed)
    return {"latents": latents, "theta_star": theta, "pruned": pruned, "recovered": recovered}


def encode_stage(folder: Path, codec: LatentCodec, dataset: Any, owner: np.ndarray) -> dict[str, Any]:
    """Stage ``latents-*``: encode every training image of ``dataset()`` once with ``codec.encode``.

    ``codec``: anything with ``encode(images) -> latents`` (a latent backend passes itself).
    """
    from contribshap.workers.artifacts import stage
    from safetensors.torch import save_file

    def make_latents(tmp: Path) -> dict[str, Any]:
        latents = codec.encode(dataset().images)
        save_file({"latents": latents.contiguous(), "owner": torch.from_numpy(np.asarray(owner, dtype=np.int64))},
                  str(tmp / LATENTS_NAME))
        return {"n": len(latents), "shape": list(latents.shape[1:]), "std": float(latents.std())}

    return stage(folder, make_latents)


def read_latents(folder: Path, owner: np.ndarray) -> torch.Tensor:
    """The cached latents float32 (N, C, h, w); an error when their owners differ from ``owner`` (N,)."""
    from safetensors.torch import load_file

    data = load_file(str(Path(folder) / LATENTS_NAME))
    if not np.array_equal(data["owner"].numpy(), owner):
        raise ValueError(f"cached latents {folder} do not match the current data index; delete the folder and re-run prepare")
    return data["latents"]
