"""bench/device_smoke.sh: the wheels' layout into calls under the size limit, staging, reassembly and its checks.

Offline, on small fake wheels (no download, no install); the limit is scaled down so that one wheel must be cut.
"""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device_smoke.sh"
KIB = 1024


def fake_wheel(folder: Path, name: str, files: dict[str, bytes]) -> Path:
    path = folder / f"{name}-1.0-py3-none-any.whl"
    record = "".join(f"{n},,\n" for n in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for member, data in files.items():
            archive.writestr(member, data)
        archive.writestr(f"{name}-1.0.dist-info/METADATA", f"Name: {name}\nVersion: 1.0\n")
        archive.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return path


def device_smoke(*args: str, stage: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    if stage is not None:
        env["DEVICE_STAGE"] = str(stage)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture()
def laid_out(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    fake_wheel(wheels, "ray", {"ray/__init__.py": b"", "ray/jars/ray_dist.jar": rng.bytes(300 * KIB),
                               "ray/_raylet.so": rng.bytes(350 * KIB)})
    fake_wheel(wheels, "diffusers", {"diffusers/__init__.py": rng.bytes(60 * KIB)})
    fake_wheel(wheels, "transformers", {"transformers/__init__.py": rng.bytes(120 * KIB)})
    fake_wheel(wheels, "pydantic", {"pydantic/__init__.py": rng.bytes(20 * KIB)})
    done = device_smoke("here", "--offline", str(wheels), "--dir", str(tmp_path / "plan"), "--limit-mib", "0.6",
                        "--tree-mib", "0.05")
    assert done.returncode == 0, done.stderr
    return tmp_path


def test_here_cuts_the_big_wheel_and_keeps_every_call_under_the_limit(laid_out: Path) -> None:
    calls = sorted((laid_out / "plan" / "split").iterdir())
    assert len(calls) >= 2
    for call in calls:  # each call's payload + the travelling tree fits the limit
        assert sum(p.stat().st_size for p in call.iterdir()) + 0.05 * 2**20 <= 0.6 * 2**20
    manifest = json.loads((calls[0] / "manifest.json").read_text())
    ray = manifest["wheels"]["ray-1.0-py3-none-any.whl"]
    assert len(ray["parts"]) >= 2
    assert len({p["call"] for p in ray["parts"]}) == len(ray["parts"])
    # the pieces, in order, are the wheel
    joined = b"".join((laid_out / "plan" / "split" / f"call{p['call']}" / p["name"]).read_bytes() for p in ray["parts"])
    assert joined == (laid_out / "wheels" / "ray-1.0-py3-none-any.whl").read_bytes()


def test_one_call_plan_drops_ray_jars_and_the_overridden_packages(laid_out: Path) -> None:
    [call] = sorted((laid_out / "plan" / "one").iterdir())
    names = sorted(p.name for p in call.iterdir())
    assert "transformers-1.0-py3-none-any.whl" not in names
    with zipfile.ZipFile(call / "ray-1.0-py3-none-any.whl") as archive:
        members = archive.namelist()
        record = archive.read("ray-1.0.dist-info/RECORD").decode()
    assert "ray/_raylet.so" in members
    assert not any(m.startswith("ray/jars/") for m in members)
    assert "ray/jars/" not in record and "ray/_raylet.so" in record


def test_there_reassembles_after_stage_and_says_which_call_is_missing(laid_out: Path) -> None:
    calls = sorted((laid_out / "plan" / "split").iterdir())
    last = calls[-1]
    lost = device_smoke("there", str(last), "--check-only", stage=laid_out / "cold")
    assert lost.returncode == 3
    assert "call 1" in lost.stderr and "again" in lost.stderr

    stage = laid_out / "warm"
    for call in calls[:-1]:
        assert device_smoke("stage", str(call), stage=stage).returncode == 0
    done = device_smoke("there", str(last), "--check-only", stage=stage)
    assert done.returncode == 0, done.stderr
    assert "4 wheels reassembled and checked" in done.stdout
    [staged] = stage.iterdir()
    assert (staged / "wheels" / "ray-1.0-py3-none-any.whl").read_bytes() == (
        laid_out / "wheels" / "ray-1.0-py3-none-any.whl").read_bytes()

    # a staged piece from an earlier call that no longer matches the manifest is caught
    name = next(p.name for p in calls[0].iterdir() if p.name != "manifest.json")
    piece = staged / name
    piece.write_bytes(piece.read_bytes()[:-1] + b"x")
    bad = device_smoke("there", str(last), "--check-only", stage=stage)
    assert bad.returncode == 1
    assert "sha256" in bad.stderr
