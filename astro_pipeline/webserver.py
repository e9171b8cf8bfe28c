"""Run an ASGI app with uvicorn on a loopback port, in a background thread or in the foreground.

Shared by the archive replica and the review page, which are both local servers.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

__all__ = ["LocalServer", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalServer:
    """Context manager around a uvicorn server: ``with Server(...) as srv: srv.url``.

    Subclasses build ``self.app`` and call ``_init_server``; ``port=0`` picks a free port.
    """

    name = "server"
    host: str
    port: int
    app: Any

    def _init_server(self, host: str, port: int, **uvicorn_options: Any) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._uvicorn_options = uvicorn_options
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _build(self) -> uvicorn.Server:
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                access_log=False, timeout_keep_alive=5, **self._uvicorn_options)
        self._server = uvicorn.Server(config)
        return self._server

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Any:
        server = self._build()
        self._thread = threading.Thread(target=server.run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} failed to start on {self.url}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start on {self.url} within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (the ``serve`` commands)."""
        self._build().run()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
