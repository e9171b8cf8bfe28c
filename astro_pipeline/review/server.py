"""Run the review app with uvicorn on 127.0.0.1 (a free port by default), in a thread or in the foreground."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

from astro_pipeline.review.app import create_review_app

__all__ = ["ReviewServer", "free_port", "is_loopback"]


def free_port(host: str = "127.0.0.1") -> int:
    """An unused TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer:
    """Context manager: ``with ReviewServer(catalog=c, settings=s) as srv: srv.url``.

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port.
    """

    def __init__(self, *, catalog: Any, settings: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.app = create_review_app(catalog=catalog, settings=settings)
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                access_log=False, timeout_keep_alive=5, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ReviewServer:
        self._thread = threading.Thread(target=self._server.run, name="review-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"review server failed to start on {self.url}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"review server did not start on {self.url} within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Run in the foreground until interrupted (the ``review serve`` command)."""
        self._server.run()

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
