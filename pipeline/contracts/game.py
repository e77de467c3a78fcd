"""The game contract: players, what one evaluation returns, and the interface every game implements.

A *game* maps a coalition mask to property values; it is the only thing the driver, the store and the
reducer know about the work a coalition needs.

Shapes and names
----------------
- ``mask``: ``np.ndarray`` of dtype bool and shape ``(n_players,)``; ``mask[i]`` is True when contributor
  ``i`` (in the order of :meth:`Game.contributors`) is in the coalition S.
- property values: ``dict[str, float]`` keyed by property name (``"fid"``, ``"kid"``, ``"quality"``...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Contributor", "EvalResult", "Game"]


@dataclass(frozen=True)
class Contributor:
    """One data contributor (a player of the game).

    Attributes:
        id: stable identifier used in coalition keys (str; e.g. ``"class-3"``, ``"artist-vincent"``).
        name: human-readable name shown in tables and reports.
        n_samples: number of training items the contributor owns (0 for python games that have no data).
    """

    id: str
    name: str
    n_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """What one coalition evaluation returns.

    Attributes:
        values: property name -> float (NaN allowed for a property that could not be measured).
        timings: stage -> seconds, e.g. ``{"finetune_s": 3.1, "sample_s": 1.2, "eval_s": 0.2}``.
        info: small JSON-able extras (device, steps, ...), stored as a JSON string column.
    """

    values: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Game(Protocol):
    """The interface every game implements (python callables are wrapped by ``contribshap.pipeline.games.python_game``).

    Lifecycle on a worker process: ``build_game(config, store_root)`` once per process (cached), then
    ``prepare()`` once per store (idempotent: skips artifacts that exist with the same hash), then
    ``evaluate(mask, ...)`` for many coalitions.
    """

    def contributors(self) -> list[Contributor]:
        """The players, in mask order. Cheap after ``prepare``; must be identical on every worker."""
        ...

    def property_names(self) -> list[str]:
        """Names of the properties ``evaluate`` returns, in a stable order."""
        ...

    def prepare(self) -> dict[str, Any]:
        """Build shared artifacts once (train/prune/recover/reference stats); return a JSON-able summary."""
        ...

    def evaluate(self, mask: np.ndarray, *, replicate: int, seed: int) -> EvalResult:
        """Measure every property for coalition ``mask``.

        Args:
            mask: bool array, shape (n_players,).
            replicate: replicate index r >= 0 (the same mask evaluated again with other randomness).
            seed: the job seed derived by the plan from (config seed, coalition key, replicate); use it
                for everything coalition-specific (data order, dropout). Sampling noise for generated
                images must NOT depend on it: every coalition shares the same noise seeds (common
                random numbers); only ``replicate`` may shift them.
        """
        ...
