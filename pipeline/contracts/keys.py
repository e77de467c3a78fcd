"""Names and seeds of coalitions: the mask codec, coalition keys and job seeds.

- ``mask``: bool array of shape (n,) in manifest order; stored as a string of ``'0'``/``'1'``.
- ``coalition_key``: the first 16 hex characters of sha256 of the sorted member ids joined by ``\\x1f``.
- ``derive_seed(seed, key, replicate)``: a job seed from ``np.random.SeedSequence``, so results never depend
  on the order in which jobs finish.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["PLANTED_PREFIX", "coalition_key", "derive_seed", "is_planted", "key_of_mask", "mask_from_str",
           "mask_to_str"]

#: Contributor ids of planted contributors (added on purpose to check that valuation finds them) start so.
PLANTED_PREFIX = "planted-"


def is_planted(contributor_id: str) -> bool:
    """True for the id of a planted contributor (``planted-<name>``)."""
    return str(contributor_id).startswith(PLANTED_PREFIX)


def mask_to_str(mask: Iterable[bool] | np.ndarray) -> str:
    """bool mask (n,) -> ``'0101...'`` (the ``mask`` column of the plan and of every evaluation row)."""
    return "".join("1" if bool(m) else "0" for m in mask)


def mask_from_str(text: str) -> np.ndarray:
    """``'0101...'`` -> bool mask (n,)."""
    return np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")


def coalition_key(member_ids: Iterable[str]) -> str:
    """16 hex chars naming a coalition by its members' ids (order-free; the empty set has a key)."""
    return hashlib.sha256("\x1f".join(sorted(member_ids)).encode()).hexdigest()[:16]


def key_of_mask(mask: Sequence[bool] | np.ndarray, ids: Sequence[str]) -> str:
    """The coalition key of the members of ``mask`` (bool (n,)) among ``ids`` (n,)."""
    return coalition_key(i for i, m in zip(ids, mask, strict=True) if m)


def derive_seed(seed: int, key: str, replicate: int) -> int:
    """Job seed in [0, 2^63) from the config seed, the coalition key (hex) and the replicate index."""
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(key, 16), int(replicate)))
    low, high = sequence.generate_state(2, dtype=np.uint32)
    return int((int(high) << 32 | int(low)) & (2**63 - 1))
