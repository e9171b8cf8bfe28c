"""Run the review app with uvicorn on 127.0.0.1 (a free port by default), in a thread or in the foreground."""

from __future__ import annotations

import ipaddress
from typing import Any

from astro_pipeline.review.app import create_review_app
from astro_pipeline.webserver import LocalServer, free_port

__all__ = ["ReviewServer", "free_port", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ReviewServer(LocalServer):
    """Context manager: ``with ReviewServer(catalog=c, settings=s) as srv: srv.url``.

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port.
    """

    name = "review-server"

    def __init__(self, *, catalog: Any, settings: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self._init_server(host, port, lifespan="off")
        self.app = create_review_app(catalog=catalog, settings=settings)
