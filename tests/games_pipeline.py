"""Python games with known answers for the pipeline tests (imported by Ray workers via PYTHONPATH).

- ``airport``: v(S) = max cost of the members (costs 1..n); Shapley phi_j = sum_{k<=j} 1/(n-k+1).
- ``slow_airport``: the same, sleeping ``sleep`` seconds and appending the coalition to ``log``.
- ``flaky``: raises ConnectionError the first time it sees a coalition (marker files in ``marker_dir``).
- ``crashy``: kills its own worker process the first time it sees ``crash_mask``.
- ``broken``: always raises ValueError on ``fail_mask``.
- ``noisy``: additive game (weights 1..n) plus Gaussian noise seeded by the job seed.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np


def airport(mask: np.ndarray) -> dict[str, float]:
    mask = np.asarray(mask, dtype=bool)
    costs = np.arange(1, len(mask) + 1, dtype=float)
    return {"cost": float(costs[mask].max()) if mask.any() else 0.0}


def airport_shapley(n: int) -> list[float]:
    return [sum(1.0 / (n - k + 1) for k in range(1, j + 1)) for j in range(1, n + 1)]


def _text(mask: np.ndarray) -> str:
    return "".join("1" if m else "0" for m in np.asarray(mask, dtype=bool))


def slow_airport(mask: np.ndarray, sleep: float = 0.0, log: str | None = None) -> dict[str, float]:
    if log:
        with open(log, "a") as handle:
            handle.write(f"{_text(mask)} {os.getpid()}\n")
    time.sleep(sleep)
    return airport(mask)


def _first_time(marker_dir: str, mask: np.ndarray) -> bool:
    marker = Path(marker_dir) / hashlib.sha1(_text(mask).encode()).hexdigest()
    if marker.exists():
        return False
    marker.write_text("seen")
    return True


def flaky(mask: np.ndarray, marker_dir: str) -> dict[str, float]:
    if _first_time(marker_dir, mask):
        raise ConnectionError(f"transient failure on {_text(mask)}")
    return airport(mask)


def crashy(mask: np.ndarray, marker_dir: str, crash_mask: str) -> dict[str, float]:
    if _text(mask) == crash_mask and _first_time(marker_dir, mask):
        os._exit(1)
    return airport(mask)


def broken(mask: np.ndarray, fail_mask: str) -> dict[str, float]:
    if _text(mask) == fail_mask:
        raise ValueError(f"cannot evaluate {fail_mask}")
    return airport(mask)


def noisy(mask: np.ndarray, seed: int, noise: float = 0.1) -> dict[str, float]:
    weights = np.arange(1, len(mask) + 1, dtype=float)
    rng = np.random.default_rng(seed)
    return {"value": float(weights[np.asarray(mask, dtype=bool)].sum() + noise * rng.normal())}


def reserved(mask: np.ndarray) -> dict[str, float]:
    return {"seed": 1.0}
