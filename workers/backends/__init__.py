"""Backends: what differs between model kinds, behind one small protocol.

``contribshap.workers.game.DiffusionGame`` runs the same job for every ``model.kind``; a backend answers
the model-specific questions (the space the diffusion runs in, what θ* / θ~* / the recovered model are,
how to copy a start model, the null model, the sampling model):

=========  ==============================  ===================================================
kind       module                          model space
=========  ==============================  ===================================================
``unet``   :mod:`.pixel`                   pixels (N, C, H, W) in [-1, 1]; samples clamped
``ldm``    ``usecases.celebahq.backend``   VQ-VAE latents, encoded once (``latents-*``)
``sd_lora````usecases.artbench.backend``   SD VAE latents; frozen SD UNet + LoRA, text-conditioned
=========  ==============================  ===================================================

A new model = a class satisfying :class:`Backend` (and a :class:`~contribshap.workers.models.ModelKind`),
declared by its use case and registered in :data:`contribshap.workers.registry.BACKENDS` / ``MODELS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

#: ``load_dataset()``: the contributor dataset (pixels), loaded only when a stage needs it.
DatasetFn = Callable[[], Any]


class Backend(Protocol):
    """The model-specific half of the diffusion game (one object per game; it holds the loaded models).

    Attributes:
        noise_scheduler: the training ``DDPMScheduler`` (forward process; DDIM/DDPM sampling derive from it).
        clamp: whether generated samples are clamped to [-1, 1] (pixels yes, latents no).
        sample_shape: (C, h, w) of one sample in the model's space.
    """

    noise_scheduler: Any
    clamp: bool
    sample_shape: tuple[int, int, int]

    def artifact_hashes(self) -> dict[str, str]:
        """Artifact name -> hash for the backend's stages, in build order (``theta_star``, ``pruned``,
        ``recovered``; latent backends first ``latents``)."""
        ...

    def prepare(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray, *, progress: bool) -> dict[str, Any]:
        """Build the backend's missing artifacts with ``contribshap.workers.artifacts.stage``; per stage a summary."""
        ...

    def load(self, paths: dict[str, Path]) -> None:
        """Load θ* and the recovered model from the artifacts onto the device (once; idempotent)."""
        ...

    def training_data(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray) -> torch.Tensor:
        """Every training item in the model's space: float32 (N, C, h, w) (pixels, or cached latents)."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images float32 (N, C', H, W) in [-1, 1] -> the model space (N, C, h, w) (identity for pixels)."""
        ...

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """Model space (N, C, h, w) -> images float32 (N, C', H, W) in [-1, 1] on CPU."""
        ...

    def theta_star_start(self) -> torch.nn.Module:
        """A trainable start model holding θ* (``finetune.mode: ft``); the prepared θ* itself is never changed."""
        ...

    def recovered_start(self) -> torch.nn.Module:
        """A trainable start model holding the recovered pruned model (``finetune.mode: sparsified_ft``)."""
        ...

    def fresh_start(self, seed: int) -> torch.nn.Module:
        """A trainable fresh initialisation from ``seed`` (``finetune.mode: retrain``)."""
        ...

    def sampling_model(self, trained: torch.nn.Module) -> torch.nn.Module:
        """The denoiser that samples for a trained model (e.g. with classifier-free guidance)."""
        ...

    def stage_model(self, name: str) -> torch.nn.Module:
        """The sampling model of a prepared stage: ``null`` (v(∅)), ``theta_star``, ``pruned`` or ``recovered``."""
        ...


def make_backend(config: DiffusionGameConfig, *, seed: int) -> Backend:
    """The backend of ``config.model.kind`` for the ``DiffusionGameConfig`` ``config`` (run seed ``seed``).

    Raises:
        ValueError: for a kind without a backend (lists the valid kinds).
    """
    from contribshap.workers.registry import BACKENDS

    return BACKENDS.get(config.model.kind)(config, seed=seed)
