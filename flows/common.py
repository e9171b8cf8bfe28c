"""What every flow shares: the task runner choice and the per-worker inference guard.

The task runner comes from settings: ``threads`` (Prefect's ``ThreadPoolTaskRunner``, the
default) or ``dask`` (prefect-dask's ``DaskTaskRunner``, on ``Settings.dask_address`` when set,
else on a local ``distributed.LocalCluster``). Model inference is throttled by a Prefect global
concurrency limit named per worker (``inference:<worker id>``, limit 1), as in Prefect's
per-worker task concurrency example: downloads and product writing overlap, while only one
model call at a time uses a machine's GPU or CPU threads.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from astro_pipeline.config import Settings

__all__ = [
    "INFERENCE_LIMIT_PREFIX",
    "build_task_runner",
    "ensure_inference_limit",
    "guard_factory",
    "inference_guard",
    "inference_limit_name",
    "server_configured",
    "worker_id",
]

#: Global concurrency limits guarding model inference are named ``inference:<worker id>``.
INFERENCE_LIMIT_PREFIX = "inference"

_local_lock = threading.Lock()  # serialises inference between threads of one process as well


def worker_id() -> str:
    """This machine's worker id: ``ASTRO_PIPELINE_WORKER_ID`` or the host name."""
    return os.environ.get("ASTRO_PIPELINE_WORKER_ID") or socket.gethostname() or "local"


def inference_limit_name(worker: str | None = None) -> str:
    """Name of the per-worker global concurrency limit (letters, digits, ``-_:.`` only)."""
    raw = worker or worker_id()
    safe = "".join(c if (c.isalnum() or c in "-_.") else "-" for c in raw)
    return f"{INFERENCE_LIMIT_PREFIX}:{safe}"


def ensure_inference_limit(name: str | None = None, *, limit: int = 1) -> str:
    """Create (or correct) the global concurrency limit ``name`` with ``limit`` slots; return its name.

    Prefect runs unthrottled, with only a log line, when a named limit is missing; creating it
    up front makes the guard real on a fresh server.
    """
    from prefect.client.orchestration import get_client

    name = name or inference_limit_name()
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, limit)
    return name


def server_configured() -> bool:
    """True when flows talk to a Prefect server (``PREFECT_API_URL``), not the ephemeral one.

    Only a real server runs the lease repossessor that frees the slots of a killed process; the
    ephemeral server has none, so a SIGKILLed sweep would hold its slot forever in ``$PREFECT_HOME``.
    """
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


@contextmanager
def inference_guard(name: str | None = None, *, use_server: bool = True) -> Iterator[None]:
    """Hold one slot of the worker's inference limit (and a process-local lock) for a model call.

    With ``use_server=False`` (ephemeral mode: one process) the process-local lock alone guards.
    Leases are short (60 s, renewed while held), so a crashed worker's slot comes back quickly.
    """
    if not use_server:
        with _local_lock:
            yield
        return
    from prefect.concurrency.sync import concurrency

    with _local_lock, concurrency(name or inference_limit_name(), occupy=1, strict=False, lease_duration=60):
        yield


def guard_factory(name: str | None = None) -> Callable[[], AbstractContextManager[None]]:
    """A zero-argument factory of :func:`inference_guard` contexts, for the library's engines."""
    limit = name or inference_limit_name()
    use_server = server_configured()
    return lambda: inference_guard(limit, use_server=use_server)


def build_task_runner(settings: Settings, *, max_workers: int | None = None) -> TaskRunner[Any]:
    """The task runner ``settings.task_runner`` names: ``threads`` (default) or ``dask``.

    ``dask`` uses ``settings.dask_address`` (an existing scheduler, e.g. ``tcp://host:8786``)
    when set, else starts a small ``LocalCluster`` of worker processes for the flow run.
    """
    kind = (settings.task_runner or "threads").lower()
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=max_workers or max(2, min(4, (os.cpu_count() or 2))))
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        n = max_workers or max(1, min(2, os.cpu_count() or 1))
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": n,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    raise ValueError(f"settings.task_runner is {settings.task_runner!r}; expected 'threads' or 'dask'")
