"""The one reader of a store's saved config (``<store>/config.yaml``, the resolved config of its run).

Every command that reads a store (reduce, status, evaluate, report, repair) reads the config through
:func:`read_saved_config`: parsed and validated once per file version (cached by path, size and mtime),
local paths not re-checked (a store is read on machines that do not hold the data).
"""

from __future__ import annotations

import functools
from pathlib import Path

from contribshap.pipeline.config.schema import Config, parse_config, read_yaml
from contribshap.pipeline.contracts.errors import ConfigError
from contribshap.pipeline.storage.store import StoreError

__all__ = ["CONFIG_NAME", "read_saved_config"]

#: The saved config's file name in a store.
CONFIG_NAME = "config.yaml"


@functools.lru_cache(maxsize=16)
def _parse(path: str, size: int, mtime_ns: int) -> Config:
    return parse_config(read_yaml(Path(path)), source=path, check_paths=False)


def read_saved_config(store_root: str | Path, *, fix: str | None = None) -> Config:
    """The resolved config saved in ``<store_root>/config.yaml``.

    Args:
        store_root: the store folder.
        fix: what the user should do when the file is missing or damaged (default: rebuild it with
            ``contribshap repair STORE --config CONFIG``).

    Raises:
        StoreError: the file is missing or does not parse (one line naming the file, the problem and ``fix``).
    """
    root = Path(store_root)
    path = root / CONFIG_NAME
    remedy = fix or f"run `contribshap repair {root} --config CONFIG` with the run's config"
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise StoreError(f"{root} has no {CONFIG_NAME}; {remedy}") from None
    try:
        return _parse(str(path), stat.st_size, stat.st_mtime_ns)
    except ConfigError as error:
        problem = str(error).removeprefix(f"{path}: ").split("; ")[0]
        raise StoreError(f"{path} is damaged ({problem}); {remedy}") from None
