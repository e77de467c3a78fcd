"""The game factory: the one door from the driver side to the work a coalition needs.

A *game* (:class:`~contribshap.pipeline.contracts.game.Game`) maps a coalition mask to property values. Two
kinds exist: ``python`` (a plain callable ``module:function`` on a boolean mask, for synthetic games, tests,
benchmarks and user utilities; :mod:`.python_game`) and ``diffusion`` (the paper's prune / sparsified-fine-tune
/ sample / measure job, implemented in ``contribshap.workers.game``, imported here lazily so that torch
loads only on workers that need it). The model baselines of ``contribshap evaluate`` (TRAK and friends) need
the trained models of a diffusion game and come through this module too, and so does ``contribshap check``'s
data summary (:func:`data_summary`: images, classes, unreadable files and overlap between contributors).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from contribshap.pipeline.contracts.errors import ConfigError
from contribshap.pipeline.contracts.game import Game

if TYPE_CHECKING:
    from contribshap.pipeline.config.schema import Config

__all__ = ["GAME_KINDS", "build_game", "counterfactual_samples", "data_summary", "model_baselines"]

#: ``game.kind`` values.
GAME_KINDS: tuple[str, ...] = ("python", "diffusion")


def build_game(config: Config, store_root: str | Path, *, search_paths: Sequence[str] = ()) -> Game:
    """Build the game a config names (no caching here; workers cache it per process).

    Args:
        config: a validated :class:`contribshap.pipeline.config.schema.Config`.
        store_root: the store folder; diffusion artifacts live in ``<store>/artifacts``.
        search_paths: folders searched first for a python game's module (the driver's working directory).

    Returns:
        ``PythonGame`` for ``game.kind: python``; for ``game.kind: diffusion``, the
        ``contribshap.workers.game.DiffusionGame`` of every ``model.kind``.

    Raises:
        ConfigError: for a kind this function does not know (lists the valid kinds).
    """
    kind = getattr(config.game, "kind", None)
    if kind == "python":
        from contribshap.pipeline.games.python_game import PythonGame

        return PythonGame(config.game, search_paths=search_paths)
    if kind == "diffusion":
        from contribshap.workers.game import build_diffusion_game

        return build_diffusion_game(config.game, artifacts_dir=Path(store_root) / "artifacts", seed=config.seed)
    raise ConfigError(f"game.kind: unknown kind {kind!r}; valid kinds: {', '.join(GAME_KINDS)}")


def _require_diffusion(config: Config, what: str) -> None:
    if getattr(config.game, "kind", None) != "diffusion":
        raise ConfigError(f"{what} needs game.kind: diffusion (the store's game is {config.game.kind!r})")


def model_baselines(config: Config, store_root: Path, *, methods: Sequence[str], progress: bool
                    ) -> dict[str, np.ndarray]:
    """Scores of the model baselines ``methods`` for a diffusion store: method -> unsigned scores (n,)."""
    _require_diffusion(config, "model baselines")
    from contribshap.workers.model_baselines import model_baselines as run

    return run(config, Path(store_root), methods=list(methods), progress=progress)


def counterfactual_samples(config: Config, store_root: Path, panels: list[tuple[str, np.ndarray]],
                           out_png: Path) -> Path:
    """One PNG of sample grids, one panel per (title, coalition mask), from the same noise; its path."""
    _require_diffusion(config, "counterfactual sample grids")
    from contribshap.workers.model_baselines import counterfactual_samples as run

    return run(config, Path(store_root), panels, Path(out_png))


def data_summary(config: Config) -> dict | None:
    """``contribshap check``'s summary of a diffusion game's data (``contribshap.workers.data_summary.data_summary``:
    images and classes per contributor, unreadable and byte-identical files, overlap between contributors);
    None for other games. A source that cannot be loaded is a :class:`ConfigError` naming the problem."""
    if getattr(config.game, "kind", None) != "diffusion":
        return None
    from contribshap.workers.data_summary import data_summary as run

    try:
        return run(config.game)
    except (OSError, ValueError) as error:
        raise ConfigError(f"game.data: {error}") from None
