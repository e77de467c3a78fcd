"""Python games for the cluster tests and the scale simulation (``game.kind: python`` targets).

``weighted_sum`` has a known answer: v(S) = sum of w_i over S + bonus * [p0 and p1 in S], so the Shapley
value of player i is w_i (+ bonus/2 for p0 and p1). It sleeps ``sleep_s`` to stand in for a GPU job and,
when the environment variable ``CONTRIBSHAP_TEST_MARKERS`` names a folder, drops a marker file
``<pid>-<mask bits>-<start time_ns>.run`` there at the start of every call and renames it to ``.done`` when
the call returns, so a test can find the pid of the worker process that is evaluating a coalition, kill it
mid-coalition, and count how often each coalition was started (a killed call leaves its ``.run``).

``sleep_by_size`` sleeps a time given by a cost model of coalition size (see bench/simulate_cluster.py) and
returns the same known-answer value.
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import NamedTuple

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


def _mark(mask: np.ndarray) -> Path | None:
    """Create the ``.run`` marker (when ``CONTRIBSHAP_TEST_MARKERS`` is set); returns its path."""
    folder = os.environ.get(MARKERS_ENV)
    if not folder:
        return None
    bits = "".join("1" if b else "0" for b in np.asarray(mask, dtype=bool))
    path = Path(folder, f"{os.getpid()}-{bits}-{time.time_ns()}.run")
    path.touch()
    return path


class Marker(NamedTuple):
    """One call's marker file, parsed: the worker's pid, the mask bits, the start time (ns), still running."""

    pid: int
    bits: str
    started_ns: int
    running: bool


def read_marker(path: Path) -> Marker:
    """Parse a marker file name written by :func:`_mark` (``.run`` while the call runs, ``.done`` after)."""
    pid, bits, started_ns = path.stem.split("-")
    return Marker(int(pid), bits, int(started_ns), path.suffix == ".run")


def _unmark(path: Path | None) -> None:
    if path is not None:
        os.replace(path, path.with_suffix(".done"))


def weighted_sum(mask: np.ndarray, *, sleep_s: float = 0.2, bonus: float = 0.5) -> dict[str, float]:
    """Known-answer game that takes ``sleep_s`` seconds per call; properties ``value`` and ``members``."""
    marker = _mark(mask)
    time.sleep(sleep_s)
    _unmark(marker)
    return {"value": known_value(mask, bonus), "members": float(np.sum(mask))}


def simulated_cost(mask: np.ndarray, *, base_s: float, per_member_s: float = 0.0, jitter: float = 0.0) -> float:
    """Simulated seconds of one evaluation: ``(base_s + per_member_s * |S|) * exp(jitter * z)``.

    ``z`` is a standard normal drawn from a generator seeded by the mask bits (crc32), so a coalition
    always costs the same and the jitter does not depend on the order jobs run.
    """
    mask = np.asarray(mask, dtype=bool)
    bits = "".join("1" if b else "0" for b in mask)
    z = np.random.default_rng(zlib.crc32(bits.encode())).standard_normal() if jitter else 0.0
    return float((base_s + per_member_s * int(mask.sum())) * np.exp(jitter * z))


def sleep_by_size(
    mask: np.ndarray, *, base_s: float = 0.5, per_member_s: float = 0.0, jitter: float = 0.0,
    time_scale: float = 1.0,
) -> dict[str, float]:
    """Sleep ``time_scale * simulated_cost(mask, ...)`` real seconds; value as :func:`weighted_sum`.

    ``time_scale`` is real seconds per simulated second (0.05: a 6.6 s job sleeps 0.33 s).
    """
    marker = _mark(mask)
    size = int(np.sum(mask))
    time.sleep(time_scale * simulated_cost(mask, base_s=base_s, per_member_s=per_member_s, jitter=jitter))
    _unmark(marker)
    return {"value": known_value(mask), "members": float(size)}
