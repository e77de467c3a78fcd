"""bench/datalike.py: the data-like games' exact Shapley values and their seeded noise (fast)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "bench" / "datalike.py"
_SPEC = importlib.util.spec_from_file_location("bench_datalike", _PATH)
datalike = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = datalike  # dataclasses look their module up
_SPEC.loader.exec_module(datalike)


def _enumerated_shapley(fn, n: int) -> np.ndarray:
    codes = np.arange(2**n)
    masks = ((codes[:, None] >> np.arange(n)) & 1).astype(bool)
    values, sizes = fn(masks), masks.sum(axis=1)
    weight = np.array([math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n) for k in range(n)])
    phi = np.zeros(n)
    for i in range(n):
        without = codes[~masks[:, i]]
        phi[i] = np.sum(weight[sizes[without]] * (values[without | (1 << i)] - values[without]))
    return phi


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_shapley_matches_enumeration_of_all_coalitions(seed: int) -> None:
    game = datalike.make_game(13, seed=seed)
    assert (game.group_of >= 0).sum() >= 3 and len(game.harmful) >= 1  # every part of the game is present
    np.testing.assert_allclose(game.shapley, _enumerated_shapley(game.value, 13), atol=1e-10)
    assert game.shapley[game.harmful].max() < np.median(game.shapley)


def test_efficiency_and_shape_at_large_n() -> None:
    game = datalike.make_game(1000, seed=0)
    v_empty, v_full = game.value(np.zeros((1, 1000), bool))[0], game.value(np.ones((1, 1000), bool))[0]
    assert game.shapley.sum() == pytest.approx(v_full - v_empty, rel=1e-12)
    sizes = np.bincount(game.group_of[game.group_of >= 0])
    assert sizes.min() >= 3 and sizes.max() <= 10
    assert 0.55 <= (game.group_of >= 0).mean() <= 0.61
    assert len(game.harmful) == 50 and (game.own[game.harmful] < 0).all()
    assert datalike.DataLikeGame.from_params(game.params()).value(np.eye(1000, dtype=bool)[:5]).tolist() == \
        game.value(np.eye(1000, dtype=bool)[:5]).tolist()


def test_noise_is_fresh_per_evaluation_and_seeded() -> None:
    game = datalike.make_game(50, seed=0)
    full = np.ones((4000, 50), dtype=bool)
    a = datalike.NoisyGame(game, noise=0.02, seed=3)(full)
    b = datalike.NoisyGame(game, noise=0.02, seed=3)(full)
    c = datalike.NoisyGame(game, noise=0.02, seed=4)(full)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.std(a) == pytest.approx(0.02 * game.span, rel=0.05)
    assert np.mean(a) == pytest.approx(game.value(full[:1])[0], abs=4 * 0.02 * game.span / np.sqrt(4000))


def test_bad_input_names_the_problem() -> None:
    with pytest.raises(ValueError, match="n must be >= 10"):
        datalike.make_game(5)
    with pytest.raises(ValueError, match="columns"):
        datalike.make_game(20).value(np.ones((1, 19), bool))
