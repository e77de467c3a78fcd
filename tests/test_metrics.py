"""Metrics: correlations, relative error, LDS (known answers, noise, seeds), counterfactual sets, orientation."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.metrics import (
    counterfactual_sets,
    holdout_subsets,
    lds_score,
    orient,
    pearson,
    relative_change,
    relative_l2_error,
    removal_mask,
    spearman,
    without_members,
)
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))

from games_eval import WEIGHTS, additive


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


def _subsets(n: int, m: int, seed: int) -> np.ndarray:
    return np.asarray(sample_coalitions(n, m, "datamodel", seed=seed, alpha=0.5), dtype=bool)


def test_lds_hand_case() -> None:
    # sums (1, 2, 3, 4) vs measured (1, 3, 2, 4): Spearman 1 - 6·2/(4·15) = 0.8
    masks = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    assert lds_score(masks, np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]), n_bootstrap=20).value == \
        pytest.approx(80.0)
    assert math.isnan(lds_score(masks[:2], np.ones(3), np.array([1.0, 2.0])).value)  # fewer than 3 subsets


# --- LDS ------------------------------------------------------------------------------------------------
def test_lds_of_exact_attributions_on_an_additive_game_is_100():
    masks = _subsets(10, 60, seed=1)
    values = np.array([additive(m)["value"] for m in masks])
    result = lds_score(masks, WEIGHTS, values, n_bootstrap=200)
    assert result.value == pytest.approx(100.0)
    assert result.ci_low == pytest.approx(100.0) and result.ci_high == pytest.approx(100.0)
    # the lower-is-better property is credited -2 w_i by Shapley: still a perfect linear datamodel
    loss = np.array([additive(m)["loss"] for m in masks])
    assert lds_score(masks, -2 * WEIGHTS, loss, n_bootstrap=200).value == pytest.approx(100.0)
    # the reversed ranking is -100
    assert lds_score(masks, -WEIGHTS, values, n_bootstrap=50).value == pytest.approx(-100.0)


def test_lds_of_random_attributions_is_near_zero_and_its_ci_covers_zero():
    """Values unrelated to the masks: the true LDS of any attribution is 0; check mean and CI coverage."""
    rng = np.random.default_rng(0)
    lds, covered = [], 0
    reps = 40
    for r in range(reps):
        masks = _subsets(10, 80, seed=100 + r)
        values = rng.normal(size=(2, len(masks)))  # two seeds of pure noise
        result = lds_score(masks, rng.normal(size=10), values, n_bootstrap=200, seed=r)
        lds.append(result.value)
        covered += result.ci_low <= 0.0 <= result.ci_high
    assert abs(float(np.mean(lds))) < 8.0  # sd of one LDS here is ~11, of the mean ~2
    assert covered >= 0.85 * reps  # nominal 95%


def test_lds_averages_seeds_and_reports_each_seed():
    masks = _subsets(8, 50, seed=3)
    clean = masks @ WEIGHTS[:8]
    rng = np.random.default_rng(1)
    values = clean + rng.normal(0, 1.5, size=(3, len(masks)))
    values[1, 4] = np.nan  # a failed evaluation is skipped, not fatal
    result = lds_score(masks, WEIGHTS[:8], values, n_bootstrap=300)
    assert result.n_seeds == 3 and len(result.per_seed) == 3 and result.n_subsets == 50
    assert result.ci_low <= result.value <= result.ci_high
    # averaging seeds removes noise: the seed-mean LDS beats the average single-seed LDS
    assert result.value > np.mean(result.per_seed)
    expected = 100 * spearman(masks @ WEIGHTS[:8], np.nanmean(values, axis=0))
    assert result.value == pytest.approx(expected)


def test_spearman_matches_scipy_with_ties():
    from scipy import stats

    x = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert math.isnan(spearman(np.ones(4), np.arange(4.0)))


# --- counterfactual helpers ------------------------------------------------------------------------------
def test_counterfactual_sets_pick_top_and_bottom_with_deterministic_ties():
    scores = np.array([4.0, -3.0, 2.5, 1.0, 0.5, -1.5, 3.0, 0.25, -0.75, 2.0])
    top, bottom = counterfactual_sets(scores, 0.2)
    assert top.tolist() == [0, 6] and bottom.tolist() == [1, 5]
    top, bottom = counterfactual_sets(np.zeros(5), 0.4)  # all tied: lowest indices are "top"
    assert top.tolist() == [0, 1] and bottom.tolist() == [3, 4]
    assert removal_mask(4, np.array([1, 3])).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match=r"top_k fraction must be in \(0, 1\), got 1.5"):
        counterfactual_sets(scores, 1.5)


def test_relative_change_hand_computed():
    out = relative_change(np.array([8.0, 9.0, 10.0]), np.array([10.0, 10.0, 10.0]))
    assert out["value"] == pytest.approx(-0.1)
    assert out["absolute"] == pytest.approx(-1.0)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(3), sd of (-.2, -.1, 0) = .1
    assert out["ci_low"] == pytest.approx(-0.1 - half) and out["ci_high"] == pytest.approx(-0.1 + half)
    single = relative_change(np.array([5.0]), np.array([4.0]))
    assert single["value"] == pytest.approx(0.25) and math.isnan(single["ci_low"])


def test_orient_flips_an_anti_correlated_similarity():
    masks = _subsets(10, 40, seed=5)
    values = masks @ WEIGHTS
    flipped, sign = orient(-WEIGHTS, masks, values)
    assert sign == -1.0 and np.allclose(flipped, WEIGHTS)
    kept, sign = orient(WEIGHTS, masks, values)
    assert sign == 1.0 and np.allclose(kept, WEIGHTS)


# --- held-out subsets and strata ------------------------------------------------------------------------
def _keys(masks: np.ndarray) -> list[str]:
    return ["".join("1" if b else "0" for b in row) for row in masks]


def test_holdout_subsets_reject_excluded_draws_and_keep_the_stream_order() -> None:
    stream = _keys(sample_coalitions(8, 70, "datamodel", seed=3, alpha=0.5))  # all C(8, 4) = 70, in order
    plain, rejected = holdout_subsets(8, 20, alpha=0.5, seed=3)
    assert _keys(plain) == stream[:20] and rejected == 0  # nothing excluded: the datamodel stream itself
    exclude = set(stream[0:40:3])  # 14 draws, 7 of them among the first 20
    masks, rejected = holdout_subsets(8, 20, alpha=0.5, seed=3, exclude=exclude)
    assert _keys(masks) == [k for k in stream if k not in exclude][:20] and rejected == 10
    assert not set(_keys(masks)) & exclude and len(set(_keys(masks))) == 20
    short, rejected = holdout_subsets(8, 100, alpha=0.5, seed=3, exclude=exclude)
    assert len(short) == 70 - 14 and rejected == 14  # fewer admissible subsets than asked


def test_without_members_selects_the_stratum() -> None:
    masks = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=bool)
    assert without_members(masks, [2]).tolist() == [False, True, True, False]
    assert without_members(masks, [0, 2]).tolist() == [False, True, False, False]
    assert without_members(masks, []).all()
