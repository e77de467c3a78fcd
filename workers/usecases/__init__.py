"""The data sources and properties of the paper's three published settings.

Importing this package (``contribshap.workers.game`` does) registers, in the workers' registries:

- data sources ``cifar100`` (:mod:`.cifar`), ``celebahq`` (:mod:`.celebahq`), ``artbench`` (:mod:`.artbench`);
- feature extractors ``blip`` / ``clip`` (Ward clusters for ``diversity``) and ``laion_aesthetic``, and the
  properties ``aesthetic_mean`` / ``aesthetic_p90`` (:mod:`.properties`).

The models are backends: CIFAR-20 runs the pixel UNet (``model.kind: unet``), CelebA-HQ ``ldm`` and
ArtBench ``sd_lora`` (``contribshap.workers.backends``); all three run in ``contribshap.workers.game.DiffusionGame``.
Configs: ``configs/cifar20.yaml``, ``configs/celebahq.yaml``, ``configs/artbench.yaml``; documentation:
``docs/usecases.md``.
"""

from contribshap.workers.usecases import artbench, celebahq, cifar, properties  # noqa: F401  (registrations)
