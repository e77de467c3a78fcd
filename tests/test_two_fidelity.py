"""Two-fidelity plans through the real CLI: a finished store gains a cheap game, resume, status, reduce."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT
from contribshap.pipeline.config.schema import load_config, parse_config
from contribshap.pipeline.contracts.errors import ConfigError
from contribshap.pipeline.storage.plan import read_plan
from contribshap.pipeline.storage.store import Store


def _cli(command: list[str], args: list[str], *, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


def _noise_free_shapley(folder: Path) -> np.ndarray:
    """Exact Shapley values of the example's full game without its seed noise (all 2^8 coalitions)."""
    sys.path.insert(0, str(folder))
    try:
        import my_games
    finally:
        sys.path.remove(str(folder))
    sizes, quality = np.asarray(my_games.SIZES), np.asarray(my_games.QUALITY)
    n = len(sizes)

    def v(mask: tuple[int, ...]) -> float:
        m = np.asarray(mask, dtype=bool)
        usable, junk = float((sizes * quality)[m].sum()), float((sizes * (1 - quality))[m].sum())
        return (1 - math.exp(-2.0)) * 10.0 * math.log1p(usable / 50.0) / (1.0 + junk / 400.0)

    phi = np.zeros(n)
    for i in range(n):
        for rest in itertools.product((0, 1), repeat=n - 1):
            without = (*rest[:i], 0, *rest[i:])
            k = sum(without)
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            phi[i] += weight * (v((*rest[:i], 1, *rest[i:])) - v(without))
    return phi


@pytest.mark.slow
def test_a_finished_store_gains_a_cheap_game_and_the_reducer_combines_both(tmp_path, contribshap, game_env,
                                                                           ray_address):
    shutil.copy(REPO_ROOT / "configs/examples/my_games.py", tmp_path / "my_games.py")
    two = yaml.safe_load((REPO_ROOT / "configs/examples/two_fidelity.yaml").read_text())
    one = {k: v for k, v in two.items() if k != "low_fidelity"}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one))
    shutil.copy(REPO_ROOT / "configs/examples/two_fidelity.yaml", tmp_path / "two.yaml")
    args = ["--address", ray_address, "--no-progress"]

    # 1. the single-fidelity run, then the same store with low_fidelity: only the cheap evaluations run
    first = _cli(contribshap, ["run", "one.yaml", *args], cwd=tmp_path, env=game_env)
    assert first.returncode == 0, first.stderr
    assert "42 evaluated, 0 failed" in first.stderr
    second = _cli(contribshap, ["run", "two.yaml", *args], cwd=tmp_path, env=game_env)
    assert second.returncode == 0, second.stderr
    low_count = int(second.stderr.split(" evaluated")[0].rsplit(" ", 1)[-1])
    assert low_count > 42 and "42 already done" in second.stderr
    store = Store(tmp_path / "runs/two-fidelity")
    plan = read_plan(store)
    assert {r["fidelity"] for r in plan if r["section"] in ("endpoint", "estimate")} == {"both"}
    assert {r["fidelity"] for r in plan if r["section"] == "control"} == {"low"}
    assert len(store.namespaces()) == 2

    # 2. resume is a no-op; status counts both games
    again = _cli(contribshap, ["run", "two.yaml", *args], cwd=tmp_path, env=game_env)
    assert again.returncode == 0 and f"0 evaluated, 0 failed, {42 + low_count} already done" in again.stderr
    status = json.loads(_cli(contribshap, ["status", str(store.root), "--json"], cwd=tmp_path, env=game_env).stdout)
    assert status["by_fidelity"] == {"high": {"planned": 42, "ok": 42, "failed": 0},
                                     "low": {"planned": low_count, "ok": low_count, "failed": 0}}

    # 3. the estimate: efficient, narrower than the full-fidelity rows alone, and it covers the truth
    reduced = _cli(contribshap, ["reduce", str(store.root), "--json"], cwd=tmp_path, env=game_env)
    assert reduced.returncode == 0, reduced.stderr
    entry = json.loads(reduced.stdout)["score"]["kernelshap"]
    two_fidelity = entry["multifidelity"]
    # the collapsed-strata variance (large-n intervals) puts this store's ratio at 0.87 (it was below 0.8)
    assert two_fidelity["coefficient"] > 0 and two_fidelity["variance_ratio"] < 0.9
    assert two_fidelity["n_low_only"] > 0 and two_fidelity["low_seconds"] > 0
    values = np.array([c["value"] for c in entry["contributors"]])
    assert values.sum() == pytest.approx(entry["v_full"] - entry["v_empty"], rel=1e-9)
    low = np.array([c["ci_low"] for c in entry["contributors"]])
    high = np.array([c["ci_high"] for c in entry["contributors"]])
    assert max(high - low) / 2 < two_fidelity["high_only_max_halfwidth"]
    truth = _noise_free_shapley(tmp_path)
    assert np.mean((low <= truth) & (truth <= high)) >= 0.75  # 95% intervals, 8 players, one seed
    assert np.abs(values - truth).max() < 1.0


def test_low_fidelity_config_is_checked_up_front(tmp_path):
    base = yaml.safe_load((REPO_ROOT / "configs/examples/two_fidelity.yaml").read_text())
    cases = [
        ({"design": {"kind": "exact"}}, "low_fidelity: needs a sampling design"),
        ({"low_fidelity": {"game": {"options": {"steps": 200}}, "budget": 60}}, "changes nothing of game"),
        ({"low_fidelity": {"game": {"target": "nope"}, "budget": 60}}, "low_fidelity.game: the cheap game is not valid"),
        ({"low_fidelity": {"game": {"options": {"steps": 25}}, "budget": 5}}, "low_fidelity.budget: 5 is below"),
        ({"estimators": ["kernelshap_paper"]}, "kernelshap_paper cannot combine two fidelities"),
    ]
    for change, message in cases:
        raw = {**base, **change}
        with pytest.raises(ConfigError, match=message):
            parse_config(raw, check_paths=False)
    cfg = load_config(REPO_ROOT / "configs/examples/two_fidelity.yaml", check_paths=False)
    cheap = cfg.low_fidelity_config()
    assert cheap is not None and cheap.game.options == {"steps": 25} and cheap.low_fidelity is None
    assert cfg.low_fidelity_namespace().startswith(f"{cfg.low_fidelity_namespace().split('-')[0]}-")
