"""The command line's own errors: usage errors, ``--version``, and options a python game cannot take.

- a usage error (missing argument, unknown option, a value of the wrong type) prints the usage line and
  the error, exits 2 and shows no traceback (each through the real console script);
- ``check`` and ``run`` bind ``game.options`` and ``low_fidelity.game.options`` to the python game's
  function and refuse a mismatch in one line with the fix (``run`` before it writes anything);
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from contribshap.pipeline import __version__
from contribshap.pipeline.products.cli import main

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
