"""The cluster path, tested as far as one machine allows.

Static checks (no Ray): the Dockerfile (base image, non-root user, pinned install, smoke test), the KubeRay
RayJob and cluster-launcher manifests (YAML + required fields), the store-derived submission ids.

Live checks on a real local Ray head started by this module (``ray start --head --block`` as a child process
this module owns and ends by its pid; never ``ray stop``, which would end every Ray process of the user):
- a job submitted with ``contribshap submit`` (the same command again attaches), stopped mid-run with the
  Jobs API, resubmitted: the store ends complete and identical to an uninterrupted run (same plan, same
  evaluations, each exactly once), and ``contribshap status`` shows the job next to the store's progress;
- a Ray worker process killed by its pid mid-coalition (during the resubmitted attempt): the coalition is
  retried on another worker and lands once;
- two drivers on one store at once: the second refuses with a clear message naming the lock's owner;
- ``contribshap submit --wait`` exits non-zero when the job fails.

The head's dashboard binds to 127.0.0.1 on ports picked free at start (Ray's GCS and workers listen on every
interface of the machine, which ``make test`` reduces to loopback with a network namespace), Ray's token
authentication is on (``RAY_AUTH_MODE=token``), and its session files go under a tmp folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from contribshap.pipeline.config.schema import parse_config
from contribshap.pipeline.dispatch.submit import base_submission_id, build_entrypoint, resolve_python

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests"))
from games_cluster import MARKERS_ENV, known_value, read_marker  # noqa: E402


# --- static checks: Dockerfile ------------------------------------------------------------------------------
def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current = f"{current} {line}" if current else line
        if current.endswith("\\"):
            current = current[:-1].rstrip()
            continue
        lines.append(current)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_dockerfile_base_user_pinned_install_and_smoke_test():
    instructions = _dockerfile_instructions((ROOT / "docker" / "Dockerfile").read_text())
    args = dict(a.split("=", 1) for kind, a in instructions if kind == "ARG" and "=" in a)
    froms = [a for kind, a in instructions if kind == "FROM"]
    assert len(froms) == 1
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], froms[0])
    constraints = (ROOT / "constraints.txt").read_text()
    ray_pin = re.search(r"^ray==([\d.]+)", constraints, re.M).group(1)
    # 1. a maintained rayproject/ray GPU image (not ray-ml) with the pinned Ray and Python 3.11
    assert re.fullmatch(rf"rayproject/ray:{re.escape(ray_pin)}-py311-cu12\d", image), image
    # 2. the last USER is not root
    users = [a for kind, a in instructions if kind == "USER"]
    assert users and users[-1] not in ("root", "0")
    # 3. every pip install runs under constraints.txt; the package itself adds no dependencies
    installs = [a for kind, a in instructions if kind == "RUN" and "pip install" in a]
    assert installs and all("-c constraints.txt" in a for a in installs)
    assert any("--no-deps" in a and a.rstrip().endswith(" .") for a in installs)
    # 4. nothing weight-like is copied in; the build context skips .venv and weights
    copies = " ".join(a for kind, a in instructions if kind in ("COPY", "ADD"))
    assert not re.search(r"\.(safetensors|ckpt|pt|pth)\b", copies)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "**/*.safetensors" in ignored
    # 5. the smoke test runs at build time and is the default command
    assert any(kind == "RUN" and "contribshap --help" in a for kind, a in instructions)
    assert any(kind == "CMD" and "contribshap" in a for kind, a in instructions)


# --- static checks: manifests ----------------------------------------------------------------------------
def _container_gpu(container: dict) -> int:
    limits = container.get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_rayjob_manifest_schema():
    docs = list(yaml.safe_load_all((ROOT / "cluster" / "rayjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) >= {"RayJob", "PersistentVolumeClaim", "ConfigMap"}
    pvc = by_kind["PersistentVolumeClaim"]
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    job = by_kind["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    # 1. lifecycle: retries on a new cluster, teardown, deadline
    assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] > 0
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    # 2. the entrypoint runs the project's CLI on a config mounted from the ConfigMap
    assert spec["entrypoint"].startswith("contribshap run ")
    config_file = spec["entrypoint"].split()[2]
    config = yaml.safe_load(by_kind["ConfigMap"]["data"][Path(config_file).name])
    cfg = parse_config(config, source="rayjob.yaml ConfigMap", check_paths=False)  # a valid run config
    assert cfg.ray.address == "auto" and cfg.ray.num_gpus > 0 and cfg.store.startswith("/mnt/store/")
    # 3. head + a GPU worker group with nvidia.com/gpu, the store PVC mounted on both
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == re.search(r"^ray==([\d.]+)", (ROOT / "constraints.txt").read_text(), re.M)[1]
    head = cluster["headGroupSpec"]["template"]["spec"]
    groups = cluster["workerGroupSpecs"]
    gpu_groups = [g for g in groups if any(_container_gpu(c) >= 1 for c in g["template"]["spec"]["containers"])]
    assert gpu_groups
    for group in gpu_groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert int(requests["nvidia.com/gpu"]) >= 1
    # 4. Ray's token authentication is on for the whole cluster
    assert cluster["authOptions"]["mode"] == "token"
    store_dir = str(Path(config["store"]).parent)
    for pod in [head] + [g["template"]["spec"] for g in gpu_groups]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
        mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert claims.get(mounts.get(store_dir)) == pvc["metadata"]["name"], (store_dir, mounts, claims)


def test_cluster_launcher_manifest_schema():
    cfg = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    for key in ("cluster_name", "max_workers", "docker", "provider", "available_node_types", "head_node_type"):
        assert key in cfg, key
    assert cfg["docker"]["image"] and cfg["docker"]["container_name"]
    assert any("/mnt/store" in option for option in cfg["docker"]["run_options"])
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    assert workers
    for node in workers.values():
        assert 0 <= node["min_workers"] <= node["max_workers"] <= cfg["max_workers"]
        assert node["node_config"]["InstanceType"].startswith(("g", "p"))  # AWS GPU families
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    # token authentication on every node, with the same token copied to each
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token ray start" in c for c in starts if "ray start" in c)
    assert "-e RAY_AUTH_MODE=token" in " ".join(cfg["docker"]["run_options"])
    assert "~/.ray/auth_token" in cfg["file_mounts"]


# --- static checks: submission ids -----------------------------------------------------------------------
def test_submission_id_is_derived_from_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = base_submission_id("runs/My Store")
    assert a == base_submission_id(tmp_path / "runs" / "My Store")  # relative == absolute
    assert a != base_submission_id("runs/other")
    assert re.fullmatch(r"contribshap-my-store-[0-9a-f]{12}", a)
    entry = build_entrypoint("/opt/py", "cfg.yaml", tmp_path / "s", run_args=["--x", "1"])
    assert entry.startswith("/opt/py -m contribshap.pipeline.products.cli run cfg.yaml --store ")
    assert "--address auto" in entry and entry.endswith("--x 1")
    assert resolve_python("auto", "http://127.0.0.1:8265") == sys.executable
    assert resolve_python("auto", "http://10.0.0.5:8265") == "python"
    assert resolve_python("/x/python", "http://127.0.0.1:8265") == "/x/python"


def test_unreachable_dashboard_is_one_clear_line(tmp_path, monkeypatch):
    from contribshap.pipeline.dispatch.submit import SUBMISSION_FILE, SubmitError, job_status, submit

    monkeypatch.chdir(tmp_path)
    assert job_status(tmp_path / "store") is None  # never submitted
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({
        "store": "store", "game": {"kind": "python", "target": "x:y", "n_players": 2}, "design": {"kind": "exact"},
    }))
    dead = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(SubmitError, match=r"cannot reach the Ray dashboard at http://127\.0\.0\.1:\d+ .*fix --address"):
        submit("config.yaml", address=dead)
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / SUBMISSION_FILE).write_text(json.dumps(
        {"address": dead, "base_id": base_submission_id("store"), "submission_id": "x-a1", "attempt": 1}))
    info = job_status(tmp_path / "store")
    assert info["status"] == "UNREACHABLE" and dead in info["message"]


# --- live checks: a real local Ray head owned by this module ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """``ray start --head --block`` on free loopback ports, session files in a short tmp folder.

    Yields ``{"gcs": host:port, "dashboard": url, "markers": folder, "tmp": folder}``; ends the head by
    its pid (SIGTERM, then SIGKILL of its process group), never with ``ray stop``.
    """
    tmp = tmp_path_factory.mktemp("cluster")
    markers = tmp / "markers"
    markers.mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="cs-ray-"))  # short: Ray's socket paths must stay < 108 chars
    port, dash = _free_port(), _free_port()
    ports = {
        "--ray-client-server-port": _free_port(), "--dashboard-agent-listen-port": _free_port(),
        "--dashboard-agent-grpc-port": _free_port(), "--metrics-export-port": _free_port(),
        "--node-manager-port": _free_port(), "--object-manager-port": _free_port(),
        "--runtime-env-agent-port": _free_port(),
    }
    cmd = [str(BIN / "ray"), "start", "--head", "--port", str(port), "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--num-cpus", "2", "--num-gpus", "0", "--block",
           "--temp-dir", str(ray_tmp), "--include-dashboard", "true", "--disable-usage-stats"]
    for flag, value in ports.items():
        cmd += [flag, str(value)]
    log = open(tmp / "head.log", "w")  # noqa: SIM115 (closed at teardown)
    head = subprocess.Popen(cmd, env=_env(**{MARKERS_ENV: str(markers)}), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 60
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray start exited {head.returncode}: {(tmp / 'head.log').read_text()[-2000:]}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        gcs = re.search(r"ray start --address='([^']+)'", (tmp / "head.log").read_text())
        yield {"gcs": gcs.group(1) if gcs else f"127.0.0.1:{port}", "dashboard": address, "markers": markers,
               "tmp": tmp}
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=10)
        log.close()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _workdir(tmp: Path, name: str, *, n_players: int, sleep_s: float,
             target: str = "games_cluster:weighted_sum") -> Path:
    """A small working directory (travels with the job): the games module and one config."""
    work = tmp / name
    work.mkdir()
    shutil.copy(ROOT / "tests" / "games_cluster.py", work / "games_cluster.py")
    config = {
        "name": name,
        "store": f"stores/{name}",
        "seed": 0,
        "game": {"kind": "python", "target": target, "n_players": n_players,
                 "options": {"sleep_s": sleep_s}},
        "design": {"kind": "exact"},
        "estimators": ["kernelshap"],
        "ray": {"num_cpus": 1, "max_retries": 3, "stale_lock_s": 30},
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return work


def _cli(*args: str, cwd: Path, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "contribshap"), *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def _evals(store: Path) -> dict[tuple[str, int], dict]:
    """``{(coalition_key, replicate): row}`` read file by file; asserts one file per job, all readable."""
    manifest = json.loads((store / "manifest.json").read_text())
    files = sorted((store / "evals" / manifest["config_hash"]).glob("*-r*.parquet"))
    rows = {}
    for path in files:
        row = pq.read_table(path).to_pylist()[0]
        key = (row["coalition_key"], row["replicate"])
        assert key not in rows, f"{key} stored twice"
        assert path.name == f"{key[0]}-r{key[1]}.parquet"
        rows[key] = row
    return rows


def _assert_complete(store: Path, n_players: int) -> dict[tuple[str, int], dict]:
    rows = _evals(store)
    assert len(rows) == 2**n_players  # exact design: every coalition once
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["value"] == known_value(np.array([c == "1" for c in row["mask"]]))
    assert not list(store.rglob(".*.tmp-*")), "a temporary file was left behind"
    return rows


@pytest.fixture(scope="module")
def reference(ray_head):
    """Two drivers started at once on one store (n=4, exact: 16 coalitions x 0.6 s on 2 CPUs).

    Returns both processes' (returncode, stderr) and the store, which the winner completes: it is also the
    uninterrupted reference run for the stop/resubmit test.
    """
    work = _workdir(ray_head["tmp"], "reference", n_players=4, sleep_s=1.2)
    store = work / "stores" / "reference"
    drivers = [_cli("run", "config.yaml", "--address", ray_head["gcs"], "--no-progress", cwd=work) for _ in range(2)]
    results = [(p.communicate(timeout=120)[1], p.returncode) for p in drivers]
    results = [(code, err) for err, code in results]
    return {"work": work, "store": store, "results": results}


def test_two_drivers_on_one_store_the_second_refuses(reference):
    codes = sorted(code for code, _ in reference["results"])
    assert codes == [0, 2], reference["results"]
    refused = next(err for code, err in reference["results"] if code == 2)
    assert re.search(r"error: store .*reference is in use by a driver \(pid \d+ on host \S+, since ", refused), refused
    assert "driver.lock" in refused  # the message names the lock file (what to delete if that driver is gone)
    _assert_complete(reference["store"], 4)
    assert not (reference["store"] / "driver.lock").exists()


@pytest.fixture(scope="module")
def lifecycle(ray_head, reference):
    """One job's life on a 4-player store, recorded for the tests below:

    1. ``contribshap submit`` (attempt -a1), the same command again while it runs (must attach), then
       ``stop_job`` once a few evaluations have landed;
    2. ``contribshap submit --wait`` (attempt -a2 resumes); while it runs, the worker process of one running
       coalition is killed by its pid (SIGKILL);
    3. ``contribshap status --json``.
    """
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head["dashboard"])
    # 1.2 s a coalition: the second submit must find -a1 still running, even on a loaded machine
    work = _workdir(ray_head["tmp"], "resubmit", n_players=4, sleep_s=1.2)
    store = work / "stores" / "resubmit"
    record: dict = {"store": store, "work": work}
    # 1. submit, submit again while running, stop after a few evaluations
    first = _cli("submit", "config.yaml", "--address", ray_head["dashboard"], cwd=work)
    record["first"] = (*first.communicate(timeout=60), first.returncode)
    again = _cli("submit", "config.yaml", "--address", ray_head["dashboard"], cwd=work)
    record["again"] = (*again.communicate(timeout=60), again.returncode)
    first_id = base_submission_id(store) + "-a1"
    deadline = time.monotonic() + 90
    while len(list(store.glob("evals/*/*-r0.parquet"))) < 3:
        assert time.monotonic() < deadline, client.get_job_logs(first_id)[-3000:]
        time.sleep(0.2)
    record["stop_accepted"] = client.stop_job(first_id)
    while str(client.get_job_status(first_id).value) not in ("STOPPED", "FAILED", "SUCCEEDED"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    record["first_status"] = str(client.get_job_status(first_id).value)
    record["partial"] = _evals(store)
    # 2. resubmit and kill one running coalition's worker process
    since = time.time_ns()
    second = _cli("submit", "config.yaml", "--address", ray_head["dashboard"], "--wait", cwd=work)
    victim = None
    while victim is None and second.poll() is None and time.monotonic() < deadline + 60:
        running = [p for p in ray_head["markers"].glob("*.run")
                   if len(read_marker(p).bits) == 4 and read_marker(p).started_ns > since]
        if running:
            victim = running[0]
            os.kill(read_marker(victim).pid, signal.SIGKILL)
        time.sleep(0.02)
    record["victim"], record["since"] = victim, since
    record["second"] = (*second.communicate(timeout=120), second.returncode)
    # 3. status
    status = _cli("status", str(store), "--json", cwd=work)
    record["status"] = json.loads(status.communicate(timeout=60)[0])
    return record


def test_submit_attaches_to_a_running_attempt(lifecycle):
    store = lifecycle["store"]
    out, err, code = lifecycle["first"]
    assert code == 0 and out.strip().splitlines()[-1] == base_submission_id(store) + "-a1", err
    out, err, code = lifecycle["again"]  # while -a1 is pending/running: attach, never a duplicate
    assert code == 0 and out.strip().splitlines()[-1] == base_submission_id(store) + "-a1", err
    assert "attached to running job" in out


def test_stop_and_resubmit_resumes_and_matches_uninterrupted_run(lifecycle, reference):
    store, partial = lifecycle["store"], lifecycle["partial"]
    # 1. the first attempt was stopped mid-run
    assert lifecycle["stop_accepted"] and lifecycle["first_status"] == "STOPPED"
    assert 3 <= len(partial) < 16, "the job was not stopped mid-run"
    # 2. the resubmission is attempt -a2 of the same lineage, resumed, and ran only the missing evaluations
    out, err, code = lifecycle["second"]
    assert code == 0, out[-3000:] + err[-3000:]
    assert out.strip().splitlines()[-1] == base_submission_id(store) + "-a2"
    assert f"resuming after {base_submission_id(store)}-a1: STOPPED" in out
    assert f"{16 - len(partial)} evaluated" in out
    # 3. the store equals the uninterrupted run's: plan, keys, values, seeds; each evaluation exactly once
    resumed = _assert_complete(store, 4)
    expected = _assert_complete(reference["store"], 4)
    assert resumed.keys() == expected.keys()
    for key, row in expected.items():
        assert (resumed[key]["mask"], resumed[key]["value"], resumed[key]["seed"]) == (row["mask"], row["value"], row["seed"])
    assert pq.read_table(store / "plan.parquet").equals(pq.read_table(reference["store"] / "plan.parquet"))
    for key in partial:  # evaluations of the stopped attempt were kept, not redone
        assert resumed[key]["finished_at"] == partial[key]["finished_at"]


def test_worker_killed_mid_coalition_is_retried_and_lands_once(lifecycle, ray_head):
    victim = lifecycle["victim"]
    assert victim is not None, "no coalition of the resubmitted attempt was seen running"
    killed = read_marker(victim)
    pid, bits = killed.pid, killed.bits
    starts = [m for m in map(read_marker, ray_head["markers"].iterdir())
              if m.bits == bits and m.started_ns > lifecycle["since"]]
    assert victim.exists(), "the killed attempt finished anyway"
    assert any(not m.running and m.pid != pid for m in starts), "not retried elsewhere"
    rows = _assert_complete(lifecycle["store"], 4)  # every coalition once, ok, with its known value
    (row,) = [r for r in rows.values() if r["mask"] == bits]
    assert not row["worker"].endswith(f":{pid}")


def test_status_shows_the_job_next_to_the_store_progress(lifecycle):
    info = lifecycle["status"]
    assert (info["ok"], info["remaining"]) == (16, 0)
    assert info["job"]["submission_id"] == base_submission_id(lifecycle["store"]) + "-a2"
    assert info["job"]["status"] == "SUCCEEDED"
    assert [a["status"] for a in info["job"]["attempts"]] == ["STOPPED", "SUCCEEDED"]


def test_submit_wait_exits_nonzero_when_the_job_fails(ray_head):
    # the config is valid where it is submitted (cluster-side paths are not checked there), but the job's
    # driver cannot import the game module: it exits 2 and the job FAILS
    work = _workdir(ray_head["tmp"], "failing", n_players=2, sleep_s=0.0, target="no_such_module:game")
    proc = _cli("submit", "config.yaml", "--address", ray_head["dashboard"], "--wait", cwd=work)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-2000:] + err[-2000:]
    assert "ended: FAILED" in out
    assert "error: " in out and "no_such_module" in out  # the job's one-line error reached the submitter


@pytest.mark.slow
def test_submit_and_status_use_the_token_at_hand_without_ray_auth_mode(ray_head):
    """A token-protected head (``ray start --head`` with token auth), a submitting process whose environment
    has no ``RAY_AUTH_MODE`` (the token is in ~/.ray/auth_token): submit, status and the values work."""
    from games_pipeline import airport_shapley

    work = ray_head["tmp"] / "token"
    work.mkdir()
    shutil.copy(ROOT / "tests" / "games_pipeline.py", work / "games_pipeline.py")
    n = 5
    (work / "config.yaml").write_text(yaml.safe_dump({
        "name": "token", "store": "stores/token", "game": {"kind": "python", "target": "games_pipeline:airport",
                                                           "n_players": n},
        "design": {"kind": "exact"}, "estimators": ["kernelshap"], "ray": {"num_cpus": 1},
    }, sort_keys=False))
    env = {k: v for k, v in _env().items() if k != "RAY_AUTH_MODE"}
    assert Path.home().joinpath(".ray", "auth_token").is_file()

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "contribshap"), *args], cwd=work, env={**env, **extra},
                              capture_output=True, text=True, timeout=120)

    # 1. a client that sends no token is refused with the auth fix, not "start the cluster"
    refused = cli("submit", "config.yaml", "--address", ray_head["dashboard"], RAY_AUTH_MODE="disabled")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: the Ray dashboard at {ray_head['dashboard']} needs the cluster's auth token (none was sent); "
        "export RAY_AUTH_MODE=token and put the cluster's token at ~/.ray/auth_token (or in RAY_AUTH_TOKEN; "
        "`ray get-auth-token` on the head prints it)"], refused.stderr
    assert not (work / "stores").exists()
    # 2. without RAY_AUTH_MODE: the token at hand is used; the job runs to the end
    submitted = cli("submit", "config.yaml", "--address", ray_head["dashboard"], "--wait")
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    store = work / "stores" / "token"
    assert submitted.stdout.strip().splitlines()[-1] == base_submission_id(store) + "-a1"
    # 3. status shows the job's state from the cluster
    status = cli("status", str(store), "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["job"]["status"] == "SUCCEEDED", info["job"]
    assert (info["ok"], info["remaining"]) == (2**n, 0)
    # 4. the exact design gives the exact Shapley values of the airport game
    reduced = cli("reduce", str(store), "--json")
    assert reduced.returncode == 0, reduced.stderr
    entry = json.loads(reduced.stdout)["cost"]["kernelshap"]
    values = [c["value"] for c in entry["contributors"]]
    np.testing.assert_allclose(values, airport_shapley(n), rtol=0, atol=1e-9)
