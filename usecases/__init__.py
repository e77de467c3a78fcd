"""Use cases: each published setting (and any you add) as one unit, registered once, in one way.

A use case is a sub-package whose ``__init__`` defines ``USECASE = UseCase(...)`` and imports no torch:

- ``schema.py``: its config sections (pydantic, no torch): data sources (discriminated on ``source``),
  model kinds (on ``kind``), feature extractors (on ``kind``), and a ``check`` of cross-section rules;
- ``source.py``: its data source (and an optional index reader), torch side;
- ``backend.py``: its model backend, if it brings a new ``model.kind``;
- ``properties.py``: its feature extractors and properties, if it brings any.

``components`` names the worker-side parts as lazy ``"module:attribute"`` strings, so the driver validates
configs without importing torch, and a worker imports a part only when a config uses it. The workers'
registries (:mod:`contribshap.workers.registry`) and the config schema
(:mod:`contribshap.pipeline.config.diffusion`) both read :func:`discover`.

Built-in use cases: ``cifar20``, ``celebahq``, ``artbench``. A third party adds one from its own package
with an entry point in the group ``contribshap.usecases`` that names its ``UseCase`` object::

    [project.entry-points."contribshap.usecases"]
    my_setting = "my_package.my_setting:USECASE"

May import: contracts and the config sections (``contribshap.pipeline.config.sections``); the unit's
``source`` / ``backend`` / ``properties`` modules are worker code (they import ``contribshap.workers``).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

__all__ = ["BUILTIN_USECASES", "COMPONENT_KINDS", "ENTRY_POINT_GROUP", "UseCase", "discover"]

#: The use cases shipped with contribshap (modules defining ``USECASE``).
BUILTIN_USECASES: tuple[str, ...] = ("contribshap.usecases.cifar20", "contribshap.usecases.celebahq",
                                     "contribshap.usecases.artbench")
#: Entry-point group through which other packages add use cases.
ENTRY_POINT_GROUP = "contribshap.usecases"
#: Registries a use case can add to (``components`` keys), as in :mod:`contribshap.workers.registry`.
COMPONENT_KINDS: tuple[str, ...] = ("sources", "indexes", "models", "backends", "extractors", "properties")


@dataclass(frozen=True)
class UseCase:
    """One setting: its config sections and the worker parts that run it.

    Attributes:
        name: short name (``artbench``).
        summary: one line: what it credits, with which model and property.
        data: data-source sections (pydantic classes with a ``source`` Literal).
        models: model sections (``kind`` Literal); extractors: feature-extractor sections (``kind`` Literal).
        properties: property names it adds (accepted in ``properties:`` next to the built-ins).
        components: registry kind (one of :data:`COMPONENT_KINDS`) -> {name: ``"module:attribute"``}.
        check: ``check(game_config) -> list[str]``: problems of section combinations (e.g. a model kind that
            needs a particular ``null_model``); None: no rule.
    """

    name: str
    summary: str
    data: tuple[type, ...] = ()
    models: tuple[type, ...] = ()
    extractors: tuple[type, ...] = ()
    properties: tuple[str, ...] = ()
    components: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    check: Callable[[Any], list[str]] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.components) - set(COMPONENT_KINDS))
        if unknown:
            raise ValueError(f"use case {self.name!r}: components {unknown} are unknown; valid: {list(COMPONENT_KINDS)}")


def _load(target: str) -> UseCase:
    module_name, _, attribute = target.partition(":")
    found = getattr(importlib.import_module(module_name), attribute or "USECASE")
    if not isinstance(found, UseCase):
        raise TypeError(f"use case {target!r} is a {type(found).__name__}, not a contribshap.usecases.UseCase")
    return found


@functools.cache
def discover() -> tuple[UseCase, ...]:
    """The built-in use cases, then those other installed packages add (entry points), each once by name."""
    found: dict[str, UseCase] = {}
    targets = [*BUILTIN_USECASES, *(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP))]
    for target in targets:
        usecase = _load(target)
        if usecase.name in found and found[usecase.name] is not usecase:
            raise ValueError(f"two use cases are named {usecase.name!r} ({target}); rename one")
        found[usecase.name] = usecase
    return tuple(found.values())
