"""Run the real ``contribshap`` CLI with timers around the driver's phases (used by ``bench/scale.py
--machinery``; not imported by the package).

    .venv/bin/python bench/scale_phases.py PHASES.json run CONFIG --no-progress --json

Wraps, in their modules, the functions the driver calls (the code path is the CLI's own) and writes their
summed seconds and call counts to PHASES.json at exit: ``plan`` (extend_plan, write_plan, jobs_for,
lpt_order), ``scan`` (Store.scan), ``ray_start`` (LazyRay.ensure), ``prepare`` (_ensure_prepared),
``dispatch`` and ``reduce`` (reduce_store).
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
import time
from pathlib import Path

from contribshap.pipeline.dispatch import driver
from contribshap.pipeline.products import cli, reduce
from contribshap.pipeline.storage import store

PHASES: dict[str, dict[str, float]] = {}


def _timed(phase: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        clock = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            slot = PHASES.setdefault(phase, {"seconds": 0.0, "calls": 0})
            slot["seconds"] += time.perf_counter() - clock
            slot["calls"] += 1

    return wrapper


def main() -> int:
    out = Path(sys.argv[1])
    for name in ("extend_plan", "write_plan", "jobs_for", "lpt_order"):
        setattr(driver, name, _timed("plan", getattr(driver, name)))
    driver.dispatch = _timed("dispatch", driver.dispatch)
    driver._ensure_prepared = _timed("prepare", driver._ensure_prepared)
    driver.LazyRay.ensure = _timed("ray_start", driver.LazyRay.ensure)
    store.Store.scan = _timed("scan", store.Store.scan)
    reduce.reduce_store = _timed("reduce", reduce.reduce_store)
    atexit.register(lambda: out.write_text(json.dumps(PHASES, indent=1)))
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
