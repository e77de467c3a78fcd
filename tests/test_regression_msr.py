"""``regression_msr``: exact on enumerated designs, efficiency, symmetry, null players, an unbiased residual
correction where the surrogate cannot fit, interval coverage, and the surrogate's closed-form Shapley values."""

from __future__ import annotations

import numpy as np
import pytest
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.estimators import METHODS, Estimate, estimate, method_spec
from contribshap.pipeline.core.estimators.regression_msr import _fit_surrogate
from games_core import (
    KnownGame,
    brute_force_shapley,
    glove,
    noisy,
    pairwise,
    size_effect,
    unanimity_sum,
    weighted_voting,
)


def _endpoints(game: KnownGame) -> tuple[float, float]:
    n = game.n
    return float(game(np.zeros(n, bool))[0]), float(game(np.ones(n, bool))[0])


def _run(game: KnownGame, design: str, budget: int, seed: int = 0, **options) -> Estimate:
    masks = sample_coalitions(game.n, budget, design, seed=seed)
    v_empty, v_full = _endpoints(game)
    return estimate(masks, game(masks), v_empty, v_full, method="regression_msr", seed=seed, **options)


def test_registered_as_an_efficient_method():
    assert "regression_msr" in METHODS
    assert method_spec("regression_msr").efficient


@pytest.mark.parametrize("options", [{"folds": 0}, {"surrogate": "trees"}, {"center": "middle"}])
def test_bad_options_are_refused_with_the_choices(options):
    game = unanimity_sum(6, 8, 3, seed=0)
    with pytest.raises(ValueError, match="must be"):
        _run(game, "leverage", 30, **options)


# ---------------------------------------------------------------------------------------------------------
# Exactness, efficiency, symmetry, null player
# ---------------------------------------------------------------------------------------------------------
EXACT_GAMES = [
    unanimity_sum(8, 20, 4, seed=3),
    pairwise(np.linspace(-1, 2, 7), np.random.default_rng(1).normal(size=(7, 7))),
    glove(3, 4),
    weighted_voting(np.array([5.0, 4, 3, 2, 2, 1, 1, 1]), 10.0),
    size_effect(unanimity_sum(7, 10, 3, seed=5), lambda k: np.sqrt(k) * 3.0),
]


@pytest.mark.parametrize("surrogate", ["pairwise", "all_orders", "auto"])
@pytest.mark.parametrize("game", EXACT_GAMES, ids=lambda g: g.name)
def test_exact_on_the_enumerated_design(game, surrogate):
    est = _run(game, "exact", 0, surrogate=surrogate)
    np.testing.assert_allclose(est.value, game.shapley, atol=1e-8)
    assert est.value.sum() == pytest.approx(game.shapley.sum(), abs=1e-10)


@pytest.mark.parametrize("design", ["leverage", "paired", "shapley_kernel", "uniform"])
def test_efficiency_on_sampled_designs(design):
    game = size_effect(unanimity_sum(12, 30, 4, seed=2), lambda k: np.log1p(k))
    est = _run(game, design, 90, seed=4)
    assert est.value.sum() == pytest.approx(game.shapley.sum(), abs=1e-9)
    assert np.all(np.isfinite(est.stderr)) and np.all(est.ci_low <= est.ci_high)


def test_symmetric_and_null_players():
    # players 0 and 1 are symmetric, player 5 is null; exact on the enumerated design, close when sampled
    weights = np.array([3.0, 3.0, 2.0, 1.0, 1.0, 0.0])
    game = weighted_voting(weights, 5.0)
    exact = _run(game, "exact", 0)
    assert exact.value[0] == pytest.approx(exact.value[1], abs=1e-10)
    assert exact.value[5] == pytest.approx(0.0, abs=1e-10)
    sampled = _run(game, "leverage", 40, seed=1)
    assert abs(sampled.value[5]) <= 3 * sampled.stderr[5] + 1e-9
    assert abs(sampled.value[0] - sampled.value[1]) <= 3 * np.hypot(sampled.stderr[0], sampled.stderr[1]) + 1e-9


# ---------------------------------------------------------------------------------------------------------
# The residual correction is unbiased where the surrogate cannot fit, and the intervals cover
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("surrogate", ["pairwise", "auto"])
def test_correction_keeps_the_estimate_on_target_where_the_surrogate_cannot_fit(surrogate):
    # order-3..5 unanimity terms: far from additive + pairwise, so with the pairwise surrogate most of φ comes
    # from the correction; the all-orders surrogate (a candidate of "auto", the default) can represent them,
    # and its in-sample fit costs a bias that must stay small against the error of one estimate
    n = 8
    rng = np.random.default_rng(11)
    members = [rng.choice(n, size=k, replace=False) for k in (4, 5, 4, 5, 3)]
    coef = np.array([3.0, -2.0, 2.5, 4.0, -1.5])

    def fn(z: np.ndarray) -> np.ndarray:
        return np.array([[z[r, m].all() for m in members] for r in range(len(z))], dtype=np.float64) @ coef

    game = KnownGame("high-order unanimity", n, fn, brute_force_shapley(fn, n))
    values = np.array([_run(game, "leverage", 60, seed=s, surrogate=surrogate).value for s in range(80)])
    bias = values.mean(axis=0) - game.shapley
    spread = values.std(axis=0, ddof=1)
    rmse = np.sqrt(np.mean(np.sum((values - game.shapley) ** 2, axis=1)))
    if surrogate == "pairwise":
        # the mean over 80 plans sits within a few of its standard errors of the truth
        assert np.all(np.abs(bias) <= 4 * spread / np.sqrt(len(values)))
    assert np.linalg.norm(bias) < 0.25 * rmse


def test_interval_coverage_on_a_noisy_game():
    # pairwise game + a high-order term, noisy evaluations (each coalition evaluated twice), 95% intervals
    n = 8
    base = pairwise(np.linspace(-1, 1, n), np.random.default_rng(3).normal(scale=0.5, size=(n, n)))
    hits = []
    for seed in range(60):
        game = noisy(base, sd=0.2, seed=seed)
        masks = sample_coalitions(n, 50, "leverage", seed=seed)
        masks = np.repeat(masks, 2, axis=0)
        v_empty, v_full = float(base(np.zeros(n, bool))[0]), float(base(np.ones(n, bool))[0])
        est = estimate(masks, game(masks), v_empty, v_full, method="regression_msr", seed=seed)
        hits.append((est.ci_low <= base.shapley) & (base.shapley <= est.ci_high))
    coverage = float(np.mean(hits))
    assert 0.85 <= coverage <= 1.0, coverage


# ---------------------------------------------------------------------------------------------------------
# The surrogate: closed-form Shapley values against brute force
# ---------------------------------------------------------------------------------------------------------
def _random_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random proper coalitions plus the full one (weighted 1e6), values and row weights for a surrogate fit."""
    rng = np.random.default_rng(seed)
    z = (rng.random((40, n)) < 0.5).astype(np.float64)
    z = np.vstack([z[(z.sum(1) > 0) & (z.sum(1) < n)], np.ones((1, n))])
    y = rng.normal(size=len(z))
    w = np.append(rng.random(len(z) - 1) + 0.5, 1e6)
    return z, y, w


@pytest.mark.parametrize(("order", "decay"), [(1, 0.0), (2, 1.0), (2, 8.0), (3, 2.0), (7, 8.0)])
def test_surrogate_shapley_closed_form_matches_brute_force(order, decay):
    n = 7
    z, y, w = _random_rows(n, seed=5)
    surrogate = _fit_surrogate(z, y, w, order, (decay,))
    np.testing.assert_allclose(surrogate.shapley(), brute_force_shapley(surrogate.predict, n), atol=1e-9)
    assert surrogate.predict(np.zeros((1, n)))[0] == pytest.approx(0.0, abs=1e-12)  # f(∅) = 0


@pytest.mark.parametrize(("order", "decay", "width"), [(1, 0.0, 0.05), (1, 0.0, 0.5), (2, 1.0, 0.15), (3, 8.0, 0.3)])
def test_size_varying_surrogate_shapley_closed_form_matches_brute_force(order, decay, width):
    # linear coefficients b_j(|S|) that vary with the coalition size (plus interactions of order 2..order)
    n = 7
    z, y, w = _random_rows(n, seed=6)
    surrogate = _fit_surrogate(z, y, w, 1, (), ((order, decay, width),))
    assert surrogate.width == width
    assert np.linalg.norm(surrogate.shapley()) > 1e-3  # not the trivial all-zero fit
    np.testing.assert_allclose(surrogate.shapley(), brute_force_shapley(surrogate.predict, n), atol=1e-9)
    assert surrogate.predict(np.zeros((1, n)))[0] == pytest.approx(0.0, abs=1e-12)


def test_auto_surrogate_learns_slopes_that_vary_with_the_coalition_size():
    # diminishing returns (a learning curve per contributor): v(S) = Σ_{i∈S} w_i · 10 / (2 + |S|); the
    # size-varying additive candidate represents it, interaction features need every order
    n = 10
    weights = np.random.default_rng(2).uniform(0.5, 2.0, size=n)

    def fn(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        return z @ weights * 10.0 / (2.0 + z.sum(axis=1))

    game = KnownGame("diminishing returns", n, fn, brute_force_shapley(fn, n))
    errors = {kind: np.mean([np.linalg.norm(_run(game, "leverage", 50, seed=s, surrogate=kind).value - game.shapley)
                             for s in range(4)]) for kind in ("auto", "all_orders")}
    chosen = _run(game, "leverage", 50, seed=0).extras["surrogate_width"]
    assert chosen > 0, chosen
    assert errors["auto"] < 0.6 * errors["all_orders"], errors  # measured: 0.12 against 0.27


def test_a_player_the_rows_cannot_identify_gets_an_infinite_interval():
    game = unanimity_sum(6, 8, 3, seed=0)
    masks = sample_coalitions(6, 0, "exact")
    masks = masks[~masks[:, 0] & ~masks[:, 1]]  # players 0 and 1 never present: confounded
    est = estimate(masks, game(masks), 0.0, float(game(np.ones(6, bool))[0]), method="regression_msr")
    assert est.identified.tolist() == [False, False, True, True, True, True]
    assert np.all(np.isinf(est.stderr[:2])) and np.all(np.isfinite(est.stderr[2:]))
    assert np.all(est.ci_low[:2] == -np.inf) and np.all(est.ci_high[:2] == np.inf)
