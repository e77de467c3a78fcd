"""Python games for the cluster tests and the scale simulation (``game.kind: python`` targets).

``weighted_sum`` has a known answer: v(S) = sum of w_i over S + bonus * [p0 and p1 in S], so the Shapley
value of player i is w_i (+ bonus/2 for p0 and p1). It sleeps ``sleep_s`` to stand in for a GPU job and,
when the environment variable ``CONTRIBSHAP_TEST_MARKERS`` names a folder, drops a marker file
``<pid>-<mask bits>-<time_ns>`` there at the start of every call, so a test can find the pid of the
worker process that is evaluating a coalition and kill it mid-coalition.

``sleep_by_size`` sleeps a time given by a cost model of coalition size (see bench/simulate_cluster.py) and
returns the same known-answer value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

#: Per-player weights of the known-answer game (player i gets WEIGHTS[i % len(WEIGHTS)]).
WEIGHTS = (1.0, 2.0, -1.5, 0.5, 3.0, -0.25, 1.25, 0.75)
MARKERS_ENV = "CONTRIBSHAP_TEST_MARKERS"


def known_value(mask: np.ndarray, bonus: float = 0.5) -> float:
    """v(S) of :func:`weighted_sum` for a bool mask of shape (n,)."""
    mask = np.asarray(mask, dtype=bool)
    weights = np.array([WEIGHTS[i % len(WEIGHTS)] for i in range(mask.size)])
    pair = bool(mask.size >= 2 and mask[0] and mask[1])
    return float(weights[mask].sum() + bonus * pair)


def _mark(mask: np.ndarray) -> None:
    folder = os.environ.get(MARKERS_ENV)
    if folder:
        bits = "".join("1" if b else "0" for b in np.asarray(mask, dtype=bool))
        Path(folder, f"{os.getpid()}-{bits}-{time.time_ns()}").touch()


def weighted_sum(mask: np.ndarray, *, sleep_s: float = 0.2, bonus: float = 0.5) -> dict[str, float]:
    """Known-answer game that takes ``sleep_s`` seconds per call; properties ``value`` and ``size``."""
    _mark(mask)
    time.sleep(sleep_s)
    return {"value": known_value(mask, bonus), "size": float(np.sum(mask))}


def sleep_by_size(
    mask: np.ndarray, *, base_s: float = 0.5, per_member_s: float = 0.0, time_scale: float = 1.0
) -> dict[str, float]:
    """Sleep ``time_scale * (base_s + per_member_s * |S|)`` seconds; value as :func:`weighted_sum`."""
    _mark(mask)
    size = int(np.sum(mask))
    time.sleep(time_scale * (base_s + per_member_s * size))
    return {"value": known_value(mask), "size": float(size)}
