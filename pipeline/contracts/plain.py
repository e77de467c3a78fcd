"""Plain data: numpy values turned into what JSON, YAML and Parquet writers take."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["jsonable"]


def jsonable(obj: Any, *, strict: bool = False) -> Any:
    """``obj`` with numpy arrays and scalars turned into lists and Python numbers, recursively.

    Args:
        obj: dicts (keys become strings), lists, tuples, numpy arrays and scalars, plain values.
        strict: True: NaN and ±inf become None (strict JSON, e.g. ``evaluation.json``); False: kept as
            floats (Python's ``json`` writes them as ``NaN`` / ``Infinity`` and reads them back exactly).

    >>> jsonable({"a": np.array([1.5, np.nan]), 2: np.int64(3)}, strict=True)
    {'a': [1.5, None], '2': 3}
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v, strict=strict) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v, strict=strict) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v, strict=strict) for v in obj.tolist()]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if strict and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
