"""Properties against hand computations on fixed feature sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from contribshap.workers.properties.base import (
    GeneratedFeatures,
    Reference,
    compute_properties,
    get_property,
)
from contribshap.workers.properties.metrics import class_entropy, kernel_inception_distance


def _reference(features: np.ndarray, n_classes: int = 4) -> Reference:
    return Reference(mu=features.mean(0), sigma=np.cov(features, rowvar=False), features=features, n_classes=n_classes)


FEATURES = np.random.default_rng(0).normal(size=(300, 6))


def test_fid_of_identical_sets_is_zero_and_of_a_shift_is_the_squared_distance():
    reference = _reference(FEATURES)
    assert get_property("fid")(GeneratedFeatures(FEATURES, None), reference) == pytest.approx(0.0, abs=1e-6)
    shifted = FEATURES + np.array([3.0, 0, 0, 0, 0, 0])  # same covariance: FID = ||Δμ||² = 9
    assert get_property("fid")(GeneratedFeatures(shifted, None), reference) == pytest.approx(9.0, rel=1e-6)
    assert get_property("log_fid")(GeneratedFeatures(shifted, None), reference) == pytest.approx(math.log(9.0), rel=1e-6)


def test_kid_is_about_zero_on_identical_sets_and_positive_on_a_shift():
    # on identical sets the unbiased estimator is 2 (mean off-diagonal k - mean diagonal k) / n = O(1/n)
    k = (FEATURES @ FEATURES.T / 6 + 1) ** 3
    n = len(FEATURES)
    off_diagonal = (k.sum() - np.trace(k)) / (n * (n - 1))
    assert kernel_inception_distance(FEATURES, FEATURES) == pytest.approx(2 * (off_diagonal - np.trace(k) / n) / n)
    assert abs(kernel_inception_distance(FEATURES, FEATURES)) < 0.1
    assert kernel_inception_distance(FEATURES + 2.0, FEATURES) > 1.0
    # hand computation on two points per set (D = 1): k(x, y) = (x y + 1)^3
    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    k = lambda a, b: (a * b + 1) ** 3  # noqa: E731
    expected = 2 * k(0, 1) / 2 + 2 * k(1, 2) / 2 - 2 * (k(0, 1) + k(0, 2) + k(1, 1) + k(1, 2)) / 4
    assert kernel_inception_distance(x, y) == pytest.approx(expected)


def test_classifier_properties_match_hand_computations():
    k = 4
    confident_uniform = np.repeat(np.eye(k), 25, axis=0)  # 100 images, each class 25 times, p=1
    features = GeneratedFeatures(FEATURES[:100], confident_uniform)
    values = compute_properties(["diversity", "quality", "inception_score"], features, _reference(FEATURES, k))
    assert values["diversity"] == pytest.approx(math.log(k))
    assert values["quality"] == pytest.approx(1.0)
    assert values["inception_score"] == pytest.approx(k, rel=1e-6)
    one_class = np.tile([0.7, 0.1, 0.1, 0.1], (50, 1))
    values = compute_properties(["diversity", "quality", "inception_score"], GeneratedFeatures(FEATURES[:50], one_class),
                                _reference(FEATURES, k))
    assert values == pytest.approx({"diversity": 0.0, "quality": 0.7, "inception_score": 1.0})
    assert class_entropy(np.array([0, 0, 1, 1]), 3) == pytest.approx(math.log(2))


def test_registry_lists_builtins_and_imports_module_functions():
    from contribshap.pipeline.config.diffusion import BUILTIN_PROPERTIES
    from contribshap.workers.registry import PROPERTIES

    assert set(PROPERTIES.names()) >= {*BUILTIN_PROPERTIES, "aesthetic_mean", "aesthetic_p90"}
    mean_norm = get_property("numpy:mean")
    assert callable(mean_norm)
    with pytest.raises(ValueError, match=r"valid: .*fid"):
        get_property("sharpness")
    with pytest.raises(ValueError, match="needs class probabilities"):
        get_property("quality")(GeneratedFeatures(FEATURES, None), _reference(FEATURES))


def test_kid_is_computed_on_reference_standardised_features():
    # rescaling or shifting the extractor's features (both sets alike) leaves the standardised KID unchanged
    generated = FEATURES[:150] + np.array([0.5, 0, 0, 0, 0, 0])
    reference = _reference(FEATURES)
    base = get_property("kid")(GeneratedFeatures(generated, None), reference)
    scale, shift = np.array([1e3, 2.0, 5.0, 1.0, 0.1, 30.0]), 7.0
    rescaled = get_property("kid")(GeneratedFeatures(generated * scale + shift, None), _reference(FEATURES * scale + shift))
    assert rescaled == pytest.approx(base, rel=1e-9)
    assert 0.0 < base < 10.0  # O(1) on z-scores, not the 1e5 of raw extractor features
    z = (FEATURES - FEATURES.mean(0)) / FEATURES.std(0, ddof=1)
    assert get_property("kid")(GeneratedFeatures(FEATURES, None), reference) == pytest.approx(kernel_inception_distance(z, z))


def test_fid_inf_removes_the_finite_sample_bias_of_fid():
    rng = np.random.default_rng(3)
    d = 6
    reference = Reference(mu=np.zeros(d), sigma=np.eye(d), features=rng.normal(size=(50, d)), n_classes=4)
    shift = np.array([1.0, 0, 0, 0, 0, 0])  # the population FID of N(shift, I) against N(0, I) is exactly 1
    small = [GeneratedFeatures(rng.normal(size=(120, d)) + shift, None) for _ in range(40)]
    fid = np.mean([get_property("fid")(g, reference) for g in small])
    fid_inf = np.mean([get_property("fid_inf")(g, reference) for g in small])
    assert fid > 1.03  # biased upward at n = 120 (by about Tr(Σ)/n terms)
    assert abs(fid_inf - 1.0) < abs(fid - 1.0) / 2
    assert get_property("fid_inf")(small[0], reference) == get_property("fid_inf")(small[0], reference)
    with pytest.raises(ValueError, match="'fid_inf' needs at least"):
        get_property("fid_inf")(GeneratedFeatures(rng.normal(size=(10, d)), None), reference)
