"""The Ray driver on the session's local Ray: retries, failures, rounds, window sizing, derived games."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from contribshap.pipeline.config.schema import config_hash, parse_config
from contribshap.pipeline.contracts.errors import NoUsableEvaluationsError
from contribshap.pipeline.dispatch import driver, ray_context
from contribshap.pipeline.dispatch.driver import evaluate_coalitions, lpt_order
from contribshap.pipeline.games.python_game import GameError
from contribshap.pipeline.products.reduce import reduce_store
from contribshap.pipeline.products.run import run
from contribshap.pipeline.products.status import store_status
from contribshap.pipeline.storage.plan import Job, read_plan
from contribshap.pipeline.storage.store import Store

pytestmark = pytest.mark.usefixtures("game_env", "ray_address")


def _cfg(tmp_path, target: str, *, n: int = 4, design=None, options=None, **extra):
    raw = {
        "name": "t", "store": str(tmp_path / "store"), "seed": 0,
        "game": {"kind": "python", "target": f"games_pipeline:{target}", "n_players": n, "options": options or {}},
        "design": design or {"kind": "exact"},
        "estimators": ["kernelshap"],
        "ray": {"num_cpus": 1, "max_retries": 2},
        **extra,
    }
    return parse_config(yaml.safe_load(yaml.safe_dump(raw)), check_paths=False)


def _exact_airport(n: int) -> list[float]:
    return [sum(1.0 / (n - k + 1) for k in range(1, j + 1)) for j in range(1, n + 1)]


def test_transient_errors_are_retried_inside_the_task(tmp_path):
    (tmp_path / "m").mkdir()
    cfg = _cfg(tmp_path, "flaky", options={"marker_dir": str(tmp_path / "m")})
    summary = run(cfg, progress=False)
    assert (summary.evaluated, summary.failed) == (16, 0)
    rows = Store(summary.store).scan(summary.namespace).rows
    assert len(rows) == 16 and {r["attempt"] for r in rows} == {2}
    estimate = reduce_store(summary.store)["cost"]["kernelshap"]
    np.testing.assert_allclose(estimate.value, _exact_airport(4), atol=1e-9)


def test_a_permanent_failure_is_recorded_and_the_run_goes_on(tmp_path, capsys):
    cfg = _cfg(tmp_path, "broken", options={"fail_mask": "0110"}, design={"kind": "leverage", "budget": 16})
    summary = run(cfg, progress=False)
    assert (summary.evaluated, summary.failed) == (15, 1)
    status = store_status(summary.store)
    assert (status["ok"], status["failed"], status["remaining"]) == (15, 1, 1)
    assert status["failed_evaluations"] == [
        {"coalition_key": status["failed_evaluations"][0]["coalition_key"], "mask": "0110", "replicate": 0,
         "error": "ValueError: cannot evaluate 0110"}
    ]
    capsys.readouterr()
    reduce_store(summary.store)
    assert "warning: 1 failed evaluation(s) excluded from the estimates (e.g. 0110 r0: ValueError: cannot " \
        "evaluate 0110); `contribshap run` retries them" in capsys.readouterr().err
    # a second run retries only the failed evaluation (and records it failed again)
    again = run(cfg, progress=False)
    assert (again.evaluated, again.failed, again.skipped) == (0, 1, 15)


def test_a_dead_worker_is_retried_and_the_coalition_lands_once(tmp_path):
    (tmp_path / "m").mkdir()
    cfg = _cfg(tmp_path, "crashy", options={"marker_dir": str(tmp_path / "m"), "crash_mask": "1100"})
    summary = run(cfg, progress=False)
    assert (summary.evaluated, summary.failed) == (16, 0)
    rows = Store(summary.store).scan(summary.namespace).rows
    assert sorted(r["mask"] for r in rows).count("1100") == 1 and len(rows) == 16


def test_reserved_property_names_are_refused(tmp_path):
    cfg = _cfg(tmp_path, "reserved", n=2)
    with pytest.raises(NoUsableEvaluationsError, match=r"^every evaluation failed: "):
        run(cfg, progress=False)
    rows = Store(cfg.store).scan(config_hash(cfg)).rows
    assert {r["status"] for r in rows} == {"failed"}
    assert rows[0]["error"] == "ValueError: property name(s) ['seed'] are reserved store columns; rename them"


def test_a_missing_function_fails_prepare_with_one_clear_line(tmp_path):
    with pytest.raises(GameError) as info:
        run(_cfg(tmp_path, "nope"), progress=False)
    assert str(info.value).startswith("game.target 'games_pipeline:nope': 'games_pipeline' has no function 'nope'; "
                                      "callables there: airport, airport_shapley, broken")


def test_rounds_stop_when_the_ci_target_is_met_and_resume_does_nothing(tmp_path):
    design = {"kind": "paired", "budget": 42}
    loose = _cfg(tmp_path / "a", "noisy", n=6, design=design, stopping={"ci_abs": 100.0, "round_size": 10, "max_rounds": 4})
    summary = run(loose, progress=False)
    # round 0 (5 pairs for 6 players) cannot identify every value: its intervals are infinite and the
    # stopping rule must not fire on them; round 1 identifies them and the loose target is met
    assert summary.rounds == 2 and summary.stopped_because == "CI target met after round 1"
    assert {r["round"] for r in read_plan(Store(summary.store))} == {0, 1}
    # replicates measure the utility noise, so the CI cannot collapse to 0 on a few rows
    tight = _cfg(tmp_path / "b", "noisy", n=6, design=design, replicates={"coalition": 2},
                 stopping={"ci_abs": 1e-6, "round_size": 10, "max_rounds": 4})
    summary = run(tight, progress=False)
    plan = read_plan(Store(summary.store))
    assert summary.rounds == 4 and summary.stopped_because == "budget spent"
    assert sorted({r["round"] for r in plan}) == [0, 1, 2, 3] and len(plan) == 42
    again = run(tight, progress=False)
    assert (again.evaluated, again.skipped) == (0, 2 + 40 * 2)


def test_lpt_order_uses_measured_costs_by_size():
    jobs = [Job(f"k{s}", "", s, 0, 0) for s in (1, 3, 2, 4)]
    assert [j.size for j in lpt_order(jobs, [])] == [4, 3, 2, 1]
    measured = [{"size": 1, "wall_s": 9.0}, {"size": 4, "wall_s": 1.0}]
    assert [j.size for j in lpt_order(jobs, measured)] == [1, 2, 3, 4]


def test_slots_follow_cluster_resources_and_fractional_gpus(monkeypatch):
    import ray
    from contribshap.pipeline.config.schema import RayConfig

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    assert ray_context.slots(RayConfig(num_cpus=0, num_gpus=0.25)) == 8
    assert ray_context.slots(RayConfig(num_cpus=1, num_gpus=0.5)) == 4
    assert ray_context.slots(RayConfig(num_cpus=2)) == 8
    assert ray_context.window(RayConfig(num_cpus=2)) == 16
    assert ray_context.window(RayConfig(num_cpus=2, max_in_flight=3)) == 3


def test_the_window_grows_when_nodes_join_mid_run(tmp_path, monkeypatch):
    import ray

    real_wait, real_resources = ray.wait, ray.cluster_resources
    seen: list[int] = []
    reads = {"n": 0}

    def resources():
        reads["n"] += 1  # the first reads see the real 2 CPUs, later ones a bigger cluster
        return real_resources() if reads["n"] <= 2 else {**real_resources(), "CPU": 8.0}

    def wait(refs, **kwargs):
        seen.append(len(refs))
        return real_wait(refs, **kwargs)

    monkeypatch.setattr(ray, "cluster_resources", resources)
    monkeypatch.setattr(ray, "wait", wait)
    monkeypatch.setattr(driver, "RESOURCE_REFRESH_S", 0.0)
    cfg = _cfg(tmp_path, "slow_airport", n=5, options={"sleep": 0.05}, ray={"num_cpus": 1, "num_gpus": 0.5})
    summary = run(cfg, progress=False)
    assert summary.evaluated == 32
    assert seen[0] <= 4 and max(seen) > 4  # 2 x 2 CPUs at first, then up to 2 x 8


def test_evaluate_coalitions_uses_its_own_namespace_and_section(tmp_path):
    cfg = _cfg(tmp_path, "noisy", n=4, options={"noise": 0.0})
    summary = run(cfg, progress=False)
    before = reduce_store(summary.store)["value"]["kernelshap"].value
    masks = np.array([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=bool)
    rows = evaluate_coalitions(cfg, summary.store, masks, section="holdout", replicates=2,
                               overrides={"game": {"options": {"noise": 1.0}}}, progress=False)
    assert [(r["mask"], r["replicate"]) for r in rows] == [("1100", 0), ("1100", 1), ("0111", 0), ("0111", 1)]
    assert all(r["status"] == "ok" for r in rows) and not math.isclose(rows[0]["value"], 3.0)
    store = Store(summary.store)
    assert len(store.namespaces()) == 2
    assert sum(r["section"] == "holdout" for r in read_plan(store)) == 2
    np.testing.assert_allclose(reduce_store(summary.store)["value"]["kernelshap"].value, before)
    # without overrides the run's own rows are reused (nothing evaluated twice)
    same = evaluate_coalitions(cfg, summary.store, masks, section="holdout", progress=False)
    assert [r["value"] for r in same] == [3.0, 9.0]


def test_gpu_evaluations_reuse_their_worker_process(tmp_path):
    """A worker keeps its game across coalitions also when evaluations ask for a GPU.

    Ray exits the worker after every call of a function declared with ``num_gpus`` unless ``max_calls`` says
    otherwise; then every coalition would run on a new process (and reload its model).
    """
    from collections import Counter

    cfg = _cfg(tmp_path, "airport", n=4, ray={"num_cpus": 0, "num_gpus": 1, "max_retries": 2})
    summary = run(cfg, progress=False)
    rows = Store(cfg.store).scan(summary.namespace).rows
    assert summary.evaluated == len(rows) == 16
    per_worker = Counter(row["worker"] for row in rows)
    assert max(per_worker.values()) > 1, per_worker


# --- driver-side bad input through the real CLI: one exact line, the exit code, the store as it was ----------
def _write(path, raw: dict):
    path.write_text(yaml.safe_dump(raw))
    return path


def _contribshap(contribshap, *args, cwd, env, timeout=180):
    import subprocess

    return subprocess.run([*contribshap, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_run_where_every_evaluation_fails_exits_3_and_reduce_refuses(tmp_path, contribshap, game_env, ray_address):
    from conftest import snapshot

    raw = {"name": "fails", "store": "st", "game": {"kind": "python", "target": "games_eval:always_fails", "n_players": 3},
           "design": {"kind": "exact"}, "estimators": ["exact_shapley"], "ray": {"num_cpus": 1, "max_retries": 0}}
    _write(tmp_path / "fails.yaml", raw)
    store = tmp_path / "st"
    done = _contribshap(contribshap, "run", "fails.yaml", "--address", ray_address, "--no-progress", cwd=tmp_path,
                        env=game_env)
    assert (done.returncode, done.stderr) == (3, (
        f"error: every evaluation failed: store {store} has no ok evaluation (8 of 8 planned failed); see the "
        f"errors with `contribshap status {store}`, fix the game and run again\n")), done.stderr
    assert not (store / "estimates").exists()
    # reduce --json: one line and exit 3, not `{}` and exit 0; nothing written
    before = snapshot(store)
    reduced = _contribshap(contribshap, "reduce", "st", "--json", cwd=tmp_path, env=game_env)
    assert (reduced.returncode, reduced.stdout, reduced.stderr) == (3, "", (
        f"error: nothing to reduce: store {store} has no ok evaluation (8 of 8 planned failed); see the errors "
        f"with `contribshap status {store}`, fix the game and run again\n"))
    assert snapshot(store) == before
    status = _contribshap(contribshap, "status", "st", cwd=tmp_path, env=game_env)
    assert status.returncode == 0 and "ok 0, failed 8, remaining 8" in status.stdout
    assert "failed: 000 r0: RuntimeError: cannot evaluate 000" in status.stdout


def test_unsatisfiable_resources_fail_before_dispatch_and_leave_the_store(tmp_path, contribshap, game_env, ray_address):
    """A task no node can hold would wait forever: one line instead, before the store is written.

    The runs below start their own local Ray (no ``--address``: no wait for an autoscaler) with 2 CPUs.
    """
    import shutil

    from conftest import snapshot

    raw = {"name": "res", "store": "st", "game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 4},
           "design": {"kind": "leverage", "budget": 8}, "estimators": ["kernelshap"]}
    _write(tmp_path / "good.yaml", raw)
    done = _contribshap(contribshap, "run", "good.yaml", "--address", ray_address, "--no-progress", cwd=tmp_path,
                        env=game_env)
    assert done.returncode == 0, done.stderr
    store = tmp_path / "st"
    before = snapshot(store)
    more = {**raw, "design": {"kind": "leverage", "budget": 14}}  # the same store, with work left to dispatch
    cases = {
        "cpus.yaml": ({"num_cpus": 64, "local_num_cpus": 2},
                      "ray.num_cpus: 64 per evaluation, but no node of the Ray cluster has 64 CPUs (1 node, at most 2 "
                      "on one); set ray.num_cpus <= 2, or add a node with 64 CPUs"),
    }
    if shutil.which("nvidia-smi") is None:  # the local instance sees no GPU
        cases["gpus.yaml"] = ({"num_gpus": 1, "local_num_cpus": 2},
                              "ray.num_gpus: 1 per evaluation, but the Ray cluster has no GPU (1 node); set "
                              "ray.num_gpus: 0 to run on CPUs, or add a GPU node")
    for name, (ray_section, expected) in cases.items():
        _write(tmp_path / name, {**more, "ray": ray_section})
        failed = _contribshap(contribshap, "run", name, "--no-progress", cwd=tmp_path, env=game_env)
        assert (failed.returncode, failed.stderr.splitlines()[-1:]) == (2, [f"error: {expected}"]), failed.stderr
        assert [line for line in failed.stderr.splitlines() if line.startswith("error:")] == [f"error: {expected}"]
        assert snapshot(store) == before, name


def test_resources_are_awaited_on_a_cluster_that_may_grow(capsys):
    from contribshap.pipeline.config.schema import RayConfig
    from contribshap.pipeline.dispatch.ray_context import DriverError, require_resources

    cpu_only, with_gpu = [{"CPU": 4.0}], [{"CPU": 4.0}, {"CPU": 8.0, "GPU": 1.0}]
    reads, naps = [cpu_only, cpu_only, with_gpu], []
    require_resources(RayConfig(num_gpus=1), wait_s=60, nodes=lambda: reads.pop(0), sleep=naps.append)
    assert naps == [2.0, 2.0] and "waiting up to 60 s for a Ray node that can run one evaluation: " in capsys.readouterr().err
    with pytest.raises(DriverError) as info:
        require_resources(RayConfig(num_gpus=1), wait_s=5, nodes=lambda: cpu_only, sleep=lambda s: None)
    assert str(info.value) == ("ray.num_gpus: 1 per evaluation, but the Ray cluster has no GPU (1 node); set "
                               "ray.num_gpus: 0 to run on CPUs, or add a GPU node (waited 5 s for the cluster to add one)")
    require_resources(RayConfig(num_cpus=0, num_gpus=0.25), nodes=lambda: [{"CPU": 1.0, "GPU": 1.0}])


def test_progress_in_a_log_is_plain_lines_without_carriage_returns(capsys, monkeypatch):
    import sys

    from contribshap.pipeline.dispatch import driver

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = driver._progress_bar(3, True, "round 0")
    for _ in range(3):
        bar.update(1)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err and err.strip().splitlines()[-1].startswith("round 0: 100%")
