"""Metrics: LDS (hand cases, noise, seeds), counterfactual masks, correlations, relative error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from contribshap.pipeline.metrics import (
    COUNTERFACTUALS,
    LDSResult,
    lds,
    lds_over_seeds,
    pearson,
    relative_l2_error,
    spearman,
    top_k_removal_masks,
)
from contribshap.pipeline.sampling import sample_coalitions
from scipy import stats


def test_correlations_match_scipy_and_hand_cases() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    y[:5] = y[0]  # ties
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal length"):
        spearman([1, 2], [1, 2, 3])


def test_relative_l2_error() -> None:
    assert relative_l2_error([3.0, 4.0], [0.0, 0.0]) == math.inf
    assert relative_l2_error([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert relative_l2_error([1.0, 2.0], [1.0, 0.0]) == pytest.approx(2.0)


def test_lds_perfect_reversed_and_hand_case() -> None:
    phi = np.array([1.0, 2.0, 3.0, -1.0, 0.5])
    masks = sample_coalitions(5, 10, "datamodel", seed=0, alpha=0.4)
    truth = masks @ phi
    assert lds(phi, masks, truth, n_boot=0).value == pytest.approx(100.0)
    assert lds(phi, masks, -truth, n_boot=0).value == pytest.approx(-100.0)
    # hand case: sums (1, 2, 3, 4) vs measured (1, 3, 2, 4): Spearman 1 - 6·2/(4·15) = 0.8
    hand_masks = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    hand_phi = np.array([1.0, 2.0, 4.0])
    assert lds(hand_phi, hand_masks, np.array([1.0, 3.0, 2.0, 4.0]), n_boot=0).value == pytest.approx(80.0)


def test_lds_noise_ci_and_nan_handling() -> None:
    rng = np.random.default_rng(1)
    n = 12
    phi = rng.normal(size=n)
    masks = sample_coalitions(n, 200, "datamodel", seed=1, alpha=0.5)
    measured = masks @ phi + rng.normal(scale=0.5, size=len(masks))
    measured[[0, 5]] = np.nan
    res = lds(phi, masks, measured, n_boot=300, seed=0)
    assert isinstance(res, LDSResult) and res.n_subsets == len(masks) - 2
    assert 60 < res.value < 100 and res.ci_low < res.value < res.ci_high
    assert lds(phi, masks, measured, n_boot=300, seed=0) == res  # seeded
    noise_only = lds(rng.normal(size=n), masks, rng.normal(size=len(masks)), n_boot=300)
    assert noise_only.ci_low < 0 < noise_only.ci_high
    assert math.isnan(lds(phi, masks[:2], measured[1:3], n_boot=10).value)
    assert set(res.to_dict()) == {"value", "ci_low", "ci_high", "n_subsets", "level", "per_attribution"}


def test_lds_several_attributions_and_seeds() -> None:
    rng = np.random.default_rng(2)
    n = 10
    phi = rng.normal(size=n)
    masks = sample_coalitions(n, 80, "datamodel", seed=2, alpha=0.5)
    seeds = (masks @ phi)[:, None] + rng.normal(scale=0.8, size=(len(masks), 3))  # (s, r)
    stacked = np.vstack([phi, phi + rng.normal(scale=0.3, size=n)])
    res = lds(stacked, masks, seeds, n_boot=100)
    assert len(res.per_attribution) == 2 and res.value == pytest.approx(np.mean(res.per_attribution))
    # averaging seeds before ranking is at least as good as the per-seed average for a linear truth
    averaged = lds(phi, masks, seeds, n_boot=0).value
    per_seed = lds_over_seeds(phi, masks, seeds, n_boot=100)
    assert len(per_seed.per_attribution) == 3 and averaged >= per_seed.value - 1e-9
    assert per_seed.ci_low <= per_seed.value <= per_seed.ci_high
    with pytest.raises(ValueError, match="same n"):
        lds(phi[:5], masks, seeds)


def test_top_k_removal_masks_directions_and_ties() -> None:
    phi = np.array([0.1, 0.5, -0.2, 0.3, 0.5, np.nan])
    masks = top_k_removal_masks(phi, 0.34)  # k = round(2.04) = 2
    assert set(masks) == set(COUNTERFACTUALS)
    assert np.flatnonzero(masks["keep_top"]).tolist() == [1, 4]  # tie at 0.5 keeps both
    assert np.flatnonzero(~masks["remove_top"]).tolist() == [1, 4]
    assert np.flatnonzero(masks["keep_bottom"]).tolist() == [2, 5]  # NaN ranks last
    lower = top_k_removal_masks(phi, 0.2, higher_is_better=False)  # k = 1: most negative = most beneficial
    assert np.flatnonzero(lower["keep_top"]).tolist() == [2]
    ties = top_k_removal_masks(np.zeros(4), 0.25)
    assert np.flatnonzero(ties["keep_top"]).tolist() == [0] and np.flatnonzero(ties["keep_bottom"]).tolist() == [3]
    with pytest.raises(ValueError, match="k_frac must lie in"):
        top_k_removal_masks(phi, 1.0)
