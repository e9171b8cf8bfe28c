"""Help output uses conventional metavars (PATH, INT, TEXT, ARG...), never typer's ``<bool>``/``<list[Path]>``."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from astro_pipeline.cli import app


def _commands(group, prefix=()):  # every leaf command path of the app
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name)


ALL = sorted(_commands(typer.main.get_command(app)))


def test_the_app_has_its_commands():
    assert ("colorize",) in ALL and ("fetch", "mast") in ALL and ("review", "serve") in ALL


@pytest.mark.parametrize("path", ALL, ids=lambda p: " ".join(p))
def test_help_shows_no_typer_type_labels(path):
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=160)
    assert result.exit_code == 0, result.output
    for label in ("<bool>", "<list[", "<str>", "<path>", "<int", "<float>"):
        assert label not in result.output, f"{' '.join(path)} --help shows {label}:\n{result.output}"


def test_flags_show_no_type_and_values_show_one():
    out = CliRunner().invoke(app, ["colorize", "--help"], terminal_width=160).output
    compile_line = next(line for line in out.splitlines() if "--compile" in line)
    assert "torch.compile" in compile_line and "BOOL" not in compile_line.upper().replace("--COMPILE", "")
    assert "PATH..." in out and "INT" in out
