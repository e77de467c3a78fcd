"""Config sections of CIFAR-20: the CIFAR-100 pickle as a data source (the model is the built-in ``unet``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from contribshap.pipeline.config.sections import Section
from pydantic import Field, field_validator

#: The paper's CIFAR-20: CIFAR-100 fine classes 40-44, 55-59, 60-64, 80-84 (500 training images each).
CIFAR20_CLASSES: tuple[int, ...] = (*range(40, 45), *range(55, 60), *range(60, 65), *range(80, 85))


class Cifar100Source(Section):
    """The standard CIFAR-100 python pickle folder (``cifar-100-python/``: ``train``, ``meta``), local.

    Each selected fine class is one contributor (id ``cifar100-<class>``, name from ``meta``).

    Attributes:
        root: the ``cifar-100-python`` folder (must contain ``train``; ``meta`` gives class names).
        classes: fine-label indices 0..99 (default: the paper's CIFAR-20 classes 40-44, 55-59, 60-64, 80-84).
        max_per_class: keep at most this many images per class (default None: all 500; tests use a few).
    """

    source: Literal["cifar100"] = "cifar100"
    root: Path
    classes: list[int] = Field(default_factory=lambda: list(CIFAR20_CLASSES))
    max_per_class: int | None = Field(None, ge=1)

    @field_validator("classes")
    @classmethod
    def _check_cifar_classes(cls, classes: list[int]) -> list[int]:
        bad = [c for c in classes if c not in range(100)]
        if bad or not classes or len(set(classes)) != len(classes):
            raise ValueError(f"data.classes={classes} must be distinct CIFAR-100 fine labels 0..99 (non-empty)")
        return classes

    def paths(self) -> dict[str, Path | None]:
        return {"data.root": self.root, "data.root/train": Path(self.root) / "train"}
