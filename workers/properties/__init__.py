"""Properties of generated images: a registry of functions on features and class probabilities.

One evaluation runs the feature extractor once on the generated images and hands every property the same
:class:`GeneratedFeatures` and the cached :class:`Reference` statistics of the real images. A property is::

    @register_property("my_property")
    def my_property(generated: GeneratedFeatures, reference: Reference) -> float: ...

or any ``"module:function"`` with that signature named in ``properties:`` (imported on first use).

Built-ins (``contribshap.workers.properties.metrics``): ``fid``, ``fid_inf`` (FID extrapolated to infinitely
many images), ``log_fid``, ``kid``, ``inception_score``, ``diversity``, ``quality``. Which direction is
better: lower for fid/fid_inf/log_fid/kid, higher for the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class GeneratedFeatures:
    """The extractor's view of N generated images.

    Attributes:
        features: float64 (N, D) (e.g. the digits CNN's 32 pre-ReLU activations, Inception's 2048 pool).
        probs: float64 (N, K) class probabilities (rows sum to 1), or None if the extractor has no head.
    """

    features: np.ndarray
    probs: np.ndarray | None


@dataclass
class Reference:
    """Cached statistics of the real reference images.

    Attributes:
        mu: float64 (D,) feature mean. sigma: float64 (D, D) feature covariance.
        features: float64 (M, D) the reference features themselves (for KID).
        n_classes: K, classes of the extractor's head (for entropy-based properties).
    """

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray
    n_classes: int

    def save(self, path) -> None:
        np.savez(path, mu=self.mu, sigma=self.sigma, features=self.features, n_classes=self.n_classes)

    @classmethod
    def load(cls, path) -> Reference:
        with np.load(path) as data:
            return cls(mu=data["mu"], sigma=data["sigma"], features=data["features"], n_classes=int(data["n_classes"]))


PropertyFn = Callable[[GeneratedFeatures, Reference], float]
_PROPERTIES: dict[str, PropertyFn] = {}


def register_property(name: str) -> Callable[[PropertyFn], PropertyFn]:
    """Register ``fn(generated, reference) -> float`` under ``name``."""

    def decorate(fn: PropertyFn) -> PropertyFn:
        _PROPERTIES[name] = fn
        return fn

    return decorate


def property_names() -> list[str]:
    """Names of the registered properties (built-ins plus any registered so far)."""
    from contribshap.workers.properties import metrics  # noqa: F401  (registers the built-ins)

    return sorted(_PROPERTIES)


def get_property(name: str) -> PropertyFn:
    """The property called ``name`` (registered) or ``"module:function"`` (imported)."""
    from contribshap.workers.properties import metrics  # noqa: F401

    if name in _PROPERTIES:
        return _PROPERTIES[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"property {name!r} cannot be imported ({error}); check the module:function path") from None
    raise ValueError(f"property {name!r} is not registered; valid: {sorted(_PROPERTIES)} or 'module:function'")


def compute_properties(names: list[str], generated: GeneratedFeatures, reference: Reference) -> dict[str, float]:
    """Every property in ``names`` on the same features, as ``{name: float}``."""
    return {name: float(get_property(name)(generated, reference)) for name in names}
