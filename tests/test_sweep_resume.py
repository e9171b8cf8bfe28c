"""Crash safety: SIGKILL a real ``astro-pipeline sweep --sample --mini`` midway, run it again.

The second run must complete, redo nothing the first one finished (every product row has
``attempts == 1``), leave no duplicates and lose nothing (every fetched file has its products,
every product file on disk matches its recorded sha256).
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


def _ok_products(db: Path) -> list[tuple[str, str]]:
    if not db.is_file():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return con.execute("SELECT product_key, run_id FROM products WHERE status = 'ok'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet, or a writer holds the lock: poll again
        return []


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sigkill_midway_then_rerun_completes_without_redoing_work(
    tmp_path: Path, sweep_weights_dir: Path, session_tmp: Path
) -> None:
    out = tmp_path / "out"
    db = out / "catalog.sqlite"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "ASTRO_PIPELINE_WEIGHTS_DIR": str(sweep_weights_dir),
        "ASTRO_PIPELINE_MIN_FREE_DISK_BYTES": str(10 * 1024**2),
    }
    env.pop("PREFECT_API_URL", None)
    cmd = [*CLI, "sweep", "--sample", "--mini", "--output", str(out), "--archives", "mast,esahubble"]

    # run 1: a polite 1 s between requests to one host keeps it slow enough to be killed midway
    first = subprocess.Popen(
        cmd, cwd=tmp_path, env={**env, "ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S": "1.0"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while not _ok_products(db):
            assert first.poll() is None, f"first sweep ended ({first.returncode}) before any product was recorded"
            assert time.monotonic() < deadline, "no product recorded within 240 s"
            time.sleep(0.05)
        assert first.poll() is None, "the first sweep finished before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # the CLI and its ephemeral Prefect server
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    before = dict(_ok_products(db))
    assert before, "nothing was finished before the kill"

    # run 2: completes
    second = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "manifest:" in second.stdout and "already_done" in second.stdout

    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT product_key, run_id, attempts, source_sha256, hdu_idx, plane_idx, operation, id "
                           "FROM products WHERE status = 'ok'").fetchall()
        files = con.execute("SELECT sha256 FROM files").fetchall()
        product_files = con.execute(
            "SELECT pf.path, pf.sha256 FROM product_files pf JOIN products p ON p.id = pf.product_id "
            "WHERE p.status = 'ok'").fetchall()
        runs = dict(con.execute("SELECT id, status FROM runs").fetchall())
        field_products = con.execute("SELECT attempts FROM field_products WHERE status = 'ok'").fetchall()
    finally:
        con.close()
    # redoes nothing finished: products from run 1 kept their run and were written once
    after = {key: run for key, run, *_ in rows}
    for key, run in before.items():
        assert after[key] == run
    assert all(attempts == 1 for _, _, attempts, *_ in rows), "some product was made twice"
    # no duplicates: one ok product per (input, frame, operation)
    ident = [(sha, hdu, plane, op) for _, _, _, sha, hdu, plane, op, _ in rows]
    assert len(ident) == len(set(ident))
    # nothing lost: every fetched file has products; every product file is complete on disk
    assert {sha for (sha,) in files} == {sha for sha, *_ in ident}
    assert product_files
    for path, sha in product_files:
        assert Path(path).is_file() and _sha256(Path(path)) == sha, path
    all_df = pd.read_parquet(out / "manifests" / "all.parquet")
    frame_rows, field_rows = (all_df[all_df["product_type"] == kind] for kind in ("frame", "field"))
    assert len(frame_rows[frame_rows["status"] == "ok"]) == len(rows)
    # the mini sample's fields (issue 16): one colour product each, made once, one manifest row each
    assert field_products and all(attempts == 1 for (attempts,) in field_products)
    assert len(field_rows[field_rows["status"] == "ok"]) == len(field_products) == len(field_rows)
    # the killed run stays visibly unfinished; the rerun completed
    assert sorted(runs.values()) == ["completed", "running"], runs
