"""The ``astro-pipeline`` command line: thin typer commands over the library.

Each ``*_cmd.py`` module in this package registers its commands on the shared app in
``_app.py``; they are imported here, so adding a command group is adding one file.
Heavy libraries (torch, prefect, playwright) are imported inside commands, keeping
``astro-pipeline --help`` fast.
"""

from __future__ import annotations

import importlib
import pkgutil

from astro_pipeline.cli._app import app

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name.endswith("_cmd")):
    importlib.import_module(f"{__name__}.{_mod}")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
