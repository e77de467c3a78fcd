"""The paper's three published settings on top of the diffusion workers (issue 5).

Importing this package registers, in the workers' registries:

- data sources ``cifar100`` (:mod:`.cifar`), ``celebahq`` (:mod:`.celebahq`), ``artbench`` (:mod:`.artbench`);
- model kinds ``ldm`` (UNet2DModel on VQModel latents) and ``sd_lora`` (Stable Diffusion 1.x + LoRA);
- feature extractors ``blip`` / ``clip`` (Ward clusters for ``diversity``) and ``laion_aesthetic``, and the
  properties ``aesthetic_mean`` / ``aesthetic_p90`` (:mod:`.properties`).

:func:`build_usecase_game` returns the game for any ``game.kind: diffusion`` config: CIFAR-20 (``kind: unet``)
runs in ``contribshap.workers.game.DiffusionGame``; CelebA-HQ (``ldm``) and ArtBench (``sd_lora``) in :class:`UseCaseGame`,
which adds latent caching, decoding, text conditioning and LoRA-rank pruning. Configs: ``configs/cifar20.yaml``,
``configs/celebahq.yaml``, ``configs/artbench.yaml``; documentation: ``docs/usecases.md``.
"""

from contribshap.workers.usecases import artbench, celebahq, cifar, properties  # noqa: F401  (registrations)
from contribshap.workers.usecases.game import LATENT_KINDS, UseCaseGame, build_usecase_game

__all__ = ["LATENT_KINDS", "UseCaseGame", "build_usecase_game"]
