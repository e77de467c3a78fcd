"""Two-fidelity estimates (numpy core): exact efficiency, the c = 0 limit, lower error, honest intervals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.estimators import estimate
from contribshap.pipeline.core.estimators.multifidelity import combine_fidelities, optimal_coefficient

from tests.games_core import size_effect, unanimity_sum

N = 10
HIGH = size_effect(unanimity_sum(N, 25, 3, seed=1), lambda k: 40.0 * np.sqrt(k))
DRIFT = unanimity_sum(N, 25, 3, seed=2)  # what the cheap game gets wrong


def _with_endpoints(masks: np.ndarray) -> np.ndarray:
    return np.vstack([np.zeros((2, N), bool), np.ones((2, N), bool), masks])


def _draw(seed: int, m_a: int = 60, m_b: int = 200, noise: float = 0.5):
    """Set A (paired design, both fidelities, common noise) and an independent set B (low only)."""
    rng = np.random.default_rng(seed)
    masks_a = _with_endpoints(sample_coalitions(N, m_a, "paired", seed=seed))
    masks_b = _with_endpoints(sample_coalitions(N, m_b, "paired", seed=10_000 + seed))
    shared = rng.normal(scale=noise, size=len(masks_a))  # the same job seed at both fidelities
    high = HIGH(masks_a) + shared
    low_a = 0.8 * HIGH(masks_a) + 0.3 * DRIFT(masks_a) + 0.8 * shared + rng.normal(scale=noise / 3, size=len(masks_a))
    low_b = 0.8 * HIGH(masks_b) + 0.3 * DRIFT(masks_b) + rng.normal(scale=noise, size=len(masks_b))
    # the low endpoints of B are the same evaluations as A's
    low_b[:4] = low_a[:4]
    return masks_a, high, low_a, masks_b, low_b


def test_efficiency_is_exact_and_c_zero_is_the_full_fidelity_estimate():
    masks_a, high, low_a, masks_b, low_b = _draw(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = combine_fidelities(masks_a, high, low_a, masks_b, low_b)
        alone = combine_fidelities(masks_a, high, low_a, masks_b, low_b, coefficient=0.0)
        plain = estimate(masks_a, high, high[:2].mean(), high[2:4].mean())
    total = high[2:4].mean() - high[:2].mean()
    assert est.value.sum() == pytest.approx(total, rel=1e-9)
    assert est.extras["multifidelity"]["coefficient"] > 0.3
    np.testing.assert_allclose(alone.value, plain.value, rtol=1e-10)
    np.testing.assert_allclose(alone.stderr, plain.stderr, rtol=1e-10)
    assert est.n_evaluations == len(masks_a) * 2 + len(masks_b) - 4


def test_cheap_rows_lower_the_error_and_the_intervals_still_cover():
    errors, errors_alone, covered, ratios = [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(24):
            masks_a, high, low_a, masks_b, low_b = _draw(seed)
            est = combine_fidelities(masks_a, high, low_a, masks_b, low_b)
            alone = estimate(masks_a, high, high[:2].mean(), high[2:4].mean())
            errors.append(np.sum((est.value - HIGH.shapley) ** 2))
            errors_alone.append(np.sum((alone.value - HIGH.shapley) ** 2))
            covered.append((est.ci_low <= HIGH.shapley) & (HIGH.shapley <= est.ci_high))
            ratio = est.extras["multifidelity"]["variance_ratio"]
            ratios.append(np.nan if ratio is None else ratio)
    assert np.mean(errors) < 0.6 * np.mean(errors_alone)  # the cheap set B carries most of the signal
    assert np.nanmedian(ratios) < 0.6  # and the reported intervals shrink accordingly
    assert np.mean(covered) >= 0.9  # without losing coverage (nominal 95%)


def test_optimal_coefficient_is_the_variance_minimiser():
    var_h, var_la, var_lb = np.array([4.0, 9.0]), np.array([2.0, 3.0]), np.array([1.0, 1.0])
    cov = np.array([1.5, 2.0])
    var_d = var_h + var_la - 2 * cov
    c = optimal_coefficient(var_h, var_la, var_d, var_lb)
    total = lambda x: np.sum(var_h - 2 * x * cov + x**2 * (var_la + var_lb))  # noqa: E731
    assert c == pytest.approx(3.5 / 7.0)
    assert total(c) <= min(total(c - 0.01), total(c + 0.01))
    assert optimal_coefficient(var_h, np.full(2, np.nan), var_d, var_lb) == 0.0


def test_shapes_are_checked_in_one_line():
    masks_a, high, low_a, masks_b, low_b = _draw(0)
    with pytest.raises(ValueError, match="high_a and low_a must both have shape"):
        combine_fidelities(masks_a, high, low_a[:-1], masks_b, low_b)
    with pytest.raises(ValueError, match="no finite evaluation of the empty coalition"):
        combine_fidelities(masks_a, high, low_a, masks_b[4:], low_b[4:])
