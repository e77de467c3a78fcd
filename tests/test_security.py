"""The embedded Ray instance keeps Ray's token authentication on: a client without the token is refused.

Ray 2.60 listens on every interface of the machine whatever node address it is asked for, so the token is
what keeps a local run closed to other hosts (``make test`` additionally runs inside a loopback-only network
namespace). The check talks to the session's Ray GCS from a fresh process twice: with an empty home folder
(no token) it must be refused with Ray's ``AuthenticationError``; with the real home folder and
``RAY_AUTH_MODE=token`` the same call must succeed (so the refusal is about the token, not the address).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_PROBE = """
import sys
import ray._raylet as raylet
try:
    raylet.GcsClient(address=sys.argv[1]).internal_kv_keys(b"", namespace=None, timeout=10)
    print("ACCEPTED")
except Exception as error:
    print("REFUSED", type(error).__name__)
"""


def _probe(gcs: str, *, home: Path, mode: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(home)
    if mode is not None:
        env["RAY_AUTH_MODE"] = mode
    done = subprocess.run([sys.executable, "-c", _PROBE, gcs], env=env, capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else f"exit {done.returncode}"


def test_local_ray_refuses_clients_without_the_token(ray_address: str, tmp_path: Path) -> None:
    assert _probe(ray_address, home=tmp_path, mode=None) == "REFUSED AuthenticationError"
    assert _probe(ray_address, home=Path.home(), mode="token") == "ACCEPTED"


def test_product_never_disables_ray_auth() -> None:
    """No module of the product turns token authentication off for the instance it starts."""
    root = Path(__file__).resolve().parent.parent
    offenders = [str(p.relative_to(root)) for folder in ("pipeline", "workers")
                 for p in (root / folder).rglob("*.py") if "RAY_AUTH_MODE" in p.read_text() and "disabled" in p.read_text()]
    assert offenders == []
