"""The real CLI: exact airport end to end, resume after kill -9, a second driver refused, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import REPO_ROOT, snapshot
from contribshap.pipeline.config.schema import KNOWN_METHODS, config_hash, load_config, plan_hash
from contribshap.pipeline.products.cli import main
from contribshap.pipeline.storage.plan import read_plan
from contribshap.pipeline.storage.store import Store

AIRPORT6 = [sum(1.0 / (6 - k + 1) for k in range(1, j + 1)) for j in range(1, 7)]


def _cli(command: list[str], args: list[str], *, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_airport6_exact_through_the_real_cli(tmp_path, contribshap, game_env, ray_address):
    shutil.copy(REPO_ROOT / "configs/examples/my_games.py", tmp_path / "my_games.py")
    shutil.copy(REPO_ROOT / "configs/examples/airport6.yaml", tmp_path / "airport6.yaml")
    done = _cli(contribshap, ["run", "airport6.yaml", "--address", ray_address, "--no-progress"], cwd=tmp_path, env=game_env)
    assert done.returncode == 0, done.stderr
    assert "64 evaluated, 0 failed" in done.stderr
    reduced = _cli(contribshap, ["reduce", "runs/airport-6", "--json"], cwd=tmp_path, env=game_env)
    assert reduced.returncode == 0, reduced.stderr
    document = json.loads(reduced.stdout)
    assert set(document) == {"cost"} and set(document["cost"]) == {"exact_shapley", "kernelshap"}
    for method in ("exact_shapley", "kernelshap"):
        entry = document["cost"][method]
        assert [c["id"] for c in entry["contributors"]] == [f"p{i}" for i in range(6)]
        assert set(entry["contributors"][0]) == {"id", "name", "value", "ci_low", "ci_high", "stderr", "identified",
                                                 "credit", "credit_low", "credit_high", "harmful"}
        assert entry["identified"] is True and entry["more_evaluations"] == 0
        np.testing.assert_allclose([c["value"] for c in entry["contributors"]], AIRPORT6, atol=1e-9)
        assert (entry["v_empty"], entry["v_full"], entry["n_evaluations"]) == (0.0, 6.0, 64)
    assert (tmp_path / "runs/airport-6/estimates/estimates.parquet").is_file()
    status = _cli(contribshap, ["status", "runs/airport-6"], cwd=tmp_path, env=game_env)
    assert "ok 64, failed 0, remaining 0" in status.stdout


@pytest.mark.slow
def test_resume_after_kill_9_and_a_second_driver_is_refused(tmp_path, contribshap, game_env, ray_address):
    from contribshap.pipeline.products.reduce import estimates_document, reduce_store
    from contribshap.pipeline.products.run import run

    log = tmp_path / "calls.log"
    raw = {
        "name": "resume", "store": "store", "seed": 3,
        "game": {"kind": "python", "target": "games_pipeline:slow_airport", "n_players": 6,
                 "options": {"sleep": 0.4, "log": str(log)}},
        "design": {"kind": "leverage", "budget": 40},
        "estimators": ["kernelshap"],
        "ray": {"num_cpus": 1, "max_in_flight": 4},
    }
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump(raw))
    args = ["run", "resume.yaml", "--address", ray_address, "--no-progress"]
    # 1. start a driver and wait until some evaluations landed
    first = subprocess.Popen([*contribshap, *args], cwd=tmp_path, env=game_env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    evals = tmp_path / "store" / "evals"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and len(list(evals.rglob("*-r0.parquet"))) < 8:
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    # 2. a second driver on the same store is refused with a clear line
    second = _cli(contribshap, args, cwd=tmp_path, env=game_env)
    assert second.returncode == 2
    assert second.stderr.startswith(
        f"error: store {tmp_path / 'store'} is in use by a driver (pid {first.pid} on host {socket.gethostname()}, since "
    )
    assert second.stderr.rstrip().endswith(f"wait for it to finish, or delete {tmp_path / 'store' / 'driver.lock'} if that driver is gone")
    # 3. kill -9 the first driver by its pid, then run the same command again
    os.kill(first.pid, signal.SIGKILL)
    first.communicate()
    landed = len(list(evals.rglob("*-r0.parquet")))
    assert 8 <= landed < 40
    again = _cli(contribshap, args, cwd=tmp_path, env=game_env)
    assert again.returncode == 0, again.stderr
    # 4. every planned coalition exactly once; re-runs bounded by the in-flight window
    plan_keys = {r["coalition_key"] for r in read_plan(Store(tmp_path / "store"))}
    files = sorted(p.name for p in evals.rglob("*-r0.parquet"))
    assert len(files) == len(set(files)) == len(plan_keys) == 40
    calls = log.read_text().split("\n")[:-1]
    assert len({c.split()[0] for c in calls}) == 40
    assert 40 <= len(calls) <= 40 + 4
    # 5. the estimates equal those of an uninterrupted run with the same seed (sleep 0: same values)
    raw_fast = {**raw, "store": str(tmp_path / "fast"), "game": {**raw["game"], "options": {"sleep": 0.0}}}
    fast_cfg = load_config_from(tmp_path / "fast.yaml", raw_fast)
    run(fast_cfg, progress=False)
    expected = estimates_document(reduce_store(tmp_path / "fast"), json.loads((tmp_path / "fast/manifest.json").read_text())["contributors"])
    got = json.loads((tmp_path / "store/estimates/estimates.json").read_text())
    assert got == expected


def load_config_from(path: Path, raw: dict):
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


# --- bad inputs: exact error line, exit code 2, the store untouched ---------------------------------------
GOOD = {
    "name": "good", "store": "st",
    "game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 4},
    "design": {"kind": "exact"},
    "estimators": ["exact_shapley"],
}


def _variant(**changes) -> dict:
    raw = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        section, _, sub = key.partition("__")
        if sub:
            raw[section][sub] = value
        else:
            raw[section] = value
    return raw


@pytest.fixture
def good_store(tmp_path, monkeypatch, game_env, ray_address):
    from contribshap.pipeline.products.run import run

    monkeypatch.chdir(tmp_path)
    cfg = load_config_from(tmp_path / "good.yaml", GOOD)
    run(cfg, progress=False)
    return tmp_path, cfg


def test_bad_inputs_fail_with_one_exact_line_and_leave_the_store_unchanged(good_store, capsys):
    tmp, cfg = good_store
    store = tmp / "st"
    (tmp / "empty").mkdir()
    (tmp / "broken").mkdir()
    (tmp / "broken" / "manifest.json").write_text("{not json")
    other_hash = config_hash(load_config_from(tmp / "seed.yaml", {**GOOD, "seed": 1}))
    cases: list[tuple[list[str], str]] = [
        (["run", "missing.yaml"], "config file missing.yaml does not exist; pass the path of a YAML config"),
        (["run", "syntax.yaml"], "syntax.yaml: not valid YAML at line 3; fix the syntax"),
        (["run", "list.yaml"], "list.yaml: the file must be a YAML mapping of keys (got list)"),
        (["run", "unknown.yaml"], "unknown.yaml: colour: unknown key; remove it or check its spelling"),
        (["run", "budget.yaml"], "budget.yaml: design.budget: 5 is below n+2 = 6 (n = 4 players plus the empty "
                                 "and full coalitions); use budget >= 6"),
        (["run", "kind.yaml"], "kind.yaml: game.kind: unknown game kind 'rust'; valid kinds: python, diffusion"),
        (["run", "target.yaml"], "target.yaml: game.target: got 'games_pipeline'; use 'module:function', e.g. "
                                 "'my_games:airport'"),
        (["run", "module.yaml"], f"module.yaml: game.target: module 'no_such_mod' not found in the working directory "
                                 f"{tmp} or on PYTHONPATH; run from its folder or add it to PYTHONPATH"),
        (["check", "gpus.yaml"], "gpus.yaml: ray.num_gpus: got 1.5; use a fraction in (0, 1] or a whole number of GPUs"),
        (["run", "seed.yaml"], f"store {store} holds results of config hash {config_hash(cfg)}, this config has hash "
                               f"{other_hash} (the game, seed or replicates changed); use a new store path or --force-new"),
        (["run", "design.yaml"], None),
        (["reduce", "empty"], f"{tmp / 'empty'} is not a contribshap store (no manifest.json); run `contribshap run "
                              "CONFIG` first"),
        (["reduce", "st", "--method", "bogus"], f"--method: unknown method 'bogus'; valid methods: {', '.join(KNOWN_METHODS)}"),
        (["status", "broken"], f"{tmp / 'broken' / 'manifest.json'} is unreadable (JSONDecodeError); run `contribshap "
                               f"repair {tmp / 'broken'} --config CONFIG` to rebuild it from the config and the "
                               "evaluations, or use a new store"),
        (["run", "good.yaml"], None),  # the store is locked by a live driver (below)
    ]
    (tmp / "syntax.yaml").write_text("name: x\ngame: [unclosed\n")
    (tmp / "list.yaml").write_text("- a\n- b\n")
    for name, raw in {
        "unknown.yaml": {**GOOD, "colour": "red"},
        "budget.yaml": _variant(design={"kind": "leverage", "budget": 5}, estimators=["kernelshap"]),
        "kind.yaml": _variant(game__kind="rust"),
        "target.yaml": _variant(game__target="games_pipeline"),
        "module.yaml": _variant(game__target="no_such_mod:f"),
        "gpus.yaml": _variant(ray={"num_gpus": 1.5}),
        "design.yaml": _variant(design={"kind": "leverage", "budget": 10}, estimators=["kernelshap"]),
    }.items():
        (tmp / name).write_text(yaml.safe_dump(raw))
    lock = {"host": socket.gethostname(), "pid": os.getppid(), "started": 0.0, "heartbeat": time.time() + 3600}
    before = snapshot(store)
    for args, expected in cases:
        if args == ["run", "good.yaml"]:
            (store / "driver.lock").write_text(json.dumps(lock))
            before = snapshot(store)
            expected = (f"store {store} is in use by a driver (pid {os.getppid()} on host {socket.gethostname()}, since "
                        f"1970-01-01 00:00:00 UTC); wait for it to finish, or delete {store / 'driver.lock'} if that "
                        "driver is gone")
        if args == ["run", "design.yaml"]:
            expected = (f"store {store} was planned with another design (plan hash "
                        f"{json.loads((store / 'manifest.json').read_text())['plan_hash']}, this config "
                        f"{plan_hash(load_config(tmp / 'design.yaml'))}: "
                        "design kind, seed or options changed); use a new store path or --force-new")
        code = main(args)
        err = capsys.readouterr().err
        assert (code, err) == (2, f"error: {expected}\n"), args
        assert snapshot(store) == before, args
    assert len(cases) >= 10


def test_check_status_and_help(good_store, capsys):
    tmp, cfg = good_store
    assert main(["check", "good.yaml"]) == 0
    out = capsys.readouterr().out
    assert out == (f"ok: good.yaml · name good · game python (4 players) · design exact · store {tmp / 'st'} · "
                   f"config hash {config_hash(cfg)} · plan hash "
                   f"{plan_hash(cfg)}\n")
    assert main(["status", "st"]) == 0
    assert "planned 16 evaluations of 16 coalitions in 1 round(s): ok 16, failed 0, remaining 0, ETA -" in capsys.readouterr().out
    assert main(["status", "st", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 16
    for command in ([], ["check"], ["run"], ["status"], ["reduce"], ["report"], ["evaluate"], ["repair"], ["demo"]):
        assert main([*command, "--help"]) == 0, command
        assert "Usage: contribshap" in capsys.readouterr().out
