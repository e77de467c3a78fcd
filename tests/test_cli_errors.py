"""The command line's own errors: usage errors, ``--version``, options a python game cannot take, and a
fidelity whose every job fails.

- a usage error (missing argument, unknown option, a value of the wrong type) prints the usage line and
  the error, exits 2 and shows no traceback (each through the real console script);
- ``check`` and ``run`` bind ``game.options`` and ``low_fidelity.game.options`` to the python game's
  function and refuse a mismatch in one line with the fix (``run`` before it writes anything);
- a two-fidelity run whose cheap jobs all fail exits 3 naming the first error; what it computed stays,
  and the same command resumes once the cause is gone.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from contribshap.pipeline import __version__
from contribshap.pipeline.products.cli import main
from contribshap.pipeline.storage.store import Store

#: (arguments, exit code, text stderr or stdout must contain)
USAGE_LINES = [
    (["run"], 2, "Missing argument 'config'"),
    (["status"], 2, "Missing argument 'store'"),
    (["reduce", "STORE", "--nope"], 2, "No such option: --nope"),
    (["demo", "--nope"], 2, "No such option: --nope"),
    (["evaluate", "STORE", "--seed", "abc"], 2, "Invalid value for '--seed'"),
    (["--version"], 0, f"contribshap {__version__}"),
]


@pytest.mark.parametrize(("args", "code", "text"), USAGE_LINES, ids=[" ".join(a) for a, _, _ in USAGE_LINES])
def test_usage_errors_are_the_usage_line_and_exit_2(args, code, text, contribshap, tmp_path):
    done = subprocess.run([*contribshap, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert text in done.stdout + done.stderr
    if code == 2:
        assert done.stderr.startswith(f"Usage: contribshap {args[0]} [OPTIONS]"), done.stderr
        assert len(done.stderr.strip().splitlines()) <= 5, done.stderr
    else:
        assert done.stdout.strip() == text and not done.stderr


GAMES = textwrap.dedent("""
    from pathlib import Path

    import numpy as np

    WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0])


    def additive(mask, steps=10, broken_flag=None, seed=0):
        if broken_flag is not None and Path(broken_flag).exists():
            raise RuntimeError(f"the cheap game is broken ({broken_flag} exists)")
        return {"value": float(WEIGHTS[np.asarray(mask, dtype=bool)].sum()) * steps / 10}
""")


def _config(folder: Path, name: str, **change) -> Path:
    raw = {"name": name, "store": f"runs/{name}",
           "game": {"kind": "python", "target": f"{name}_games:additive", "n_players": 4, "options": {"steps": 10}},
           "design": {"kind": "paired", "budget": 8, "seed": 0},
           "low_fidelity": {"game": {"options": {"steps": 5}}, "budget": 12},
           "estimators": ["kernelshap"], "ray": {"num_cpus": 1}}
    raw.update(change)
    (folder / f"{name}_games.py").write_text(GAMES)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("change", "key", "problem"), [
    ({"game": {"kind": "python", "target": "{name}_games:additive", "n_players": 4, "options": {"stepz": 10}}},
     "game.options", "got an unexpected keyword argument 'stepz' (it takes: steps, broken_flag)"),
    ({"low_fidelity": {"game": {"options": {"stepz": 5}}, "budget": 12}},
     "low_fidelity.game.options", "got an unexpected keyword argument 'stepz'"),
    ({"game": {"kind": "python", "target": "{name}_games:additive", "n_players": 4, "options": {"mask": 1}}},
     "game.options", "multiple values for argument 'mask'"),
])
def test_check_and_run_refuse_options_the_game_cannot_take(tmp_path, monkeypatch, capsys, change, key, problem):
    monkeypatch.chdir(tmp_path)
    name = f"opts{abs(hash(key + problem)) % 10**6}"
    change = yaml.safe_load(yaml.safe_dump(change).replace("{name}", name))
    config = _config(tmp_path, name, **change)
    for command in ("check", "run"):
        assert main([command, str(config)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith("error: ") and f"{key}: {name}_games:additive cannot be called with them" in err
        assert problem in err and f"fix {key} or the function's parameters" in err
    assert not (tmp_path / "runs").exists()  # run refused before it wrote anything
    good = _config(tmp_path, name)
    assert main(["check", str(good)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {good}")


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["low-fidelity", "full-fidelity"])
def test_a_fidelity_whose_every_job_fails_exits_3_and_keeps_what_was_computed(tmp_path, contribshap, game_env,
                                                                                ray_address, broken):
    flag = tmp_path / "broken"
    flag.touch()
    name = f"{broken.split('-')[0]}fail"
    if broken == "low-fidelity":
        change = {"low_fidelity": {"game": {"options": {"steps": 5, "broken_flag": str(flag)}}, "budget": 12}}
    else:
        change = {"game": {"kind": "python", "target": f"{name}_games:additive", "n_players": 4,
                           "options": {"steps": 10, "broken_flag": str(flag)}},
                  "low_fidelity": {"game": {"options": {"steps": 5, "broken_flag": None}}, "budget": 12}}
    config = _config(tmp_path, name, **change)
    args = [*contribshap, "run", config.name, "--address", ray_address, "--no-progress"]

    # 1. every job of one fidelity fails: exit 3, the first error named, what was computed kept
    first = subprocess.run(args, cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 3, first.stderr
    lines = first.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: every {broken} evaluation of this round failed ("), first.stderr
    assert f"the first error: RuntimeError: the cheap game is broken ({flag} exists)" in lines[-1]
    assert "Traceback" not in first.stderr
    store = Store(tmp_path / "runs" / name)
    namespaces = sorted(store.namespaces(), key=len)  # <config hash>, then <config hash>-<variant>
    high = store.scan(namespaces[0])
    if broken == "low-fidelity":
        low = store.scan(namespaces[1])
        assert high.rows and all(r["status"] == "ok" for r in high.rows)
        assert low.rows and all(r["status"] == "failed" for r in low.rows)
    else:
        assert high.rows and all(r["status"] == "failed" for r in high.rows)
        assert namespaces == [namespaces[0]]  # it stopped before the cheap game

    # 2. the cause gone, the same command finishes; the full-fidelity evaluations that were ok are not redone
    flag.unlink()
    second = subprocess.run(args, cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0, second.stderr
    rows = [r for ns in store.namespaces() for r in store.scan(ns).rows]
    assert rows and all(r["status"] == "ok" for r in rows)
    if broken == "low-fidelity":
        assert f"{len(low.rows)} evaluated, 0 failed, {len(high.rows)} already done" in second.stderr
    else:  # the failed rows are evaluated again, and the cheap game for the first time
        assert f"{len(rows)} evaluated, 0 failed, 0 already done" in second.stderr
