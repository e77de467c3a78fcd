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


#: Images and quality (share of usable images) of the eight contributors of :func:`training_run`.
SIZES = (40.0, 80.0, 120.0, 160.0, 60.0, 100.0, 140.0, 30.0)
QUALITY = (0.9, 0.7, 0.8, 0.95, 0.3, 0.6, 0.85, 0.1)


def training_run(mask: np.ndarray, seed: int, steps: int = 200) -> dict[str, float]:
    """A toy stand-in for "train on S's data for ``steps`` steps, then score the model" (two fidelities).

    The score grows with the usable data of S with diminishing returns, is scaled by how far training
    got (1 - exp(-steps / 100)), and carries seed noise that shrinks with more steps. Two calls with the
    same seed share their noise draw (as a cheap and a full fine-tune share a job seed), so a run with
    fewer ``steps`` tracks the full one: the ``low_fidelity`` example (two_fidelity.yaml) uses
    ``steps: 25`` as its cheap game.
    """
    mask = np.asarray(mask, dtype=bool)
    sizes, quality = np.asarray(SIZES)[: len(mask)], np.asarray(QUALITY)[: len(mask)]
    usable = float((sizes * quality)[mask].sum())
    junk = float((sizes * (1 - quality))[mask].sum())
    progress = 1.0 - np.exp(-steps / 100.0)
    score = progress * 10.0 * np.log1p(usable / 50.0) / (1.0 + junk / 400.0)
    noise = np.random.default_rng(seed).normal() * 0.2 / np.sqrt(steps / 100.0)
    return {"score": float(score + noise)}
