"""Run the replica with uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from astro_pipeline.archives.replica.app import ReplicaState, create_app


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ReplicaServer:
    """Context manager: ``with ReplicaServer(sample_root) as srv: srv.url``.

    Binds 127.0.0.1 only. ``port=0`` picks a free port.
    """

    def __init__(
        self,
        sample_root: Path | None = None,
        *,
        faults: Any | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        mini: bool = False,
    ) -> None:
        if sample_root is None:
            from astro_pipeline.sample import build_sample

            sample_root = build_sample(mini=mini).root
        self.host = host
        self.port = port or free_port(host)
        self.state = ReplicaState(sample_root=Path(sample_root), faults=faults)
        self.state.base_url = self.url
        self.app = create_app(self.state)
        config = uvicorn.Config(
            self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
            timeout_keep_alive=5,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ReplicaServer:
        self._thread = threading.Thread(target=self._server.run, name="replica", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"replica server failed to start on {self.url}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica server did not start on {self.url} within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (the ``replica serve`` command)."""
        self._server.run()

    def __enter__(self) -> ReplicaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
