"""Run the real ``contribshap`` CLI with timers around the driver's phases (used by ``bench/scale.py
--machinery``; not imported by the package).

    .venv/bin/python bench/scale_phases.py PHASES.json run CONFIG --no-progress --json

Wraps, in their modules, the functions the driver calls (the code path is the CLI's own) and writes their
summed seconds and call counts to PHASES.json at exit: ``plan`` (extend_plan, write_plan, jobs_for,
lpt_order), ``scan`` (Store.scan), ``ray_start`` (LazyRay.ensure), ``prepare`` (ensure_prepared),
``dispatch`` and ``reduce`` (reduce_store).
"""

from __future__ import annotations

import atexit
import functools
import json
import sys
import time
from pathlib import Path

from contribshap.pipeline.products import cli
from contribshap.pipeline.products import run as command
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
    # the names `contribshap run` calls, in the module that calls them (products/run.py)
    for name in ("extend_plan", "write_plan", "jobs_for", "lpt_order"):
        setattr(command, name, _timed("plan", getattr(command, name)))
    command.dispatch = _timed("dispatch", command.dispatch)
    command.ensure_prepared = _timed("prepare", command.ensure_prepared)
    command.LazyRay.ensure = _timed("ray_start", command.LazyRay.ensure)
    store.Store.scan = _timed("scan", store.Store.scan)
    command.reduce_store = _timed("reduce", command.reduce_store)
    atexit.register(lambda: out.write_text(json.dumps(PHASES, indent=1)))
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
