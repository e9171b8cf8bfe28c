"""The shared typer application and its sub-command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperGroup

from astro_pipeline.cli._errors import CleanErrorsGroup

_NAMES: dict[Any, str] = {int: "INT", float: "FLOAT", str: "TEXT", Path: "PATH"}


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is list:
        return _type_name(get_args(annotation)[0])
    return _NAMES.get(annotation, getattr(annotation, "__name__", "VALUE").upper())


def _metavar(param: Any) -> str | None:
    """A conventional metavar (``INPUTS...``, PATH, INT, TEXT; none for a flag), not typer's ``<list[Path]>``."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return None  # typer lists the choices
    if isinstance(param, TyperArgument):
        return param.name.upper()
    return _type_name(desc.annotation) + ("..." if param.nargs != 1 else "")


def _tidy(command: Any) -> None:
    """Set conventional metavars on a command tree's parameters, its --help flag included."""
    for param in command.params:
        if param.metavar is None:
            param.metavar = _metavar(param)
        if isinstance(param, TyperArgument) and not param.type_descriptor.is_choice:
            shown = _type_name(param.type_descriptor.annotation) + ("..." if param.nargs != 1 else "")
            param.display_type_rich = lambda ctx, shown=shown: shown
    make_help = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


class HelpGroup(TyperGroup):
    """Typer's group, with conventional metavars in every sub-command's help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _tidy(self)


class RootGroup(CleanErrorsGroup, HelpGroup):
    """The root group: clean one-line errors and conventional help metavars."""


app = typer.Typer(
    cls=RootGroup,  # known failures of any command: one "error:" line, exit 1 or 2; tidy help
    name="astro-pipeline",
    help="Hubble archive colorization and 4x super-resolution pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fetch_app = typer.Typer(cls=HelpGroup, help="Fetch from an archive (MAST, HLA, ESA/Hubble).", no_args_is_help=True)
replica_app = typer.Typer(cls=HelpGroup, help="The local archive replica (MAST, HLA, ESA/Hubble on 127.0.0.1).", no_args_is_help=True)
catalog_app = typer.Typer(cls=HelpGroup, help="The catalog: what came from where and what was made.", no_args_is_help=True)
review_app = typer.Typer(cls=HelpGroup, help="The curator review web page.", no_args_is_help=True)

app.add_typer(fetch_app, name="fetch")
app.add_typer(replica_app, name="replica")
app.add_typer(catalog_app, name="catalog")
app.add_typer(review_app, name="review")
