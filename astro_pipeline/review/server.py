"""Run the review app with uvicorn on 127.0.0.1 (a free port by default), in a thread or in the foreground."""

from __future__ import annotations

from typing import Any

from astro_pipeline.review.access import ReviewAccess, is_loopback, review_access
from astro_pipeline.review.app import create_review_app
from astro_pipeline.webserver import LocalServer, free_port

__all__ = ["ReviewServer", "free_port", "is_loopback"]


class ReviewServer(LocalServer):
    """Context manager: ``with ReviewServer(catalog=c, settings=s) as srv: srv.url``.

    Binds 127.0.0.1 unless told otherwise; ``port=0`` picks a free port. The page answers to the
    loopback names, ``host`` and ``settings.review_allowed_hosts``; on a non-loopback ``host`` it
    is read-only unless ``allow_remote_writes`` (``read_only`` forces either way). Forwarded
    headers are not trusted: the client address is the peer's, so a local process cannot dodge
    the sign-in rate limit with a made-up X-Forwarded-For.
    """

    name = "review-server"

    def __init__(self, *, catalog: Any, settings: Any, host: str = "127.0.0.1", port: int = 0,
                 allow_remote_writes: bool = False, read_only: bool | None = None) -> None:
        access = review_access(host, allow_remote_writes=allow_remote_writes,
                               extra_hosts=getattr(settings, "review_allowed_hosts", ()) or ())
        if read_only is not None:
            access = ReviewAccess(allowed_hosts=access.allowed_hosts, read_only=read_only, bind_host=host)
        self.access = access
        self.app = create_review_app(catalog=catalog, settings=settings, access=access)
        self._init_server(host, port, lifespan="off", proxy_headers=False)
