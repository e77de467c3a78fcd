"""The Ray connection of a driver: connect (or start a local instance), and size the in-flight window.

Ray is imported lazily here (``import contribshap.pipeline.ray_context`` costs no Ray import). Together
with :mod:`contribshap.pipeline.driver` and :mod:`contribshap.pipeline.submit` (Jobs API) this is the
only code that imports Ray; the task bodies (:mod:`contribshap.pipeline.tasks`) do not.

- :func:`connect`: ``address`` (CLI, then ``ray.address``, then ``RAY_ADDRESS``); ``auto`` joins the
  cluster of this machine; no address starts a quiet local instance (no dashboard, warnings only).
- :class:`LazyRay`: connects on first need (a resume with nothing left to do never starts Ray) and shuts
  down a local instance it started.
- :func:`slots` / :func:`window`: how many tasks the cluster runs at once with the per-task resources,
  and the in-flight window (2 x slots unless ``ray.max_in_flight``), read from ``ray.cluster_resources()``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from contribshap.pipeline.config import ContribshapError, RayConfig

__all__ = ["DriverError", "LazyRay", "connect", "one_line", "slots", "window"]


class DriverError(ContribshapError):
    """The run cannot go on (prepare failed, Ray unreachable, ...)."""


def one_line(error: BaseException) -> str:
    """``"<ExceptionClass>: <first line of the message>"``, at most 500 characters."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:500]


def connect(address: str | None, ray_cfg: RayConfig) -> bool:
    """Connect to Ray; returns True when this call started a local instance (the caller shuts it down).

    Args:
        address: ``None`` (then ``ray.address``, then ``RAY_ADDRESS``, else a local instance), ``auto``,
            or ``host:port`` / ``ray://host:port``.
        ray_cfg: the ``ray`` section (``local_num_cpus``, ``temp_dir`` of a local instance).

    A local instance is always a new one (``address="local"``: a ``ray_current_cluster`` file left by an
    ended ``ray start`` is ignored), starts no dashboard and logs only warnings. It keeps Ray's token
    authentication as the environment sets it (``RAY_AUTH_MODE``): Ray 2.60 binds all interfaces whatever
    ``_node_ip_address`` says, so the instance is reachable from the network.

    Raises:
        DriverError: the cluster at ``address`` cannot be reached (one line with the fix).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or ray_cfg.address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
            return False
        ray.init(
            address="local",
            num_cpus=ray_cfg.local_num_cpus,
            include_dashboard=False,
            # asked for loopback; Ray 2.60 swaps it for the host address (docs/pipeline.md, Scheduling)
            _node_ip_address="127.0.0.1",
            _temp_dir=str(Path(ray_cfg.temp_dir).expanduser().resolve()) if ray_cfg.temp_dir else None,
            logging_level=logging.WARNING,
        )
    except ConnectionError as error:
        raise DriverError(
            f"cannot reach Ray at {address!r} ({one_line(error)}); start the cluster, or drop --address "
            "to run on a local instance"
        ) from None
    return True


class LazyRay:
    """Connects to Ray on first need (a resume with nothing left to do never starts Ray).

    Args:
        address: as :func:`connect`.
        ray_cfg: the config's ``ray`` section.

    Use as a context manager; a local instance started here is shut down on exit.
    """

    def __init__(self, address: str | None, ray_cfg: RayConfig) -> None:
        self.address, self.ray_cfg = address, ray_cfg
        self.connected = False
        self.started_here = False

    def ensure(self) -> None:
        """Connect now unless already connected."""
        if not self.connected:
            self.started_here = connect(self.address, self.ray_cfg)
            self.connected = True

    def __enter__(self) -> LazyRay:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started_here:
            import ray

            ray.shutdown()


def slots(ray_cfg: RayConfig) -> int:
    """How many tasks the cluster runs at once with the configured per-task resources (at least 1)."""
    import ray

    resources = ray.cluster_resources()
    counts = []
    if ray_cfg.num_gpus > 0:
        counts.append(resources.get("GPU", 0.0) / ray_cfg.num_gpus)
    if ray_cfg.num_cpus > 0:
        counts.append(resources.get("CPU", 0.0) / ray_cfg.num_cpus)
    return max(1, int(min(counts)) if counts else int(resources.get("CPU", 1)))


def window(ray_cfg: RayConfig) -> int:
    """Tasks in flight at once: ``ray.max_in_flight``, else 2 x :func:`slots`."""
    return ray_cfg.max_in_flight or 2 * slots(ray_cfg)
