"""Atomic writes and the one-line description of a failed file operation.

A write goes to ``.<name>.tmp-<pid>`` in the same folder, then ``os.replace``: a reader sees the old file or
the new one, never half of one. A failed write removes its temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["TMP_NAME", "atomic_write_bytes", "atomic_write_json", "atomic_write_table", "describe_os_error"]

#: A temporary file or folder of an atomic write: ``.<name>.tmp-<pid>``.
TMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)$")


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name in the same folder and ``os.replace``."""
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        _failed_write(tmp, path, error)
        raise


def _failed_write(tmp: Path, path: Path, error: BaseException) -> None:
    """Remove the temporary file of a failed write (a full disk must not leave partial files behind);
    an ``OSError`` without a file name (a failed ``write``) is raised again naming ``path``."""
    with contextlib.suppress(OSError):
        tmp.unlink()
    if isinstance(error, OSError) and error.filename is None:
        raise OSError(error.errno, error.strerror, str(path)) from error


def atomic_write_json(path: Path, payload: Any) -> None:
    """JSON (indented, keys sorted) written atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_table(path: Path, table: pa.Table) -> None:
    """One Parquet file written atomically."""
    tmp = _tmp_name(path)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException as error:
        _failed_write(tmp, path, error)
        raise


def describe_os_error(error: OSError) -> str:
    """One line for a failed file operation: the file (its real name, not the temporary one), the
    problem and the fix. Used by the CLI for every ``OSError`` no command turned into its own message."""
    name = error.filename
    path = Path(name) if name else None
    if path is not None and (match := TMP_NAME.match(path.name)):
        path = path.with_name(match["name"])
    where = str(path) if path is not None else "a file"
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device of {where}; free space there and run the same command again "
                "(what the store already holds is kept)")
    if code == errno.EROFS:
        return (f"cannot write {where}: read-only file system; make it writable, or copy the store to a "
                "writable folder and use the copy")
    if code in (errno.EACCES, errno.EPERM):
        return f"cannot access {where}: permission denied; fix its permissions or use another folder"
    if code == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, not a folder; use a path outside that file"
    if code == errno.EISDIR:
        return f"{where} is a folder, not a file; pass the file's path"
    reason = error.strerror or type(error).__name__
    return f"{where}: {reason}; check the path and the disk, then run the same command again"
