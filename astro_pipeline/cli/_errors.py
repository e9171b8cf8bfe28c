"""Known failures become one ``error:`` line and exit status 1 or 2, never a traceback.

``CleanErrorsGroup`` is the root command group of the CLI: an exception a command lets through
is looked up here by class (by name, so nothing heavy is imported to recognise it). Usage and
settings problems exit 2, failures of the work itself (an archive, the catalog, the disk) exit 1.
Anything not listed is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from astro_pipeline.cli._common import console

__all__ = ["CleanErrorsGroup", "describe_error", "print_error"]

#: Exception classes (module.Class, matched anywhere in the MRO) -> exit status.
_KNOWN: dict[str, int] = {
    "pydantic_core._pydantic_core.ValidationError": 2,  # settings (env, TOML) that do not validate
    "astro_pipeline.review.app.ReviewConfigError": 2,
    "astro_pipeline.sky.ConeError": 2,
    "astro_pipeline.archives.replica.faults.FaultSpecError": 2,
    "astro_pipeline.catalog.db.CatalogError": 1,
    "astro_pipeline.archives.mast.MastError": 1,
    "astro_pipeline.archives.download.DownloadError": 1,
    "astro_pipeline.archives.browser.ScrapeError": 1,
    "astro_pipeline.archives.browser.BrowserNotFoundError": 1,
    "astro_pipeline.ingest.frame.IngestError": 1,
    "sqlalchemy.exc.DBAPIError": 1,
    "builtins.OSError": 1,
}


def _names(exc: BaseException) -> list[str]:
    return [f"{k.__module__}.{k.__qualname__}" for k in type(exc).__mro__]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _describe_validation(exc: Any) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {msg}" if where else msg)
    return "settings: " + "; ".join(parts)


def describe_error(exc: BaseException) -> tuple[int, str] | None:
    """(exit status, one-line message) for a known failure, None for anything else."""
    names = _names(exc)
    code = next((c for n, c in _KNOWN.items() if n in names), None)
    if code is None:
        return None
    if "pydantic_core._pydantic_core.ValidationError" in names:
        return code, _describe_validation(exc)
    if "sqlalchemy.exc.DBAPIError" in names:
        orig = getattr(exc, "orig", None) or exc
        return code, f"catalog database: {_one_line(str(orig).splitlines()[0] if str(orig) else type(orig).__name__)}"
    if isinstance(exc, OSError) and exc.filename:
        return code, _one_line(f"{exc.filename}: {exc.strerror or exc}")
    return code, _one_line(str(exc) or type(exc).__name__)


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line whatever the terminal width."""
    console.print(f"[red]error:[/] {escape(message)}", soft_wrap=True, highlight=False)


class CleanErrorsGroup(TyperGroup):
    """The CLI's root group: known exceptions from any command end as one line and exit 1 or 2."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):  # exits and usage errors: click reports them
            raise
        except Exception as exc:  # noqa: BLE001 - sorted below: known ones become a message
            described = describe_error(exc)
            if described is None:
                raise
            code, message = described
            print_error(message)
            raise typer.Exit(code) from None
