"""Credit at the size a cluster is for: a 258-contributor python game through the real CLI (Ray, store,
reducer, report) gets intervals, and the report of a large pool stays readable."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from games_scale import datalike_exact

N = 258


def _cli(command: list[str], args: list[str], *, cwd: Path, env: dict, timeout: float = 600):
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_258_contributors_through_the_cli_get_intervals(tmp_path, contribshap, game_env, ray_address):
    (tmp_path / "scale.yaml").write_text(
        "name: scale-258\nstore: runs/scale-258\nseed: 0\n"
        f"game: {{kind: python, target: 'games_scale:datalike', n_players: {N}, options: {{noise: 0.002}}}}\n"
        f"design: {{kind: paired, budget: {3 * N + 2}}}\n"
        "estimators: [kernelshap]\n"
        "ray: {num_cpus: 0.25, max_in_flight: 64}\n")
    done = _cli(contribshap, ["run", "scale.yaml", "--address", ray_address, "--no-progress"], cwd=tmp_path,
                env=game_env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "not identified" not in done.stdout + done.stderr.split("evaluated")[-1]
    reduced = _cli(contribshap, ["reduce", "runs/scale-258", "--json"], cwd=tmp_path, env=game_env)
    assert reduced.returncode == 0, reduced.stderr[-3000:]
    entry = json.loads(reduced.stdout)["value"]["kernelshap"]
    people = entry["contributors"]
    assert len(people) == N
    identified = np.array([p["identified"] for p in people])
    assert identified.mean() >= 0.95, f"only {identified.sum()} of {N} identified"
    value = np.array([p["value"] for p in people])
    low = np.array([p["ci_low"] if p["ci_low"] is not None else -np.inf for p in people])
    high = np.array([p["ci_high"] if p["ci_high"] is not None else np.inf for p in people])
    exact = datalike_exact(N)
    assert np.corrcoef(value, exact)[0, 1] > 0.8
    assert 0.85 <= np.mean((low <= exact) & (exact <= high)) <= 1.0
    # the report of a large pool: one resolved line, a forest plot, cards only for the ends and the flagged
    report = _cli(contribshap, ["report", "runs/scale-258"], cwd=tmp_path, env=game_env)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (tmp_path / "runs/scale-258/report/index.html").read_text()
    assert "Resolved: " in page and f"of {N} contributors have an interval" in page
    assert "No projection yet" in page
    assert (tmp_path / "runs/scale-258/report/forest_value.png").is_file()
    assert page.count('<div class="card') < 40


@pytest.mark.slow
def test_plan_projects_a_budget_from_a_pilot_store(tmp_path, contribshap, game_env, ray_address):
    (tmp_path / "pilot.yaml").write_text(
        "name: pilot\nstore: runs/pilot\nseed: 0\n"
        "game: {kind: python, target: 'games_scale:datalike', n_players: 50, options: {noise: 0.002}}\n"
        "design: {kind: paired, budget: 152}\nestimators: [kernelshap]\n")
    done = _cli(contribshap, ["run", "pilot.yaml", "--address", ray_address, "--no-progress"], cwd=tmp_path,
                env=game_env)
    assert done.returncode == 0, done.stderr[-3000:]
    planned = _cli(contribshap, ["plan", "runs/pilot", "--halfwidth", "0.2", "--seconds-per-evaluation", "635",
                                 "--json"], cwd=tmp_path, env=game_env)
    assert planned.returncode == 0, planned.stderr[-3000:]
    doc = json.loads(planned.stdout)
    projection = doc["projection"]
    assert projection["reached"] and projection["evaluations"] > projection["pilot_evaluations"] == 150
    assert doc["hours"] == pytest.approx((projection["evaluations"] + 2) * 635 / 3600)
    status = _cli(contribshap, ["status", "runs/pilot"], cwd=tmp_path, env=game_env)
    assert "plan (value, kernelshap, design paired): largest CI half-width <= 0.2" in status.stdout
    report = _cli(contribshap, ["report", "runs/pilot"], cwd=tmp_path, env=game_env)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "largest CI half-width &lt;= 0.2" in (tmp_path / "runs/pilot/report/index.html").read_text()
    wrong = _cli(contribshap, ["plan", "runs/pilot"], cwd=tmp_path, env=game_env)
    assert wrong.returncode == 2 and "exactly one target" in wrong.stderr and "Traceback" not in wrong.stderr
