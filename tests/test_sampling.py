"""Coalition designs: shapes, endpoints, prefix stability, duplicates, size distributions, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from contribshap.pipeline.core.designs import (
    DESIGNS,
    coalition_sizes,
    kernel_weights,
    layer_kernel_mass,
    sample_coalitions,
    shapley_kernel_size_probs,
)

STREAMED = tuple(d for d in DESIGNS if d not in ("exact", "loo"))


def _n_unique(masks: np.ndarray) -> int:
    return len(np.unique(masks, axis=0))


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("n", [2, 3, 7, 12])
def test_shape_dtype_no_endpoints(design: str, n: int) -> None:
    masks = sample_coalitions(n, 3 * n, design, seed=1)
    assert masks.dtype == bool and masks.ndim == 2 and masks.shape[1] == n
    sizes = coalition_sizes(masks)
    assert sizes.min() >= 1 and sizes.max() <= n - 1
    if design not in ("exact", "loo"):
        assert len(masks) <= 3 * n


@pytest.mark.parametrize("design", (*STREAMED, "loo"))
@pytest.mark.parametrize("n", [5, 9, 30])
def test_prefix_stable(design: str, n: int) -> None:
    big = sample_coalitions(n, 120, design, seed=7)
    for budget in (0, 1, 13, 50, 119):
        small = sample_coalitions(n, budget, design, seed=7)
        np.testing.assert_array_equal(small, big[: len(small)])
    if design != "loo":
        assert len(sample_coalitions(n, 13, design, seed=7)) == min(13, len(big))


@pytest.mark.parametrize("design", STREAMED)
def test_reproducible_and_seed_dependent(design: str) -> None:
    a = sample_coalitions(12, 40, design, seed=3)
    b = sample_coalitions(12, 40, design, seed=3)
    c = sample_coalitions(12, 40, design, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("design", STREAMED)
def test_unique_by_default_and_capped(design: str) -> None:
    masks = sample_coalitions(8, 60, design, seed=0)
    assert _n_unique(masks) == len(masks)
    # n=4 has only 14 proper coalitions (6 of size 2 for datamodel)
    tiny = sample_coalitions(4, 100, design, seed=0)
    assert _n_unique(tiny) == len(tiny) == (6 if design == "datamodel" else 14)


def test_with_replacement_keeps_repeats() -> None:
    raw = sample_coalitions(5, 200, "shapley_kernel", seed=0, unique=False)
    assert len(raw) == 200 and _n_unique(raw) < 200
    # the unique stream is the raw stream with repeats skipped (first occurrences, same order)
    _, first = np.unique(raw, axis=0, return_index=True)
    dedup = sample_coalitions(5, len(first), "shapley_kernel", seed=0)
    np.testing.assert_array_equal(dedup, raw[np.sort(first)])


def test_exact_all_coalitions_and_refusal() -> None:
    masks = sample_coalitions(6, 0, "exact")
    assert masks.shape == (62, 6) and _n_unique(masks) == 62
    with pytest.raises(ValueError, match="n=21 > 20"):
        sample_coalitions(21, 10, "exact")


def test_loo_rows() -> None:
    masks = sample_coalitions(5, 0, "loo")
    np.testing.assert_array_equal(masks, ~np.eye(5, dtype=bool))


def test_datamodel_fixed_fraction() -> None:
    masks = sample_coalitions(20, 50, "datamodel", seed=0, alpha=0.3)
    assert set(coalition_sizes(masks).tolist()) == {6}
    with pytest.raises(ValueError, match="alpha must lie in"):
        sample_coalitions(20, 5, "datamodel", alpha=1.5)


@pytest.mark.parametrize("design", ["paired", "leverage"])
def test_paired_designs_emit_complements(design: str) -> None:
    masks = sample_coalitions(11, 80, design, seed=2)
    np.testing.assert_array_equal(masks[1::2], ~masks[0::2])


def test_leverage_border_trick_enumerates_small_layers_first() -> None:
    # n=10: sizes 1 and 9 (10 coalitions each) carry as much leverage as size 5 (252 coalitions)
    masks = sample_coalitions(10, 200, "leverage", seed=0)
    counts = np.bincount(coalition_sizes(masks), minlength=11)
    assert counts[1] == counts[9] == 10
    assert counts[2] == counts[8] >= 12  # a large share of the 45
    assert counts[5] < 0.4 * math.comb(10, 5)
    # full budget: every proper coalition exactly once
    everything = sample_coalitions(10, 2**10, "leverage", seed=0)
    assert everything.shape == (1022, 10) and _n_unique(everything) == 1022


def test_leverage_sizes_roughly_uniform_for_large_n() -> None:
    n = 40
    masks = sample_coalitions(n, 3900, "leverage", seed=0)
    counts = np.bincount(coalition_sizes(masks), minlength=n + 1)[1:n]
    # sizes 1 and n-1 (40 coalitions each) are nearly used up; every other size gets ~100
    assert 30 <= counts[0] == counts[-1] <= 40
    assert counts[1:-1].min() > 60 and counts[1:-1].max() < 140
    kernel = sample_coalitions(n, 3900, "leverage", seed=0, size_weights="kernel")
    kcounts = np.bincount(coalition_sizes(kernel), minlength=n + 1)[1:n]
    assert kcounts[0] == 40 and kcounts[1] > 2 * kcounts[n // 2 - 1]  # kernel weights favour the border


def test_shapley_kernel_size_distribution() -> None:
    n = 10
    raw = sample_coalitions(n, 20000, "shapley_kernel", seed=0, unique=False)
    freq = np.bincount(coalition_sizes(raw), minlength=n + 1)[1:n] / len(raw)
    np.testing.assert_allclose(freq, shapley_kernel_size_probs(n), atol=0.01)


def test_kernel_weights_and_layer_mass() -> None:
    n = 9
    for k in range(1, n):
        assert math.isclose(math.comb(n, k) * float(kernel_weights(n, k)), layer_kernel_mass(n)[k])
    assert np.isinf(kernel_weights(n, np.array([0, n]))).all()
    assert layer_kernel_mass(n)[0] == layer_kernel_mass(n)[n] == 0


def test_errors_name_choices() -> None:
    with pytest.raises(ValueError, match="valid designs: exact, shapley_kernel"):
        sample_coalitions(5, 10, "sobol")
    with pytest.raises(ValueError, match="allowed: unique"):
        sample_coalitions(5, 10, "paired", alpha=0.5)
    with pytest.raises(ValueError, match="budget must be an int >= 0"):
        sample_coalitions(5, -1, "paired")
    with pytest.raises(ValueError, match="n \\(number of players\\)"):
        sample_coalitions(1, 10, "paired")
    with pytest.raises(ValueError, match="size_weights"):
        sample_coalitions(5, 10, "leverage", size_weights="flat")
