"""Python games with known answers for the evaluation and report tests (no torch).

Each function takes a bool mask of shape (n,) and returns ``{property: float}``; they are deterministic in
the mask (the "noise" of :func:`noisy_additive` is a fixed function of the coalition, seeded by its bits).

- :func:`additive`: v(S) = 10 + sum_{i in S} w_i for ``value``, and ``loss`` = 50 - 2 * sum w_i (a
  lower-is-better property). Shapley values are w_i (and -2 w_i): LDS of the exact attributions is 100.
- :func:`noisy_additive`: the additive game plus a coalition-dependent perturbation of sd 0.3 (weights span
  -3..4), so LDS is high but below 100.
- :func:`planted_additive`: the additive game whose last player is a planted contributor of weight
  ``PLANTED_WEIGHT`` (-30, ten times any genuine weight): an attribution that only flags it ranks most
  held-out subsets right, but says nothing on the subsets without it (the stratified LDS).
- :func:`always_fails`: raises on every coalition (driver and CLI tests of a run with nothing usable).
"""

from __future__ import annotations

import numpy as np

# Multiples of 0.25 plus a binary code 1e-4 * 2^i (< 0.25 in total): every subset sum is distinct (by >= 1e-4),
# so rank ties never depend on round-off.
WEIGHTS = np.array([4.0, -3.0, 2.5, 1.0, 0.5, -1.5, 3.0, 0.25, -0.75, 2.0]) + 1e-4 * 2.0 ** np.arange(10)


def _weights(mask: np.ndarray) -> np.ndarray:
    n = len(mask)
    if n > len(WEIGHTS):
        raise ValueError(f"games_eval supports n <= {len(WEIGHTS)} players, got n={n}; use fewer players")
    return WEIGHTS[:n]


def additive(mask: np.ndarray) -> dict[str, float]:
    """Perfectly additive game: ``value`` = 10 + sum w_i, ``loss`` = 50 - 2 sum w_i (over i in S)."""
    mask = np.asarray(mask, dtype=bool)
    total = float(_weights(mask)[mask].sum())
    return {"value": 10.0 + total, "loss": 50.0 - 2.0 * total}


def noisy_additive(mask: np.ndarray) -> dict[str, float]:
    """Additive plus a coalition-seeded perturbation (sd 0.3), deterministic in the mask."""
    mask = np.asarray(mask, dtype=bool)
    bits = int("".join("1" if b else "0" for b in mask) or "0", 2)
    rng = np.random.default_rng([bits, len(mask)])
    base = additive(mask)
    return {name: value + float(rng.normal(0.0, 0.3)) for name, value in base.items()}


PLANTED_WEIGHT = -30.0


def planted_weights(n: int) -> np.ndarray:
    """Weights of :func:`planted_additive` with n players: genuine WEIGHTS[:n-1], then PLANTED_WEIGHT."""
    return np.concatenate([WEIGHTS[: n - 1], [PLANTED_WEIGHT]])


def planted_additive(mask: np.ndarray) -> dict[str, float]:
    """Additive game (``value`` = 10 + sum w_i) whose last player has weight PLANTED_WEIGHT."""
    mask = np.asarray(mask, dtype=bool)
    _weights(mask)
    return {"value": 10.0 + float(planted_weights(len(mask))[mask].sum())}


def always_fails(mask: np.ndarray) -> dict[str, float]:
    """A game whose every evaluation raises (a run of it produces nothing usable)."""
    raise RuntimeError(f"cannot evaluate {''.join('1' if b else '0' for b in np.asarray(mask, dtype=bool))}")


def build_store(
    root,
    *,
    target: str = "games_eval:noisy_additive",
    n: int = 6,
    design: str = "paired",
    budget: int = 40,
    methods: tuple[str, ...] = ("kernelshap", "banzhaf_msr"),
    seed: int = 0,
    timings: dict[str, float] | None = None,
    evaluation: dict | None = None,
):
    """Fill a store the way ``contribshap run`` + ``reduce`` would, in-process (no Ray), for report tests.

    Uses only the public store / plan / estimator APIs: resolved config, manifest, plan, one Parquet file
    per evaluation (with timings), and ``estimates/estimates.json`` in the ``reduce --json`` layout.
    Returns the store path.
    """
    import json
    import time
    from pathlib import Path

    from contribshap.pipeline.config.schema import config_hash, parse_config, plan_hash, save_resolved
    from contribshap.pipeline.contracts.keys import mask_from_str
    from contribshap.pipeline.core.estimators import estimate
    from contribshap.pipeline.games.factory import build_game
    from contribshap.pipeline.storage import plan as plan_mod
    from contribshap.pipeline.storage.store import Store

    root = Path(root)
    cfg = parse_config(
        {"name": "eval-test", "store": str(root), "seed": seed,
         "game": {"kind": "python", "target": target, "n_players": n},
         "design": {"kind": design, "budget": budget, "seed": seed}, "estimators": list(methods),
         **({"evaluation": evaluation} if evaluation is not None else {})},
        check_paths=False,
    )
    store = Store(root)
    store.create(name=cfg.name, config_hash=config_hash(cfg), plan_hash=plan_hash(cfg))
    save_resolved(cfg, store.config_path)
    game = build_game(cfg, root)
    contributors = [c.to_dict() for c in game.contributors()]
    ids = [c["id"] for c in contributors]
    request = plan_mod.PlanRequest(design, n, budget - 2, seed, {}, 1, 1)
    rows, _ = plan_mod.extend_plan([], ids, request, round_index=0)
    plan_mod.write_plan(store, rows)
    namespace = config_hash(cfg)
    props: list[str] = []
    for job in plan_mod.jobs_for(rows, seed=seed):
        result = game.evaluate(mask_from_str(job.mask), replicate=job.replicate, seed=job.seed)
        props = list(result.values)
        now = time.time()
        store.write_eval(namespace, {
            **job.to_dict(), "status": "ok", "error": None, "attempt": 1, **result.values,
            **(timings or {"finetune_s": 3.0, "sample_s": 1.5, "eval_s": 0.2, "wall_s": 5.0}),
            "worker": "test:0", "started_at": now, "finished_at": now, "info": "{}",
        })
    store.update_manifest(contributors=contributors, property_names=props)
    # estimates.json as `contribshap reduce --json` prints it
    scan = store.scan(namespace).rows
    masks = np.array([mask_from_str(r["mask"]) for r in scan])
    doc: dict = {}
    for prop in props:
        vals = np.array([r[prop] for r in scan])
        v_empty = float(vals[masks.sum(1) == 0].mean())
        v_full = float(vals[masks.sum(1) == n].mean())
        doc[prop] = {}
        for method in methods:
            est = estimate(masks, vals, v_empty, v_full, method=method)
            doc[prop][method] = {
                "contributors": [
                    {"id": c["id"], "name": c["name"], "value": float(est.value[i]), "ci_low": float(est.ci_low[i]),
                     "ci_high": float(est.ci_high[i]), "stderr": float(est.stderr[i])}
                    for i, c in enumerate(contributors)
                ],
                "v_empty": v_empty, "v_full": v_full, "n_evaluations": int(est.n_evaluations),
            }
    store.estimates_dir.mkdir(exist_ok=True)
    (store.estimates_dir / "estimates.json").write_text(json.dumps(doc))
    return root
