"""Estimators: known-answer games, efficiency, symmetry, null players, convergence, CIs, shapiq cross-checks."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from contribshap.pipeline.estimators import METHODS, Estimate, converged, estimate, max_halfwidth
from contribshap.pipeline.sampling import kernel_weights, sample_coalitions
from games_core import (
    KnownGame,
    additive,
    banzhaf_brute_force,
    brute_force_shapley,
    data_like,
    glove,
    noisy,
    pairwise,
    permutation_shapley,
    size_effect,
    unanimity_sum,
    weighted_voting,
)

SAMPLED = [  # (design, method): every sampling estimator with the design it is meant for
    ("leverage", "kernelshap"),
    ("paired", "kernelshap"),
    ("leverage", "leverage_shap"),
    ("shapley_kernel", "kernelshap_paper"),
]


def _endpoints(game: KnownGame) -> tuple[float, float]:
    n = game.n
    return float(game(np.zeros(n, bool))[0]), float(game(np.ones(n, bool))[0])


def _run(game: KnownGame, design: str, method: str, budget: int, seed: int = 0, **options) -> Estimate:
    masks = sample_coalitions(game.n, budget, design, seed=seed)
    v_empty, v_full = _endpoints(game)
    return estimate(masks, game(masks), v_empty, v_full, method=method, seed=seed, **options)


def _exact(game: KnownGame, method: str = "exact_shapley", **options) -> Estimate:
    return _run(game, "exact", method, 0, **options)


def _rel_err(value: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(value - truth) / np.linalg.norm(truth))


# ---------------------------------------------------------------------------------------------------------
# Exact values, hand-computed
# ---------------------------------------------------------------------------------------------------------
HAND = [
    (additive(np.array([1.0, -2.0, 0.5, 3.0]), offset=4.0), [1.0, -2.0, 0.5, 3.0]),
    (glove(1, 2), [2 / 3, 1 / 6, 1 / 6]),
    (weighted_voting(np.array([3.0, 2.0, 1.0, 1.0]), quota=4.0), [1 / 2, 1 / 6, 1 / 6, 1 / 6]),
    (pairwise(np.array([1.0, 2.0, 3.0]), np.array([[0, 2.0, 0], [2.0, 0, -1.0], [0, -1.0, 0]])), [2.0, 2.5, 2.5]),
]


@pytest.mark.parametrize(("game", "hand"), HAND, ids=[g.name for g, _ in HAND])
def test_exact_shapley_hand_computed(game: KnownGame, hand: list[float]) -> None:
    np.testing.assert_allclose(_exact(game).value, hand, atol=1e-12)
    np.testing.assert_allclose(permutation_shapley(game.fn, game.n), hand, atol=1e-12)
    # KernelSHAP on all coalitions is exact Shapley (the kernel regression identity)
    np.testing.assert_allclose(_exact(game, "kernelshap").value, hand, atol=1e-9)


@pytest.mark.parametrize("n", [5, 8])
def test_exact_equals_permutation_enumeration_and_kernelshap(n: int) -> None:
    game = unanimity_sum(n, 12, 4, seed=n)
    exact = _exact(game)
    np.testing.assert_allclose(exact.value, game.shapley, atol=1e-10)
    if n <= 7:
        np.testing.assert_allclose(permutation_shapley(game.fn, n), game.shapley, atol=1e-10)
    for method in ("kernelshap", "leverage_shap"):
        np.testing.assert_allclose(_exact(game, method).value, game.shapley, atol=1e-9)
    # the paper's estimator weights each draw equally: exact only with kernel-proportional draw counts
    masks = sample_coalitions(n, 0, "exact")
    counts = kernel_weights(n, masks.sum(axis=1)) * 1e6
    v_empty, v_full = _endpoints(game)
    paper = estimate(masks, game(masks), v_empty, v_full, method="kernelshap_paper", draw_counts=counts)
    np.testing.assert_allclose(paper.value, game.shapley, atol=1e-9)
    assert np.all(exact.stderr == 0)


def test_exact_shapley_needs_all_coalitions() -> None:
    game = additive(np.arange(5.0))
    masks = sample_coalitions(5, 0, "exact")[:-3]
    with pytest.raises(ValueError, match=r"needs all 30 proper coalitions.*missing 3"):
        estimate(masks, game(masks), 0.0, 10.0, method="exact_shapley")


# ---------------------------------------------------------------------------------------------------------
# Axioms
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("design", "method"), SAMPLED)
def test_efficiency_exact_to_1e9(design: str, method: str) -> None:
    game = unanimity_sum(11, 30, 3, seed=1)
    v_empty, v_full = _endpoints(game)
    for budget in (12, 40, 150):
        est = _run(game, design, method, budget, seed=budget)
        assert abs(est.value.sum() - (v_full - v_empty)) < 1e-9
        assert est.extras["total"] == pytest.approx(v_full - v_empty)


def _symmetric_null_game(n: int) -> KnownGame:
    """Players 0 and 1 symmetric (they interact with 2 the same way), player n-1 null."""
    a = np.linspace(1.0, 2.0, n)
    a[1], a[-1] = a[0], 0.0
    b = np.zeros((n, n))
    b[0, 2] = b[2, 0] = b[1, 2] = b[2, 1] = 1.5
    b[3, 4] = b[4, 3] = -2.0
    return pairwise(a, b)


def test_symmetry_and_null_player() -> None:
    game = _symmetric_null_game(9)
    exact = _exact(game)
    assert exact.value[0] == pytest.approx(exact.value[1], abs=1e-12)
    assert exact.value[-1] == pytest.approx(0.0, abs=1e-12)
    for method in ("kernelshap", "leverage_shap"):
        est = _exact(game, method)
        assert est.value[0] == pytest.approx(est.value[1], abs=1e-9)
        assert est.value[-1] == pytest.approx(0.0, abs=1e-9)
    # sampled: symmetric players and the null player within their CIs, on average close
    diffs, nulls = [], []
    for seed in range(10):
        est = _run(game, "leverage", "kernelshap", 120, seed=seed)
        diffs.append(est.value[0] - est.value[1])
        nulls.append(est.value[-1])
    assert abs(np.mean(diffs)) < 0.1 and abs(np.mean(nulls)) < 0.1
    assert np.max(np.abs(nulls)) < 0.5


# ---------------------------------------------------------------------------------------------------------
# Convergence of every sampling estimator, n = 8..12
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("design", "method"), SAMPLED)
def test_convergence_n8_to_12(design: str, method: str) -> None:
    for n in range(8, 13):
        game = unanimity_sum(n, 3 * n, 3, seed=n)
        errors = []
        for budget in (2 * n, 8 * n, 2**n // 2):
            errors.append(np.mean([_rel_err(_run(game, design, method, budget, seed=s).value, game.shapley) for s in range(3)]))
        assert errors[0] > errors[1] > errors[2] and errors[0] > 3 * errors[2], (n, errors)
        assert errors[-1] < (0.3 if method == "kernelshap_paper" else 0.15), (n, design, method, errors)
        if design == "leverage":  # the without-replacement design reaches exactness at 2^n - 2
            full = _run(game, design, method, 2**n)
            np.testing.assert_allclose(full.value, game.shapley, atol=1e-8)


def test_default_beats_paper_estimator_at_equal_budget() -> None:
    """Over seeds and budgets, kernelshap on the leverage design has clearly lower error than the paper's."""
    game = unanimity_sum(12, 40, 3, seed=5)
    ours, paper = [], []
    for seed in range(8):
        for budget in (48, 120):
            ours.append(_rel_err(_run(game, "leverage", "kernelshap", budget, seed=seed).value, game.shapley))
            paper.append(_rel_err(_run(game, "shapley_kernel", "kernelshap_paper", budget, seed=seed).value, game.shapley))
    assert np.mean(ours) < 0.75 * np.mean(paper), (np.mean(ours), np.mean(paper))


# ---------------------------------------------------------------------------------------------------------
# Size centering (kernelshap's default)
# ---------------------------------------------------------------------------------------------------------
def _learning_curve(k: np.ndarray) -> np.ndarray:
    return 20.0 * np.sqrt(np.asarray(k, dtype=np.float64))


def test_size_centering_leaves_the_exact_solution_unchanged() -> None:
    """On all 2^n coalitions the per-size intercepts drop out: auto = centred = plain = exact Shapley."""
    game = size_effect(unanimity_sum(8, 20, 3, seed=4), _learning_curve)
    for center in ("auto", "size", "none"):
        est = _run(game, "exact", "kernelshap", 0, center=center)
        assert est.extras["center"] == center
        np.testing.assert_allclose(est.value, game.shapley, atol=1e-9)


@pytest.mark.parametrize("design", ["leverage", "paired"])
def test_size_centering_removes_the_variance_of_a_learning_curve(design: str) -> None:
    """A utility dominated by a curve in |S|: centring (and the default blend) at least halves the error."""
    game = size_effect(unanimity_sum(14, 30, 3, seed=6), _learning_curve)
    errors: dict[str, list[float]] = {"auto": [], "size": [], "none": []}
    for seed in range(6):
        for center, found in errors.items():
            est = _run(game, design, "kernelshap", 140, seed=seed, center=center)
            assert abs(est.value.sum() - game.shapley.sum()) < 1e-9  # efficiency, blend included
            found.append(_rel_err(est.value, game.shapley))
    assert np.mean(errors["size"]) < 0.5 * np.mean(errors["none"]), errors
    assert np.mean(errors["auto"]) < 0.5 * np.mean(errors["none"]), errors


def test_default_blend_keeps_centring_with_intervals_at_thin_strata() -> None:
    """At 5n many size strata hold one unit. Collapsed strata give every player a variance, and intercepts
    shared by adjacent sizes keep residual units for it, so the default keeps the centred fit's accuracy
    and a finite interval for every player (before: no player identified on any of these seeds)."""
    game = size_effect(unanimity_sum(14, 30, 3, seed=6), _learning_curve)
    errors: dict[str, list[float]] = {"auto": [], "none": []}
    for seed in range(8):
        auto = _run(game, "leverage", "kernelshap", 70, seed=seed, center="auto")
        plain = _run(game, "leverage", "kernelshap", 70, seed=seed, center="none")
        assert auto.all_identified and plain.all_identified, seed
        assert np.all(np.isfinite(auto.ci_high - auto.ci_low)), seed
        errors["auto"].append(_rel_err(auto.value, game.shapley))
        errors["none"].append(_rel_err(plain.value, game.shapley))
    assert np.mean(errors["auto"]) < 0.5 * np.mean(errors["none"]), errors


def test_default_blend_follows_the_better_fit_per_player() -> None:
    """Player 0's effect grows with |S| only when player 1 is absent: on such a game the per-player
    blend weights differ and the blend is no worse than the better of the two fits on average."""
    base = unanimity_sum(12, 30, 3, seed=8)

    def fn(z: np.ndarray) -> np.ndarray:
        k = z.sum(axis=1).astype(np.float64)
        return base.fn(z) + 3.0 * z[:, 0] * (~z[:, 1]) * k

    game = KnownGame("mixed", 12, fn, brute_force_shapley(fn, 12))
    errors: dict[str, list[float]] = {"auto": [], "size": [], "none": []}
    weights = []
    for seed in range(8):
        for center, found in errors.items():
            est = _run(game, "leverage", "kernelshap", 120, seed=seed, center=center)
            found.append(_rel_err(est.value, game.shapley))
            if center == "auto":
                weights.append(est.extras["center_weight"])
    assert np.all((np.asarray(weights) >= 0) & (np.asarray(weights) <= 1))
    assert np.ptp(np.mean(weights, axis=0)) > 0.1  # not one global switch
    best = min(np.mean(errors["size"]), np.mean(errors["none"]))
    assert np.mean(errors["auto"]) <= 1.1 * best, {k: np.mean(v) for k, v in errors.items()}


def test_size_centering_falls_back_when_too_few_coalitions_per_size() -> None:
    """n-1 distinct coalitions spread over many sizes leave no dof for the intercepts: plain solve."""
    game = additive(np.arange(1.0, 9.0))
    est = _run(game, "leverage", "kernelshap", 8)
    assert est.extras["center"] == "none"
    assert abs(est.value.sum() - game.shapley.sum()) < 1e-9


# ---------------------------------------------------------------------------------------------------------
# Other methods
# ---------------------------------------------------------------------------------------------------------
def test_banzhaf_msr_exact_and_sampled() -> None:
    game = unanimity_sum(8, 15, 3, seed=2)
    truth = banzhaf_brute_force(game.fn, 8)
    exact = _exact(game, "banzhaf_msr", include_endpoints=True)
    np.testing.assert_allclose(exact.value, truth, atol=1e-10)
    sampled = [_run(game, "uniform", "banzhaf_msr", 200, seed=s) for s in range(10)]
    errors = [_rel_err(e.value, truth) for e in sampled]
    assert np.mean(errors) < 0.35
    inside = np.mean([np.mean((e.ci_low <= truth) & (truth <= e.ci_high)) for e in sampled])
    assert inside > 0.8
    with pytest.raises(ValueError, match="needs every player in at least 2"):
        _run(game, "uniform", "banzhaf_msr", 3)


def test_loo_exact_and_noise() -> None:
    game = pairwise(np.array([1.0, 2.0, 3.0, 4.0]), np.ones((4, 4)) - np.eye(4))
    v_empty, v_full = _endpoints(game)
    masks = sample_coalitions(4, 0, "loo")
    est = estimate(masks, game(masks), v_empty, v_full, method="loo")
    np.testing.assert_allclose(est.value, [1 + 3, 2 + 3, 3 + 3, 4 + 3])
    with pytest.raises(ValueError, match="missing players \\[2\\]"):
        estimate(masks[[0, 1, 3]], game(masks[[0, 1, 3]]), v_empty, v_full, method="loo")
    # replicates give a noise-based stderr
    reps = np.repeat(masks, 3, axis=0)
    values = game(reps) + np.tile([-0.1, 0.0, 0.1], 4)
    est = estimate(reps, values, v_empty, v_full, method="loo")
    assert est.utility_noise == pytest.approx(0.1)
    np.testing.assert_allclose(est.stderr, np.sqrt(0.01 / 3 + 0.01))


def test_datamodel_recovers_additive_weights() -> None:
    weights = np.array([0.5, -1.0, 2.0, 0.0, 1.5, -0.5, 1.0, 0.25])
    game = additive(weights, offset=3.0)
    masks = sample_coalitions(8, 80, "datamodel", seed=0, alpha=0.5)
    est = estimate(masks, game(masks), 3.0, 3.0 + weights.sum(), method="datamodel")
    # every subset has 4 members, so coefficients are identified up to a common shift (harmless for LDS)
    np.testing.assert_allclose(est.value - est.value.mean(), weights - weights.mean(), atol=0.02)
    assert np.all(est.stderr < 0.05)
    mixed = sample_coalitions(8, 120, "uniform", seed=0)
    est = estimate(mixed, game(mixed), 3.0, 3.0 + weights.sum(), method="datamodel")
    np.testing.assert_allclose(est.value, weights, atol=0.02)
    assert est.extras["intercept"] == pytest.approx(3.0, abs=0.05)


# ---------------------------------------------------------------------------------------------------------
# Replicates, NaN, errors, serialisation, stopping
# ---------------------------------------------------------------------------------------------------------
def test_replicates_averaged_and_noise_reported() -> None:
    game = unanimity_sum(6, 10, 2, seed=0)
    v_empty, v_full = _endpoints(game)
    masks = sample_coalitions(6, 0, "exact")
    rng = np.random.default_rng(0)
    reps = np.vstack([masks, masks, masks])
    noise = rng.normal(scale=0.2, size=len(reps))
    noise -= np.tile(noise.reshape(3, -1).mean(axis=0), 3)  # replicate means equal the clean values
    est = estimate(reps, game(reps) + noise, v_empty, v_full, method="exact_shapley")
    np.testing.assert_allclose(est.value, game.shapley, atol=1e-10)
    assert 0.1 < est.utility_noise < 0.3
    assert np.all(est.stderr > 0) and est.n_evaluations == len(reps)
    clean = estimate(masks, game(masks), v_empty, v_full, method="exact_shapley")
    assert clean.utility_noise is None


def test_nan_rows_dropped_with_count_and_endpoint_rows_ignored() -> None:
    game = unanimity_sum(7, 10, 2, seed=0)
    v_empty, v_full = _endpoints(game)
    masks = sample_coalitions(7, 60, "leverage", seed=0)
    values = game(masks)
    values[[3, 10]] = np.nan
    extra = np.vstack([masks, np.zeros((1, 7), bool), np.ones((1, 7), bool)])
    extra_values = np.concatenate([values, [1e6, -1e6]])  # endpoint rows: ignored for v_empty/v_full
    with pytest.warns(RuntimeWarning, match="dropped 2 of 62 evaluations"):
        est = estimate(extra, extra_values, v_empty, v_full)
    assert est.extras["n_nan_dropped"] == 2 and est.n_evaluations == 60
    assert abs(est.value.sum() - (v_full - v_empty)) < 1e-9


def test_errors_are_one_line_with_choices() -> None:
    game = additive(np.arange(1.0, 7.0))
    masks = sample_coalitions(6, 4, "leverage", seed=0)
    with pytest.raises(ValueError, match=r"needs at least n-1=5 distinct proper coalitions.*got 4"):
        estimate(masks, game(masks), 0.0, 21.0)
    with pytest.raises(ValueError, match="valid methods: kernelshap, leverage_shap"):
        estimate(masks, game(masks), 0.0, 21.0, method="owen")
    with pytest.raises(ValueError, match="ci must be one of auto, analytic, bootstrap"):
        estimate(masks, game(masks), 0.0, 21.0, ci="exact")
    with pytest.raises(ValueError, match="unknown option"):
        estimate(masks, game(masks), 0.0, 21.0, alpha=0.1)
    with pytest.raises(ValueError, match="level must lie in"):
        estimate(masks, game(masks), 0.0, 21.0, level=95)
    with pytest.raises(ValueError, match="center must be one of auto, size, none; got 'layer'"):
        estimate(masks, game(masks), 0.0, 21.0, center="layer")
    with pytest.raises(ValueError, match="unknown option"):  # the paper's baseline has no centring
        estimate(masks, game(masks), 0.0, 21.0, method="kernelshap_paper", center="size")
    assert len(METHODS) == len(set(METHODS)) == 8


def test_to_dict_from_dict_round_trip() -> None:
    game = unanimity_sum(8, 10, 2, seed=0)
    est = _run(game, "leverage", "kernelshap", 40)
    est.stderr[0] = np.nan  # NaN survives the trip
    text = json.dumps(est.to_dict())
    back = Estimate.from_dict(json.loads(text))
    assert back == est
    for name in ("value", "stderr", "ci_low", "ci_high"):
        np.testing.assert_array_equal(getattr(back, name), getattr(est, name))
    assert back.extras["layer_counts"] == est.extras["layer_counts"]


def test_stopping_rule() -> None:
    game = unanimity_sum(10, 20, 3, seed=0)
    v_empty, v_full = _endpoints(game)
    small = _run(game, "leverage", "kernelshap", 20)
    large = _run(game, "leverage", "kernelshap", 600)
    assert max_halfwidth(large) < max_halfwidth(small)
    target = (max_halfwidth(small) + max_halfwidth(large)) / 2
    assert converged(large, target) and not converged(small, target)
    total = v_full - v_empty
    assert converged(large, target / abs(total), relative_to=total)
    nan_est = Estimate.from_dict({**large.to_dict(), "ci_low": [float("nan")] * 10})
    assert max_halfwidth(nan_est) == np.inf and not converged(nan_est, 1e9)


@pytest.mark.parametrize("ci", ["analytic", "bootstrap"])
def test_bootstrap_and_analytic_agree_roughly(ci: str) -> None:
    game = unanimity_sum(12, 30, 3, seed=1)
    est = _run(game, "leverage", "kernelshap", 150, ci=ci, n_boot=200)
    ref = _run(game, "leverage", "kernelshap", 150, ci="bootstrap" if ci == "analytic" else "analytic")
    ratio = np.median(est.stderr / ref.stderr)
    assert 0.5 < ratio < 2.0


# ---------------------------------------------------------------------------------------------------------
# Identification: no interval narrower than the rows can support
# ---------------------------------------------------------------------------------------------------------
IDENTIFICATION_CASES = [  # (method, design, options)
    ("kernelshap", "paired", {}),
    ("kernelshap", "leverage", {}),
    ("kernelshap", "shapley_kernel", {}),
    ("kernelshap", "uniform", {}),
    ("kernelshap", "paired", {"center": "size"}),
    ("kernelshap", "leverage", {"ci": "bootstrap", "n_boot": 40}),
    ("leverage_shap", "leverage", {}),
    ("kernelshap_paper", "shapley_kernel", {}),
    ("kernelshap_paper", "paired", {"ci": "bootstrap", "n_boot": 40}),
    ("banzhaf_msr", "uniform", {}),
    ("banzhaf_msr", "uniform", {"ci": "bootstrap", "n_boot": 40}),
    ("datamodel", "datamodel", {"n_boot": 40}),
    ("datamodel", "uniform", {"ci": "analytic"}),
]


@pytest.mark.parametrize(("method", "design", "options"), IDENTIFICATION_CASES,
                         ids=[f"{m}@{d}{'-' + '-'.join(map(str, o.values())) if o else ''}" for m, d, o in IDENTIFICATION_CASES])
def test_small_budgets_never_give_a_zero_width_interval_the_rows_cannot_support(method: str, design: str,
                                                                                  options: dict) -> None:
    """Budgets n+1 .. 2n, n = 6 and 11, with and without noise: every interval is either (-inf, inf) with
    ``identified`` False, or of positive width, or of zero width and then exact (the rows fit exactly)."""
    shapley_method = method in ("kernelshap", "leverage_shap", "kernelshap_paper")
    seen = {"identified": 0, "not identified": 0, "refused": 0}
    for n in (6, 11):
        for budget in (n + 1, n + 2, n + 5, 2 * n):
            for sd in (0.0, 0.05):
                for seed in range(2):
                    base = unanimity_sum(n, 3 * n, 3, seed=seed)
                    game = noisy(base, sd=sd, seed=seed) if sd else base
                    masks = sample_coalitions(n, budget, design, seed=seed)
                    v_empty, v_full = _endpoints(base)
                    try:
                        est = estimate(masks, game(masks), v_empty, v_full, method=method, seed=seed, **options)
                    except ValueError as error:  # nothing computable: the error says how many more are needed
                        assert re.search(r"at least \d+ more", str(error)), str(error)
                        seen["refused"] += 1
                        continue
                    case = (n, budget, sd, seed)
                    hidden = ~est.identified
                    assert np.all(est.ci_low[hidden] == -np.inf) and np.all(est.ci_high[hidden] == np.inf), case
                    assert np.all(est.stderr[hidden] == np.inf), case
                    assert (est.extras["more_evaluations"] > 0) == bool(hidden.any()), case
                    width = est.ci_high - est.ci_low
                    zero = est.identified & (width <= 1e-9 * (1.0 + np.abs(est.value)))
                    if shapley_method:
                        np.testing.assert_allclose(est.value[zero], base.shapley[zero], atol=1e-8, err_msg=str(case))
                    else:
                        assert not zero.any(), case
                    seen["identified"] += int(est.identified.sum())
                    seen["not identified"] += int(hidden.sum())
    assert seen["identified"] > 0, seen  # the grid reaches identified budgets for every method


def test_the_ci_demo_shape_is_not_identified_and_says_what_it_needs() -> None:
    """11 contributors, 14 coalitions of the paired design: 7 complementary pairs span 7 of the 10
    directions the Shapley values need, so no value is identified (the split within a pair is free)."""
    game = unanimity_sum(11, 33, 3, seed=0)
    masks = sample_coalitions(11, 14, "paired", seed=0)
    v_empty, v_full = _endpoints(game)
    est = estimate(masks, game(masks), v_empty, v_full)
    assert not est.identified.any() and not est.all_identified
    assert np.all(est.ci_low == -np.inf) and np.all(est.ci_high == np.inf) and np.all(est.stderr == np.inf)
    # 3 pairs for rank, 1 more for a pair that repeats a known direction (RANK_MARGIN), 1 for a residual
    assert est.extras["rank"] == 7 and est.extras["more_evaluations"] == 10
    assert abs(est.value.sum() - (v_full - v_empty)) < 1e-9  # the point values still add up
    assert max_halfwidth(est) == np.inf and not converged(est, 1e12)
    grown = sample_coalitions(11, 14 + 10, "paired", seed=0)  # the same plan grown (prefix-stable) by that many
    est = estimate(grown, game(grown), v_empty, v_full)
    assert est.all_identified and est.extras["more_evaluations"] == 0 and np.all(est.ci_high > est.ci_low)


@pytest.mark.parametrize("design", ["paired", "leverage", "shapley_kernel"])
def test_more_evaluations_is_sufficient_at_large_n(design: str) -> None:
    """Below identification, growing the plan (prefix-stable) by exactly ``more_evaluations`` identifies
    every player: n = 40 and 120, data-like games with 1% utility noise, budgets from n - 1 to 2n."""
    tried = 0
    for n in (40, 120):
        game = data_like(n, seed=n)
        v_empty, v_full = _endpoints(game)
        for seed in range(2):
            plan = sample_coalitions(n, 6 * n, design, seed=seed)
            noise = np.random.default_rng(seed).normal(size=len(plan)) * 0.01 * (v_full - v_empty)
            for budget in (n - 1, n + 3, (3 * n) // 2, 2 * n):
                est = estimate(plan[:budget], game(plan[:budget]) + noise[:budget], v_empty, v_full)
                if est.all_identified:
                    continue
                tried += 1
                more = est.extras["more_evaluations"]
                grown = plan[:budget + more]
                again = estimate(grown, game(grown) + noise[:budget + more], v_empty, v_full)
                assert again.all_identified, (n, seed, budget, more, again.identified.mean())
    assert tried >= 4  # the grid does reach budgets below identification


def test_rank_deficiency_is_per_player() -> None:
    """Players 0 and 1 always together: only their sum is identified; the others are."""
    game = unanimity_sum(6, 18, 3, seed=3)
    masks = sample_coalitions(6, 0, "exact")
    masks = masks[masks[:, 0] == masks[:, 1]]
    v_empty, v_full = _endpoints(game)
    est = estimate(masks, game(masks), v_empty, v_full)
    assert est.identified.tolist() == [False, False, True, True, True, True]
    assert np.all(np.isfinite(est.ci_low[2:])) and np.all(est.ci_high[2:] > est.ci_low[2:])


def test_additive_game_is_exact_with_zero_width_once_identified() -> None:
    game = additive(np.linspace(-1.0, 2.0, 8))
    est = _run(game, "leverage", "kernelshap", 40)
    assert est.all_identified
    np.testing.assert_allclose(est.value, game.shapley, atol=1e-9)
    np.testing.assert_allclose(est.ci_high - est.ci_low, 0.0, atol=1e-9)


def test_banzhaf_player_never_out_is_not_identified() -> None:
    game = unanimity_sum(6, 12, 2, seed=1)
    masks = sample_coalitions(6, 40, "uniform", seed=0)
    masks = masks[masks[:, 0]]  # player 0 in every row
    est = estimate(masks, game(masks), *_endpoints(game), method="banzhaf_msr")
    assert not est.identified[0] and np.isnan(est.value[0]) and est.identified[1:].all()


def test_identified_round_trips_and_old_dicts_load_as_identified() -> None:
    game = unanimity_sum(11, 33, 3, seed=0)
    masks = sample_coalitions(11, 14, "paired", seed=0)
    est = estimate(masks, game(masks), *_endpoints(game))
    back = Estimate.from_dict(json.loads(json.dumps(est.to_dict())))
    assert back == est and not back.identified.any()
    old = est.to_dict()
    del old["identified"]
    assert Estimate.from_dict(old).identified.tolist() == [True] * 11
    assert Estimate.from_dict(old) != est


# ---------------------------------------------------------------------------------------------------------
# CI coverage on noisy games
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("ci", ["analytic", "bootstrap"])
def test_ci_coverage_noisy_games(ci: str) -> None:
    """Nominal 95% intervals cover the exact (noise-free) Shapley value 90-99% of the time."""
    covered = []
    for seed in range(40 if ci == "analytic" else 16):
        for base, budget, reps in (
            (unanimity_sum(10, 30, 3, seed=3), 60, 1),
            (unanimity_sum(14, 40, 3, seed=4), 140, 1),
            (additive(np.linspace(-1.0, 2.0, 10)), 100, 2),
            (size_effect(unanimity_sum(12, 30, 3, seed=5), _learning_curve), 120, 1),
        ):
            game = noisy(base, sd=0.3, seed=1000 + seed)
            masks = np.repeat(sample_coalitions(base.n, budget, "leverage", seed=seed), reps, axis=0)
            v_empty, v_full = (float(game(np.zeros(base.n, bool))[0]), float(game(np.ones(base.n, bool))[0]))
            est = estimate(masks, game(masks), v_empty, v_full, ci=ci, n_boot=200, seed=seed)
            covered.append(np.mean((est.ci_low <= base.shapley) & (base.shapley <= est.ci_high)))
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage


# ---------------------------------------------------------------------------------------------------------
# shapiq cross-checks (test-only dependency)
# ---------------------------------------------------------------------------------------------------------
def test_exact_matches_shapiq_exact() -> None:
    shapiq = pytest.importorskip("shapiq")
    for game in (unanimity_sum(9, 20, 4, seed=7), weighted_voting(np.array([4.0, 3, 2, 2, 1, 1, 1]), 8.0)):
        reference = shapiq.ExactComputer(game, n_players=game.n)("SV", order=1).get_n_order_values(1)
        np.testing.assert_allclose(_exact(game).value, reference, atol=1e-10)


@pytest.mark.slow
def test_kernelshap_no_worse_than_shapiq_kernelshap() -> None:
    shapiq = pytest.importorskip("shapiq")
    game = unanimity_sum(12, 40, 3, seed=11)
    n, budget = game.n, 96
    ours, theirs = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(10):
            # shapiq's budget counts the empty and full coalitions too
            ours.append(_rel_err(_run(game, "leverage", "kernelshap", budget - 2, seed=seed).value, game.shapley))
            for pairing in (False, True):
                approx = shapiq.KernelSHAP(n=n, pairing_trick=pairing, random_state=seed)
                values = approx.approximate(budget=budget, game=game).get_n_order_values(1)
                theirs.append((pairing, _rel_err(values, game.shapley)))
    for pairing in (False, True):
        shapiq_error = np.mean([e for p, e in theirs if p == pairing])
        assert np.mean(ours) <= 1.05 * shapiq_error, (pairing, np.mean(ours), shapiq_error)
