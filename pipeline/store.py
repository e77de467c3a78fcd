"""The store: a folder that, with the plan, is the only state of a run (layout in docs/ARCHITECTURE.md).

- ``manifest.json``: format version, name, config hash, plan hash, contributors, property names, code
  version, created/updated. :func:`open_store` refuses a store made for another config hash or design.
- ``evals/<namespace>/<coalition_key>-r<replicate>.parquet``: one row per evaluation, written atomically
  (temporary name in the same folder, then ``os.replace``) by the worker that ran it. A retried or
  duplicated job overwrites its own file, so nothing is ever counted twice.
- ``evals/<namespace>/_index.parquet``: a cache of rows already read, keyed by file name, size and
  mtime. A scan lists the folder (no file opened), then reads only files that are new or changed since
  the cache was written: a resume over 10,000 evaluations takes well under a second. The files stay the
  truth; the cache is rebuilt from them whenever it is missing or unreadable.
- ``driver.lock``: JSON ``{host, pid, started, heartbeat}``; one driver per store. A lock whose pid is
  dead on this host, or whose heartbeat is older than ``stale_after_s``, is taken over.

Unreadable evaluation files (a truncated write from a killed copy tool, a disk error) are skipped with
a warning naming them; they count as not done, so the next run evaluates them again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from contribshap.pipeline.config import ContribshapError

__all__ = [
    "EVAL_COLUMNS",
    "RESERVED_COLUMNS",
    "DriverLock",
    "LockError",
    "Store",
    "StoreError",
    "atomic_write_bytes",
    "atomic_write_json",
    "eval_file_name",
]

FORMAT_VERSION = 1
#: Fixed columns of an evaluation row, in file order (property columns go after ``attempt``).
EVAL_COLUMNS: dict[str, pa.DataType] = {
    "coalition_key": pa.string(),
    "mask": pa.string(),
    "size": pa.int32(),
    "replicate": pa.int32(),
    "seed": pa.int64(),
    "status": pa.string(),
    "error": pa.string(),
    "attempt": pa.int32(),
}
TIMING_COLUMNS: dict[str, pa.DataType] = {
    "finetune_s": pa.float64(),
    "sample_s": pa.float64(),
    "eval_s": pa.float64(),
    "wall_s": pa.float64(),
    "worker": pa.string(),
    "started_at": pa.float64(),
    "finished_at": pa.float64(),
    "info": pa.string(),
}
#: Names a game may not use for a property.
RESERVED_COLUMNS = frozenset({*EVAL_COLUMNS, *TIMING_COLUMNS, "section", "namespace"})
_INDEX_NAME = "_index.parquet"
#: Threads reading evaluation files missing from the cache (pyarrow releases the GIL while reading).
_READ_THREADS = 8


class StoreError(ContribshapError):
    """A store is unusable for this run (other config, other design, missing files)."""


class LockError(ContribshapError):
    """Another live driver holds ``driver.lock``."""


# --- atomic writes ---------------------------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name in the same folder and ``os.replace``."""
    tmp = _tmp_name(path)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, payload: Any) -> None:
    """JSON (indented, keys sorted) written atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """One Parquet file written atomically."""
    tmp = _tmp_name(path)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def eval_file_name(coalition_key: str, replicate: int) -> str:
    """``<coalition_key>-r<replicate>.parquet``."""
    return f"{coalition_key}-r{int(replicate)}.parquet"


def _parse_eval_name(name: str) -> tuple[str, int] | None:
    if not name.endswith(".parquet") or name.startswith((".", "_")):
        return None
    stem = name[: -len(".parquet")]
    key, sep, rep = stem.rpartition("-r")
    if not sep or not rep.isdigit():
        return None
    return key, int(rep)


def _read_one(path: Path) -> dict[str, Any] | BaseException | None:
    """The row of one evaluation file; the exception when unreadable; None when it vanished."""
    try:
        table = pq.read_table(path)
        if table.num_rows != 1:
            raise ValueError(f"{table.num_rows} rows")
        return table.to_pylist()[0]
    except FileNotFoundError:
        return None
    except Exception as error:
        return error


def row_to_table(row: dict[str, Any]) -> pa.Table:
    """One evaluation row -> a one-row table with the fixed column types (properties as float64)."""
    columns = {}
    for name, value in row.items():
        dtype = EVAL_COLUMNS.get(name) or TIMING_COLUMNS.get(name) or pa.float64()
        columns[name] = pa.array([value], type=dtype)
    return pa.table(columns)


# --- the store ----------------------------------------------------------------------------------------------
@dataclass
class EvalScan:
    """What a scan of one namespace found.

    Attributes:
        rows: every readable row (one per file), as dicts.
        unreadable: file names skipped because they could not be read.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def status_by_job(self) -> dict[tuple[str, int], str]:
        """(coalition_key, replicate) -> status (``ok`` / ``failed``)."""
        return {(r["coalition_key"], int(r["replicate"])): r["status"] for r in self.rows}

    def ok_jobs(self) -> set[tuple[str, int]]:
        return {job for job, status in self.status_by_job().items() if status == "ok"}


class Store:
    """Paths and readers/writers of one store folder (no Ray, no torch).

    Args:
        root: the store folder (absolute or relative to the working directory).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    # paths
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def plan_path(self) -> Path:
        return self.root / "plan.parquet"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def lock_path(self) -> Path:
        return self.root / "driver.lock"

    @property
    def estimates_dir(self) -> Path:
        return self.root / "estimates"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    def evals_dir(self, namespace: str) -> Path:
        return self.root / "evals" / namespace

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # manifest
    def read_manifest(self) -> dict[str, Any]:
        """The manifest; :class:`StoreError` when missing or unreadable."""
        if not self.manifest_path.is_file():
            raise StoreError(
                f"{self.root} is not a contribshap store (no manifest.json); run `contribshap run CONFIG` first"
            )
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise StoreError(
                f"{self.manifest_path} is unreadable ({type(error).__name__}); restore it or use a new store"
            ) from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "updated": time.time()}
        atomic_write_json(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.read_manifest()
        manifest.update(fields)
        self.write_manifest(manifest)
        return manifest

    def create(
        self, *, name: str, config_hash: str, plan_hash: str, force_new: bool = False,
        code_version: str = "",
    ) -> dict[str, Any]:
        """Create the store, or check that an existing one belongs to this config and design.

        Args:
            name: run name.
            config_hash / plan_hash: see :mod:`contribshap.pipeline.config`.
            force_new: move an existing store aside to ``<store>.old-<UTC time>`` and start a new one.

        Raises:
            StoreError: the existing store holds another config hash or another design (and not force_new).
        """
        if self.exists() and force_new:
            aside = self.root.with_name(f"{self.root.name}.old-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}")
            shutil.move(str(self.root), aside)
            warnings.warn(f"--force-new: moved the previous store to {aside}", stacklevel=2)
        if self.exists():
            manifest = self.read_manifest()
            if manifest.get("config_hash") != config_hash:
                raise StoreError(
                    f"store {self.root} holds results of config hash {manifest.get('config_hash')}, this "
                    f"config has hash {config_hash} (the game, seed or replicates changed); use a new store "
                    "path or --force-new"
                )
            if manifest.get("plan_hash") != plan_hash:
                raise StoreError(
                    f"store {self.root} was planned with another design (plan hash {manifest.get('plan_hash')}, "
                    f"this config {plan_hash}: design kind, seed or options changed); use a new store path "
                    "or --force-new"
                )
            return manifest
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "evals").mkdir(exist_ok=True)
        now = time.time()
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": name,
            "config_hash": config_hash,
            "plan_hash": plan_hash,
            "contributors": None,
            "property_names": [],
            "code_version": code_version,
            "created": now,
        }
        self.write_manifest(manifest)
        return manifest

    # evaluations
    def write_eval(self, namespace: str, row: dict[str, Any]) -> Path:
        """Write one evaluation row atomically to ``evals/<namespace>/<key>-r<rep>.parquet``."""
        folder = self.evals_dir(namespace)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / eval_file_name(row["coalition_key"], row["replicate"])
        atomic_write_table(path, row_to_table(row))
        return path

    def scan(self, namespace: str, *, update_index: bool = True, warn: bool = True) -> EvalScan:
        """Every readable evaluation of ``namespace`` (fast: see the module docstring).

        Args:
            namespace: folder under ``evals/`` (the config hash, or ``<hash>-<variant>``).
            update_index: write the refreshed cache back when files were read.
            warn: emit one warning naming the unreadable files.
        """
        folder = self.evals_dir(namespace)
        if not folder.is_dir():
            return EvalScan()
        # 1. list the folder: names, sizes and mtimes (one stat per file, no file opened)
        listing: dict[str, tuple[int, int]] = {}
        with os.scandir(folder) as entries:
            for entry in entries:
                if _parse_eval_name(entry.name) is None:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    stat = entry.stat()
                    listing[entry.name] = (stat.st_size, stat.st_mtime_ns)
        # 2. rows the cache already holds for unchanged files
        cached = self._read_index(folder)
        rows: dict[str, dict[str, Any]] = {}
        for row in cached:
            name = row.pop("_file")
            size, mtime = row.pop("_size"), row.pop("_mtime_ns")
            if listing.get(name) == (size, mtime):
                rows[name] = row
        # 3. read new or changed files; skip unreadable ones
        unreadable = []
        fresh = 0
        missing = sorted(set(listing) - set(rows))
        paths = [folder / name for name in missing]
        if len(paths) > 64:
            with ThreadPoolExecutor(max_workers=_READ_THREADS) as pool:
                results = list(pool.map(_read_one, paths))
        else:
            results = [_read_one(path) for path in paths]
        for name, result in zip(missing, results, strict=True):
            if result is None:
                continue  # removed while we listed
            if isinstance(result, BaseException):
                unreadable.append(name)
            else:
                rows[name] = result
                fresh += 1
        if warn and unreadable:
            warnings.warn(
                f"skipped {len(unreadable)} unreadable evaluation file(s) in {folder}: "
                f"{', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''} (they will be run again)",
                stacklevel=2,
            )
        if update_index and (fresh or len(rows) != len(cached)):
            self._write_index(folder, rows, listing)
        return EvalScan(rows=[rows[name] for name in sorted(rows)], unreadable=unreadable)

    def remember(self, namespace: str, rows: Iterable[dict[str, Any]]) -> None:
        """Write the scan cache from rows the caller already holds (the driver, from task results).

        One ``stat`` per file and no file read: the driver calls this every few seconds, so a resume
        after ``kill -9`` reads only the files written since the last call.
        """
        folder = self.evals_dir(namespace)
        by_name: dict[str, dict[str, Any]] = {}
        listing: dict[str, tuple[int, int]] = {}
        for row in rows:
            name = eval_file_name(row["coalition_key"], row["replicate"])
            with contextlib.suppress(FileNotFoundError):
                stat = (folder / name).stat()
                listing[name] = (stat.st_size, stat.st_mtime_ns)
                by_name[name] = row
        self._write_index(folder, by_name, listing)

    def _read_index(self, folder: Path) -> list[dict[str, Any]]:
        path = folder / _INDEX_NAME
        if not path.is_file():
            return []
        try:
            return pq.read_table(path).to_pylist()
        except Exception:
            return []

    def _write_index(self, folder: Path, rows: dict[str, dict[str, Any]], listing: dict[str, tuple[int, int]]) -> None:
        records = []
        for name, row in rows.items():
            if name not in listing:
                continue
            size, mtime = listing[name]
            records.append({**row, "_file": name, "_size": size, "_mtime_ns": mtime})
        if not records:
            return
        columns: dict[str, list[Any]] = {}
        for record in records:
            for column in record:
                columns.setdefault(column, [])
        for column in columns:
            columns[column] = [record.get(column) for record in records]
        types = {**EVAL_COLUMNS, **TIMING_COLUMNS, "_file": pa.string(), "_size": pa.int64(), "_mtime_ns": pa.int64()}
        table = pa.table({c: pa.array(v, type=types.get(c, pa.float64())) for c, v in columns.items()})
        with contextlib.suppress(OSError):
            atomic_write_table(folder / _INDEX_NAME, table)

    def namespaces(self) -> list[str]:
        folder = self.root / "evals"
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


# --- the driver lock ----------------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped by its parent) is dead for our purpose
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
        if handle.read().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


class DriverLock:
    """``<store>/driver.lock``: one driver per store.

    Args:
        path: the lock file.
        stale_after_s: a lock whose heartbeat is older than this is taken over (default 120 s).

        heartbeat_s: a background thread refreshes the heartbeat this often while the lock is held
            (also during a long blocking ``prepare``); ``None`` = no thread, call :meth:`heartbeat`.

    Use as a context manager.
    """

    def __init__(self, path: Path, *, stale_after_s: float = 120.0, heartbeat_s: float | None = None) -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            with contextlib.suppress(OSError):
                self.heartbeat()

    def _read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        if not holder:
            return True  # unreadable lock: a writer died mid-write
        if holder.get("host") == self.owner["host"] and not _pid_alive(int(holder.get("pid", -1))):
            return True
        beat = float(holder.get("heartbeat", holder.get("started", 0)))
        return time.time() - beat > self.stale_after_s

    def acquire(self) -> None:
        """Take the lock (or a stale one); :class:`LockError` if a live driver holds it."""
        payload = json.dumps({**self.owner, "heartbeat": time.time()}).encode()
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                if holder is None:
                    continue
                if holder.get("host") == self.owner["host"] and holder.get("pid") == self.owner["pid"]:
                    self.heartbeat()
                    return
                if not self._stale(holder):
                    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(holder.get("started", 0))))
                    raise LockError(
                        f"store {self.path.parent} is in use by a driver (pid {holder.get('pid')} on host "
                        f"{holder.get('host')}, since {started}); wait for it to finish, or delete "
                        f"{self.path} if that driver is gone"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
            if self.heartbeat_s is not None and self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, name="driver-lock-heartbeat", daemon=True)
                self._thread.start()
            return
        raise LockError(f"could not take {self.path}: another driver keeps taking it; retry in a minute")

    def heartbeat(self) -> None:
        """Refresh the heartbeat (only while we still own the lock)."""
        holder = self._read()
        if holder and holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
            atomic_write_json(self.path, {**self.owner, "heartbeat": time.time()})

    def release(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        holder = self._read()
        if holder and holder.get("pid") == self.owner["pid"] and holder.get("host") == self.owner["host"]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def __enter__(self) -> DriverLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def unique(items: Iterable[Any]) -> list[Any]:
    """Items in first-seen order without duplicates."""
    return list(dict.fromkeys(items))
