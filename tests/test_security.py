"""The embedded Ray instance keeps Ray's token authentication on: a client without the token is refused.

Ray 2.60 listens on every interface of the machine whatever node address it is asked for, so the token is
what keeps a local run closed to other hosts (``make test`` additionally runs inside a loopback-only network
namespace). The check talks to the session's Ray GCS from a fresh process twice: with an empty home folder
(no token) it must be refused with Ray's ``AuthenticationError``; with the real home folder and
``RAY_AUTH_MODE=token`` the same call must succeed (so the refusal is about the token, not the address).
"""

from __future__ import annotations

import os
import re
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
    disabling = re.compile(r"""["']RAY_AUTH_MODE["']\s*(?:\]\s*=|,|:)\s*["']disabled["']|RAY_AUTH_MODE=disabled["' ]""")
    offenders = [str(p.relative_to(root)) for folder in ("pipeline", "workers")
                 for p in (root / folder).rglob("*.py") if disabling.search(p.read_text())]
    assert offenders == []
    assert disabling.search('os.environ.setdefault("RAY_AUTH_MODE", "disabled")')  # the pattern bites


def test_cli_joins_a_token_protected_ray_without_being_told_the_mode(tmp_path: Path, ray_address: str,
                                                                     contribshap: list[str]) -> None:
    """Ray's clients default to no auth; ``contribshap run --address`` uses the token it finds instead."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / "configs/examples/airport6.yaml", tmp_path / "airport6.yaml")
    shutil.copy(root / "configs/examples/my_games.py", tmp_path / "my_games.py")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    done = subprocess.run([*contribshap, "run", "airport6.yaml", "--address", ray_address, "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "runs/airport-6/estimates/estimates.json").is_file()


_LISTENERS = """
import os, psutil
from contribshap.pipeline.config.schema import RayConfig
from contribshap.pipeline.dispatch.ray_context import connect
import ray

connect(None, RayConfig(local_num_cpus=1))
ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker process is up too
tree = {p.pid for p in psutil.Process().children(recursive=True)}
found = [(c.laddr.ip, c.laddr.port, c.pid) for c in psutil.net_connections(kind="inet")
         if c.status == psutil.CONN_LISTEN and c.pid in tree]
print("RAY_PROCESSES", len(tree), "LISTENERS", len(found))
for ip, port, pid in found:
    print("LISTEN", ip, port, psutil.Process(pid).name())
ray.shutdown()
"""


def test_embedded_ray_listens_on_loopback_only(tmp_path: Path) -> None:
    """Every socket the embedded instance's processes listen on is bound to 127.0.0.1 (or ::1)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-c", _LISTENERS], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    listeners = [line.split() for line in lines if line.startswith("LISTEN ")]
    assert len(listeners) >= 3, done.stdout  # GCS, raylet, worker at least: the check saw Ray's sockets
    exposed = [line for line in listeners if line[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert exposed == []
