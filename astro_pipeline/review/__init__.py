"""The curator review web app: confirm or overrule quality flags; decisions go to the catalog.

``create_review_app(catalog=..., settings=...)`` builds the FastAPI app;
``ReviewServer`` runs it on 127.0.0.1; ``astro-pipeline review serve`` is the command.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_review_app"]


def create_review_app(*, catalog: Any, settings: Any) -> Any:
    """The review app (a FastAPI instance) over ``catalog`` with ``settings`` (tokens, secret)."""
    from astro_pipeline.review.app import create_review_app as _create

    return _create(catalog=catalog, settings=settings)
