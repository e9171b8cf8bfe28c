"""Bad command-line input: one line naming the problem, exit 1 or 2, never a traceback (issue 18).

``--output`` that is a file or lies under one, a read-only output folder or catalog, an unreachable
archive in ``sweep`` and ``reprocess``, cones out of range (NaN, inf, 1000 degrees), and
``review serve`` on a missing folder. Commands run as the real console entry point in a
subprocess where their stderr must be checked whole (Prefect logs there), else through typer's
CliRunner.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from astro_pipeline.cli import app
from astro_pipeline.webserver import free_port

CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


def _closed_url() -> str:
    """A 127.0.0.1 URL on a port nothing listens on (connections are refused)."""
    return f"http://127.0.0.1:{free_port()}"


def _invoke(args: list[str], **kw: object):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(app, args, **kw)  # type: ignore[arg-type]


def _error_line(output: str) -> str:
    """The one ``error:`` line of the output (exactly one)."""
    lines = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def _assert_clean(result, *needles: str, codes: tuple[int, ...] = (1, 2)) -> str:  # noqa: ANN001
    assert isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert result.exit_code in codes, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    line = _error_line(result.output)
    for needle in needles:
        assert needle in line, (needle, line)
    return line


@pytest.fixture(scope="module")
def grey_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("cli-in") / "frame.png"
    Image.fromarray((np.arange(32 * 32) % 251).astype(np.uint8).reshape(32, 32)).save(path)
    return path


def _commands(output: Path, grey_png: Path) -> dict[str, list[str]]:
    closed = _closed_url()
    o = str(output)
    return {
        "review demo": ["review", "demo", "--output", o],
        "review serve": ["review", "serve", "--output", o, "--port", "0"],
        "colorize": ["colorize", str(grey_png), "--output", o],
        "fetch mast": ["fetch", "mast", "--ra", "10", "--dec", "10", "--radius", "0.1", "--output", o,
                       "--mast-url", closed],
        "fetch hla": ["fetch", "hla", "--ra", "10", "--dec", "10", "--output", o, "--hla-url", closed],
        "fetch esahubble": ["fetch", "esahubble", "--output", o, "--esahubble-url", closed],
        "sweep": ["sweep", "--sample", "--mini", "--dry-run", "--output", o],
        "reprocess": ["reprocess", "--ra", "10", "--dec", "10", "--radius", "0.1", "--dry-run", "--output", o],
        "catalog export": ["catalog", "export", "--output", o],
        "runs": ["runs", "--output", o],
    }


COMMANDS = ("review demo", "review serve", "colorize", "fetch mast", "fetch hla", "fetch esahubble", "sweep",
            "reprocess", "catalog export", "runs")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["is a file", "under a file"])
def test_output_that_is_a_file_or_under_one(command: str, where: str, tmp_path: Path, grey_png: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    afile = tmp_path / "notes.txt"
    afile.write_text("not a folder\n")
    output = afile if where == "is a file" else afile / "out"
    line = _assert_clean(_invoke(_commands(output, grey_png)[command]), str(afile), "not a folder", codes=(2,))
    assert line.startswith("error: --output")
    assert afile.read_text() == "not a folder\n"


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable even for root (chattr +i), or skip."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("running as root without a working chattr: cannot make a folder read-only here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("command", ["review demo", "colorize", "fetch mast", "sweep", "reprocess"])
def test_read_only_output_folder(command: str, tmp_path: Path, grey_png: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "ro"
    folder.mkdir()
    with _read_only(folder):
        result = _invoke(_commands(folder, grey_png)[command])
    _assert_clean(result, str(folder), "not writable", codes=(2,))


@pytest.fixture
def catalog_folder(tmp_path: Path) -> Path:
    from astro_pipeline.review.demo import build_demo_catalog

    folder = tmp_path / "with-catalog"
    build_demo_catalog(folder, n=2, size=32).catalog.close()
    return folder


def test_read_only_catalog_file(catalog_folder: Path, grey_png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that records a run fails in one line naming the catalog; reading it still works."""
    monkeypatch.chdir(catalog_folder.parent)
    db = catalog_folder / "catalog.sqlite"
    commands = _commands(catalog_folder, grey_png)
    with _read_only(db):
        wrote = _invoke(commands["colorize"])
        runs = _invoke(commands["runs"])
        export = _invoke(commands["catalog export"])
    line = _assert_clean(wrote, str(db), "read-only", codes=(1,))
    assert line.startswith("error: catalog")
    assert runs.exit_code == 0 and "review-demo" in runs.output, runs.output
    assert export.exit_code == 0, export.output


@pytest.mark.parametrize(("folder", "problem"), [("no-such-run", "no such folder"), (".", "no catalog")])
def test_review_serve_refuses_a_missing_folder_or_catalog(folder: str, problem: str, tmp_path: Path) -> None:
    """Never a fresh empty catalog: the command refuses instead of serving (subprocess: it would block)."""
    target = (tmp_path / folder).resolve()
    env = {**os.environ, "ASTRO_PIPELINE_REVIEW_TOKENS": json.dumps({"tok-alice-0123456789": "alice"})}
    try:
        proc = subprocess.run([*CLI, "review", "serve", "--output", str(target), "--port", "0"], env=env,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"review serve on {folder!r} started serving instead of refusing")
    assert proc.returncode in (1, 2) and "Traceback" not in proc.stderr
    line = _error_line(proc.stderr)
    assert str(target) in line and problem in line
    assert not (target / "catalog.sqlite").exists()


# ---- cones: finite radius in (0, 180], RA in [0, 360), Dec in [-90, 90], checked in one place ----
BAD_CONES = [
    ({"--radius": "nan"}, "radius", "nan"),
    ({"--radius": "inf"}, "radius", "inf"),
    ({"--radius": "1000"}, "radius", "1000"),
    ({"--radius": "0"}, "radius", "0"),
    ({"--radius": "-1"}, "radius", "-1"),
    ({"--radius": "180.5"}, "radius", "180.5"),
    ({"--ra": "360"}, "ra", "360"),
    ({"--ra": "nan"}, "ra", "nan"),
    ({"--ra": "-0.5"}, "ra", "-0.5"),
    ({"--dec": "90.5"}, "dec", "90.5"),
    ({"--dec": "-inf"}, "dec", "-inf"),
]


def _cone_args(change: dict[str, str]) -> list[str]:
    values = {"--ra": "10", "--dec": "10", "--radius": "0.1", **change}
    return [x for kv in values.items() for x in kv]


@pytest.mark.parametrize(("change", "name", "value"), BAD_CONES)
@pytest.mark.parametrize("command", ["reprocess", "fetch mast", "fetch hla"])
def test_bad_cones_are_refused_before_any_query(command: str, change: dict[str, str], name: str, value: str,
                                                tmp_path: Path) -> None:
    closed = _closed_url()
    extra = {"reprocess": ["--dry-run", "--output", str(tmp_path / "o")],
             "fetch mast": ["--output", str(tmp_path / "o"), "--mast-url", closed],
             "fetch hla": ["--output", str(tmp_path / "o"), "--hla-url", closed]}[command]
    line = _assert_clean(_invoke([*command.split(), *_cone_args(change), *extra]), name, value, codes=(2,))
    assert "degrees" in line
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_cone_check_accepts_the_edges() -> None:
    from astro_pipeline.sky import ConeError, check_cone

    check_cone(0.0, -90.0, 180.0)
    check_cone(359.999, 90.0, 1e-6)
    check_cone(None, None, 1.0)  # a named target: position resolved later, radius still checked
    with pytest.raises(ConeError, match=r"radius must be finite and in \(0, 180\] degrees, got nan"):
        check_cone(10.0, 10.0, float("nan"))
    with pytest.raises(ConeError, match=r"0 <= ra < 360"):
        check_cone(360.0, 0.0, 1.0)


def test_a_bad_watch_list_region_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASTRO_PIPELINE_WATCH_LIST",
                       json.dumps([{"name": "m101", "ra": 210.8, "dec": 54.35, "radius_deg": "NaN"}]))
    _assert_clean(_invoke(["sweep", "--dry-run", "--output", str(tmp_path / "o")]), "watch_list", "radius",
                  "nan", codes=(2,))


# ---- an unreachable archive: sweep and reprocess report it in one line and carry on ---------------
@pytest.mark.slow
def test_unreachable_archive_in_sweep_and_reprocess(prefect_harness: None, sweep_replica, sweep_weights_dir: Path,
                                                    tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    closed = _closed_url()
    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "ASTRO_PIPELINE_MAST_URL": closed,
        "ASTRO_PIPELINE_HLA_URL": sweep_replica.url,
        "ASTRO_PIPELINE_ESAHUBBLE_URL": sweep_replica.url,
        "ASTRO_PIPELINE_WEIGHTS_DIR": str(sweep_weights_dir),
        "ASTRO_PIPELINE_DOWNLOAD__RETRIES": "0",
        "ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S": "0",
        "ASTRO_PIPELINE_WATCH_LIST": json.dumps([{"name": "field-a", "ra": 10.0, "dec": 10.0, "radius_deg": 0.1,
                                                  "archives": ["mast", "esahubble"]}]),
    }
    port = closed.rsplit(":", 1)[1]
    sweep = subprocess.run([*CLI, "sweep", "--dry-run", "--output", str(tmp_path / "s")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=400)
    text = sweep.stdout + sweep.stderr
    assert sweep.returncode == 1, text[-3000:]
    assert "Traceback" not in text
    line = _error_line(sweep.stderr)
    assert "mast" in line and "field-a" in line and f"connection refused by 127.0.0.1:{port}" in line
    assert "esahubble offers" in sweep.stderr  # the other archive of the region was still listed
    repro = subprocess.run([*CLI, "reprocess", "--ra", "10", "--dec", "10", "--radius", "0.1", "--archives", "mast",
                            "--output", str(tmp_path / "r")], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=400)
    text = repro.stdout + repro.stderr
    assert repro.returncode == 1, text[-3000:]
    assert "Traceback" not in text
    assert f"connection refused by 127.0.0.1:{port}" in _error_line(repro.stderr)
