"""A python game that sleeps a fixed time per coalition (the driver benchmark's workload)."""

from __future__ import annotations

import time

import numpy as np


def sleep_game(mask: np.ndarray, seconds: float = 2.0) -> dict[str, float]:
    """Sleep ``seconds``, then return the coalition size as property ``members`` (mask: bool (n,))."""
    time.sleep(seconds)
    return {"members": float(np.asarray(mask, dtype=bool).sum())}
