"""Store: manifest checks, atomic writes, cached scans, corrupt files, the driver lock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from contribshap.pipeline import store as store_module
from contribshap.pipeline.store import DriverLock, LockError, Store, StoreError


def _row(key: str, rep: int = 0, status: str = "ok", **values: float) -> dict:
    return {"coalition_key": key, "mask": "0101", "size": 2, "replicate": rep, "seed": 7, "status": status,
            "error": None if status == "ok" else "ValueError: boom", "attempt": 1, **values, "wall_s": 0.5,
            "worker": "h:1", "started_at": 1.0, "finished_at": 2.0, "info": "{}"}


def test_create_refuses_other_config_or_design(tmp_path):
    store = Store(tmp_path / "s")
    store.create(name="a", config_hash="aaaa", plan_hash="pppp")
    assert store.create(name="a", config_hash="aaaa", plan_hash="pppp")["config_hash"] == "aaaa"
    with pytest.raises(StoreError) as info:
        store.create(name="a", config_hash="bbbb", plan_hash="pppp")
    assert str(info.value) == (
        f"store {store.root} holds results of config hash aaaa, this config has hash bbbb (the game, seed or "
        "replicates changed); use a new store path or --force-new"
    )
    with pytest.raises(StoreError, match="was planned with another design"):
        store.create(name="a", config_hash="aaaa", plan_hash="qqqq")
    with pytest.warns(UserWarning, match="moved the previous store to"):
        store.create(name="a", config_hash="bbbb", plan_hash="qqqq", force_new=True)
    assert store.read_manifest()["config_hash"] == "bbbb"
    assert len(list(tmp_path.glob("s.old-*"))) == 1


def test_write_eval_is_atomic_and_scan_reads_rows(tmp_path):
    store = Store(tmp_path)
    store.write_eval("ns", _row("k1", value=1.5))
    store.write_eval("ns", _row("k2", 1, status="failed"))
    names = sorted(os.listdir(store.evals_dir("ns")))
    assert names == ["k1-r0.parquet", "k2-r1.parquet"]  # no temporary files left
    scan = store.scan("ns")
    assert scan.status_by_job() == {("k1", 0): "ok", ("k2", 1): "failed"}
    assert scan.ok_jobs() == {("k1", 0)}
    assert scan.rows[0]["value"] == 1.5


def test_scan_reads_each_file_once_thanks_to_the_index(tmp_path, monkeypatch):
    store = Store(tmp_path)
    for i in range(30):
        store.write_eval("ns", _row(f"k{i:02d}", value=float(i)))
    store.scan("ns")  # builds the index
    calls = []
    real = pq.read_table
    monkeypatch.setattr(store_module.pq, "read_table", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    assert len(store.scan("ns").rows) == 30
    assert [os.path.basename(p) for p in calls] == ["_index.parquet"]
    # a rewritten file (retry overwrote it) is read again; the others come from the index
    time.sleep(0.01)
    store.write_eval("ns", _row("k05", value=99.0))
    calls.clear()
    rows = {r["coalition_key"]: r for r in store.scan("ns").rows}
    assert rows["k05"]["value"] == 99.0 and len(rows) == 30
    assert sorted(os.path.basename(p) for p in calls) == ["_index.parquet", "k05-r0.parquet"]


def test_truncated_file_is_skipped_with_a_warning_naming_it(tmp_path):
    store = Store(tmp_path)
    store.write_eval("ns", _row("good", value=1.0))
    path = store.write_eval("ns", _row("bad", value=2.0))
    path.write_bytes(path.read_bytes()[:40])
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable evaluation file\(s\) in .*: bad-r0.parquet"):
        scan = store.scan("ns")
    assert scan.ok_jobs() == {("good", 0)} and scan.unreadable == ["bad-r0.parquet"]


def test_lock_refuses_a_live_driver_and_takes_over_stale_ones(tmp_path):
    path = tmp_path / "driver.lock"
    # 1. a live holder on this host: refused, with host, pid and the way out
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "started": 0.0, "heartbeat": time.time()}
    path.write_text(json.dumps(holder))
    with pytest.raises(LockError) as info:
        DriverLock(path).acquire()
    assert str(info.value) == (
        f"store {tmp_path} is in use by a driver (pid {os.getppid()} on host {socket.gethostname()}, since "
        f"1970-01-01 00:00:00 UTC); wait for it to finish, or delete {path} if that driver is gone"
    )
    # 2. a dead pid on this host: taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({**holder, "pid": dead.pid}))
    with DriverLock(path) as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        lock.heartbeat()
    assert not path.exists()
    # 3. another host whose heartbeat is older than the timeout: taken over; a fresh one: refused
    path.write_text(json.dumps({**holder, "host": "elsewhere", "heartbeat": time.time() - 500}))
    DriverLock(path, stale_after_s=120).acquire()
    assert json.loads(path.read_text())["host"] == socket.gethostname()
    path.write_text(json.dumps({**holder, "host": "elsewhere", "heartbeat": time.time()}))
    with pytest.raises(LockError):
        DriverLock(path, stale_after_s=120).acquire()


def test_remember_writes_the_cache_from_rows_without_reading_files(tmp_path, monkeypatch):
    store = Store(tmp_path)
    rows = [_row(f"k{i}", value=float(i)) for i in range(100)]
    for row in rows:
        store.write_eval("ns", row)
    store.remember("ns", rows[:90])  # the driver knows 90 rows; 10 landed after its last flush
    calls = []
    real = pq.read_table
    monkeypatch.setattr(store_module.pq, "read_table", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    scan = store.scan("ns")
    assert len(scan.ok_jobs()) == 100
    assert len(calls) == 1 + 10  # the index, then the 10 files it does not hold (read on 8 threads)


def test_the_lock_heartbeat_runs_in_the_background(tmp_path):
    path = tmp_path / "driver.lock"
    with DriverLock(path, heartbeat_s=0.05):
        first = json.loads(path.read_text())["heartbeat"]
        time.sleep(0.3)
        assert json.loads(path.read_text())["heartbeat"] > first
    assert not path.exists()
