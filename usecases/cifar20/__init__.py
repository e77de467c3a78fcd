"""CIFAR-20 (the paper's image-quality setting): 20 CIFAR-100 fine classes as contributors, the paper's DDPM
UNet (the built-in ``model.kind: unet``), FID / Inception score with a local Inception file.

Config: ``configs/cifar20.yaml``; docs: ``docs/usecases.md``.
"""

from contribshap.usecases import UseCase
from contribshap.usecases.cifar20.schema import Cifar100Source

USECASE = UseCase(
    name="cifar20",
    summary="CIFAR-20: 20 CIFAR-100 classes, pixel DDPM, FID / Inception score",
    data=(Cifar100Source,),
    components={"sources": {"cifar100": "contribshap.usecases.cifar20.source:load_cifar100"}},
)
