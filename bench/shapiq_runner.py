"""Run shapiq Shapley approximators in another interpreter (shapiq >= 1.5 needs Python >= 3.12); the game
stays in the caller's process. Used by ``bench/scale.py``; not imported by the package.

    .bench-venv-shapiq/bin/python bench/shapiq_runner.py [MEMORY_GB]

Protocol: one JSON object per line. The runner says ``{"op": "ready", "version": ...}``, then reads tasks
``{"approximator", "n", "budget", "seed"}`` from stdin. While running a task it asks the caller for game
values with ``{"op": "eval", "m", "n", "masks"}`` (masks: base64 of ``np.packbits(masks, axis=1)``) and
reads back ``{"values": base64 float64}``; it ends the task with ``{"op": "result", "values": [...],
"seconds": s}`` or ``{"op": "error", "kind": "out of memory" | "error", "error": "..."}``. MEMORY_GB caps
the runner's address space (RLIMIT_AS), so an approximator that needs more fails with MemoryError (or
dies, which the caller records) instead of taking the machine's memory.
"""

from __future__ import annotations

import base64
import json
import os
import resource
import sys
import time
import traceback
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

#: approximator label -> constructor keyword arguments (class name first)
APPROXIMATORS: dict[str, tuple[str, dict]] = {
    "RegressionMSR": ("RegressionMSR", {"index": "SV"}),  # xgboost proxy (tree), pairing, adjustment
    "LeverageSHAP": ("LeverageSHAP", {}),  # pairing by default
    "PolySHAP": ("PolySHAP", {"pairing_trick": True}),
    "KernelSHAP+pairing": ("KernelSHAP", {"pairing_trick": True}),
    "KernelSHAP": ("KernelSHAP", {"pairing_trick": False}),
    "kADDSHAP": ("kADDSHAP", {"max_order": 2, "pairing_trick": True}),
    "SVARM": ("SVARM", {}),
    "PermutationSV": ("PermutationSamplingSV", {}),
    "StratifiedSV": ("StratifiedSamplingSV", {}),
    "OwenSV": ("OwenSamplingSV", {}),
    "UnbiasedKernelSHAP": ("UnbiasedKernelSHAP", {}),
    "ProxySHAP": ("ProxySHAP", {"index": "SV", "max_order": 1, "adjustment": True}),
    "OddSHAP": ("OddSHAP", {}),
}


def _send(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main() -> None:
    memory_gb = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    if memory_gb > 0:
        limit = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import shapiq

    _send({"op": "ready", "version": shapiq.__version__})
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        n = int(task["n"])

        def game(coalitions: np.ndarray, n: int = n) -> np.ndarray:
            z = np.atleast_2d(np.asarray(coalitions, dtype=bool))
            _send({"op": "eval", "m": len(z), "n": n,
                   "masks": base64.b64encode(np.packbits(z, axis=1).tobytes()).decode()})
            reply = json.loads(sys.stdin.readline())
            return np.frombuffer(base64.b64decode(reply["values"]), dtype=np.float64).copy()

        try:
            cls_name, kwargs = APPROXIMATORS[task["approximator"]]
            clock = time.perf_counter()
            approximator = getattr(shapiq, cls_name)(n=n, random_state=int(task["seed"]), **kwargs)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = approximator.approximate(budget=int(task["budget"]), game=game)
            values = np.asarray(result.get_n_order_values(1), dtype=np.float64)
            _send({"op": "result", "values": values.tolist(), "seconds": time.perf_counter() - clock})
        except MemoryError:
            _send({"op": "error", "kind": "out of memory", "error": f"MemoryError above {memory_gb:g} GB"})
        except Exception as exc:  # an approximator that refuses a cell is recorded as a miss by the caller
            tail = traceback.format_exc().strip().splitlines()[-1]
            _send({"op": "error", "kind": "error", "error": f"{type(exc).__name__}: {exc}"[:300] or tail})


if __name__ == "__main__":
    main()
