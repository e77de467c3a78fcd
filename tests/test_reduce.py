"""The reducer carries identification: the JSON document, the Parquet table, the printed table, the stopping rule."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import yaml
from contribshap.pipeline.config.schema import parse_config
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.estimators import estimate
from contribshap.pipeline.products.reduce import ci_target_met, estimates_document
from games_core import unanimity_sum

CONTRIBUTORS = [{"id": f"p{i}", "name": f"p{i}"} for i in range(8)]


def _estimate(budget: int):
    game = unanimity_sum(8, 24, 3, seed=0)
    masks = sample_coalitions(8, budget, "paired", seed=0)
    v_empty, v_full = float(game(np.zeros(8, bool))[0]), float(game(np.ones(8, bool))[0])
    est = estimate(masks, game(masks), v_empty, v_full)
    est.extras.update(v_empty=v_empty, v_full=v_full)
    return est


def _config(**stopping):
    return parse_config({"game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 8},
                         "design": {"kind": "paired", "budget": 200}, "stopping": stopping}, check_paths=False)


def test_stopping_rule_never_fires_on_an_unidentified_estimate():
    small, large = _estimate(10), _estimate(200)
    assert not small.all_identified and large.all_identified
    loose = _config(ci_abs=1e12, ci_rel=1e12)
    assert ci_target_met({"v": {"kernelshap": large}}, loose)
    assert not ci_target_met({"v": {"kernelshap": small}}, loose)
    assert not ci_target_met({"v": {"kernelshap": large}, "w": {"kernelshap": small}}, loose)
    assert ci_target_met({"v": {"kernelshap": large}, "w": {"kernelshap": small}}, _config(ci_abs=1e12, property="v"))


def test_document_marks_unidentified_contributors():
    est = _estimate(10)
    entry = estimates_document({"v": {"kernelshap": est}}, CONTRIBUTORS)["v"]["kernelshap"]
    assert entry["identified"] is False and entry["more_evaluations"] == est.extras["more_evaluations"] > 0
    for person, ok in zip(entry["contributors"], est.identified, strict=True):
        assert person["identified"] is bool(ok)
        assert (person["ci_low"] is None) == (not ok) and (person["stderr"] is None) == (not ok)
    json.loads(json.dumps(entry, allow_nan=False))  # strict JSON: no Infinity


@pytest.mark.slow
def test_reduce_json_through_the_real_cli_reports_a_too_small_budget(tmp_path, contribshap, game_env, ray_address):
    """airport with 6 contributors, paired design, budget n + 2 = 8: 3 complementary pairs for 5 directions."""
    import pyarrow.parquet as pq

    raw = {"name": "tiny", "store": "st", "game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 6},
           "design": {"kind": "paired", "budget": 8}, "estimators": ["kernelshap", "banzhaf_msr"]}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([*contribshap, "run", "tiny.yaml", "--address", ray_address, "--no-progress"], cwd=tmp_path,
                          env=game_env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    reduced = subprocess.run([*contribshap, "reduce", "st", "--json"], cwd=tmp_path, env=game_env, capture_output=True,
                             text=True, timeout=120)
    assert reduced.returncode == 0, reduced.stderr
    entry = json.loads(reduced.stdout)["cost"]["kernelshap"]
    assert entry["identified"] is False and entry["more_evaluations"] >= 6  # 2 more pairs for rank, 1 for a residual
    assert entry["n_evaluations"] == 8
    assert all(c["identified"] is False and c["ci_low"] is None and c["ci_high"] is None for c in entry["contributors"])
    table = pq.read_table(tmp_path / "st/estimates/estimates.parquet").to_pylist()
    assert {(r["method"], r["identified"]) for r in table if r["method"] == "kernelshap"} == {("kernelshap", False)}
    shown = subprocess.run([*contribshap, "reduce", "st", "--method", "kernelshap"], cwd=tmp_path, env=game_env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "not identified" in shown.stderr and f"at least {entry['more_evaluations']} more" in shown.stderr
