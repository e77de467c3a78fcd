"""The package works installed, not only checked out: build the wheel, install it without its dependencies
into a fresh environment that reuses the already installed ones, run ``contribshap demo --ci`` from an empty
folder (its configs come from inside the package), and check that every process used the installed copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_from_an_empty_folder(tmp_path):
    # 1. the wheel (the build backend is installed already: no isolation, no download)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO_ROOT)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = wheels.glob("contribshap-*.whl")
    # 2. a fresh environment that sees this one's packages through a .pth (not as a site folder, so this
    #    checkout's editable install is not seen), and the wheel installed into it without dependencies
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    # 3. the demo from an empty folder, with the environment's own console script and a Ray of its own
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    done = subprocess.run([str(venv / "bin" / "contribshap"), "demo", "--ci", "--json"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (work / "runs" / "demo_ci" / "estimates" / "estimates.json").is_file()
    assert summary["store"].endswith("demo_ci")
    # 4. the code that ran was the installed copy (the driver's, and the workers' as recorded in the store)
    where = subprocess.run([str(python), "-c", "import contribshap.pipeline as p; print(p.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), where
    manifest = json.loads((work / "runs" / "demo_ci" / "manifest.json").read_text())
    assert manifest["code_version"] == "0.1.0"
