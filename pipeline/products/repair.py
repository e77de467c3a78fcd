"""``contribshap repair STORE``: rebuild what a store can lose from what it cannot.

The evaluation files are the results; the plan and the manifest are derived from the config (and, for the
manifest, from the game's contributor list). So a lost or unreadable ``plan.parquet`` or ``manifest.json``
can be rebuilt exactly without evaluating anything again. Repair, step by step (:func:`repair_store`):

 1. take ``driver.lock`` (a store a live driver is writing is refused) and remove the temporary files of
    dead writers (:meth:`contribshap.pipeline.storage.store.Store.clean_temporary`, with no age limit: the lock
    guarantees no writer of this store is alive);
 2. the config: ``--config`` or ``<store>/config.yaml``; its config hash must name the store's
    evaluations (``evals/<config_hash>/``), else it is not the config the store was made with;
 3. the manifest: kept when readable (and its config hash must match); otherwise the damaged file is
    moved aside to ``manifest.json.bad-<UTC time>`` and a new one is written from the config, the game's
    contributors (a diffusion game reads its data index; nothing is trained) and the property names of
    the evaluation rows. It has no ``prepared`` entry, so the next ``run`` runs ``prepare`` again, which
    reuses every artifact already in ``artifacts/``;
 4. the plan: kept when readable; otherwise (missing, or moved aside to ``plan.parquet.bad-<UTC time>``
    when unreadable) rebuilt round by round from the config's design with the same seed, as the driver
    planned it, up to the draws the manifest records (or, with a rebuilt manifest, up to the first round
    that holds every evaluated coalition of the design). Every evaluation row's key is checked against
    its mask and the contributors before anything is written;
 5. ``config.yaml`` is written from ``--config`` when the store has none.

Not rebuilt: the ``holdout`` / ``counterfactual`` rows of ``contribshap evaluate`` (it plans them again
from its seeds), and the ``round`` of coalitions added by raising the budget between runs (they get the
round the config's schedule gives them; the column is informational).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contribshap import pipeline
from contribshap.pipeline.config.schema import Config, config_hash, load_config, plan_hash, save_resolved
from contribshap.pipeline.contracts.keys import key_of_mask, mask_from_str
from contribshap.pipeline.storage.plan import (
    ESTIMATOR_SECTIONS,
    PlanRequest,
    extend_plan,
    read_plan,
    round_budgets,
    write_plan,
)
from contribshap.pipeline.storage.saved_config import read_saved_config
from contribshap.pipeline.storage.store import (
    FORMAT_VERSION,
    RESERVED_COLUMNS,
    DriverLock,
    FormatVersionError,
    Store,
    StoreError,
)

__all__ = ["RepairReport", "repair_store"]


@dataclass
class RepairReport:
    """What :func:`repair_store` did.

    Attributes:
        store: the store folder.
        actions: one line per change made (empty: the store was consistent).
        notes: one line per thing left as it is that the user should know about.
    """

    store: Path
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The report as printed by ``contribshap repair``."""
        if not self.actions:
            return [f"{self.store}: nothing to repair", *self.notes]
        return [*(f"repaired: {a}" for a in self.actions), *self.notes]


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def _load_config(store: Store, config: str | Path | None) -> Config:
    if config is not None:
        return load_config(config, check_paths=False)
    return read_saved_config(store.root, fix=f"pass the run's config: contribshap repair {store.root} --config CONFIG")


def _check_namespace(store: Store, namespace: str) -> None:
    """The store's evaluations must be this config's (``evals/<namespace>`` or derived ``<namespace>-*``)."""
    main = {name.split("-")[0] for name in store.namespaces() if store.count_eval_files(name)}
    if main and namespace not in main:
        raise StoreError(
            f"{store.root / 'evals'} holds evaluations of config hash {', '.join(sorted(main))}, this config has "
            f"hash {namespace}; pass the config the store was made with (--config)"
        )


def _contributors(cfg: Config, store: Store) -> list[dict[str, Any]]:
    from contribshap.pipeline.games.factory import build_game

    game = build_game(cfg, store.root, search_paths=(os.getcwd(),))
    return [c.to_dict() for c in game.contributors()]


def _check_rows(rows: list[dict[str, Any]], ids: list[str], folder: Path) -> None:
    """Every row's key must be its mask's key under ``ids``: else the contributors are not the store's."""
    for row in rows:
        mask = mask_from_str(row["mask"])
        if len(mask) != len(ids) or key_of_mask(mask, ids) != row["coalition_key"]:
            raise StoreError(
                f"{folder / row['coalition_key']}-r{row['replicate']}.parquet was evaluated with other contributors "
                f"than the game lists now ({len(ids)}); pass the config the store was made with (--config)"
            )


def _rebuild_plan(cfg: Config, ids: list[str], planned_draws: int, evaluated: set[str]) -> tuple[list[dict[str, Any]], int]:
    """Plan rows as the driver wrote them, round by round; returns (rows, draws planned).

    Args:
        cfg: the run's config.
        ids: contributor ids in mask order.
        planned_draws: draws the manifest records (0: unknown, then the first round of the schedule that
            holds every coalition key in ``evaluated`` that the design plans at all).
        evaluated: coalition keys with an evaluation file.
    """
    n = len(ids)
    budgets = round_budgets(cfg.design.kind, n, cfg.design.budget, round_size=cfg.stopping.round_size,
                            max_rounds=cfg.stopping.max_rounds)
    if planned_draws > 0:
        budgets = [b for b in budgets if b < planned_draws] + [planned_draws]
    rounds: list[list[dict[str, Any]]] = []
    rows: list[dict[str, Any]] = []
    for index, draws in enumerate(budgets):
        rows, _ = extend_plan(rows, ids, PlanRequest.of(cfg, n, draws, budgets[-1]), round_index=index)
        rounds.append(rows)
    if planned_draws > 0:
        return rows, planned_draws
    # the last round that planned an evaluated coalition decides how far the run had got
    last = max((int(r["round"]) for r in rows if r["coalition_key"] in evaluated and r["section"] == "estimate"),
               default=0)
    return rounds[last], budgets[last]


def repair_store(store_path: str | Path, *, config: str | Path | None = None) -> RepairReport:
    """Rebuild a lost or unreadable plan or manifest of a store; see the module docstring for the steps.

    Args:
        store_path: the store folder.
        config: the run's YAML config (default: ``<store>/config.yaml``).

    Returns:
        a :class:`RepairReport` (``actions`` empty when there was nothing to repair).

    Raises:
        StoreError: not a store, a live driver holds it, the config is not the store's, the manifest is of
            another format version, or the evaluations do not match the game's contributors.
    """
    store = Store(store_path)
    if not store.root.is_dir() or not (store.manifest_path.exists() or (store.root / "evals").is_dir()):
        raise StoreError(f"{store.root} is not a contribshap store (no manifest.json, no evals/); nothing to repair")
    report = RepairReport(store=store.root)
    # 1. the lock, then the temporary files of dead writers
    with DriverLock(store.lock_path):
        removed = store.clean_temporary(stale_after_s=0.0)
        if removed:
            report.actions.append(f"removed {len(removed)} temporary file(s) of stopped writers")
        # 2. the config, and the evaluations it names
        cfg = _load_config(store, config)
        namespace = config_hash(cfg)
        _check_namespace(store, namespace)
        scan = store.scan(namespace, update_index=False, warn=False)
        if scan.unreadable:
            report.notes.append(f"skipped {len(scan.unreadable)} unreadable or misplaced evaluation file(s) in "
                                f"{store.evals_dir(namespace)}: the next run evaluates them again")
        # 3. the manifest
        manifest: dict[str, Any] | None
        try:
            manifest = store.load_manifest()
        except FormatVersionError:
            raise  # another format: not ours to rewrite
        except StoreError:
            manifest = None
        if manifest is not None and manifest["config_hash"] != namespace:
            raise StoreError(f"store {store.root} holds config hash {manifest['config_hash']}, this config has hash "
                             f"{namespace}; pass the config the store was made with (--config)")
        contributors = (manifest or {}).get("contributors") or _contributors(cfg, store)
        ids = [c["id"] for c in contributors]
        _check_rows(scan.rows, ids, store.evals_dir(namespace))
        # 4. the plan (rebuilt in memory before anything is written)
        plan_rows: list[dict[str, Any]] | None = None
        plan_bad = False
        try:
            plan_rows = read_plan(store) if store.plan_path.is_file() else None
        except StoreError:
            plan_bad = True
        planned_draws = int((manifest or {}).get("planned_draws") or 0)
        if plan_rows is None:
            evaluated = {r["coalition_key"] for r in scan.rows}
            plan_rows, planned_draws = _rebuild_plan(cfg, ids, planned_draws, evaluated)
        elif manifest is None:  # the kept plan tells how far the run had planned
            _, planned_draws = _rebuild_plan(cfg, ids, 0, {r["coalition_key"] for r in plan_rows})
        # 5. write: manifest, plan, config
        if manifest is None:
            if store.manifest_path.exists():
                aside = store.manifest_path.with_name(f"manifest.json.bad-{_stamp()}")
                os.replace(store.manifest_path, aside)
                report.actions.append(f"moved the damaged manifest to {aside.name}")
            names: list[str] = []
            for row in scan.rows:
                names += [k for k, v in row.items() if k not in RESERVED_COLUMNS and isinstance(v, float)
                          and k not in names and row["status"] == "ok"]
            store.write_manifest({
                "format_version": FORMAT_VERSION, "name": cfg.name, "config_hash": namespace,
                "plan_hash": plan_hash(cfg), "contributors": contributors, "property_names": names,
                "code_version": pipeline.__version__, "created": time.time(), "planned_draws": planned_draws,
                "repaired": time.time(),
            })
            report.actions.append(f"wrote manifest.json from the config ({len(ids)} contributors, properties "
                                  f"{', '.join(names) or 'none yet'}); the next run prepares again, reusing artifacts/")
        if plan_bad or not store.plan_path.is_file():
            if plan_bad:
                aside = store.plan_path.with_name(f"plan.parquet.bad-{_stamp()}")
                os.replace(store.plan_path, aside)
                report.actions.append(f"moved the unreadable plan to {aside.name}")
            write_plan(store, plan_rows)
            estimate_keys = {r["coalition_key"] for r in plan_rows if r["section"] in ESTIMATOR_SECTIONS}
            done = sum(1 for r in scan.rows if r["coalition_key"] in estimate_keys)
            report.actions.append(f"wrote plan.parquet from the config: {len(plan_rows)} coalitions, {done} "
                                  "evaluation file(s) of them already in the store")
            if manifest is not None and int(manifest.get("planned_draws") or 0) != planned_draws:
                store.update_manifest(planned_draws=planned_draws)
        if config is not None and not _readable_config(store):
            if store.config_path.exists():
                aside = store.config_path.with_name(f"config.yaml.bad-{_stamp()}")
                os.replace(store.config_path, aside)
                report.actions.append(f"moved the unreadable config.yaml to {aside.name}")
            save_resolved(cfg, store.config_path)
            report.actions.append("wrote config.yaml from --config")
    return report


def _readable_config(store: Store) -> bool:
    try:
        read_saved_config(store.root)
    except StoreError:
        return False
    return True
