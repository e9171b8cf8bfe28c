"""Sweep progress a person can read (issue 14): typed events from the flow, a rich bar in the CLI,
Prefect's per-task lines in its logs (and on the terminal only with ``--verbose``)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.console import Console

CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


def test_events_reach_every_subscriber_and_a_broken_one_is_dropped():
    from astro_pipeline import progress
    from astro_pipeline.progress import Stage, SweepEvent

    got: list[SweepEvent] = []

    def broken(event: SweepEvent) -> None:
        raise RuntimeError("display gone")

    with progress.subscribe(got.append), progress.subscribe(broken):
        tracker = progress.SweepTracker()
        tracker.stage(Stage.LISTING, total=2)
        worker = threading.Thread(target=tracker.listed)  # events may come from any thread
        worker.start()
        worker.join()
        tracker.planned(items=3, not_run=1)
        tracker.downloaded("a.fits")
        tracker.processed("a.fits", "ok")
        tracker.stage(Stage.COMPOSING)
    tracker.stage(Stage.FINISHED)  # after the block: nobody listens
    assert [(e.stage, e.done, e.total) for e in got] == [
        (Stage.LISTING, 0, 2), (Stage.LISTING, 1, 2), (Stage.PROCESSING, 0, 3), (Stage.PROCESSING, 0, 3),
        (Stage.PROCESSING, 1, 3), (Stage.COMPOSING, 1, 3)]
    assert got[2].not_run == 1 and got[3].downloaded == 1 and got[4].item == "a.fits" and got[4].status == "ok"


def test_the_cli_display_shows_items_stage_elapsed_and_eta():
    from astro_pipeline.progress import Stage, SweepEvent
    from astro_pipeline.cli._progress import SweepDisplay

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=140, color_system=None)
    with SweepDisplay(console) as display:
        display(SweepEvent(stage=Stage.LISTING, done=0, total=2))
        display(SweepEvent(stage=Stage.PROCESSING, done=0, total=5, not_run=2))
        for k in range(1, 4):
            display(SweepEvent(stage=Stage.PROCESSING, done=k, total=5, downloaded=k + 1, item=f"f{k}.fits",
                               status="ok"))
        display.refresh()
        shown = buf.getvalue()
    assert "3/5" in shown and "processing" in shown and "downloaded 4" in shown
    assert "0:00:0" in shown  # elapsed (and the ETA column) in h:mm:ss

    plain = io.StringIO()
    with SweepDisplay(Console(file=plain, force_terminal=False, width=140)) as display:
        display(SweepEvent(stage=Stage.PROCESSING, done=0, total=4, not_run=1))
        for k in range(1, 5):
            display(SweepEvent(stage=Stage.PROCESSING, done=k, total=4, downloaded=k, item=f"f{k}", status="ok"))
        display(SweepEvent(stage=Stage.FINISHED, done=4, total=4))
    lines = plain.getvalue().splitlines()
    assert any("4 item(s) to fetch and process, 1 not run" in line for line in lines)
    assert any(line.startswith("sweep: 4/4 items") and "elapsed" in line for line in lines)


def test_plain_progress_says_what_each_archive_listing_gave():
    from astro_pipeline.cli._progress import SweepDisplay
    from astro_pipeline.planning import Listing, ListingRequest
    from astro_pipeline.progress import Stage, SweepEvent, SweepTracker, subscribe
    from flows.sweep import _listing_outcome

    failed = Listing(request=ListingRequest(archive="mast", region=None), error="connection refused")
    empty = Listing(request=ListingRequest(archive="esahubble", region=None))
    plain = io.StringIO()
    with SweepDisplay(Console(file=plain, force_terminal=False, width=140)) as display, subscribe(display):
        tracker = SweepTracker()
        tracker.stage(Stage.LISTING, total=2)
        tracker.listed(*_listing_outcome(failed))
        tracker.listed(*_listing_outcome(empty))
        display(SweepEvent(stage=Stage.PROCESSING, done=0, total=0))
    lines = plain.getvalue().splitlines()
    assert "sweep: mast could not be listed for its whole list (the reason is reported at the end)" in lines
    assert "sweep: esahubble offers 0 item(s) for its whole list" in lines


@pytest.mark.slow
def test_reprocess_reports_each_stage_and_every_item(prefect_harness, sweep_env, monkeypatch, tmp_path):
    from astro_pipeline import progress
    from astro_pipeline.progress import Stage, SweepEvent

    from flows.sweep import reprocess_region

    for k, v in sweep_env.items():
        monkeypatch.setenv(k, v)
    region = json.loads(sweep_env["ASTRO_TEST_REGION"])
    got: list[SweepEvent] = []
    with progress.subscribe(got.append):
        report = reprocess_region(ra=region["ra"], dec=region["dec"], radius_deg=region["radius_deg"],
                                  archives=["mast"], overrides={"output_dir": str(tmp_path / "out"),
                                                                "max_files_per_run": 3})
    stages = [e.stage for e in got]
    order = [Stage.LISTING, Stage.PLANNING, Stage.PROCESSING, Stage.COMPOSING, Stage.CONTACT_SHEET,
             Stage.RETENTION, Stage.MANIFESTS, Stage.FINISHED]
    assert [s for s in dict.fromkeys(stages)] == order
    work = [e for e in got if e.stage is Stage.PROCESSING]
    ran = [it for it in report.items if it.status not in ("already_done", "over_budget", "list_failed")]
    assert len(ran) == 3 and {e.total for e in work} == {3}
    finished = [e for e in work if e.item is not None and e.status is not None]
    assert [e.done for e in finished] == [1, 2, 3]
    assert sorted((e.item, e.status) for e in finished) == sorted((it.label, str(it.status)) for it in ran)
    assert max(e.downloaded for e in work) == 3
    assert work[0].not_run == sum(1 for it in report.items if it.status == "over_budget")


@pytest.mark.slow
def test_sweep_cli_shows_progress_not_prefect_task_lines_unless_verbose(sweep_weights_dir, tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASTRO_PIPELINE_WEIGHTS_DIR": str(sweep_weights_dir),
           "ASTRO_PIPELINE_MIN_FREE_DISK_BYTES": str(10 * 1024**2)}
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_LOGGING_TO_API_ENABLED", None)
    out = tmp_path / "out"
    cmd = [*CLI, "sweep", "--sample", "--mini", "--output", str(out), "--archives", "esahubble"]
    first = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    shown = first.stdout + first.stderr
    assert first.returncode == 0, shown[-3000:]
    assert "Task run" not in shown and "Finished in state" not in shown, shown[-3000:]
    assert not re.search(r"\(\d+ items\)", shown)  # no stray count of the sample's files
    done = re.search(r"sweep: (\d+)/(\d+) items, finished", shown)
    assert done and done.group(1) == done.group(2) != "0", shown[-3000:]
    (log,) = (out / "logs").glob("*.log")
    assert "Task run 'process-" in log.read_text() and f"Prefect log: {log}" in shown

    again = subprocess.run([*cmd, "--verbose"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "Task run 'list-archive-" in again.stdout + again.stderr


def test_the_temporary_servers_shutdown_lines_go_to_the_log_not_the_terminal(tmp_path):
    """Prefect stops its temporary API server as the process exits, after the run is recorded, and
    logs the events it can no longer flush as ERROR tracebacks (seen at the end of the quick start)."""
    import logging

    from prefect import flow  # noqa: F401 - Prefect sets up its logging (root handlers) on import

    from astro_pipeline.cli._progress import prefect_lines

    seen: list[logging.LogRecord] = []
    terminal = logging.Handler()
    terminal.emit = seen.append  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(terminal)
    server = logging.getLogger("prefect.server")
    state = (server.propagate, list(server.handlers))
    try:
        log = tmp_path / "logs" / "run.log"
        with prefect_lines(verbose=False, log_file=log):
            logging.getLogger("prefect.flow_runs").warning("during the run")
        logging.getLogger("prefect.server.services.task_run_recorder").error("Error flushing 1 events")
        logging.getLogger("astro_pipeline.cli").error("our own error after the run")
        for handler in server.handlers:
            handler.flush()
        assert [r.getMessage() for r in seen] == ["during the run", "our own error after the run"]
        assert "Error flushing 1 events" in log.read_text()
    finally:
        root.removeHandler(terminal)
        for handler in server.handlers:
            if handler not in state[1]:
                server.removeHandler(handler)
                handler.close()
        server.propagate = state[0]
