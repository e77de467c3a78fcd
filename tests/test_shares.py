"""Payout shares (pipeline/core/shares.py): the rule sums to the pool, respects floor and cap, and its
intervals cover the shares of a game with known Shapley values at about the nominal rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.shares import bootstrap_shares, payout_shares, sampling_units


@pytest.mark.parametrize("floor,cap", [(0.0, None), (0.05, None), (0.0, 0.3), (0.04, 0.25), (0.1, 0.1)])
def test_shares_sum_to_the_pool_and_respect_floor_and_cap(floor, cap):
    rng = np.random.default_rng(0)
    for _ in range(200):
        credit = rng.normal(1.0, 2.0, 10) * rng.choice([1.0, 1e-9, 1e6], 10)
        pool = float(rng.uniform(1, 1e6))
        shares = payout_shares(credit, pool, floor=floor, cap=cap)
        assert math.fsum(shares) == pytest.approx(pool, rel=1e-15, abs=0)
        assert abs(math.fsum(shares) - pool) <= 1e-9 * pool
        assert shares.min() >= floor * pool * (1 - 1e-12)
        if cap is not None:
            assert shares.max() <= cap * pool * (1 + 1e-12)
        # order follows credit among the contributors inside the bounds
        order = np.argsort(-credit, kind="stable")
        assert np.all(np.diff(shares[order]) <= 1e-9 * pool)


def test_the_default_rule_is_non_negative_credit_normalised():
    assert payout_shares(np.array([3.0, 1.0, -2.0]), 100.0).tolist() == [75.0, 25.0, 0.0]
    assert payout_shares(np.array([-1.0, -2.0]), 10.0).tolist() == [5.0, 5.0]  # no positive credit: equal split
    # the cap redistributes the excess to the uncapped in proportion to credit: 8/9/1 -> 0.4 cap
    shares = payout_shares(np.array([8.0, 1.0, 1.0, 0.0]), 1.0, cap=0.4)
    assert shares.tolist() == pytest.approx([0.4, 0.3, 0.3, 0.0])
    # a floor for everyone, harmful ones included; the rest by credit
    shares = payout_shares(np.array([3.0, 1.0, -5.0]), 1.0, floor=0.1)
    assert shares.tolist() == pytest.approx([0.1 + 0.7 * 0.75, 0.1 + 0.7 * 0.25, 0.1])
    # every paid contributor capped: the rest goes equally to the others
    shares = payout_shares(np.array([1.0, 0.0, 0.0, 0.0]), 1.0, cap=0.25)
    assert shares.tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25])
    for bad in ({"floor": 0.5}, {"cap": 0.1}, {"floor": -0.1}):
        with pytest.raises(ValueError):
            payout_shares(np.ones(5), 1.0, **bad)
    with pytest.raises(ValueError, match="NaN"):
        payout_shares(np.array([1.0, np.nan]), 1.0)


def test_sampling_units_pair_complements():
    masks = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)
    unit, stratum = sampling_units(masks)
    assert unit[0] == unit[1] == unit[2] != unit[3]
    assert unit[4] == unit[5] == -1 and stratum.tolist() == [1, 1, 1, 1, -1, -1]


A = np.array([4.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.25, -1.0])  # main effects; the last one is harmful


def _game(masks: np.ndarray) -> np.ndarray:
    """An additive game plus a pairwise interaction of players 0 and 1 (Shapley: split equally)."""
    return masks @ A + 2.0 * (masks[:, 0] & masks[:, 1])


TRUE_PHI = A + np.array([1.0, 1.0, 0, 0, 0, 0, 0, 0])


def test_intervals_cover_the_shares_of_known_values():
    n = len(A)
    truth = payout_shares(TRUE_PHI, 1.0)
    hits, total, widths = 0, 0, []
    for rep in range(30):
        masks = sample_coalitions(n, 10 * n, "paired", seed=rep)
        values = _game(masks) + np.random.default_rng(100 + rep).normal(0.0, 1.0, len(masks))
        result = bootstrap_shares(masks, values, 0.0, float(TRUE_PHI.sum()), pool=1.0, n_draws=60, seed=rep)
        assert result.identified and result.resample == "units" and result.n_draws >= 20
        assert math.fsum(result.share) == pytest.approx(1.0, abs=1e-12)
        paid = truth > 0
        hits += int(np.sum((result.low[paid] <= truth[paid]) & (truth[paid] <= result.high[paid])))
        total += int(paid.sum())
        widths.append(result.unresolved)
    coverage = hits / total
    # nominal 0.95 over 30 x 7 paid shares (measured 0.954 over 40 repetitions, 60 draws each)
    assert 0.88 <= coverage <= 0.995, coverage
    assert 0.0 < np.median(widths) < 0.5


def test_bootstrap_is_deterministic_and_normal_fallback():
    n = len(A)
    masks = sample_coalitions(n, 10 * n, "paired", seed=1)
    values = _game(masks) + np.random.default_rng(1).normal(0.0, 0.5, len(masks))
    one = bootstrap_shares(masks, values, 0.0, float(TRUE_PHI.sum()), pool=100.0, n_draws=40, seed=7, cap=0.3)
    two = bootstrap_shares(masks, values, 0.0, float(TRUE_PHI.sum()), pool=100.0, n_draws=40, seed=7, cap=0.3)
    assert np.array_equal(one.low, two.low) and np.array_equal(one.high, two.high) and one.n_draws == 40
    assert one.share.max() <= 30.0 + 1e-9 and np.all(one.high <= 30.0 + 1e-9)
    normal = bootstrap_shares(masks, values, 0.0, float(TRUE_PHI.sum()), pool=100.0, n_draws=40, seed=7,
                              resample="normal")
    assert normal.resample == "normal" and np.all(normal.low <= normal.share) and np.all(normal.share <= normal.high)
    # lower is better: the sign flips the credit, so the harmful player is paid and the others are not
    flipped = bootstrap_shares(masks, values, 0.0, float(TRUE_PHI.sum()), sign=-1.0, n_draws=40, seed=7)
    assert flipped.share[-1] == pytest.approx(1.0)
    # too few rows to identify the values: no interval, the whole pool unresolved
    few = bootstrap_shares(masks[:8], values[:8], 0.0, float(TRUE_PHI.sum()), pool=10.0, n_draws=40)
    assert not few.identified and np.isnan(few.low).all() and few.unresolved == 10.0
