"""Types of the properties: what the extractor gives (:class:`GeneratedFeatures`), the real images' statistics
(:class:`Reference`), and how a property is looked up and computed."""


from __future__ import annotations

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


def get_property(name: str) -> PropertyFn:
    """The property called ``name`` (registered: :data:`contribshap.workers.registry.PROPERTIES`) or
    ``"module:function"`` (imported)."""
    from contribshap.pipeline.contracts.registry import load_target
    from contribshap.workers.registry import PROPERTIES

    if name in PROPERTIES:
        return PROPERTIES.get(name)
    if ":" in name:
        try:
            return load_target(name)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"property {name!r} cannot be imported ({error}); check the module:function path") from None
    raise ValueError(f"property {name!r} is not registered; valid: {PROPERTIES.names()} or 'module:function'")


def compute_properties(names: list[str], generated: GeneratedFeatures, reference: Reference) -> dict[str, float]:
    """Every property in ``names`` on the same features, as ``{name: float}``."""
    return {name: float(get_property(name)(generated, reference)) for name in names}
