"""Submit ``contribshap run`` to a Ray cluster as a Ray job (Ray Jobs API), resumable and never duplicated.

One store is one job *lineage*. Its submission ids are ``<base>-a<attempt>``, where ``base`` is derived
from the absolute store path alone (:func:`base_submission_id`)::

    contribshap-<store folder name>-<12 hex of sha256(store path)>-a1, ...-a2, ...

:func:`submit` looks the lineage up with ``JobSubmissionClient.list_jobs`` first:

- an attempt is PENDING or RUNNING -> *attach* to it (nothing new is submitted);
- otherwise (none yet, or the last one SUCCEEDED / FAILED / STOPPED) -> submit attempt ``n + 1``; the new
  ``contribshap run`` resumes from the store (the plan and the finished evaluations are the only state),
  so a resubmission after a stop, crash or preemption redoes no finished work.

Ray refuses a duplicate submission id, so two people submitting the same store at the same moment end up
with one job: the loser of the race attaches to the winner's attempt.

The job's entrypoint names the project's interpreter explicitly (a Ray job runs with the environment of the
``ray start`` process, where a bare ``python`` may be another interpreter), and the working directory travels
in the job's ``runtime_env`` so ``game.kind: python`` modules import on the cluster. A record of the last
submission is written to ``<store>/submission.json`` when the store's folder is visible from the submitting
machine; :func:`job_status` reads it for ``contribshap status``.

Example::

    from contribshap.pipeline.dispatch.submit import submit
    result = submit("configs/airport.yaml", address="http://127.0.0.1:8265", wait=True)
    print(result.submission_id, result.status)     # contribshap-airport-6-1f2e3d4c5b6a-a1 SUCCEEDED

Ray is imported lazily (inside the functions), as in the driver side (``driver.py``, ``ray_context.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from contribshap.pipeline.config.schema import load_config, resolve_store
from contribshap.pipeline.contracts.errors import ContribshapError, one_line
from contribshap.pipeline.dispatch.ray_context import (
    AUTH_FIX,
    is_auth_refusal,
    ray_token_available,
    use_token_auth_when_at_hand,
)

__all__ = [
    "ACTIVE_STATES",
    "SUBMISSION_FILE",
    "TERMINAL_STATES",
    "Submission",
    "SubmitError",
    "base_submission_id",
    "build_entrypoint",
    "job_status",
    "submit",
]

#: Ray job states in which an attempt still holds (or will hold) the store: resubmitting attaches to it.
ACTIVE_STATES = ("PENDING", "RUNNING")
#: Ray job states after which a resubmission starts a new attempt.
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
#: File in the store recording the last submission (address, ids, entrypoint).
SUBMISSION_FILE = "submission.json"
#: Always left out of the uploaded working directory (on top of .gitignore, which Ray honours).
DEFAULT_EXCLUDES = (".git", ".venv", "venv", "runs", "**/__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache")
_ATTEMPT = re.compile(r"-a(\d+)$")


class SubmitError(ContribshapError):
    """The job could not be submitted, attached to or followed; the message says why and what to do."""


@dataclass
class Submission:
    """What :func:`submit` did.

    Attributes:
        submission_id: the Ray job's submission id (``<base_id>-a<attempt>``).
        base_id: the store's lineage id (same for every attempt).
        attempt: attempt number, 1 for the first submission.
        action: ``"submitted"`` (a new attempt) or ``"attached"`` (an attempt was already PENDING/RUNNING).
        address: the Ray dashboard address used.
        entrypoint: the shell command the job runs.
        store: absolute store path.
        status: the job state when :func:`submit` returned (the final state with ``wait=True``).
        previous: ``[{submission_id, status}]`` of the lineage's earlier attempts.
    """

    submission_id: str
    base_id: str
    attempt: int
    action: str
    address: str
    entrypoint: str
    store: str
    status: str | None = None
    previous: list[dict[str, str]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- ids and entrypoint ----------------------------------------------------------------------------------
def base_submission_id(store: str | Path) -> str:
    """The lineage id of a store: ``contribshap-<folder slug>-<12 hex of sha256(absolute path)>``.

    Args:
        store: store folder; relative paths resolve from the working directory (as ``contribshap run``).

    Returns:
        A string of ``[a-z0-9-]`` (at most ~70 chars) that is the same for every submission of this store.
    """
    path = Path(store).expanduser().resolve()
    slug = re.sub(r"[^a-z0-9]+", "-", path.name.lower()).strip("-")[:40] or "store"
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return f"contribshap-{slug}-{digest}"


def _attempt_of(submission_id: str | None, base_id: str) -> int | None:
    if not submission_id or not submission_id.startswith(base_id + "-a"):
        return None
    match = _ATTEMPT.search(submission_id)
    if match is None or submission_id[: match.start()] != base_id:
        return None
    return int(match.group(1))


def _is_loopback(address: str) -> bool:
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def resolve_python(python: str, address: str) -> str:
    """The interpreter the job's entrypoint names.

    Args:
        python: ``"auto"`` (default of :func:`submit`), or an explicit path/command such as
            ``/home/ray/anaconda3/bin/python`` (the image of ``docker/Dockerfile``).
        address: dashboard address; with ``"auto"``, a loopback address (same machine) gets this process's
            interpreter ``sys.executable``, any other address gets ``python`` (the image's interpreter).
    """
    if python != "auto":
        return python
    return sys.executable if _is_loopback(address) else "python"


def build_entrypoint(
    python: str, config_arg: str, store: Path, *, run_args: Sequence[str] = ()
) -> str:
    """The shell command of the Ray job: ``<python> -m contribshap.pipeline.products.cli run <config> --store <store> --address auto``.

    ``--address auto`` makes the driver join the cluster the job runs on (Ray sets ``RAY_ADDRESS`` for a
    job); ``--store`` is absolute because the job's working directory is a copy unpacked by Ray.
    """
    parts = [python, "-m", "contribshap.pipeline.products.cli", "run", config_arg, "--store", str(store), "--address", "auto"]
    parts.extend(run_args)
    return shlex.join(parts)


# --- client helpers -------------------------------------------------------------------------------------
def _probe(address: str, timeout_s: float) -> None:
    """Fail fast (one TCP connect with a timeout) when the dashboard does not answer: Ray's HTTP client has
    no timeout of its own, so a head that is gone would otherwise hang the caller."""
    url = urlparse(address if "://" in address else f"http://{address}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=timeout_s):
            pass
    except OSError as error:
        raise SubmitError(
            f"cannot reach the Ray dashboard at {address} ({one_line(error)}); start the cluster "
            "or fix --address (the dashboard URL, e.g. http://127.0.0.1:8265)"
        ) from None


def _refused(address: str, error: BaseException) -> SubmitError | None:
    """The one line for a dashboard that refused this client's credentials (None for any other error)."""
    if not is_auth_refusal(error):
        return None
    sent = os.environ.get("RAY_AUTH_MODE", "").lower() == "token" and ray_token_available()
    why = "refused the auth token sent" if sent else "needs the cluster's auth token (none was sent)"
    return SubmitError(f"the Ray dashboard at {address} {why}; {AUTH_FIX}")


def _client(address: str, *, timeout_s: float = 10.0) -> Any:
    """A Jobs API client of the dashboard at ``address``, in token mode when a token is at hand (as the
    driver's ``ray.init``); a refusal names the auth fix, an unreachable dashboard the address fix."""
    use_token_auth_when_at_hand(address)
    from ray.job_submission import JobSubmissionClient

    _probe(address, timeout_s)
    try:
        return JobSubmissionClient(address)
    except Exception as error:
        raise _refused(address, error) or SubmitError(
            f"cannot reach the Ray dashboard at {address} ({one_line(error)}); start the cluster "
            "or fix --address (the dashboard URL, e.g. http://127.0.0.1:8265)"
        ) from None


def _lineage(client: Any, base_id: str) -> list[tuple[int, Any]]:
    """``[(attempt, JobDetails)]`` of this store's attempts, oldest first."""
    attempts = []
    for job in client.list_jobs():
        attempt = _attempt_of(job.submission_id, base_id)
        if attempt is not None:
            attempts.append((attempt, job))
    return sorted(attempts, key=lambda item: item[0])


def _status_str(status: Any) -> str:
    return str(getattr(status, "value", status))


def _write_record(store: Path, record: dict[str, Any]) -> bool:
    """Best-effort ``<store>/submission.json`` (atomic); False when the store is not visible from here."""
    if not store.parent.is_dir():
        return False
    store.mkdir(parents=True, exist_ok=True)
    path = store / SUBMISSION_FILE
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return True


def follow_logs(client: Any, submission_id: str, *, echo: Callable[[str], None]) -> str:
    """Stream a job's log to ``echo`` until the job ends; returns its final state (e.g. ``"FAILED"``)."""

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            echo(chunk)

    try:
        asyncio.run(_tail())
    except Exception as error:  # the log stream broke (dashboard restart): fall back to polling
        echo(f"[contribshap submit] log stream ended early ({one_line(error)}); polling the job state\n")
    while True:
        status = _status_str(client.get_job_status(submission_id))
        if status in TERMINAL_STATES:
            return status
        time.sleep(1.0)


# --- submit -----------------------------------------------------------------------------------------------
def submit(
    config_path: str | Path,
    *,
    address: str,
    wait: bool = False,
    store: str | Path | None = None,
    working_dir: str | Path = ".",
    python: str = "auto",
    run_args: Sequence[str] = (),
    env_vars: dict[str, str] | None = None,
    excludes: Sequence[str] = (),
    echo: Callable[[str], None] | None = None,
) -> Submission:
    """Submit (or attach to, or resume) the Ray job that runs ``contribshap run CONFIG`` for one store.

    Args:
        config_path: the run's YAML config (validated here, without checking cluster-side paths).
        address: Ray dashboard URL, e.g. ``http://127.0.0.1:8265`` (as ``ray job submit --address``).
        wait: follow the job's log until it ends; the returned ``status`` is then the final state.
        store: store folder override (default: the config's ``store``); relative paths resolve from the
            current directory, and the job receives the absolute path (it must be the same path on the
            cluster: shared storage such as a PVC or NFS mount).
        working_dir: folder uploaded with the job (default ``.``); the config should be inside it, else its
            absolute path must exist on the cluster. ``.gitignore`` and ``DEFAULT_EXCLUDES`` are left out.
        python: interpreter for the entrypoint; ``"auto"`` = this interpreter for a loopback address,
            ``python`` otherwise (see :func:`resolve_python`).
        run_args: extra arguments appended to ``contribshap run`` (e.g. ``["--max-in-flight", "8"]``).
        env_vars: extra environment variables for the job (runtime_env ``env_vars``).
        excludes: extra gitignore-style patterns left out of the upload.
        echo: where log lines and notices go (default: stdout).

    Returns:
        :class:`Submission` (``action`` tells whether a new attempt was submitted or one was attached to).

    Raises:
        ConfigError: the config is invalid.
        SubmitError: the dashboard is unreachable or refused the job.
    """
    say = echo or (lambda text: print(text, end="", flush=True))
    # 1. Validate the config and fix the store path (absolute: the job runs in an unpacked copy).
    cfg = load_config(config_path, check_paths=False)
    store_path = resolve_store(cfg, store)
    base_id = base_submission_id(store_path)
    workdir = Path(working_dir).expanduser().resolve()
    if not workdir.is_dir():
        raise SubmitError(f"--working-dir {workdir} is not a folder; pass the project folder to upload")
    config_abs = Path(config_path).expanduser().resolve()
    try:
        config_arg = str(config_abs.relative_to(workdir))
    except ValueError:
        config_arg = str(config_abs)
        say(
            f"[contribshap submit] note: {config_abs} is outside the working dir {workdir}; the job reads it "
            "by this absolute path, so it must exist on the cluster (shared storage)\n"
        )
    exclude_list = [*DEFAULT_EXCLUDES, *excludes]
    with contextlib.suppress(ValueError):  # the store itself never travels with the code
        exclude_list.append(str(store_path.relative_to(workdir)))

    # 2. Look up the store's lineage: attach to an active attempt, else submit the next one.
    client = _client(address)
    lineage = _lineage(client, base_id)
    previous = [{"submission_id": job.submission_id, "status": _status_str(job.status)} for _, job in lineage]
    active = [(n, job) for n, job in lineage if _status_str(job.status) in ACTIVE_STATES]
    python_cmd = resolve_python(python, address)
    if active:
        attempt, job = active[-1]
        result = Submission(
            submission_id=job.submission_id, base_id=base_id, attempt=attempt, action="attached",
            address=address, entrypoint=job.entrypoint, store=str(store_path),
            status=_status_str(job.status), previous=previous,
        )
        say(f"[contribshap submit] attached to running job {job.submission_id} ({result.status})\n")
    else:
        attempt = (lineage[-1][0] + 1) if lineage else 1
        submission_id = f"{base_id}-a{attempt}"
        entrypoint = build_entrypoint(python_cmd, config_arg, store_path, run_args=run_args)
        runtime_env = {
            "working_dir": str(workdir),
            "excludes": exclude_list,
            "env_vars": {"PYTHONUNBUFFERED": "1", **(env_vars or {})},
        }
        metadata = {
            "contribshap_store": str(store_path),
            "contribshap_config": cfg.name,
            "contribshap_attempt": str(attempt),
        }
        action = "submitted"
        try:
            client.submit_job(
                entrypoint=entrypoint, submission_id=submission_id, runtime_env=runtime_env, metadata=metadata
            )
        except Exception as error:
            # 2a. Lost a race against another submitter of the same store: attach to its attempt.
            if "already exists" not in str(error):
                raise _refused(address, error) or SubmitError(
                    f"the Ray dashboard at {address} refused job {submission_id} ({one_line(error)}); "
                    "check the cluster's dashboard log"
                ) from None
            action = "attached"
        status = _status_str(client.get_job_status(submission_id))
        result = Submission(
            submission_id=submission_id, base_id=base_id, attempt=attempt, action=action, address=address,
            entrypoint=entrypoint, store=str(store_path), status=status, previous=previous,
        )
        verb = "submitted" if action == "submitted" else "attached to concurrently submitted"
        resumed = f" (resuming after {previous[-1]['submission_id']}: {previous[-1]['status']})" if previous else ""
        say(f"[contribshap submit] {verb} job {submission_id}{resumed}\n")

    # 3. Record the submission next to the store (for `contribshap status`), when the store is visible here.
    record = {
        "address": address, "base_id": base_id, "submission_id": result.submission_id,
        "attempt": result.attempt, "entrypoint": result.entrypoint, "config": str(config_abs),
        "submitted_at": time.time(),
    }
    recorded = _write_record(store_path, record)

    # 4. Follow the log to the end when asked (a store the job created is visible now: record it there).
    if wait:
        result.status = follow_logs(client, result.submission_id, echo=say)
        say(f"[contribshap submit] job {result.submission_id} ended: {result.status}\n")
        if not recorded:
            _write_record(store_path, record)
    return result


# --- status -----------------------------------------------------------------------------------------------
def job_status(store: str | Path) -> dict[str, Any] | None:
    """The Ray job state of a store's last submission, for ``contribshap status``.

    Args:
        store: store folder.

    Returns:
        None when the store has no ``submission.json`` (never submitted from a machine that sees the store);
        else ``{submission_id, attempt, address, status, message, start_time, end_time, attempts}`` where
        ``status`` is a Ray job state (PENDING, RUNNING, STOPPED, SUCCEEDED, FAILED), ``UNKNOWN`` when the
        cluster no longer knows the id (e.g. a new cluster), or ``UNREACHABLE`` when the dashboard does not
        answer or refuses this client (``message`` then names the auth fix); ``attempts`` lists ``{submission_id, status}`` of the lineage the cluster knows.
    """
    path = Path(store).expanduser().resolve() / SUBMISSION_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    info: dict[str, Any] = {
        "submission_id": record.get("submission_id"), "attempt": record.get("attempt"),
        "address": record.get("address"), "status": "UNKNOWN", "message": None,
        "start_time": None, "end_time": None, "attempts": [],
    }
    try:
        client = _client(str(record.get("address")), timeout_s=2.0)
    except SubmitError as error:
        info.update(status="UNREACHABLE", message=str(error))
        return info
    try:
        lineage = _lineage(client, str(record.get("base_id")))
    except Exception as error:
        info.update(status="UNREACHABLE", message=str(_refused(str(record.get("address")), error) or one_line(error)))
        return info
    info["attempts"] = [{"submission_id": j.submission_id, "status": _status_str(j.status)} for _, j in lineage]
    known = [job for _, job in lineage if job.submission_id == info["submission_id"]]
    if lineage and (not known or lineage[-1][0] > int(record.get("attempt") or 0)):
        known = [lineage[-1][1]]  # a later attempt was submitted from elsewhere: report the newest
    for job in known:
        info.update(
            submission_id=job.submission_id, attempt=_attempt_of(job.submission_id, str(record.get("base_id"))),
            status=_status_str(job.status), message=job.message,
            start_time=(job.start_time or 0) / 1000 or None, end_time=(job.end_time or 0) / 1000 or None,
        )
    return info
