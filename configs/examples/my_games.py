"""Known-answer python games for the airport-6 example (``game.target: "my_games:airport"``).

Airport game (Littlechild & Owen 1973): player i needs a runway of length c_i; a coalition pays for the
longest runway any member needs, v(S) = max_{i in S} c_i (v(∅) = 0). Its Shapley value has a closed form:
with costs sorted c_1 <= ... <= c_n and c_0 = 0, player j pays
    phi_j = sum_{k=1}^{j} (c_k - c_{k-1}) / (n - k + 1),
i.e. every runway segment is split equally among the players who need it.
"""

from __future__ import annotations

import numpy as np

#: Runway lengths of the six players (sorted).
COSTS = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def airport(mask: np.ndarray) -> dict[str, float]:
    """v(S) = max cost among the members of S (0 for the empty coalition). mask: bool (6,)."""
    mask = np.asarray(mask, dtype=bool)
    costs = np.asarray(COSTS)[: len(mask)]
    return {"cost": float(costs[mask].max()) if mask.any() else 0.0}


def airport_shapley(costs: tuple[float, ...] = COSTS) -> list[float]:
    """Closed-form Shapley values of :func:`airport` (costs sorted ascending)."""
    n = len(costs)
    previous, share, values = 0.0, 0.0, []
    for k, cost in enumerate(costs, start=1):
        share += (cost - previous) / (n - k + 1)
        values.append(share)
        previous = cost
    return values
