"""Build the replica app: shared state plus one router per archive module.

Each archive module in ``ROUTER_MODULES`` exposes ``build_router(state) -> APIRouter``.
A module that is absent is skipped, so archives can be added one file at a time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

ROUTER_MODULES: tuple[str, ...] = ("mast", "hla", "esahubble")


@dataclass
class ReplicaState:
    """What every router needs: the sample content, the fault plan, and a request log."""

    sample_root: Path
    faults: Any | None = None  # astro_pipeline.archives.replica.faults.FaultPlan
    base_url: str = ""  # filled by ReplicaServer once the port is known
    request_log: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # per-router caches


def create_app(state: ReplicaState) -> FastAPI:
    """The replica as one ASGI app."""
    app = FastAPI(title="astro-pipeline archive replica", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.replica = state
    faults = state.faults
    if faults is not None and hasattr(faults, "install"):
        faults.install(app, state)
    for name in ROUTER_MODULES:
        try:
            module = importlib.import_module(f"astro_pipeline.archives.replica.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"astro_pipeline.archives.replica.{name}":
                continue
            raise
        app.include_router(module.build_router(state))

    # Outermost: a proxied request (``http_proxy`` pointing here) arrives in absolute form,
    # ``GET http://host/path?q``; route it by its path, as the real host would.
    app.add_middleware(AbsoluteFormPath)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


class AbsoluteFormPath:
    """ASGI middleware: turn an absolute-form request target into its path (keeps the Host header)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = scope.get("path", "")
            if path.startswith(("http://", "https://")):
                from urllib.parse import urlsplit

                scope = dict(scope)
                scope["path"] = urlsplit(path).path or "/"
                scope["raw_path"] = scope["path"].encode()
        await self.app(scope, receive, send)
