"""The command line's own errors: usage errors and ``--version``.

- a usage error (missing argument, unknown option, a value of the wrong type) prints the usage line and
  the error, exits 2 and shows no traceback (each through the real console script);
"""

from __future__ import annotations

import subprocess

import pytest
from contribshap.pipeline import __version__

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
