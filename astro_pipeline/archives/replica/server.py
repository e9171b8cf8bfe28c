"""Run the replica with uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astro_pipeline.archives.replica.app import ReplicaState, create_app
from astro_pipeline.webserver import LocalServer, free_port

__all__ = ["ReplicaServer", "free_port"]


class ReplicaServer(LocalServer):
    """Context manager: ``with ReplicaServer(sample_root) as srv: srv.url``.

    Binds 127.0.0.1 only. ``port=0`` picks a free port.
    """

    name = "replica"

    def __init__(
        self,
        sample_root: Path | None = None,
        *,
        faults: Any | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        mini: bool = False,
        cache_dir: Path | None = None,
    ) -> None:
        if sample_root is None:  # the built-in sample, built (or reused) under ``cache_dir``
            from astro_pipeline.sample import build_sample

            sample_root = build_sample(mini=mini, cache_dir=cache_dir).root
        self._init_server(host, port)
        self.state = ReplicaState(sample_root=Path(sample_root), faults=faults)
        self.state.base_url = self.url
        self.app = create_app(self.state)
