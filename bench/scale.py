"""Benchmark at the size the cluster is for: 50 to 1,000 contributors (not a test; prints tables, writes JSON).

    nice -n 10 .venv/bin/python bench/scale.py --quick          # a few minutes: n = 50 and 258, one seed
    nice -n 10 .venv/bin/python bench/scale.py                  # accuracy grid + held-out small games
    nice -n 10 .venv/bin/python bench/scale.py --machinery      # n = 1,000 x 10,000 evaluations, real CLI

Accuracy (``accuracy`` in the JSON): data-like games (``bench/datalike.py``: own worth, a few harmful
contributors, styles of 3 to 10 partly redundant contributors, a size term) at n = 50, 258, 1,000, whose
exact Shapley values are sums of exactly enumerated small games. Utility noise 0.5%, 1%, 2% of
|v(N) - v(∅)|, a fresh draw per evaluation from a seeded stream. Budgets 2n, 3n, 5n, 10n sampled
coalitions; the empty and the full coalition are evaluated on top for every method alike (shapiq gets
budget + 2 game calls). Metrics per cell, averaged over seeds: relative error ‖φ̂ - φ‖ / ‖φ‖, Spearman
with φ, and for our methods interval coverage (share of contributors whose 95% interval holds φ_i) and the
identified share.

- ours: ``kernelshap`` on the ``paired`` design (the defaults), ``kernelshap`` and ``leverage_shap`` on
  the ``leverage`` design, ``regression_msr`` on ``leverage`` while one fit stays under
  ``--msr-limit`` seconds (its fit time is in the JSON);
- the field: every Shapley approximator of shapiq 1.8 that runs without extras (``bench/shapiq_runner.py``
  in a Python 3.12 environment built on first use, ``--shapiq-venv``), one task at a time, each under a
  time limit and an address-space limit; a miss is recorded with its cause ("timeout", "out of memory",
  the error) and larger budgets of the same approximator and n are then skipped.

Held-out small games (``small_games``): the four games of ``bench/estimators.py`` (additive+noise,
interaction, data-valuation, voting at n = 10, 20, 50) with its reference values, run through shapiq 1.8;
the geometric mean over (game, n) of our error / the best shapiq 1.8 error.

Machinery (``machinery``): a python game of 1,000 data-like contributors with 10,000 evaluations through
the real ``contribshap run`` (local Ray, Parquet store), then ``contribshap reduce`` and ``contribshap
report`` in subprocesses: seconds of each and their peak memory (max RSS of the child).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # a shared 2-core machine: no BLAS oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import base64
import json
import math
import resource
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
# this folder holds scripts whose names shadow packages (bench/coverage.py): import its modules by path only
sys.path = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(ROOT))

from contribshap.pipeline.core.designs import sample_coalitions  # noqa: E402
from contribshap.pipeline.core.estimators import estimate  # noqa: E402


def _load(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


datalike = _load("datalike")

OURS = ("kernelshap@paired", "kernelshap@leverage", "leverage_shap@leverage", "regression_msr@leverage")
DEFAULT = OURS[0]
SHAPIQ = ("RegressionMSR", "LeverageSHAP", "PolySHAP", "KernelSHAP+pairing", "KernelSHAP", "kADDSHAP",
          "SVARM", "PermutationSV", "StratifiedSV", "OwenSV", "UnbiasedKernelSHAP", "ProxySHAP", "OddSHAP")
NOT_RUN = {
    "SPEX": "needs shapiq's 'sparse' extra (sparse-transform, galois); at n = 50 it took about a minute a call in 1.4",
    "ShaplEIG": "needs shapiq's 'shapleig' extra (torch, gpytorch, botorch)",
    "ProxySPEX": "needs LightGBM (not installed); an interaction (k-SII) method",
}
MULTS = (2, 3, 5, 10)
NOISES = (0.005, 0.01, 0.02)


# --------------------------------------------------------------------------------------------------------
# shapiq 1.8 in its own interpreter
# --------------------------------------------------------------------------------------------------------
def ensure_shapiq_venv(venv: Path) -> Path:
    """The venv's python, built (Python 3.12 from pyenv, shapiq 1.8.0, scipy, xgboost) when missing."""
    python = venv / "bin" / "python"
    if python.exists():
        return python
    print(f"building the shapiq 1.8 environment in {venv} (Python 3.12; a few minutes, once)", flush=True)
    try:
        p312 = subprocess.run(["pyenv", "which", "python"], env={**os.environ, "PYENV_VERSION": "3.12.1"},
                              capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([p312, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "shapiq==1.8.0", "scipy", "xgboost"], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: could not build the shapiq 1.8 environment in {venv} ({exc}); build it by hand: "
                 f"P312=$(PYENV_VERSION=3.12.1 pyenv which python); $P312 -m venv {venv} && "
                 f"{venv}/bin/pip install shapiq==1.8.0 scipy xgboost; or pass --shapiq-venv PATH or --no-shapiq.")
    return python


class ShapiqRunner:
    """One ``bench/shapiq_runner.py`` child at a time; the game is evaluated here, in this process."""

    def __init__(self, python: Path, memory_gb: float) -> None:
        self.python, self.memory_gb, self.proc, self.version = python, memory_gb, None, None

    def _start(self) -> None:
        self.proc = subprocess.Popen([str(self.python), str(BENCH / "shapiq_runner.py"), str(self.memory_gb)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        hello = self._read(time.time() + 120)
        if hello is None or hello.get("op") != "ready":
            raise RuntimeError(f"the shapiq runner did not start ({hello})")
        self.version = hello["version"]

    def _read(self, deadline: float) -> dict | None:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout=max(0.0, deadline - time.time())):
                return None
        finally:
            sel.close()
        line = self.proc.stdout.readline()
        return json.loads(line) if line else {"op": "eof"}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, approximator: str, game: Callable[[np.ndarray], np.ndarray], n: int, budget: int, seed: int,
            timeout: float) -> tuple[np.ndarray | None, float, str | None]:
        """(values, seconds, failure) of one approximation with ``budget`` game calls."""
        if self.proc is None:
            self._start()
        clock = time.perf_counter()
        deadline = time.time() + timeout
        self.proc.stdin.write(json.dumps({"approximator": approximator, "n": n, "budget": budget, "seed": seed}) + "\n")
        self.proc.stdin.flush()
        while True:
            msg = self._read(deadline)
            if msg is None:
                self.stop()
                return None, time.perf_counter() - clock, f"timeout (> {timeout:.0f} s)"
            if msg["op"] == "eof":
                rc = self.proc.wait()
                self.proc = None
                return None, time.perf_counter() - clock, f"out of memory (runner died, rc {rc}, limit {self.memory_gb:g} GB)"
            if msg["op"] == "eval":
                raw = np.frombuffer(base64.b64decode(msg["masks"]), dtype=np.uint8).reshape(msg["m"], -1)
                masks = np.unpackbits(raw, axis=1)[:, : msg["n"]].astype(bool)
                values = np.asarray(game(masks), dtype=np.float64)
                self.proc.stdin.write(json.dumps({"values": base64.b64encode(values.tobytes()).decode()}) + "\n")
                self.proc.stdin.flush()
                continue
            if msg["op"] == "result":
                return np.asarray(msg["values"]), float(msg["seconds"]), None
            kind = msg.get("kind", "error")
            detail = msg.get("error", kind)
            return None, time.perf_counter() - clock, (f"out of memory ({detail})" if kind == "out of memory" else detail)


# --------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])


def rel_error(value: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(value - truth) / np.linalg.norm(truth))


def run_ours(label: str, oracle, n: int, budget: int, seed: int, truth: np.ndarray) -> dict:
    method, design = label.split("@")
    masks = sample_coalitions(n, budget, design, seed=seed)
    v_empty = float(oracle(np.zeros((1, n), bool))[0])
    v_full = float(oracle(np.ones((1, n), bool))[0])
    values = oracle(masks)
    clock = time.perf_counter()
    est = estimate(masks, values, v_empty, v_full, method=method, seed=seed)
    seconds = time.perf_counter() - clock
    row = {"error": rel_error(est.value, truth), "spearman": spearman(est.value, truth),
           "coverage": float(np.mean((est.ci_low <= truth) & (truth <= est.ci_high))),
           "identified": float(np.mean(est.identified)), "seconds": seconds}
    if label == DEFAULT and hasattr(oracle, "game"):
        # the part of the error the utility noise causes: the same masks, noiseless values
        game = oracle.game
        clean = estimate(masks, game.value(masks), float(game.value(np.zeros((1, n), bool))[0]),
                         float(game.value(np.ones((1, n), bool))[0]), method=method, seed=seed)
        row["noise_error"] = float(np.linalg.norm(est.value - clean.value) / np.linalg.norm(truth))
        row["noiseless_error"] = rel_error(clean.value, truth)
    return row


def summarise(trials: list[dict]) -> dict:
    ok = [t for t in trials if t.get("failure") is None]
    out: dict = {"seeds": len(ok)}
    if not ok:
        out["failure"] = trials[0]["failure"] if trials else "not run"
        return out
    for key in ("error", "spearman", "coverage", "identified", "seconds", "calls", "noise_error", "noiseless_error"):
        vals = [t[key] for t in ok if t.get(key) is not None]
        if vals:
            out[key] = float(np.mean(vals))
    if len(ok) > 1:
        out["error_sd"] = float(np.std([t["error"] for t in ok], ddof=1))
    if len(ok) < len(trials):
        out["partial_failure"] = next(t["failure"] for t in trials if t.get("failure"))
    return out


# --------------------------------------------------------------------------------------------------------
# Accuracy grid
# --------------------------------------------------------------------------------------------------------
def accuracy(args, runner: ShapiqRunner | None, deadline: float, log, checkpoint=None) -> list[dict]:
    cells: list[dict] = []
    reused: dict[tuple, dict] = {}
    for path, side in ((args.reuse_shapiq, "shapiq 1.8"), *((p, "ours") for p in args.reuse_ours or ())):
        for c in json.loads(path.read_text())["accuracy"]["cells"] if path else ():
            if c["side"] == side and not str(c.get("failure", "")).startswith("not run: --time-limit"):
                reused[(c["n"], c["noise"], c["mult"], c["method"])] = {**c, "reused_from": str(path)}
    for n in args.ns:
        game = datalike.make_game(n, seed=0)
        truth = game.shapley
        seeds = args.seeds if n < 1000 else args.seeds_large
        noises = args.noises if n < 1000 else args.noises_large
        msr_blocked: str | None = None if n <= args.msr_max_n else f"not run: n > {args.msr_max_n} (--msr-max-n)"
        sq_blocked: dict[str, str] = {}
        sq_slow: dict[str, str] = {}
        for mult in args.mults:
            budget = mult * n
            for noise in noises:
                # ours
                for label in args.ours:
                    if (n, noise, mult, label) in reused:
                        cells.append(reused[(n, noise, mult, label)])
                        continue
                    trials = []
                    if label == "regression_msr@leverage" and (msr_blocked or noise not in args.msr_noises):
                        cells.append({"n": n, "noise": noise, "budget": budget, "mult": mult, "method": label,
                                      "side": "ours", **summarise([{"failure": msr_blocked or "not run at this noise (--msr-noises)"}])})
                        continue
                    for seed in range(seeds):
                        if time.time() > deadline:
                            trials.append({"failure": "not run: --time-limit reached"})
                            break
                        oracle = datalike.NoisyGame(game, noise, seed=seed)
                        trials.append(run_ours(label, oracle, n, budget, seed, truth))
                        if label == "regression_msr@leverage" and trials[-1]["seconds"] > args.msr_limit:
                            msr_blocked = (f"not run: one fit took {trials[-1]['seconds']:.0f} s at {mult}n "
                                           f"(> --msr-limit {args.msr_limit:g} s)")
                            break
                    cells.append({"n": n, "noise": noise, "budget": budget, "mult": mult, "method": label,
                                  "side": "ours", **summarise(trials)})
                # shapiq 1.8
                for approx in args.shapiq if runner else ():
                    key = (n, noise, mult, approx)
                    if key in reused:
                        cells.append(reused[key])
                        continue
                    trials = []
                    for seed in range(seeds):
                        if approx in sq_blocked:
                            trials.append({"failure": sq_blocked[approx]})
                            break
                        if approx in sq_slow and (seed > 0 or noise != noises[0]):
                            if seed == 0:
                                trials.append({"failure": f"not run: {sq_slow[approx]}"})
                            break
                        if time.time() > deadline:
                            trials.append({"failure": "not run: --time-limit reached"})
                            break
                        oracle = datalike.NoisyGame(game, noise, seed=seed)
                        values, seconds, failure = runner.run(approx, oracle, n, budget + 2, seed, args.shapiq_timeout)
                        if failure:
                            trials.append({"failure": failure})
                            if failure.startswith(("timeout", "out of memory")):
                                sq_blocked[approx] = f"not run: {failure} at {mult}n"
                            break
                        trials.append({"error": rel_error(values, truth), "spearman": spearman(values, truth),
                                       "seconds": seconds, "calls": oracle.calls})
                        if seconds > args.slow_s and approx not in sq_slow:
                            sq_slow[approx] = (f"slow ({seconds:.0f} s a call at {mult}n): from there one seed, "
                                               f"noise {100 * noises[0]:g}% only")
                    cells.append({"n": n, "noise": noise, "budget": budget, "mult": mult, "method": approx,
                                  "side": "shapiq 1.8", **summarise(trials)})
                    c = cells[-1]
                    log(f"  n={n} {mult}n noise={noise:.3f} {approx}: "
                        + (f"err {c['error']:.3f} rho {c['spearman']:.3f} {c['seconds']:.1f} s" if "error" in c else c["failure"]))
                log(f"n={n} {mult}n noise={noise:.3f} done")
                if checkpoint:
                    checkpoint(cells)
    return cells


def accuracy_table(cells: list[dict]) -> str:
    lines = ["| n | noise | budget | method | error | Spearman | coverage | identified | seeds | s/fit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        if c.get("failure"):
            lines.append(f"| {c['n']} | {100 * c['noise']:.1f}% | {c['mult']}n | {c['method']} | miss: {c['failure']} | | | | 0 | |")
            continue
        cov = f"{c['coverage']:.2f}" if "coverage" in c else "-"
        ident = f"{c['identified']:.2f}" if "identified" in c else "-"
        lines.append(f"| {c['n']} | {100 * c['noise']:.1f}% | {c['mult']}n | {c['method']} | {c['error']:.3f} | "
                     f"{c['spearman']:.3f} | {cov} | {ident} | {c['seeds']} | {c['seconds']:.2f} |")
    return "\n".join(lines)


def best_shapiq(cells: list[dict], n: int, noise: float, mult: int) -> dict | None:
    sq = [c for c in cells if c["side"] == "shapiq 1.8" and c["n"] == n and c["noise"] == noise
          and c["mult"] == mult and "error" in c]
    return min(sq, key=lambda c: c["error"]) if sq else None


def compare_table(cells: list[dict]) -> tuple[str, list[dict]]:
    """Per (n, noise, budget): our default and each of ours vs the best shapiq 1.8 approximator."""
    rows = []
    keys = sorted({(c["n"], c["noise"], c["mult"]) for c in cells})
    lines = ["| n | noise | budget | default err | default ρ | best shapiq 1.8 | its err | its ρ | default / best | best of ours / best |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, noise, mult in keys:
        ours = {c["method"]: c for c in cells if c["side"] == "ours" and (c["n"], c["noise"], c["mult"]) == (n, noise, mult) and "error" in c}
        best = best_shapiq(cells, n, noise, mult)
        d = ours.get(DEFAULT)
        best_ours = min(ours.values(), key=lambda c: c["error"]) if ours else None
        row = {"n": n, "noise": noise, "mult": mult, "default_error": d and d["error"], "default_spearman": d and d["spearman"],
               "best_shapiq": best and best["method"], "best_shapiq_error": best and best["error"],
               "best_shapiq_spearman": best and best["spearman"],
               "ratio_default": d["error"] / best["error"] if d and best else None,
               "best_ours": best_ours and best_ours["method"],
               "ratio_best_ours": best_ours["error"] / best["error"] if best_ours and best else None}
        rows.append(row)

        def f(x, p=3):
            return "-" if x is None else f"{x:.{p}f}"

        lines.append(f"| {n} | {100 * noise:.1f}% | {mult}n | {f(row['default_error'])} | {f(row['default_spearman'])} | "
                     f"{row['best_shapiq'] or '-'} | {f(row['best_shapiq_error'])} | {f(row['best_shapiq_spearman'])} | "
                     f"{f(row['ratio_default'], 2)} | {f(row['ratio_best_ours'], 2)} ({row['best_ours']}) |")
    return "\n".join(lines), rows


def targets(cells: list[dict], compare: list[dict]) -> dict:
    def budget_reaching(method: str, n: int, noise: float, rho: float = 0.9) -> int | None:
        hits = sorted(c["mult"] for c in cells if c["method"] == method and c["n"] == n and c["noise"] == noise
                      and c.get("spearman", -1) >= rho)
        return hits[0] if hits else None

    def none_text(method: str, n: int, noise: float) -> str:
        ran = sorted(c["mult"] for c in cells if c["method"] == method and c["n"] == n and c["noise"] == noise
                     and "spearman" in c)
        return f"none of {', '.join(f'{m}n' for m in ran)}" if ran else "not run"

    out: dict = {}
    for n, limit in ((258, 3), (1000, 5)):
        per = {m: budget_reaching(m, n, 0.005) for m in OURS}
        best_sq = min((m for m in SHAPIQ if budget_reaching(m, n, 0.005) is not None),
                      key=lambda m: budget_reaching(m, n, 0.005), default=None)
        spear_at_limit = {c["method"]: c.get("spearman") for c in cells
                          if c["n"] == n and c["noise"] == 0.005 and c["mult"] == limit and c["side"] == "ours"}
        out[f"spearman_0.9_by_{limit}n_n{n}_noise0.5%"] = {
            "holds_default": per[DEFAULT] is not None and per[DEFAULT] <= limit,
            "first_budget_reaching_0.9": {m: (f"{v}n" if v else none_text(m, n, 0.005)) for m, v in per.items()},
            "spearman_at_limit": spear_at_limit,
            "best_shapiq_first_budget": best_sq and f"{budget_reaching(best_sq, n, 0.005)}n ({best_sq})",
        }
    from3 = [r for r in compare if r["mult"] >= 3 and r["ratio_default"] is not None]
    out["error_le_half_best_shapiq_from_3n"] = {
        "holds_default": bool(from3) and all(r["ratio_default"] <= 0.5 for r in from3),
        "held_default": sum(r["ratio_default"] <= 0.5 for r in from3), "cells": len(from3),
        "worst_default": max(from3, key=lambda r: r["ratio_default"]) if from3 else None,
        "held_best_of_ours": sum(r["ratio_best_ours"] <= 0.5 for r in from3),
    }
    floor = {}
    for n in sorted({c["n"] for c in cells}):
        d = [c for c in cells if c["method"] == DEFAULT and c["n"] == n and c["noise"] == 0.02 and "error" in c]
        floor[str(n)] = {
            "first_budget_reaching_0.9": {m: (f"{v}n" if (v := budget_reaching(m, n, 0.02)) else none_text(m, n, 0.02)) for m in OURS},
            "default_by_budget": [{"mult": c["mult"], "error": c["error"], "noise_error": c.get("noise_error"),
                                   "noiseless_error": c.get("noiseless_error"), "spearman": c["spearman"]} for c in d],
        }
    out["noise_2%"] = floor
    return out


# --------------------------------------------------------------------------------------------------------
# Held-out small games of bench/estimators.py
# --------------------------------------------------------------------------------------------------------
def small_games(args, runner: ShapiqRunner, log) -> dict:
    est = _load("estimators")
    saved = {}
    ref_file = ROOT / "bench" / "results" / "estimators.json"
    if ref_file.exists():
        saved = json.loads(ref_file.read_text()).get("references", {})
    rows = []
    ours = ("kernelshap@paired", "kernelshap@leverage", "regression_msr@leverage")
    reused = {}
    if args.reuse_shapiq:
        for r in json.loads(args.reuse_shapiq.read_text()).get("small_games", {}).get("rows", []):
            if r["method"] in SHAPIQ:
                reused[(r["game"], r["n"], r["mult"], r["method"])] = r
    for game_name in est.GAMES:
        for n in args.small_ns:
            game, closed, _ = est.GAMES[game_name](n)
            key = f"{game_name}/n={n}"
            if key in saved:
                truth, how = np.asarray(saved[key]["shapley"]), saved[key]["how"] + " (bench/results/estimators.json)"
            else:
                truth, how, _ = est.reference_values(game_name, game, n, closed)
            seeds = 5 if n <= 20 else 3
            for mult in args.small_mults:
                budget = mult * n
                for label in (*ours, *args.shapiq):
                    if (game_name, n, mult, label) in reused:
                        rows.append(reused[(game_name, n, mult, label)])
                        continue
                    errors, failure, seconds = [], None, []
                    for seed in range(seeds):
                        if label in ours:
                            method, design = label.split("@")
                            masks = sample_coalitions(n, budget, design, seed=seed)
                            ve, vf = est._endpoints(game)
                            clock = time.perf_counter()
                            value = estimate(masks, game(masks), ve, vf, method=method, seed=seed).value
                            seconds.append(time.perf_counter() - clock)
                        else:
                            value, s, failure = runner.run(label, game, n, budget + 2, seed, args.shapiq_timeout)
                            if failure:
                                break
                            seconds.append(s)
                        errors.append(rel_error(value, truth))
                    rows.append({"game": game_name, "n": n, "mult": mult, "method": label, "seeds": len(errors),
                                 "error": float(np.mean(errors)) if errors and not failure else None,
                                 "seconds": float(np.mean(seconds)) if seconds else None, "failure": failure,
                                 "reference": how})
            log(f"small game {game_name} n={n} done")
    summary = {}
    for mult in args.small_mults:
        for label in ours:
            ratios = []
            for game_name in est.GAMES:
                for n in args.small_ns:
                    cell = [r for r in rows if r["game"] == game_name and r["n"] == n and r["mult"] == mult]
                    mine = next(r["error"] for r in cell if r["method"] == label)
                    sq = [r for r in cell if r["method"] in args.shapiq and r["error"] is not None]
                    best = min(sq, key=lambda r: r["error"])
                    ratios.append({"game": game_name, "n": n, "ratio": mine / best["error"], "best": best["method"]})
            geo = float(np.exp(np.mean(np.log([r["ratio"] for r in ratios]))))
            summary[f"{label}@{mult}n"] = {"geomean_over_best_shapiq18": geo, "holds_le_1": geo <= 1.0, "cells": ratios}
    return {"rows": rows, "summary": summary}


# --------------------------------------------------------------------------------------------------------
# Machinery: n = 1,000, 10,000 evaluations through the real CLI
# --------------------------------------------------------------------------------------------------------
GAME_MODULE = '''"""1,000 data-like contributors (bench/datalike.py) as a python game for `contribshap run`."""
import importlib.util
import sys

import numpy as np

_spec = importlib.util.spec_from_file_location("bench_datalike", {datalike!r})
_mod = importlib.util.module_from_spec(_spec)
sys.modules["bench_datalike"] = _mod
_spec.loader.exec_module(_mod)
GAME = _mod.make_game({n}, seed=0)


def datalike_game(mask, seed):
    value = float(GAME.value(np.asarray(mask, dtype=bool)[None])[0])
    return {{"score": value + {sigma!r} * float(np.random.default_rng(seed).standard_normal())}}
'''


def _child(cmd: list[str], cwd: Path, env: dict, log_path: Path, timeout: float) -> dict:
    """Run a command: seconds, exit code, its stdout, and the child's max RSS (GB; /usr/bin/time -v, else
    getrusage(RUSAGE_CHILDREN), the largest child so far)."""
    timed = ["/usr/bin/time", "-v", *cmd] if Path("/usr/bin/time").exists() else cmd
    out_path, err_path = log_path.with_suffix(".out"), log_path.with_suffix(".err")
    clock = time.perf_counter()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        try:
            rc = subprocess.run(timed, cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout (> {timeout:.0f} s)"
    seconds = time.perf_counter() - clock
    stderr = err_path.read_text(errors="replace")
    rss_kb = next((int(line.split(":")[-1]) for line in stderr.splitlines() if "Maximum resident set size" in line),
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    tail = "\n".join(line for line in stderr.splitlines() if not line.startswith("\t"))[-600:]
    # CPU seconds (user + system): on a shared machine the wall clock also counts the waits for a core
    cpu = sum(float(line.split(":")[-1]) for line in stderr.splitlines()
              if line.strip().startswith(("User time (seconds)", "System time (seconds)")))
    return {"seconds": round(seconds, 2), "cpu_s": round(cpu, 2), "rc": rc, "peak_rss_gb": round(rss_kb / 2**20, 3),
            "stdout": out_path.read_text(errors="replace"), "stderr_tail": tail}


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def machinery(args, log) -> dict:
    n, evaluations = args.machinery_n, args.machinery_evals
    tmp = Path(tempfile.mkdtemp(prefix="contribshap-scale-"))
    game = datalike.make_game(n, seed=0)
    (tmp / "scale_game.py").write_text(GAME_MODULE.format(datalike=str(BENCH / "datalike.py"), n=n, sigma=0.01 * game.span))
    store = tmp / "store"
    (tmp / "scale.yaml").write_text(
        f"name: scale-{n}\nstore: {store}\n"
        f"game:\n  kind: python\n  target: \"scale_game:datalike_game\"\n  n_players: {n}\n"
        f"design: {{kind: paired, budget: {evaluations}, seed: 0}}\n"  # the budget counts the two endpoints
        f"estimators: [kernelshap]\nray: {{num_cpus: 1}}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
           "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token")}
    python, cli = sys.executable, str(Path(sys.executable).parent / "contribshap")
    # the game's own cost per evaluation, to separate the dispatch overhead from the work
    sys.path.insert(0, str(tmp))
    import scale_game

    masks = np.random.default_rng(0).random((200, n)) < 0.5
    clock = time.perf_counter()
    for i, mask in enumerate(masks):
        scale_game.datalike_game(mask, seed=i)
    game_s = (time.perf_counter() - clock) / len(masks)
    out: dict = {"n": n, "evaluations": evaluations, "design": "paired", "method": "kernelshap",
                 "game_s_per_evaluation": game_s, "cpus": os.cpu_count(),
                 "load_avg_1min_at_start": os.getloadavg()[0]}
    try:
        log(f"machinery: contribshap run ({n} players, {evaluations} evaluations)")
        phases = tmp / "phases.json"
        run = _child([python, str(BENCH / "scale_phases.py"), str(phases), "run", str(tmp / "scale.yaml"),
                      "--no-progress", "--json"], tmp, env, tmp / "run", args.machinery_timeout)
        run["summary"] = _json_or_none(run.pop("stdout"))
        run["phases"] = json.loads(phases.read_text()) if phases.exists() else None
        if run["phases"] and "dispatch" in run["phases"]:
            workers = os.cpu_count() or 1  # the local Ray gets every CPU; each evaluation asks for one
            ideal = evaluations * game_s / workers
            spent = run["phases"]["dispatch"]["seconds"]
            run["dispatch_ideal_s"] = ideal
            run["dispatch_overhead_s"] = spent - ideal
            run["dispatch_overhead_ms_per_evaluation"] = 1000 * (spent - ideal) / evaluations
        out["run"] = run
        log(f"machinery: run {run['seconds']} s rc {run['rc']} phases {run['phases']}; reduce")
        out["reduce"] = _child([cli, "reduce", str(store), "--json"], tmp, env, tmp / "reduce", args.machinery_timeout)
        doc = _json_or_none(out["reduce"].pop("stdout"))
        log(f"machinery: reduce {out['reduce']['seconds']} s, {out['reduce']['peak_rss_gb']} GB; report")
        out["report"] = _child([cli, "report", str(store)], tmp, env, tmp / "report", args.machinery_timeout)
        out["report"].pop("stdout")
        if doc is not None:
            out["accuracy_check"] = _machinery_accuracy(doc, game.shapley)
        files = [p for p in store.rglob("*") if p.is_file()]
        out["store"] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    finally:
        if not args.keep_store:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            out["kept"] = str(tmp)
    ok = all(out.get(step, {}).get("rc") == 0 for step in ("run", "reduce", "report"))
    out["targets"] = {  # a step that failed meets no target
        "reduce_le_60s": ok and out.get("reduce", {}).get("seconds", math.inf) <= 60,
        "reduce_le_4GB": ok and out.get("reduce", {}).get("peak_rss_gb", math.inf) <= 4,
        "report_le_30s": ok and out.get("report", {}).get("seconds", math.inf) <= 30,
    }
    return out


def _machinery_accuracy(doc: dict, truth: np.ndarray) -> dict:
    """Error, Spearman and identified share of the run's estimate (``reduce --json``: property -> method ->
    contributors in player order), a check that the store held the right game."""
    est = doc.get("score", {}).get("kernelshap")
    if not est:
        return {"found": False}
    value = np.array([c["value"] for c in est["contributors"]], dtype=float)
    cover = [c["ci_low"] <= t <= c["ci_high"] for c, t in zip(est["contributors"], truth, strict=True)
             if c["ci_low"] is not None]
    return {"found": True, "error": rel_error(value, truth), "spearman": spearman(value, truth),
            "identified": float(np.mean([c["identified"] for c in est["contributors"]])),
            "coverage_of_identified": float(np.mean(cover)) if cover else None,
            "more_evaluations": est.get("more_evaluations")}


# --------------------------------------------------------------------------------------------------------
# Markdown (docs/benchmarks.md) from the JSON
# --------------------------------------------------------------------------------------------------------
def _cell_text(c: dict | None) -> str:
    if c is None:
        return "not run"
    if "error" not in c:
        return f"miss: {c.get('failure', 'not run')}"
    seeds = "" if c["seeds"] >= 3 else f" ({c['seeds']} seed{'s' if c['seeds'] > 1 else ''})"
    return f"{c['error']:.3f} / {c['spearman']:.2f}{seeds}"


def render_markdown(doc: dict) -> str:
    acc = doc.get("accuracy")
    out: list[str] = ["## Scale: 50 to 1,000 contributors", ""]
    if acc:
        st = acc["settings"]
        out += [
            "Data-like games (`bench/datalike.py`): each contributor's own worth (log-normal), 5% harmful "
            "contributors (negative worth), styles of 3 to 10 partly redundant contributors covering 60% of "
            "them (a saturating coverage game per style, its Shapley values enumerated exactly), and a size "
            "term b·sqrt(|S|/n); the exact Shapley value is the sum of the parts'. Utility noise: a fresh "
            "Gaussian draw per evaluation with sd = noise x |v(N) - v(∅)|. Budget = sampled coalitions; the "
            "empty and full coalitions are evaluated on top for every method (shapiq gets budget + 2 calls).",
            "",
            f"Command: `nice -n 10 .venv/bin/python {acc['command']}` (shapiq {st['shapiq_version']} in "
            f"`.bench-venv-shapiq`, Python 3.12; each shapiq call limited to {st['shapiq_timeout_s']:g} s and "
            f"{st['shapiq_memory_gb']:g} GB of address space). Seeds: {st['seeds']} per cell at n = 50 and "
            f"258, {st['seeds_n1000']} at n = 1,000 (fewer where a cell says so). Results: "
            "`bench/results/scale.json` (`accuracy`).",
            "",
        ]
        sources = sorted({c["reused_from"] for c in acc["cells"] if c.get("reused_from")})
        for src in sources:
            path = Path(src) if Path(src).is_absolute() else ROOT / src
            try:
                sub = json.loads(path.read_text())["accuracy"]
                sides = sorted({c["side"] for c in acc["cells"] if c.get("reused_from") == src})
                out += [f"- {' and '.join(sides)} cells from `{src}`, made by `nice -n 10 .venv/bin/python "
                        f"{sub['command']}` ({sub['elapsed_s'] / 60:.0f} min)."]
            except (OSError, KeyError, json.JSONDecodeError):
                out += [f"- cells from `{src}` (file not found)."]
        out += [
            "",
            "Games: " + "; ".join(f"n = {n}: |v(N) - v(∅)| = {g['span']:.0f}, {g['styles']} styles, "
                                  f"{g['harmful']} harmful" for n, g in acc["games"].items()) + ".",
            "",
            "Cells: relative error ‖φ̂ − φ‖/‖φ‖ / Spearman with φ, mean over seeds. Ours: `method@design`.",
            "",
        ]
        cells = acc["cells"]
        methods = list(dict.fromkeys(c["method"] for c in cells))
        for n in sorted({c["n"] for c in cells}):
            for noise in sorted({c["noise"] for c in cells if c["n"] == n}):
                mults = sorted({c["mult"] for c in cells if c["n"] == n and c["noise"] == noise})
                out += [f"**n = {n}, noise {100 * noise:g}%** (error / Spearman)", "",
                        "| method | " + " | ".join(f"{m}n" for m in mults) + " |",
                        "|---|" + "---|" * len(mults)]
                for meth in methods:
                    row = {c["mult"]: c for c in cells if c["n"] == n and c["noise"] == noise and c["method"] == meth}
                    if row:
                        out.append(f"| {meth} | " + " | ".join(_cell_text(row.get(m)) for m in mults) + " |")
                out.append("")
        out += ["**Our intervals** (nominal 95%): coverage of the exact values / share of contributors "
                "identified, mean over seeds", "",
                "| n | noise | method | " + " | ".join(f"{m}n" for m in st["mults"]) + " |",
                "|---|---|---|" + "---|" * len(st["mults"])]
        for n in sorted({c["n"] for c in cells}):
            for noise in sorted({c["noise"] for c in cells if c["n"] == n}):
                for meth in st["ours"]:
                    row = {c["mult"]: c for c in cells if c["n"] == n and c["noise"] == noise and c["method"] == meth}
                    if not row:
                        continue
                    texts = [(f"{row[m]['coverage']:.2f} / {row[m]['identified']:.2f}" if m in row and "coverage" in row[m]
                              else "not run") for m in st["mults"]]
                    out.append(f"| {n} | {100 * noise:g}% | {meth} | " + " | ".join(texts) + " |")
        out += ["", "**Default (`kernelshap@paired`) against the best shapiq 1.8 approximator of each cell**", "",
                acc["compare_table"], ""]
        t = acc["targets"]
        out += ["**Targets**", ""]
        for key, v in t.items():
            if key.startswith("spearman"):
                out.append(f"- `{key}`: {'met' if v['holds_default'] else 'missed'} by the default; first budget "
                           f"reaching 0.9: {', '.join(f'{m} {b}' for m, b in v['first_budget_reaching_0.9'].items())}; "
                           f"Spearman at the limit: " + ", ".join(f"{m} {x:.2f}" for m, x in v["spearman_at_limit"].items() if x is not None)
                           + f"; best shapiq: {v['best_shapiq_first_budget'] or 'none of the budgets run'}.")
            elif key.startswith("error_le_half"):
                w = v["worst_default"]
                out.append(f"- error ≤ 0.5x the best shapiq 1.8 from 3n: default {v['held_default']}/{v['cells']} cells "
                           f"(worst {w['ratio_default']:.2f}x at n = {w['n']}, {100 * w['noise']:g}%, {w['mult']}n vs "
                           f"{w['best_shapiq']}); best of ours per cell {v['held_best_of_ours']}/{v['cells']}."
                           if w else "- error ≤ 0.5x the best shapiq 1.8 from 3n: no cells")
            elif key == "noise_2%":
                for n, f in v.items():
                    parts = ", ".join(f"{d['mult']}n: error {d['error']:.3f} (noise part {d['noise_error']:.3f}, "
                                      f"noiseless {d['noiseless_error']:.3f}), ρ {d['spearman']:.2f}"
                                      for d in f["default_by_budget"])
                    out.append(f"- 2% noise, n = {n}: first budget reaching Spearman 0.9: "
                               + ", ".join(f"{m} {b}" for m, b in f["first_budget_reaching_0.9"].items())
                               + ". Noise part of the default's error (‖φ̂ − φ̂₀‖/‖φ‖, φ̂₀ the fit of the same "
                               f"masks on noiseless values): {parts or 'no cell run at this noise'}.")
        out += ["", "Not run: " + "; ".join(f"{k} ({v})" for k, v in acc["not_run"].items()) + ".", ""]
    sg = doc.get("small_games")
    if sg:
        out += ["**Held-out small games** (`bench/estimators.py`'s additive+noise, interaction, data-valuation, "
                "voting at n = 10, 20, 50; its reference values) through shapiq 1.8, same command. Geometric mean "
                "over the 12 (game, n) of our error / the best shapiq 1.8 error (target ≤ 1.0 for the default):", "",
                "| ours | budget | geomean / best shapiq 1.8 | ≤ 1.0 |", "|---|---|---|---|"]
        for key, s in sg["summary"].items():
            label, mult = key.rsplit("@", 1)
            out.append(f"| {label} | {mult} | {s['geomean_over_best_shapiq18']:.2f} | {'yes' if s['holds_le_1'] else 'no'} |")
        out.append("")
        rows = sg["rows"]
        methods = list(dict.fromkeys(r["method"] for r in rows))
        mults = sorted({r["mult"] for r in rows})
        for mult in mults:
            keys = list(dict.fromkeys((r["game"], r["n"]) for r in rows))
            out += [f"Small games at {mult}n, relative error (mean over 5 seeds at n ≤ 20, 3 at n = 50):", "",
                    "| method | " + " | ".join(f"{g} {n}" for g, n in keys) + " |", "|---|" + "---|" * len(keys)]
            for meth in methods:
                texts = []
                for g, n in keys:
                    r = next((r for r in rows if r["method"] == meth and r["game"] == g and r["n"] == n and r["mult"] == mult), None)
                    texts.append("not run" if r is None else f"miss: {r['failure']}" if r["error"] is None else f"{r['error']:.3f}")
                out.append(f"| {meth} | " + " | ".join(texts) + " |")
            out.append("")
    m = doc.get("machinery")
    if m:
        run = m.get("run", {})
        ph = run.get("phases") or {}

        def sec(name):
            return f"{ph[name]['seconds']:.1f}" if name in ph else "-"

        done = (run.get("summary") or {}).get("evaluated", m["evaluations"])
        out += [f"**Machinery at n = {m['n']}, {done} evaluations** (a python game of data-like "
                f"contributors through the real `contribshap run`: local Ray, Parquet store; design `paired`, "
                f"`kernelshap`). Command: `nice -n 10 .venv/bin/python {doc.get('machinery_command', 'bench/scale.py --machinery')}`; "
                f"{m['cpus']} CPUs shared with other work (1-min load {m['load_avg_1min_at_start']:.1f} at start). "
                "Phases of the run are timed around the driver's own functions (`bench/scale_phases.py`); reduce "
                "and report are separate CLI calls, peak memory = max RSS of that process (`/usr/bin/time -v`).", "",
                "| step | seconds | CPU s | peak RSS GB | target | verdict |", "|---|---|---|---|---|---|",
                f"| run (all) | {run.get('seconds', '-')} | {run.get('cpu_s', '-')} | {run.get('peak_rss_gb', '-')} | | rc {run.get('rc')} |",
                f"| · Ray start | {sec('ray_start')} | | | | |",
                f"| · prepare | {sec('prepare')} | | | | |",
                f"| · plan (draw, write, jobs) | {sec('plan')} | | | | |",
                f"| · store scan | {sec('scan')} | | | | |",
                f"| · dispatch | {sec('dispatch')} | | | | overhead {run.get('dispatch_overhead_s', float('nan')):.1f} s = "
                f"{run.get('dispatch_overhead_ms_per_evaluation', float('nan')):.2f} ms an evaluation (game itself "
                f"{1000 * m['game_s_per_evaluation']:.2f} ms) |",
                f"| · reduce inside run | {sec('reduce')} | | | | |"]
        for step, limit in (("reduce", "≤ 60 s, ≤ 4 GB"), ("report", "≤ 30 s")):
            r = m.get(step, {})
            verdict = []
            if step == "reduce":
                verdict = [f"{'met' if m['targets']['reduce_le_60s'] else 'missed'} (time)",
                           f"{'met' if m['targets']['reduce_le_4GB'] else 'missed'} (memory)"]
            else:
                verdict = [f"{'met' if m['targets']['report_le_30s'] else 'missed'}"]
            out.append(f"| `contribshap {step}` | {r.get('seconds', '-')} | {r.get('cpu_s', '-')} | {r.get('peak_rss_gb', '-')} | {limit} | "
                       f"{', '.join(verdict)}, rc {r.get('rc')} |")
        a = m.get("accuracy_check") or {}
        if a.get("found"):
            cov = a.get("coverage_of_identified")
            out += ["", f"The run's estimate (1% noise, 10n): error {a['error']:.3f}, Spearman {a['spearman']:.2f}, "
                        f"identified {a['identified']:.2f}, coverage of the identified "
                        f"{'-' if cov is None else f'{cov:.2f}'}; more_evaluations {a['more_evaluations']}."]
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------------
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 50, 258; one seed; 0.5%% and 2%% noise; 3n, 5n")
    parser.add_argument("--machinery", action="store_true", help="only the n = 1,000 run through the real CLI")
    parser.add_argument("--ns", type=_ints, default=(50, 258, 1000))
    parser.add_argument("--mults", type=_ints, default=MULTS)
    parser.add_argument("--noises", type=_floats, default=NOISES)
    parser.add_argument("--noises-large", type=_floats, default=(0.005, 0.02), help="noises at n = 1,000")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell for n < 1,000 (default 3)")
    parser.add_argument("--seeds-large", type=int, default=1, help="seeds per cell at n = 1,000 (default 1)")
    parser.add_argument("--ours", default=",".join(OURS), help="our methods (method@design), comma-separated")
    parser.add_argument("--shapiq", default=",".join(SHAPIQ), help="shapiq 1.8 approximators, comma-separated")
    parser.add_argument("--no-shapiq", action="store_true", help="skip shapiq (ours only)")
    parser.add_argument("--shapiq-venv", type=Path, default=ROOT / ".bench-venv-shapiq",
                        help="Python 3.12 venv with shapiq 1.8 (built there when missing)")
    parser.add_argument("--shapiq-timeout", type=float, default=180.0, help="seconds per shapiq task (default 180)")
    parser.add_argument("--shapiq-memory-gb", type=float, default=8.0, help="address-space limit of the runner")
    parser.add_argument("--slow-s", type=float, default=30.0,
                        help="a shapiq approximator slower than this per call runs one seed at the first noise only")
    parser.add_argument("--reuse-shapiq", type=Path, default=None,
                        help="take the shapiq cells from this earlier scale.json (same settings) instead of rerunning them")
    parser.add_argument("--reuse-ours", type=Path, nargs="+", default=None,
                        help="take our cells from these earlier scale.json files (e.g. runs of --no-shapiq) instead of rerunning them")
    parser.add_argument("--msr-limit", type=float, default=60.0, help="stop regression_msr at an n once a fit takes longer")
    parser.add_argument("--msr-max-n", type=int, default=258)
    parser.add_argument("--msr-noises", type=_floats, default=(0.005,), help="noises at which regression_msr runs")
    parser.add_argument("--small-games", action=argparse.BooleanOptionalAction, default=True,
                        help="the held-out small games of bench/estimators.py through shapiq 1.8")
    parser.add_argument("--small-ns", type=_ints, default=(10, 20, 50))
    parser.add_argument("--small-mults", type=_ints, default=(10,))
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds for the accuracy grid; cells past it are recorded as not run")
    parser.add_argument("--machinery-n", type=int, default=1000)
    parser.add_argument("--machinery-evals", type=int, default=10_000)
    parser.add_argument("--machinery-timeout", type=float, default=1800.0)
    parser.add_argument("--keep-store", action="store_true")
    parser.add_argument("--markdown", action="store_true",
                        help="print the docs/benchmarks.md section from the JSON (--out) and exit")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default bench/results/scale.json, quick: scale_quick.json)")
    args = parser.parse_args()
    args.ours = tuple(args.ours.split(","))
    args.shapiq = () if args.no_shapiq else tuple(args.shapiq.split(","))
    if unknown := [m for m in args.ours if m not in OURS]:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(OURS)}")
    if unknown := [m for m in args.shapiq if m not in SHAPIQ]:
        parser.error(f"unknown shapiq approximators {unknown}; valid: {', '.join(SHAPIQ)}")
    if args.quick:
        args.ns, args.mults, args.noises, args.seeds = (50, 258), (3, 5), (0.005, 0.02), 1
        args.shapiq = tuple(m for m in args.shapiq if m in ("RegressionMSR", "LeverageSHAP", "PermutationSV", "KernelSHAP+pairing"))
        args.small_games, args.msr_max_n, args.shapiq_timeout = False, 50, 60.0
    out = args.out or ROOT / "bench" / "results" / ("scale_quick.json" if args.quick else "scale.json")
    if args.markdown:
        print(render_markdown(json.loads(out.read_text())))
        return
    started = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - started:6.0f} s] {msg}", flush=True)

    document: dict = {}
    document["description"] = "bench/scale.py: accuracy on data-like games at n = 50..1,000 vs shapiq 1.8; machinery at n = 1,000"
    if args.machinery:
        document["machinery"] = m = machinery(args, log)
        document["machinery_command"] = " ".join(["bench/scale.py", *sys.argv[1:]])
        for phase in ("run", "reduce", "report"):
            if phase in m:
                print(f"{phase}: {m[phase]['seconds']} s, peak RSS {m[phase]['peak_rss_gb']} GB, rc {m[phase]['rc']}")
        print(json.dumps(m["targets"]), json.dumps(m.get("accuracy_check")))
    else:
        runner = None
        if args.shapiq:
            runner = ShapiqRunner(ensure_shapiq_venv(args.shapiq_venv), args.shapiq_memory_gb)
        try:
            def checkpoint(cells: list[dict]) -> None:  # a partial document after every cell group
                out.parent.mkdir(parents=True, exist_ok=True)
                partial = out.with_suffix(".partial.json")
                partial.write_text(json.dumps({"accuracy": {"command": " ".join(["bench/scale.py", *sys.argv[1:]]),
                                                            "partial": True, "cells": cells,
                                                            "elapsed_s": time.time() - started}}, default=float))

            cells = accuracy(args, runner, started + args.time_limit, log, checkpoint)
            table = accuracy_table(cells)
            comp_table, compare = compare_table(cells)
            verdicts = targets(cells, compare)
            print(table, "\n", comp_table, "\n", json.dumps(verdicts, indent=1), sep="\n")
            document["accuracy"] = {
                "command": " ".join(["bench/scale.py", *sys.argv[1:]]),
                "settings": {"ns": args.ns, "mults": args.mults, "noises": args.noises, "noises_n1000": args.noises_large,
                             "seeds": args.seeds, "seeds_n1000": args.seeds_large, "ours": args.ours,
                             "shapiq": args.shapiq,
                             "shapiq_version": (runner and runner.version) or (args.reuse_shapiq and json.loads(
                                 args.reuse_shapiq.read_text())["accuracy"]["settings"]["shapiq_version"]),
                             "shapiq_timeout_s": args.shapiq_timeout, "shapiq_memory_gb": args.shapiq_memory_gb,
                             "msr_limit_s": args.msr_limit, "msr_noises": args.msr_noises},
                "not_run": NOT_RUN, "cells": cells, "table": table, "compare_table": comp_table,
                "compare": compare, "targets": verdicts, "elapsed_s": time.time() - started,
                "games": {str(n): {"span": datalike.make_game(n, 0).span, "styles": len(datalike.make_game(n, 0).group_worth),
                                   "harmful": len(datalike.make_game(n, 0).harmful)} for n in args.ns},
            }
            if args.small_games and runner:
                sg = small_games(args, runner, log)
                document["small_games"] = {"command": document["accuracy"]["command"], **sg}
                for key, s in sg["summary"].items():
                    print(f"small games {key}: geomean error / best shapiq 1.8 = {s['geomean_over_best_shapiq18']:.2f}")
        finally:
            if runner:
                runner.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = json.loads(out.read_text()) if out.exists() else {}  # keep the sections another mode wrote
    merged.update(document)
    out.write_text(json.dumps(merged, indent=1, default=float))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
