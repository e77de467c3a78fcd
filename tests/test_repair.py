"""``contribshap repair``: a lost plan or a damaged manifest rebuilt from the config and the evaluations.

Through the real CLI on a copy of a finished store: what repair writes is exactly what was lost (the
estimates afterwards equal those before), damaged files are moved aside, nothing else changes, and a
repair it cannot do safely is refused in one line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import snapshot
from contribshap.pipeline.config.schema import parse_config
from contribshap.pipeline.products.repair import _rebuild_plan
from contribshap.pipeline.storage.plan import PlanRequest, extend_plan, round_budgets
from store_fixtures import GOOD, build_store, cli, copy_store


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_address) -> Path:
    return build_store(tmp_path_factory.mktemp("built"))


@pytest.fixture
def store(built, tmp_path) -> Path:
    return copy_store(built, tmp_path)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def _fails(done: subprocess.CompletedProcess, expected: str) -> None:
    assert (done.returncode, done.stderr) == (2, f"error: {expected}\n"), done.stderr


def _estimates(store: Path, contribshap, env) -> dict:
    return json.loads(_ok(cli(contribshap, "reduce", "st", "--json", cwd=store.parent, env=env)))


def _plan_rows(store: Path) -> list[dict]:
    return pq.read_table(store / "plan.parquet").to_pylist()


def test_a_lost_plan_is_rebuilt_exactly(store, contribshap, game_env):
    original, rows = snapshot(store), _plan_rows(store)
    (store / "plan.parquet").unlink()
    out = _ok(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env))
    assert out == "repaired: wrote plan.parquet from the config: 16 coalitions, 16 evaluation file(s) of them already in the store\n"
    assert _plan_rows(store) == rows
    assert snapshot(store).keys() == original.keys()
    assert {k: v for k, v in snapshot(store).items() if k != "plan.parquet"} == {
        k: v for k, v in original.items() if k != "plan.parquet"}
    assert "ok 16, failed 0, remaining 0" in _ok(cli(contribshap, "status", "st", cwd=store.parent, env=game_env))
    assert _estimates(store, contribshap, game_env) == json.loads((store / "estimates" / "estimates.json").read_text())


@pytest.mark.parametrize("content", [b"\xff\xfe\x00{", b"[]", b"null", b"{}"])
def test_a_damaged_manifest_is_rebuilt_and_kept_aside(store, contribshap, game_env, content):
    manifest = json.loads((store / "manifest.json").read_text())
    expected = json.loads((store / "estimates" / "estimates.json").read_text())
    (store / "manifest.json").write_bytes(content)
    before = snapshot(store)
    out = _ok(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env)).splitlines()
    aside = next(store.glob("manifest.json.bad-*"))
    assert out == [f"repaired: moved the damaged manifest to {aside.name}",
                   "repaired: wrote manifest.json from the config (4 contributors, properties cost); the next run "
                   "prepares again, reusing artifacts/"]
    assert aside.read_bytes() == content
    after = snapshot(store)
    assert {k: v for k, v in after.items() if k not in ("manifest.json", aside.name)} == {
        k: v for k, v in before.items() if k != "manifest.json"}
    rebuilt = json.loads((store / "manifest.json").read_text())
    for key in ("format_version", "name", "config_hash", "plan_hash", "contributors", "property_names", "planned_draws"):
        assert rebuilt[key] == manifest[key], key
    assert _estimates(store, contribshap, game_env) == expected


def test_everything_lost_but_the_evaluations(store, contribshap, game_env, ray_address):
    expected = json.loads((store / "estimates" / "estimates.json").read_text())
    for name in ("manifest.json", "plan.parquet", "config.yaml"):
        (store / name).unlink()
    before = snapshot(store)
    # 1. without the config repair cannot know the game: one line, nothing written
    _fails(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env),
           f"{store} has no config.yaml; pass the run's config: contribshap repair {store} --config CONFIG")
    # 2. another config (its hash names no evaluation here) is refused
    (store.parent / "other.yaml").write_text(yaml.safe_dump({**GOOD, "seed": 5}))
    other = parse_config({**GOOD, "seed": 5}, check_paths=False)
    from contribshap.pipeline.config.schema import config_hash

    namespace = next((store / "evals").iterdir()).name
    _fails(cli(contribshap, "repair", "st", "--config", "other.yaml", cwd=store.parent, env=game_env),
           f"{store / 'evals'} holds evaluations of config hash {namespace}, this config has hash "
           f"{config_hash(other)}; pass the config the store was made with (--config)")
    assert snapshot(store) == before
    # 3. with the run's config: manifest, plan and config.yaml come back; the run resumes with nothing to do
    out = _ok(cli(contribshap, "repair", "st", "--config", "good.yaml", cwd=store.parent, env=game_env))
    assert out.splitlines() == [
        "repaired: wrote manifest.json from the config (4 contributors, properties cost); the next run prepares "
        "again, reusing artifacts/",
        "repaired: wrote plan.parquet from the config: 16 coalitions, 16 evaluation file(s) of them already in the store",
        "repaired: wrote config.yaml from --config",
    ]
    assert _estimates(store, contribshap, game_env) == expected
    done = cli(contribshap, "run", "good.yaml", "--address", ray_address, "--no-progress", cwd=store.parent, env=game_env)
    assert done.returncode == 0, done.stderr
    assert "0 evaluated, 0 failed, 16 already done" in done.stderr


def test_a_consistent_store_and_a_busy_one_are_left_alone(store, contribshap, game_env):
    before = snapshot(store)
    assert _ok(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env)) == f"{store}: nothing to repair\n"
    assert snapshot(store) == before
    lock = {"host": socket.gethostname(), "pid": os.getppid(), "started": 0.0, "heartbeat": time.time() + 3600}
    (store / "driver.lock").write_text(json.dumps(lock))
    (store / "plan.parquet").unlink()
    before = snapshot(store)
    _fails(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env),
           f"store {store} is in use by a driver (pid {os.getppid()} on host {socket.gethostname()}, since "
           f"1970-01-01 00:00:00 UTC); wait for it to finish, or delete {store / 'driver.lock'} if that driver is gone")
    assert snapshot(store) == before


def test_the_plan_of_an_adaptive_run_is_rebuilt_to_the_round_it_reached():
    cfg = parse_config({**GOOD, "design": {"kind": "leverage", "budget": 40}, "estimators": ["kernelshap"],
                        "stopping": {"ci_abs": 0.01, "max_rounds": 3}, "game": {**GOOD["game"], "n_players": 8}},
                       check_paths=False)
    ids = [f"p{i}" for i in range(8)]
    budgets = round_budgets("leverage", 8, 40, round_size=None, max_rounds=3)
    rows: list[dict] = []
    by_round = []
    for index, draws in enumerate(budgets):  # as the driver plans a fresh run, round by round
        rows, _ = extend_plan(rows, ids, PlanRequest("leverage", 8, draws, 0, {}, 1, 1), round_index=index)
        by_round.append(rows)
    key = lambda r: (r["section"], r["coalition_key"])  # noqa: E731
    # the run stopped after round 1: the manifest's planned draws, or the evaluated keys, say so
    got, draws = _rebuild_plan(cfg, ids, budgets[1], set())
    assert (sorted(got, key=key), draws) == (sorted(by_round[1], key=key), budgets[1])
    evaluated = {r["coalition_key"] for r in by_round[1]}
    got, draws = _rebuild_plan(cfg, ids, 0, evaluated)
    assert (sorted(got, key=key), draws) == (sorted(by_round[1], key=key), budgets[1])


def test_an_unreadable_plan_or_saved_config_is_moved_aside_and_written_again(store, contribshap, game_env):
    rows = _plan_rows(store)
    expected = json.loads((store / "estimates" / "estimates.json").read_text())
    (store / "config.yaml").write_bytes(b"\x89PNG\r\n")
    before = snapshot(store)
    _fails(cli(contribshap, "reduce", "st", cwd=store.parent, env=game_env),
           f"{store / 'config.yaml'} is damaged (not a text file (byte 0 is not UTF-8)); run `contribshap repair "
           f"{store} --config CONFIG` to write it again from the run's config")
    assert snapshot(store) == before
    (store / "plan.parquet").write_bytes(b"PAR1 broken")
    before = snapshot(store)
    _fails(cli(contribshap, "status", "st", cwd=store.parent, env=game_env),
           f"{store / 'plan.parquet'} is unreadable (ArrowInvalid); it was written atomically, so the disk or a copy "
           f"tool broke it: restore it, or run `contribshap repair {store}` to rebuild it from the config")
    _fails(cli(contribshap, "repair", "st", cwd=store.parent, env=game_env),
           f"{store / 'config.yaml'} is damaged (not a text file (byte 0 is not UTF-8)); pass the run's config: "
           f"contribshap repair {store} --config CONFIG")
    assert snapshot(store) == before
    out = _ok(cli(contribshap, "repair", "st", "--config", "good.yaml", cwd=store.parent, env=game_env)).splitlines()
    plan_aside, config_aside = next(store.glob("plan.parquet.bad-*")), next(store.glob("config.yaml.bad-*"))
    assert out == [f"repaired: moved the unreadable plan to {plan_aside.name}",
                   "repaired: wrote plan.parquet from the config: 16 coalitions, 16 evaluation file(s) of them "
                   "already in the store",
                   f"repaired: moved the unreadable config.yaml to {config_aside.name}",
                   "repaired: wrote config.yaml from --config"]
    assert (plan_aside.read_bytes(), config_aside.read_bytes()) == (b"PAR1 broken", b"\x89PNG\r\n")
    assert _plan_rows(store) == rows
    assert _estimates(store, contribshap, game_env) == expected
