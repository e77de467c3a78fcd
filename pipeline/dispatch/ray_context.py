"""The Ray connection of a driver: connect (or start a local instance), and size the in-flight window.

Ray is imported lazily here (``import contribshap.pipeline.dispatch.ray_context`` costs no Ray import). Together
with :mod:`contribshap.pipeline.dispatch.driver` and :mod:`contribshap.pipeline.dispatch.submit` (Jobs API) this is the
only code that imports Ray; the task bodies (:mod:`contribshap.pipeline.dispatch.tasks`) do not.

- :func:`connect`: ``address`` (CLI, then ``ray.address``, then ``RAY_ADDRESS``); ``auto`` joins the
  cluster of this machine; no address starts a quiet local instance (no dashboard, warnings only).
- :class:`LazyRay`: connects on first need (a resume with nothing left to do never starts Ray) and shuts
  down a local instance it started.
- :func:`require_resources`: right after connecting, before any task is submitted, some node must have
  ``ray.num_cpus`` CPUs and ``ray.num_gpus`` GPUs (a task no node can hold would wait forever). On a
  cluster given by address (it may autoscale) the driver waits up to :data:`RESOURCE_WAIT_REMOTE_S` for
  such a node to join (the local instance does not grow: no wait), then fails with one line.
- :func:`slots` / :func:`window`: how many tasks the cluster runs at once with the per-task resources,
  and the in-flight window (2 x slots unless ``ray.max_in_flight``), read from ``ray.cluster_resources()``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from contribshap.pipeline.config.schema import RayConfig
from contribshap.pipeline.contracts.errors import ContribshapError, one_line

__all__ = [
    "AUTH_FIX",
    "DriverError",
    "LazyRay",
    "connect",
    "is_auth_refusal",
    "require_resources",
    "resource_problem",
    "slots",
    "use_token_auth_when_at_hand",
    "window",
]

#: Seconds a driver waits for a node that can run one task: on a cluster given by address (an autoscaler
#: may add one), and on the local instance (which will not grow).
RESOURCE_WAIT_REMOTE_S = 60.0
RESOURCE_WAIT_LOCAL_S = 0.0
#: Seconds between two reads of the nodes while waiting.
RESOURCE_POLL_S = 2.0


class DriverError(ContribshapError):
    """The run cannot go on (prepare failed, Ray unreachable, ...)."""


def ray_token_available() -> bool:
    """True when a Ray auth token is at hand: ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return Path(path).is_file()


#: What to do when a token-protected cluster refuses a client that sent no token (or another one).
AUTH_FIX = ("export RAY_AUTH_MODE=token and put the cluster's token at ~/.ray/auth_token (or in RAY_AUTH_TOKEN; "
            "`ray get-auth-token` on the head prints it)")


def use_token_auth_when_at_hand(address: str | None) -> None:
    """Pick Ray's auth mode for this process's clients (the driver's ``ray.init``, the Jobs API client).

    Ray's clients default to ``RAY_AUTH_MODE=disabled``, which a token-protected cluster refuses (after
    ~20 s of retries for ``ray.init``). When the environment leaves ``RAY_AUTH_MODE`` unset and a token is
    at hand (:func:`ray_token_available`), token mode is used; a local instance (``address`` None) always
    uses it. Ray reads the mode once, when its core library loads: after that this does nothing.
    """
    if "ray" in sys.modules:
        return
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif "RAY_AUTH_MODE" not in os.environ and ray_token_available():
        os.environ["RAY_AUTH_MODE"] = "token"


def is_auth_refusal(error: BaseException | None) -> bool:
    """True when ``error`` (or an exception it was raised from) is Ray's ``AuthenticationError``."""
    seen = 0
    while error is not None and seen < 8:
        if type(error).__name__ == "AuthenticationError":
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def _keep_local_node_on_loopback() -> None:
    """Make the local instance about to start use 127.0.0.1 for every listener (see :func:`connect`)."""
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # the processes Ray starts read it at import
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process has imported it already


def connect(address: str | None, ray_cfg: RayConfig) -> bool:
    """Connect to Ray; returns True when this call started a local instance (the caller shuts it down).

    Args:
        address: ``None`` (then ``ray.address``, then ``RAY_ADDRESS``, else a local instance), ``auto``,
            or ``host:port`` / ``ray://host:port``.
        ray_cfg: the ``ray`` section (``local_num_cpus``, ``temp_dir`` of a local instance).

    A local instance is always a new one (``address="local"``: a ``ray_current_cluster`` file left by an
    ended ``ray start`` is ignored), starts no dashboard, logs only warnings, and is closed twice over:

    - **loopback only**: Ray 2.60 replaces a loopback ``_node_ip_address`` by the host's address and then
      listens on every interface. Its own switch for single-machine use (``ENABLE_RAY_CLUSTER``, set by the
      environment variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps the node address at 127.0.0.1, and
      then the GCS, raylet, object manager, workers and agents all listen on 127.0.0.1 alone (checked by
      the test suite with the process table's listening sockets);
    - **token authentication** on (``RAY_AUTH_MODE=token`` unless the environment says otherwise; Ray makes
      the token in ``~/.ray/auth_token`` on first use).

    Joining a cluster: token mode when a token is at hand (:func:`use_token_auth_when_at_hand`).

    Raises:
        DriverError: the cluster at ``address`` cannot be reached (one line with the fix).
    """
    address = address or ray_cfg.address or os.environ.get("RAY_ADDRESS") or None
    use_token_auth_when_at_hand(address)
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
            return False
        _keep_local_node_on_loopback()
        ray.init(
            address="local",
            num_cpus=ray_cfg.local_num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            _temp_dir=str(Path(ray_cfg.temp_dir).expanduser().resolve()) if ray_cfg.temp_dir else None,
            logging_level=logging.WARNING,
        )
    except ConnectionError as error:
        if is_auth_refusal(error):
            raise DriverError(f"Ray at {address!r} refused the connection: it needs its auth token; {AUTH_FIX}") from None
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
        """Connect now unless already connected; then check that some node can run one task."""
        if not self.connected:
            self.started_here = connect(self.address, self.ray_cfg)
            self.connected = True
            wait_s = self.ray_cfg.resource_wait_s
            if wait_s is None:
                wait_s = RESOURCE_WAIT_LOCAL_S if self.started_here else RESOURCE_WAIT_REMOTE_S
            require_resources(self.ray_cfg, wait_s=float(wait_s))

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


# --- resources ------------------------------------------------------------------------------------------------
def _node_resources() -> list[dict[str, float]]:
    """Resources of every alive node of the connected cluster (``ray.nodes()``)."""
    import ray

    return [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]


def resource_problem(ray_cfg: RayConfig, nodes: list[dict[str, float]]) -> str | None:
    """Why no node can run one task with ``ray.num_cpus`` CPUs and ``ray.num_gpus`` GPUs; None when one can.

    Args:
        ray_cfg: the ``ray`` section (per-task ``num_cpus``, ``num_gpus``).
        nodes: resources of each alive node, e.g. ``[{"CPU": 8.0, "GPU": 1.0}]``.

    Returns:
        One clause: the setting, what the cluster has and the fix, e.g. ``"ray.num_gpus: 1 per evaluation,
        but the Ray cluster has no GPU (1 node); set ray.num_gpus: 0 to run on CPUs, or add a GPU node"``.

    Example:
        >>> resource_problem(RayConfig(num_cpus=1), [{"CPU": 2.0}]) is None
        True
    """
    need_cpu, need_gpu = float(ray_cfg.num_cpus), float(ray_cfg.num_gpus)
    cpus = [n.get("CPU", 0.0) for n in nodes]
    gpus = [n.get("GPU", 0.0) for n in nodes]
    if any(c >= need_cpu and g >= need_gpu for c, g in zip(cpus, gpus, strict=True)):
        return None
    where = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}"
    if need_gpu > 0 and not any(g >= need_gpu for g in gpus):
        if not any(gpus):
            return (f"ray.num_gpus: {need_gpu:g} per evaluation, but the Ray cluster has no GPU ({where}); "
                    "set ray.num_gpus: 0 to run on CPUs, or add a GPU node")
        return (f"ray.num_gpus: {need_gpu:g} per evaluation, but no node of the Ray cluster has {need_gpu:g} GPUs "
                f"({where}, at most {max(gpus):g} on one); set ray.num_gpus <= {max(gpus):g}, or add a node with "
                f"{need_gpu:g} GPUs")
    if need_cpu > 0 and not any(c >= need_cpu for c in cpus):
        return (f"ray.num_cpus: {need_cpu:g} per evaluation, but no node of the Ray cluster has {need_cpu:g} CPUs "
                f"({where}, at most {max(cpus, default=0.0):g} on one); set ray.num_cpus <= "
                f"{max(cpus, default=0.0):g}, or add a node with {need_cpu:g} CPUs")
    best = max(cpus[i] for i, g in enumerate(gpus) if g >= need_gpu)
    return (f"ray.num_cpus: {need_cpu:g} with ray.num_gpus: {need_gpu:g} per evaluation, but no node of the Ray "
            f"cluster has both ({where}; the GPU nodes have at most {best:g} CPUs); set ray.num_cpus <= {best:g}, "
            "or add a GPU node with more CPUs")


def require_resources(ray_cfg: RayConfig, *, wait_s: float = 0.0,
                      nodes: Callable[[], list[dict[str, float]]] = _node_resources,
                      sleep: Callable[[float], None] = time.sleep) -> None:
    """Fail before any dispatch when no node can ever run one task (it would wait forever, silently).

    Args:
        ray_cfg: the ``ray`` section (per-task ``num_cpus`` / ``num_gpus``).
        wait_s: seconds to wait for a node that can (an autoscaling cluster adding one); one line on
            stderr says what it waits for. 0: decide at once.
        nodes: reads the alive nodes' resources (default: ``ray.nodes()``).
        sleep: the wait between two reads (tests pass a fake clock).

    Raises:
        DriverError: one line from :func:`resource_problem`, plus how long it waited.
    """
    problem = resource_problem(ray_cfg, nodes())
    if problem is None:
        return
    waited = 0.0
    if wait_s > 0:
        print(f"waiting up to {wait_s:g} s for a Ray node that can run one evaluation: {problem}",
              file=sys.stderr, flush=True)
        while problem is not None and waited < wait_s:
            step = min(RESOURCE_POLL_S, wait_s - waited)
            sleep(step)
            waited += step
            problem = resource_problem(ray_cfg, nodes())
        if problem is None:
            return
    after = f" (waited {waited:g} s for the cluster to add one)" if waited else ""
    raise DriverError(f"{problem}{after}")
