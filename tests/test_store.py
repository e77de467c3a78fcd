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
from contribshap.pipeline.contracts import io as io_module
from contribshap.pipeline.storage import store as store_module
from contribshap.pipeline.storage.store import DriverLock, LockError, Store, StoreError


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


# --- integrity: rows that are not what their name says, manifests, temporary files, failed writes ---------
def test_a_file_copied_over_another_is_skipped_so_each_job_has_one_row(tmp_path):
    store = Store(tmp_path)
    store.write_eval("ns", _row("aa", value=1.0))
    store.write_eval("ns", _row("bb", value=2.0))
    store.scan("ns")  # the cache holds both
    folder = store.evals_dir("ns")
    (folder / "bb-r0.parquet").write_bytes((folder / "aa-r0.parquet").read_bytes())
    (folder / "aa-r00.parquet").write_bytes((folder / "aa-r0.parquet").read_bytes())  # same job, another name
    for _ in range(2):  # from the files, then from the cache the first scan wrote
        with pytest.warns(UserWarning, match=r"skipped 2 evaluation file\(s\) in .* holding another evaluation's "
                                             r"row \(copied over\?\): aa-r00.parquet, bb-r0.parquet"):
            scan = store.scan("ns")
        assert [(r["coalition_key"], r["value"]) for r in scan.rows] == [("aa", 1.0)]
        assert scan.unreadable == ["aa-r00.parquet", "bb-r0.parquet"]


def _manifest(store: Store, **changes) -> dict:
    store.create(name="a", config_hash="aaaa", plan_hash="pppp")
    manifest = {**json.loads(store.manifest_path.read_text()), **changes}
    store.manifest_path.write_text(json.dumps(manifest))
    return manifest


@pytest.mark.parametrize(("content", "problem"), [
    (b"\x80", "is unreadable (UnicodeDecodeError)"),
    (b"[1]", "is not a contribshap manifest (a JSON list, not an object)"),
    (b'"x"', "is not a contribshap manifest (a JSON string, not an object)"),
    (b'{"format_version": true, "config_hash": "a", "plan_hash": "b"}',
     "is not a contribshap manifest (format_version is True, not a whole number)"),
    (b'{"format_version": 1, "config_hash": 3, "plan_hash": "b"}',
     "is not a contribshap manifest (config_hash is 3, not a string)"),
    (b'{"format_version": 1, "config_hash": "a", "plan_hash": "b", "property_names": "cost"}',
     "is not a contribshap manifest (property_names is not a list of strings)"),
])
def test_a_damaged_manifest_names_the_problem_and_repair(tmp_path, content, problem):
    store = Store(tmp_path / "s")
    _manifest(store)
    store.manifest_path.write_bytes(content)
    for read in (store.read_manifest, store.load_manifest, lambda: store.create(name="a", config_hash="aaaa", plan_hash="pppp")):
        with pytest.raises(StoreError) as info:
            read()
        assert str(info.value) == (f"{store.manifest_path} {problem}; run `contribshap repair {store.root} --config "
                                   "CONFIG` to rebuild it from the config and the evaluations, or use a new store")


def test_the_format_version_is_checked_on_open(tmp_path):
    store = Store(tmp_path / "s")
    _manifest(store, format_version=store_module.FORMAT_VERSION + 1, code_version="2.0")
    with pytest.raises(store_module.FormatVersionError) as info:
        store.read_manifest()
    assert str(info.value) == (f"{store.manifest_path} has format version 2, this contribshap reads format version 1; "
                               "open the store with the contribshap that wrote it (code version 2.0) or use a new store")


def test_a_lost_plan_is_an_error_once_the_store_was_planned(tmp_path):
    store = Store(tmp_path / "s")
    _manifest(store)
    assert store.read_manifest()["config_hash"] == "aaaa"  # not planned yet: fine
    store.update_manifest(planned_draws=14)
    with pytest.raises(StoreError, match=r"plan.parquet is missing but the store holds 14 planned draws in its "):
        store.read_manifest()
    store.write_eval("aaaa", _row("k1", value=1.0))
    (store.root / "config.yaml").write_text("name: a\n")
    with pytest.raises(StoreError) as info:
        store.read_manifest()
    assert str(info.value) == (f"{store.plan_path} is missing but the store holds 1 evaluation file(s); run "
                               f"`contribshap repair {store.root}` to rebuild the plan from the config (nothing is "
                               "evaluated again)")
    assert store.load_manifest()["planned_draws"] == 14  # repair reads it without the plan check


def test_temporary_files_of_dead_writers_are_removed(tmp_path):
    store = Store(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 3600
    stale = [tmp_path / f".plan.parquet.tmp-{dead.pid}", tmp_path / "evals" / f".x.tmp-{dead.pid}"]
    kept = [tmp_path / f".young.tmp-{dead.pid}", tmp_path / f".live.tmp-{os.getpid()}", tmp_path / "plan.tmp-1"]
    stale[1].mkdir(parents=True)
    (stale[1] / "inner").write_text("x")
    for path in [stale[0], *kept]:
        path.write_text("x")
    for path in [*stale, kept[1], kept[2]]:
        os.utime(path, (old, old))
    assert sorted(store.clean_temporary()) == sorted(stale)
    assert [p.exists() for p in [*stale, *kept]] == [False, False, True, True, True]


def test_a_failed_write_leaves_no_temporary_file_and_names_the_target(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "replace", full)
    for write, name in ((lambda p: io_module.atomic_write_json(p, {"a": 1}), "x.json"),
                        (lambda p: Store(tmp_path).write_eval("ns", _row("k")), "ns/k-r0.parquet")):
        with pytest.raises(OSError) as info:
            write(tmp_path / name)
        assert io_module.describe_os_error(info.value) == (
            f"no space left on the device of {tmp_path / 'evals' / name if '/' in name else tmp_path / name}; free "
            "space there and run the same command again (what the store already holds is kept)")
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_os_errors_read_as_one_line_naming_the_real_file(tmp_path):
    import errno

    tmp = str(tmp_path / "estimates" / f".estimates.json.tmp-{os.getpid()}")
    describe = io_module.describe_os_error
    assert describe(OSError(errno.EROFS, "Read-only file system", tmp)) == (
        f"cannot write {tmp_path / 'estimates' / 'estimates.json'}: read-only file system; make it writable, or "
        "copy the store to a writable folder and use the copy")
    assert describe(OSError(errno.EACCES, "Permission denied", "/x/y")) == (
        "cannot access /x/y: permission denied; fix its permissions or use another folder")
    assert describe(OSError(errno.ENOTDIR, "Not a directory", "/etc/passwd/x")) == (
        "/etc/passwd/x: a part of this path is a file, not a folder; use a path outside that file")
    assert describe(OSError(errno.EIO, "Input/output error", "/x")) == (
        "/x: Input/output error; check the path and the disk, then run the same command again")


def test_create_refuses_a_store_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError) as info:
        Store(tmp_path / "f" / "s").create(name="a", config_hash="aaaa", plan_hash="pppp")
    assert str(info.value) == (f"store {tmp_path / 'f' / 's'} cannot be created: {tmp_path / 'f'} is a file, not a "
                               "folder; set store to a path outside it")


def test_create_cleans_temporary_files_unless_a_live_driver_holds_the_store(tmp_path):
    store = Store(tmp_path / "s")
    store.create(name="a", config_hash="aaaa", plan_hash="pppp")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    tmp = store.root / f".plan.parquet.tmp-{dead.pid}"
    tmp.write_text("x")
    os.utime(tmp, (time.time() - 3600,) * 2)
    holder = {"host": socket.gethostname(), "pid": os.getppid(), "started": 0.0, "heartbeat": time.time()}
    store.lock_path.write_text(json.dumps(holder))  # a live driver: its writers may be at work
    store.create(name="a", config_hash="aaaa", plan_hash="pppp")
    assert tmp.exists()
    store.lock_path.write_text(json.dumps({**holder, "pid": dead.pid}))  # killed: its lock is stale
    store.create(name="a", config_hash="aaaa", plan_hash="pppp")
    assert not tmp.exists()
