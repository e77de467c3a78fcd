"""The budget planner: a projection from a pilot lands within ±30% of the budget that actually reaches the
target when the same (prefix-stable) plan is grown; bad targets are refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from contribshap.pipeline.estimators import estimate, max_halfwidth
from contribshap.pipeline.planner import project_budget
from contribshap.pipeline.sampling import sample_coalitions
from games_core import data_like


def _plan(n: int, design: str, seed: int, budget: int):
    game = data_like(n, seed=100 + seed)
    ends = np.stack([np.zeros(n, bool), np.ones(n, bool)])
    v_empty, v_full = (float(v) for v in game(ends))
    plan = sample_coalitions(n, budget, design, seed=seed)
    values = game(plan) + np.random.default_rng([seed, 7]).normal(size=len(plan)) * 0.01 * (v_full - v_empty)
    return plan, values, v_empty, v_full


@pytest.mark.parametrize("design", ["paired", "leverage"])
def test_projection_lands_within_30_percent_of_the_budget_that_reaches_the_target(design: str) -> None:
    """n = 24, 1% utility noise, pilot 10n: the target is the largest half-width the plan shows at twice
    the pilot; the actual budget is the first prefix (4% steps) whose largest half-width is at most that."""
    n, pilot = 24, 240
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(2):
            plan, values, v_empty, v_full = _plan(n, design, seed, 4 * pilot)
            target = max_halfwidth(estimate(plan[:2 * pilot], values[:2 * pilot], v_empty, v_full))
            proj = project_budget(plan[:pilot], values[:pilot], v_empty, v_full, design=design,
                                  target_halfwidth=target)
            assert proj.reached and proj.pilot_evaluations == pilot and proj.more == proj.evaluations - pilot
            m = pilot
            while max_halfwidth(estimate(plan[:m], values[:m], v_empty, v_full)) > target:
                m = int(np.ceil(m * 1.04))
            ratio = proj.evaluations / m
            print(f"{design} seed {seed}: projected {proj.evaluations}, actual {m}, ratio {ratio:.2f}")
            assert 0.7 <= ratio <= 1.3, (seed, proj.evaluations, m)


def test_targets_met_by_the_pilot_and_unreachable_ones() -> None:
    plan, values, v_empty, v_full = _plan(20, "paired", 0, 200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pilot = estimate(plan, values, v_empty, v_full)
        met = project_budget(plan, values, v_empty, v_full, target_halfwidth=2 * max_halfwidth(pilot))
        assert met.reached and met.evaluations == met.pilot_evaluations and met.more == 0
        far = project_budget(plan, values, v_empty, v_full, target_halfwidth=1e-9, max_factor=10)
        assert not far.reached and far.evaluations == -1
        top = project_budget(plan, values, v_empty, v_full, top_k=3)
        assert top.target == "top_k" and top.evaluations >= top.pilot_evaluations
        assert set(top.to_dict()) >= {"evaluations", "more", "target", "reached"}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "give exactly one target"),
    ({"target_halfwidth": 0.1, "top_k": 2}, "give exactly one target"),
    ({"target_halfwidth": -1.0}, "target_halfwidth must be > 0"),
    ({"target_halfwidth": 0.1, "method": "banzhaf_msr"}, "projects the regression methods"),
])
def test_bad_targets_are_refused(kwargs, message) -> None:
    plan, values, v_empty, v_full = _plan(12, "paired", 0, 60)
    with pytest.raises(ValueError, match=message):
        project_budget(plan, values, v_empty, v_full, **kwargs)


def test_a_pilot_without_any_interval_says_what_it_needs() -> None:
    plan, values, v_empty, v_full = _plan(30, "paired", 0, 40)
    with pytest.raises(ValueError, match=r"identifies no contributor.*grow it by \d+ evaluations"):
        project_budget(plan, values, v_empty, v_full, target_halfwidth=0.1)
