"""The store: a folder that, with the plan, is the only state of a run (layout in docs/ARCHITECTURE.md).

- ``manifest.json``: format version, name, config hash, plan hash, contributors, property names, code
  version, created/updated. :meth:`Store.create` refuses a store made for another config hash or design;
  :meth:`Store.read_manifest` refuses, in one line, a manifest that is not UTF-8 JSON of the right shape,
  one of another ``FORMAT_VERSION``, and a store whose ``plan.parquet`` is gone while evaluations exist
  (``contribshap repair`` rebuilds both from the config and the evaluation files).
- ``evals/<namespace>/<coalition_key>-r<replicate>.parquet``: one row per evaluation, written atomically
  (temporary name in the same folder, then ``os.replace``) by the worker that ran it. A retried or
  duplicated job overwrites its own file, so nothing is ever counted twice; a file whose row is not the
  one its name says (copied over another) is skipped with a warning, so every reader sees at most one
  row per (coalition key, replicate).
- Temporary files ``.<name>.tmp-<pid>`` are removed when a write fails; those a killed writer left
  behind (dead pid, older than :data:`TMP_STALE_S`) are removed by :meth:`Store.clean_temporary`, which
  every ``run`` calls through :meth:`Store.create` unless a live driver holds ``driver.lock``.
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
import math
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
from contribshap.pipeline.config.schema import store_location_problem
from contribshap.pipeline.contracts.errors import ContribshapError
from contribshap.pipeline.contracts.io import TMP_NAME, atomic_write_json, atomic_write_table

__all__ = [
    "EVAL_COLUMNS",
    "RESERVED_COLUMNS",
    "DriverLock",
    "FormatVersionError",
    "LockError",
    "Store",
    "StoreError",
    "eval_file_name",
    "make_row",
    "worker_name",
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
#: Seconds after which a temporary file of a dead writer is removed (a writer on another host of a
#: shared store has a pid this host cannot check; its file is younger than this while it writes).
TMP_STALE_S = 60.0
#: Threads reading evaluation files missing from the cache (pyarrow releases the GIL while reading).
_READ_THREADS = 8


class StoreError(ContribshapError):
    """A store is unusable for this run (other config, other design, missing files)."""


class FormatVersionError(StoreError):
    """The store was written in another ``FORMAT_VERSION`` than this code reads."""


class LockError(ContribshapError):
    """Another live driver holds ``driver.lock``."""


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


def _row_file_name(row: dict[str, Any]) -> str | None:
    """The file name a row belongs in (None for a row without key or replicate)."""
    try:
        return eval_file_name(row["coalition_key"], row["replicate"])
    except (KeyError, TypeError, ValueError):
        return None


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


def _manifest_problem(manifest: Any) -> str | None:
    """What makes parsed JSON not a manifest (None when it is one)."""
    if not isinstance(manifest, dict):
        kinds = {list: "a JSON list", str: "a JSON string", bool: "JSON true/false", type(None): "JSON null"}
        return f"{kinds.get(type(manifest), 'a JSON number')}, not an object"
    for key in ("format_version", "config_hash", "plan_hash"):
        if key not in manifest:
            return f"{key} is missing"
    version = manifest["format_version"]
    if isinstance(version, bool) or not isinstance(version, int):
        return f"format_version is {version!r}, not a whole number"
    for key in ("config_hash", "plan_hash"):
        if not isinstance(manifest[key], str):
            return f"{key} is {manifest[key]!r}, not a string"
    contributors = manifest.get("contributors")
    if contributors is not None and not (
        isinstance(contributors, list)
        and all(isinstance(c, dict) and isinstance(c.get("id"), str) and isinstance(c.get("name"), str)
                for c in contributors)
    ):
        return "contributors is not a list of {id, name} objects"
    names = manifest.get("property_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        return "property_names is not a list of strings"
    return None


def row_to_table(row: dict[str, Any]) -> pa.Table:
    """One evaluation row -> a one-row table with the fixed column types (properties as float64)."""
    columns = {}
    for name, value in row.items():
        dtype = EVAL_COLUMNS.get(name) or TIMING_COLUMNS.get(name) or pa.float64()
        columns[name] = pa.array([value], type=dtype)
    return pa.table(columns)


# --- the row schema: masks and evaluation rows --------------------------------------------------------------
def worker_name() -> str:
    """``host:pid`` of this process (the ``worker`` column)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def make_row(job: dict[str, Any], *, status: str, attempt: int, values: dict[str, float] | None = None,
             error: str | None = None, timings: dict[str, float] | None = None,
             info: dict[str, Any] | None = None, started_at: float = math.nan) -> dict[str, Any]:
    """One evaluation row (schema: :data:`EVAL_COLUMNS`, the properties, :data:`TIMING_COLUMNS`).

    Args:
        job: ``coalition_key``, ``mask``, ``size``, ``replicate``, ``seed`` of the evaluation.
        status: ``ok`` or ``failed``.
        attempt: attempts used (1 = first try).
        values: property -> value (ok rows); names in :data:`RESERVED_COLUMNS` are the caller's to refuse.
        error: one-line error of the last attempt (failed rows), else None.
        timings: any of ``finetune_s``, ``sample_s``, ``eval_s``, ``wall_s`` (missing ones are NaN).
        info: JSON-serialisable extras (stored as a JSON string).
        started_at: unix seconds the evaluation started (NaN when unknown).

    The ``worker`` column is this process (:func:`worker_name`), ``finished_at`` is now.
    """
    timings = timings or {}
    row: dict[str, Any] = {
        "coalition_key": job["coalition_key"], "mask": job["mask"], "size": int(job["size"]),
        "replicate": int(job["replicate"]), "seed": int(job["seed"]), "status": status,
        "error": error, "attempt": int(attempt),
    }
    for name, value in (values or {}).items():
        row[name] = float(value)
    for name in ("finetune_s", "sample_s", "eval_s", "wall_s"):
        row[name] = float(timings.get(name, math.nan))
    row.update({
        "worker": worker_name(), "started_at": float(started_at),
        "finished_at": time.time(), "info": json.dumps(info or {}, default=str),
    })
    return row


# --- the store ----------------------------------------------------------------------------------------------
@dataclass
class EvalScan:
    """What a scan of one namespace found.

    Attributes:
        rows: every readable row (one per file, so one per (coalition key, replicate)), as dicts.
        unreadable: file names skipped: unreadable, or holding the row of another evaluation than their
            name says (a file copied over another); the job of the name counts as not done.
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
        """The manifest of a store whose plan is where the manifest says.

        Raises:
            StoreError: (one line with the fix) no manifest; a manifest that is not UTF-8 JSON, not an
                object with ``format_version``, ``config_hash`` and ``plan_hash``, or of another
                ``FORMAT_VERSION``; ``plan.parquet`` missing while the store holds evaluations or the
                manifest counts planned draws. The first and the last offer ``contribshap repair``.
        """
        manifest = self.load_manifest()
        self._check_plan_present(manifest)
        return manifest

    def repair_hint(self) -> str:
        """The ``contribshap repair`` command that fixes this store (``--config`` when it lacks config.yaml)."""
        config = "" if self.config_path.is_file() else " --config CONFIG"
        return f"run `contribshap repair {self.root}{config}`"

    def load_manifest(self) -> dict[str, Any]:
        """The manifest, checked for encoding, shape and format version, without the plan check
        (``contribshap repair`` reads it this way). Raises :class:`StoreError` as :meth:`read_manifest`."""
        if not self.manifest_path.is_file():
            raise StoreError(
                f"{self.root} is not a contribshap store (no manifest.json); run `contribshap run CONFIG` first"
            )
        rebuild = f"{self.repair_hint()} to rebuild it from the config and the evaluations, or use a new store"
        try:
            manifest = json.loads(self.manifest_path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as error:  # ValueError: UnicodeDecodeError and JSONDecodeError
            raise StoreError(f"{self.manifest_path} is unreadable ({type(error).__name__}); {rebuild}") from None
        problem = _manifest_problem(manifest)
        if problem:
            raise StoreError(f"{self.manifest_path} is not a contribshap manifest ({problem}); {rebuild}")
        if manifest["format_version"] != FORMAT_VERSION:
            raise FormatVersionError(
                f"{self.manifest_path} has format version {manifest['format_version']}, this contribshap reads "
                f"format version {FORMAT_VERSION}; open the store with the contribshap that wrote it "
                f"(code version {manifest.get('code_version') or 'unknown'}) or use a new store"
            )
        return manifest

    def _check_plan_present(self, manifest: dict[str, Any]) -> None:
        """:class:`StoreError` when ``plan.parquet`` is gone but the store was planned (a lost plan would
        read as an empty one: a store that looks finished, estimates without their coalitions)."""
        if self.plan_path.is_file():
            return
        evals = self.count_eval_files(str(manifest["config_hash"]))
        planned = int(manifest.get("planned_draws") or 0)
        if not evals and not planned:
            return  # not planned yet (the first run stopped before planning)
        held = f"{evals} evaluation file(s)" if evals else f"{planned} planned draws in its manifest"
        raise StoreError(
            f"{self.plan_path} is missing but the store holds {held}; {self.repair_hint()} to rebuild the plan "
            "from the config (nothing is evaluated again)"
        )

    def count_eval_files(self, namespace: str) -> int:
        """Evaluation files in ``evals/<namespace>/`` (names only; no file opened)."""
        folder = self.evals_dir(namespace)
        if not folder.is_dir():
            return 0
        with os.scandir(folder) as entries:
            return sum(1 for entry in entries if _parse_eval_name(entry.name) is not None)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {**manifest, "updated": time.time()}
        atomic_write_json(self.manifest_path, manifest)

    def update_manifest(self, **fields: Any) -> dict[str, Any]:
        manifest = self.load_manifest()
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
            config_hash / plan_hash: see :mod:`contribshap.pipeline.config.schema`.
            force_new: move an existing store aside to ``<store>.old-<UTC time>`` and start a new one.

        Raises:
            StoreError: the existing store holds another config hash or another design (and not force_new).
        """
        blocked = store_location_problem(self.root)
        if blocked:
            raise StoreError(f"store {blocked}")
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
            if not self._driver_alive():  # a live driver's workers may be writing right now
                self.clean_temporary()
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

    def _driver_alive(self) -> bool:
        """True while ``driver.lock`` is held by a driver that is not stale (see :class:`DriverLock`)."""
        lock = DriverLock(self.lock_path)
        holder = lock._read()
        return holder is not None and not lock._stale(holder)

    def clean_temporary(self, *, stale_after_s: float = TMP_STALE_S) -> list[Path]:
        """Remove temporary files and folders (``.<name>.tmp-<pid>``) that killed or failed writers left.

        One is removed when its pid is not alive on this host and it was not modified for
        ``stale_after_s`` seconds (a writer on another host of a shared store is still writing a younger
        one). Returns the removed paths.
        """
        removed = []
        now = time.time()
        for folder, dirs, files in os.walk(self.root):
            for name in [*files, *dirs]:
                match = TMP_NAME.match(name)
                if match is None:
                    continue
                path = Path(folder) / name
                try:
                    if _pid_alive(int(match["pid"])) or now - path.lstat().st_mtime < stale_after_s:
                        continue
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
            dirs[:] = [d for d in dirs if not TMP_NAME.match(d)]
        return removed

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
        # 4. a row must be the one its file name says: a copy over another file is skipped, so every
        #    reader sees one row per (coalition key, replicate) (the names are unique in the folder)
        misnamed = sorted(name for name, row in rows.items() if _row_file_name(row) != name)
        for name in misnamed:
            del rows[name]
        if warn and unreadable:
            warnings.warn(
                f"skipped {len(unreadable)} unreadable evaluation file(s) in {folder}: "
                f"{', '.join(unreadable[:5])}{' ...' if len(unreadable) > 5 else ''} (they will be run again)",
                stacklevel=2,
            )
        if warn and misnamed:
            warnings.warn(
                f"skipped {len(misnamed)} evaluation file(s) in {folder} holding another evaluation's row "
                f"(copied over?): {', '.join(misnamed[:5])}{' ...' if len(misnamed) > 5 else ''} "
                "(they will be run again)",
                stacklevel=2,
            )
        unreadable = sorted(unreadable + misnamed)
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
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(payload)
            except BaseException as error:
                os.remove(self.path)  # a full disk: leave no empty lock behind
                if isinstance(error, OSError) and error.filename is None:
                    raise OSError(error.errno, error.strerror, str(self.path)) from error
                raise
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

