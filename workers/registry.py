"""The workers' registries: every data source, index reader, model kind, backend, feature extractor and
property a game can name, in one place and one mechanism
(:class:`~contribshap.pipeline.contracts.registry.Registry`).

Entries are lazy ``"module:attribute"`` strings, imported when a config uses them: the built-ins below, then
the ``components`` of every use case (:func:`contribshap.usecases.discover`). Importing this module imports
no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contribshap.pipeline.contracts.registry import Registry
from contribshap.usecases import discover

__all__ = ["BACKENDS", "EXTRACTORS", "INDEXES", "MODELS", "PROPERTIES", "REGISTRIES", "SOURCES"]

#: ``data.source`` -> ``loader(config) -> ContributorDataset``.
SOURCES: Registry[Any] = Registry("data.source")
#: ``data.source`` -> ``reader(config) -> (owner int64 (N,), contributors)`` (optional, for large image sets).
INDEXES: Registry[Any] = Registry("data index")
#: ``model.kind`` -> :class:`contribshap.workers.models.ModelKind`.
MODELS: Registry[Any] = Registry("model.kind")
#: ``model.kind`` -> backend class (:class:`contribshap.workers.backends.Backend`).
BACKENDS: Registry[Any] = Registry("model.kind backend")
#: ``feature_extractor.kind`` -> :class:`contribshap.workers.properties.extractors.ExtractorKind`.
EXTRACTORS: Registry[Any] = Registry("feature_extractor.kind")
#: property name -> ``fn(generated, reference) -> float``.
PROPERTIES: Registry[Any] = Registry("property")
#: Registry of each component kind a use case can declare.
REGISTRIES: dict[str, Registry[Any]] = {"sources": SOURCES, "indexes": INDEXES, "models": MODELS,
                                        "backends": BACKENDS, "extractors": EXTRACTORS, "properties": PROPERTIES}

_METRICS = "contribshap.workers.properties.metrics"
BUILTIN_COMPONENTS: dict[str, dict[str, str]] = {
    "sources": {"digits": "contribshap.workers.data:_load_digits", "folder": "contribshap.workers.data:_load_folder"},
    "models": {"unet": "contribshap.workers.models:UNET"},
    "backends": {"unet": "contribshap.workers.backends.pixel:PixelBackend"},
    "extractors": {"digits_cnn": "contribshap.workers.properties.extractors:DIGITS_CNN",
                   "inception": "contribshap.workers.properties.extractors:INCEPTION",
                   "blip": "contribshap.workers.properties.embeddings:EMBEDDING_CLUSTERS",
                   "clip": "contribshap.workers.properties.embeddings:EMBEDDING_CLUSTERS"},
    "properties": {name: f"{_METRICS}:{name}"
                   for name in ("fid", "fid_inf", "log_fid", "kid", "inception_score", "diversity", "quality")},
}


def register_components(components: Mapping[str, Mapping[str, str]]) -> None:
    """Add ``{kind: {name: "module:attribute"}}`` to the registries (the form of ``UseCase.components``)."""
    for kind, entries in components.items():
        for name, target in entries.items():
            REGISTRIES[kind].add(name, target)


register_components(BUILTIN_COMPONENTS)
for _usecase in discover():
    register_components(_usecase.components)
