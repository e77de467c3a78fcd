"""Statements about many contributors at once: simultaneous intervals, FDR sets, top-k, rank intervals, and
intervals that exist at n >= 100 (collapsed strata)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from contribshap.pipeline.estimators import Estimate, estimate
from contribshap.pipeline.estimators.simultaneous import (
    critical_value,
    fdr_set,
    rank_intervals,
    simultaneous_interval,
    statements,
    top_k_sure,
    unresolved,
)
from contribshap.pipeline.sampling import sample_coalitions
from games_core import additive, data_like

NOISE = 0.01


def _noisy_run(game, design: str, budget: int, seed: int) -> Estimate:
    n = game.n
    ends = np.stack([np.zeros(n, bool), np.ones(n, bool)])
    v_empty, v_full = (float(v) for v in game(ends))
    masks = sample_coalitions(n, budget, design, seed=seed)
    rng = np.random.default_rng([seed, 3])
    values = game(masks) + rng.normal(size=len(masks)) * NOISE * (v_full - v_empty)
    return estimate(masks, values, v_empty, v_full, seed=seed)


def test_simultaneous_intervals_cover_all_players_together() -> None:
    """data-like game, n = 30, paired design at 5n, 1% utility noise, 100 plans: the 95% simultaneous
    intervals hold every player's true value at once in at least 90% of the plans (the per-player 95%
    intervals, by construction, do so far less often), and they are wider than the per-player ones."""
    game = data_like(30, seed=4)
    together, each_all = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(100):
            est = _noisy_run(game, "paired", 150, seed)
            assert est.all_identified
            low, high = simultaneous_interval(est, 0.95)
            assert np.all(high - low > est.ci_high - est.ci_low)
            together.append(np.all((low <= game.shapley) & (game.shapley <= high)))
            each_all.append(np.all((est.ci_low <= game.shapley) & (game.shapley <= est.ci_high)))
    print(f"simultaneous coverage {np.mean(together):.3f}; all per-player intervals at once {np.mean(each_all):.3f}")
    assert np.mean(together) >= 0.90
    assert np.mean(each_all) < np.mean(together)


def test_statements_on_a_resolved_game() -> None:
    """An additive game with 3 harmful and 3 clearly large players, plenty of budget: the harmful set at
    FDR 10% is exactly the harmful players, the top 3 are sure, and their ranks are pinned to 1-3."""
    weights = np.array([5.0, 4.0, 3.0, 1.0, 1.1, 0.9, 1.0, -2.0, -2.5, -3.0])
    game = additive(weights)
    rng = np.random.default_rng(0)
    masks = sample_coalitions(10, 300, "paired", seed=0)
    values = game(masks) + rng.normal(size=len(masks)) * 0.5
    est = estimate(masks, values, 0.0, float(weights.sum()))
    assert sorted(fdr_set(est, "harmful", 0.10).tolist()) == [7, 8, 9]
    assert set(fdr_set(est, "helpful", 0.10).tolist()) == set(range(7))
    assert sorted(top_k_sure(est, 3, 0.90).tolist()) == [0, 1, 2]
    best, worst = rank_intervals(est, 0.90)
    assert best[:3].tolist() == [1, 2, 3] and worst[:3].tolist() == [1, 2, 3]
    groups = unresolved(est, 0.90)
    assert sorted(i for g in groups for i in g) == list(range(10))  # a partition of the players
    assert any(set(g) >= {3, 4} for g in groups)  # 1.0 and 1.1 cannot be told apart
    summary = statements(est, top_k=3)
    assert summary["harmful"] == [7, 8, 9] and summary["top_k_sure"] == [0, 1, 2]
    assert est.extras["simultaneous"]["method"] == "max_t_multiplier"
    assert critical_value(est, 0.95) > 1.96
    assert Estimate.from_dict(est.to_dict()) == est  # the stored critical values round-trip


def test_unidentified_players_are_in_no_set() -> None:
    game = data_like(30, seed=1)
    est = _noisy_run(game, "paired", 40, 0)  # 20 pairs for 29 directions: nothing identified
    assert not est.identified.any()
    low, high = simultaneous_interval(est, 0.95)
    assert np.all(low == -np.inf) and np.all(high == np.inf)
    assert fdr_set(est, "harmful").size == 0 and top_k_sure(est, 1).size == 0
    with pytest.raises(ValueError, match="direction must be"):
        fdr_set(est, "bad")


def test_intervals_exist_and_cover_at_n_100() -> None:
    """n = 100 data-like game, 1% noise, leverage design at 5n, 10 plans: every player identified (before
    collapsed strata none was), per-player coverage of the 95% intervals in [0.90, 0.99] (less 2
    Monte-Carlo SDs) and mean stderr / RMS error at most 1.5."""
    game = data_like(100, seed=1)
    cover, se, err = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(10):
            est = _noisy_run(game, "leverage", 500, seed)
            assert est.identified.mean() >= 0.95
            cover.append(np.mean((est.ci_low <= game.shapley) & (game.shapley <= est.ci_high)))
            se.append(est.stderr[est.identified].mean())
            err.append(np.mean((est.value - game.shapley) ** 2))
    cov = float(np.mean(cover))
    sd = float(np.std(cover, ddof=1) / np.sqrt(len(cover)))
    ratio = float(np.mean(se) / np.sqrt(np.mean(err)))
    print(f"coverage {cov:.3f} ± {sd:.3f}, se/rmse {ratio:.2f}")
    assert 0.90 - 2 * sd <= cov <= 0.99 + 2 * sd
    assert ratio <= 1.5
