"""Plan: keys, seeds, prefix-stable rounds, sections, jobs."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from contribshap.pipeline.contracts.keys import coalition_key, derive_seed, mask_from_str, mask_to_str
from contribshap.pipeline.storage.plan import (
    PlanRequest,
    add_section_rows,
    control_draws,
    extend_plan,
    jobs_for,
    read_plan,
    round_budgets,
    write_plan,
)
from contribshap.pipeline.storage.store import Store, StoreError

IDS = [f"p{i}" for i in range(6)]


def _request(draws: int, design: str = "leverage", reps: int = 1) -> PlanRequest:
    return PlanRequest(design, 6, draws, 0, {}, reps, 2)


def test_coalition_key_is_order_free_and_matches_the_contract():
    assert coalition_key(["p2", "p0"]) == coalition_key(["p0", "p2"])
    assert coalition_key(["p0", "p2"]) == hashlib.sha256(b"p0\x1fp2").hexdigest()[:16]
    assert coalition_key([]) == hashlib.sha256(b"").hexdigest()[:16]
    assert mask_to_str(mask_from_str("010011")) == "010011"
    assert mask_from_str("0101").tolist() == [False, True, False, True]


def test_derive_seed_is_deterministic_and_distinct():
    key = coalition_key(["p1"])
    seeds = {derive_seed(0, key, 0), derive_seed(0, key, 1), derive_seed(1, key, 0),
             derive_seed(0, coalition_key(["p2"]), 0)}
    assert len(seeds) == 4
    assert derive_seed(0, key, 0) == derive_seed(0, key, 0)
    assert all(0 <= s < 2**63 for s in seeds)


def test_round_budgets():
    assert round_budgets("leverage", 6, 22, round_size=None, max_rounds=1) == [20]
    assert round_budgets("leverage", 6, 22, round_size=8, max_rounds=5) == [8, 16, 20]
    assert round_budgets("leverage", 6, 22, round_size=None, max_rounds=3) == [7, 14, 20]
    assert round_budgets("exact", 6, None, round_size=None, max_rounds=1) == [62]
    assert round_budgets("loo", 6, None, round_size=None, max_rounds=1) == [6]


def test_extend_plan_is_prefix_stable_and_adds_endpoints_once():
    rows, added = extend_plan([], IDS, _request(10), round_index=0)
    assert added == 12
    endpoints = [r for r in rows if r["section"] == "endpoint"]
    assert sorted(r["mask"] for r in endpoints) == ["000000", "111111"]
    assert all(r["replicates"] == 2 for r in endpoints)
    grown, added2 = extend_plan(rows, IDS, _request(20), round_index=1)
    assert added2 == 10
    before = {(r["section"], r["coalition_key"]): r for r in rows}
    for row in grown:
        if (row["section"], row["coalition_key"]) in before:
            assert row["round"] == before[(row["section"], row["coalition_key"])]["round"]
        else:
            assert row["round"] == 1
    # asking again for the same budget adds nothing
    again, added3 = extend_plan(grown, IDS, _request(20), round_index=2)
    assert added3 == 0 and len(again) == len(grown)


def test_duplicate_draws_merge_into_weights():
    rows, _ = extend_plan([], IDS, PlanRequest("shapley_kernel", 6, 200, 0, {"unique": False}, 1, 1), round_index=0)
    estimate = [r for r in rows if r["section"] == "estimate"]
    assert len({r["coalition_key"] for r in estimate}) == len(estimate) < 200
    assert sum(r["weight"] for r in estimate) == 200


def test_plan_roundtrip_sections_and_jobs(tmp_path):
    store = Store(tmp_path)
    rows, _ = extend_plan([], IDS, _request(6, reps=3), round_index=0)
    holdout = np.array([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 0]], dtype=bool)
    rows = add_section_rows(rows, IDS, holdout, section="holdout", replicates=2)
    write_plan(store, rows)
    back = read_plan(store)
    assert sorted(map(str, back)) == sorted(map(str, rows)) and len(back) == 10
    jobs = jobs_for(back, seed=0)
    assert len(jobs) == 2 * 2 + 6 * 3  # endpoints x 2 replicates + estimate rows x 3
    assert len(jobs_for(back, seed=0, sections=["holdout"])) == 4
    assert jobs[0].seed == derive_seed(0, jobs[0].coalition_key, jobs[0].replicate)
    with pytest.raises(StoreError, match="section 'bogus' is not valid; valid sections: endpoint, estimate, control, holdout"):
        add_section_rows(rows, IDS, holdout, section="bogus")


def test_unreadable_plan_is_a_clear_error(tmp_path):
    store = Store(tmp_path)
    store.plan_path.write_bytes(b"PAR1 not really")
    with pytest.raises(StoreError, match=r"plan\.parquet is unreadable"):
        read_plan(store)


def test_two_fidelity_plan_pairs_the_design_and_draws_control_rows_apart(tmp_path):
    request = PlanRequest("paired", 6, 10, 0, {}, 2, 2, control=20, control_replicates=1)
    rows, _ = extend_plan([], IDS, request, round_index=0)
    design = [r for r in rows if r["section"] in ("endpoint", "estimate")]
    control = [r for r in rows if r["section"] == "control"]
    assert design and all(r["fidelity"] == "both" for r in design)
    assert control and all(r["fidelity"] == "low" and r["replicates"] == 1 for r in control)
    # the control draws come from their own seed stream: not the design's rows again
    single, _ = extend_plan([], IDS, PlanRequest("paired", 6, 10, 0, {}, 2, 2), round_index=0)
    assert {r["mask"] for r in single if r["section"] == "estimate"} == {r["mask"] for r in design
                                                                        if r["section"] == "estimate"}
    assert {r["mask"] for r in control} != {r["mask"] for r in design if r["section"] == "estimate"}
    # high jobs: the design at its replicates; low jobs: their twins plus every control row
    high, low = jobs_for(rows, seed=0), jobs_for(rows, seed=0, sections=("endpoint", "estimate", "control"),
                                                 fidelity="low")
    assert {(j.coalition_key, j.replicate) for j in high} <= {(j.coalition_key, j.replicate) for j in low}
    assert len(low) > len(high)
    # a plan read back keeps the column; an old plan without it reads as high fidelity
    store = Store(tmp_path)
    write_plan(store, rows)
    assert {r["fidelity"] for r in read_plan(store)} == {"both", "low"}
    old = [{k: v for k, v in r.items() if k != "fidelity"} for r in single]
    write_plan(store, old)
    assert {r["fidelity"] for r in read_plan(store)} == {"high"}


def test_control_draws_follow_the_design_share_of_the_budget():
    assert control_draws(50, 100, 202) == 100
    assert control_draws(100, 100, 202) == 200
    assert control_draws(1, 100, 202) == 2
