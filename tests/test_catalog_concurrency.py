"""Real processes against one SQLite catalog: two writers at once neither corrupt nor duplicate it,
and a writer SIGKILLed inside a transaction (or between commits) leaves it consistent."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from astro_pipeline.catalog import Catalog
from astro_pipeline.ingest.frame import Flag, QualityReport
from astro_pipeline.products import ProcessedInput

#: A catalog writer run as ``python -c WORKER <url> <worker> <n> <mode> <go-file>``.
#: mode "both": the items both workers share plus its own; "hold": write, then wait inside the
#: transaction; "stream": one committed product after another, forever.
WORKER = r'''
import json, sys, time
from datetime import UTC, datetime
from pathlib import Path
from astro_pipeline.archives.records import ArchiveRecord, DownloadedFile
from astro_pipeline.catalog import Catalog
from astro_pipeline.catalog import writes
from astro_pipeline.ingest.frame import Flag, QualityReport, StretchParams
from astro_pipeline.products import ModelRecord, Product, ProductFile

url, worker, n, mode, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
while not go.exists():
    time.sleep(0.005)
MODELS = (ModelRecord(name="colorizer", version="v1", sha256="0" * 64, arch="unet"),)
NOISY = QualityReport(metrics={"snr": 1.0}, flags=[Flag("noisy", 1.0, 3.0, "<")])

def item(i):
    rec = ArchiveRecord(archive="mast", id=f"mast:obs{i}", obs_id=f"obs{i}", ra=10.0 + i * 0.01, dec=-5.0,
                        url=f"http://127.0.0.1:9/{i}", target="T", instrument="ACS/WFC", filters=["F606W"])
    return DownloadedFile(record=rec, path=Path(f"/nonexistent/raw/{i}.fits"), size=100 + i, sha256=f"{i:064x}",
                          verified_against="size", downloaded_at=datetime.now(UTC))

def product(dl, params, run_id, hdu=1):
    # each product names its own files (issue 14: a product never records another's file)
    tag = f"{dl.sha256[-8:]}_{hdu}_" + "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    return Product(run_id=run_id, source_path=str(dl.path), source_sha256=dl.sha256, hdu=hdu, plane=None,
                   frame_key=f"{dl.path}[{hdu}]", operation="colorize", status="ok", quality=NOISY,
                   stretch=StretchParams(method="zscale+asinh", vmin=0.0, vmax=1.0), models=MODELS, params=params,
                   tile_count=1, files={"png": ProductFile(path=Path(f"/p/{tag}.png"), sha256="a" * 64),
                                        "fits": ProductFile(path=Path(f"/p/{tag}.fits"), sha256="b" * 64)})

cat = Catalog(url)
if mode == "both":
    run = cat.start_run(f"worker{worker}", {"worker": worker})
    for i in range(n):
        dl = item(i)
        cat.upsert_file(dl, run_id=run)
        frame = cat.upsert_frame(dl.sha256, f"{dl.path}[1]", 1, None, {}, NOISY)
        cat.record_product(product(dl, {"tile": 256}, run))            # the same product from both workers
        cat.record_product(product(dl, {"tile": 256, "worker": worker}, run))  # this worker's own
        cat.add_review(frame, "approved" if worker else "needs_look", None, f"reviewer{worker}")
    cat.finish_run(run, "completed", {"items": n})
elif mode == "hold":
    def step(conn):
        for i in range(1000, 1000 + n):
            dl = item(i)
            rid = writes.upsert_record(conn, dl.record)
            fid = writes.upsert_file(conn, dl.sha256, path=dl.path, size=dl.size, record_id=rid)
            writes.record_product(conn, product(dl, {"tile": 256}, None))
        conn.exec_driver_sql("UPDATE products SET status = 'error' WHERE id = 1")
        conn.exec_driver_sql("DELETE FROM product_files")
        print("IN_TRANSACTION", flush=True)
        time.sleep(120)
    cat.write(step)
elif mode == "stream":
    i = 0
    while True:
        dl = item(2000 + i)
        cat.write(lambda conn: [writes.upsert_file(conn, dl.sha256, path=dl.path,
                                                   record_id=writes.upsert_record(conn, dl.record)),
                                writes.record_product(conn, product(dl, {"tile": 256}, None, hdu=1)),
                                writes.record_product(conn, product(dl, {"tile": 256}, None, hdu=2))])
        i += 1
        print(f"COMMITTED {i}", flush=True)
'''


def start_workers(url: str, tmp_path: Path, modes: list[str], n: int) -> tuple[list[subprocess.Popen[str]], Path]:
    go = tmp_path / f"go-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(w), str(n), mode, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for w, mode in enumerate(modes)]
    return procs, go


def run_two_writers(url: str, tmp_path: Path, n: int) -> None:
    """Two processes create the catalog and write overlapping items at the same moment."""
    procs, go = start_workers(url, tmp_path, ["both", "both"], n)
    time.sleep(1.0)  # both have imported and are waiting on the go file
    go.touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]


def check_two_writers(cat: Catalog, n: int) -> None:
    def q(sql: str) -> Any:
        return cat.read(lambda c: c.exec_driver_sql(sql).all())

    counts = {t: q(f"SELECT count(*) FROM {t}")[0][0] for t in (
        "archive_records", "files", "frames", "frame_flags", "products", "product_files", "reviews", "runs")}
    # The shared product written by both runs is one current row and one superseded row (issue 14:
    # work redone by another run keeps the earlier row, marked, never two current rows for one key).
    assert counts == {"archive_records": n, "files": n, "frames": n, "frame_flags": n, "products": 4 * n,
                      "product_files": 8 * n, "reviews": 2 * n, "runs": 2}
    assert q("SELECT count(*) FROM products WHERE superseded_by IS NULL")[0][0] == 3 * n
    assert q("SELECT count(*) FROM (SELECT product_key FROM products WHERE superseded_by IS NULL "
             "GROUP BY product_key HAVING count(*) > 1) AS dup") == [(0,)]
    assert q("SELECT count(*) FROM products WHERE superseded_by IS NOT NULL AND superseded_by NOT IN "
             "(SELECT id FROM products WHERE superseded_by IS NULL)") == [(0,)]  # superseded by a current row
    # the shared product, written twice: its current row counts both attempts
    assert q("SELECT count(*) FROM products WHERE attempts = 2 AND superseded_by IS NULL")[0][0] == n
    assert q("SELECT count(*) FROM frames WHERE flag_count <> 1") == [(0,)]
    assert q("SELECT count(*) FROM schema_version") == [(1,)]  # created once, though both raced to create it
    assert sorted(r.status for r in cat.recent_runs()) == ["completed", "completed"]
    assert cat.is_done(f"{0:064x}", {"colorizer": "v1"}, {"tile": 256})


def test_two_processes_write_at_once_without_corruption_or_duplicates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    n = 15
    run_two_writers(url, tmp_path, n)
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    db.close()
    with Catalog(url) as cat:
        check_two_writers(cat, n)


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited before {marker!r}: {proc.stderr.read()[-3000:] if proc.stderr else ''}")
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} within {timeout}s")


def seed(cat: Catalog) -> None:
    """Two committed products (two files each) and a review, written in this process."""
    from astro_pipeline.ingest.frame import Flag, QualityReport
    from astro_pipeline.products import ModelRecord, ProcessedInput, Product, ProductFile

    for i in range(2):
        sha = f"{900 + i:064x}"
        src = Path(f"/nonexistent/{i}.fits")
        cat.record_input(ProcessedInput(path=src, sha256=sha, size=None, n_frames=1, products=[Product(
            run_id=None, source_path=str(src), source_sha256=sha, hdu=None, plane=None, frame_key=f"{i}.fits",
            operation="enhance", status="ok", quality=QualityReport(metrics={"snr": 1.0},
                                                                     flags=[Flag("noisy", 1.0, 3.0, "<")]),
            models=(ModelRecord(name="m", version="1"),), tile_count=1,
            files={"png": ProductFile(path=Path(f"/p/{i}.png"), sha256=""),
                   "fits": ProductFile(path=Path(f"/p/{i}.fits"), sha256="e" * 64)})]))
    cat.add_review(cat.flagged_frames()[0].frame_id, "approved", None, "ann")


def snapshot(cat: Catalog) -> dict[str, Any]:
    return cat.read(lambda c: {
        "tables": {t: c.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar() for t in (
            "archive_records", "files", "frames", "products", "product_files", "reviews")},
        "statuses": c.exec_driver_sql("SELECT id, status FROM products ORDER BY id").all(),
    })


def test_writer_killed_inside_a_transaction_leaves_a_consistent_catalog(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    with Catalog(url) as cat:
        seed(cat)  # some committed history to protect
        before = snapshot(cat)
        procs, go = start_workers(url, tmp_path, ["hold"], 25)
        go.touch()
        proc = procs[0]
        try:
            _read_until(proc, "IN_TRANSACTION")
            # The writer holds the write lock with 25 products written and product_files deleted;
            # opening the catalog and reading never wait on it, and see the committed state (WAL).
            t0 = time.monotonic()
            with Catalog(url) as other:
                assert snapshot(other) == before
            assert snapshot(cat) == before and time.monotonic() - t0 < 10
            # A write waits on the busy timeout (instead of failing) until the holder is killed.
            killer = threading.Timer(1.0, lambda: proc.send_signal(signal.SIGKILL))
            killer.start()
            waited = cat.start_run("waits-for-the-lock", {})
            assert time.monotonic() - t0 >= 1.0 and cat.run(waited) is not None
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert (tmp_path / "catalog.sqlite-wal").exists()  # killed with its log still there
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()
    with Catalog(url) as cat:  # a fresh process view: nothing of the killed transaction, lock released
        assert snapshot(cat) == before
        assert cat.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM product_files").scalar()) == 4
        assert [r.flow for r in cat.recent_runs()] == ["waits-for-the-lock"]
        run = cat.start_run("after-crash", {})
        cat.finish_run(run, "completed", {})
        assert cat.run(run).status == "completed"  # type: ignore[union-attr]


def test_writer_killed_between_commits_loses_only_uncommitted_work(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    Catalog(url).close()
    procs, go = start_workers(url, tmp_path, ["stream"], 0)
    go.touch()
    proc = procs[0]
    try:
        line = _read_until(proc, "COMMITTED 25")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert line.strip() == "COMMITTED 25"
    with Catalog(url) as cat:
        rows = cat.read(lambda c: c.exec_driver_sql(
            "SELECT p.id, count(pf.id) FROM products p LEFT JOIN product_files pf ON pf.product_id = p.id "
            "GROUP BY p.id").all())
        files = cat.read(lambda c: c.exec_driver_sql("SELECT count(*) FROM files").scalar())
        assert files >= 25  # every reported commit survived
        assert len(rows) == 2 * files  # each item's two products landed together with their file, or not at all
        assert all(n == 2 for _, n in rows)  # and each product with both of its files
        orphans = cat.read(lambda c: c.exec_driver_sql(
            "SELECT count(*) FROM frames f LEFT JOIN files fi ON fi.id = f.file_id WHERE fi.id IS NULL").scalar())
        assert orphans == 0
        assert json.loads(json.dumps(cat.stats()))["products_by_status"] == {"ok": 2 * files}
    db = sqlite3.connect(tmp_path / "catalog.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()


def test_threads_share_one_catalog(tmp_path: Path) -> None:
    """Prefect's thread task runner shares one Catalog: concurrent writes from threads all land once."""
    from concurrent.futures import ThreadPoolExecutor

    with Catalog(f"sqlite:///{tmp_path / 'catalog.sqlite'}") as cat:
        def work(i: int) -> int:
            sha = f"{i % 10:064x}"  # ten distinct inputs, each written by four threads
            cat.record_input(ProcessedInput(path=Path(f"/nonexistent/{i % 10}.fits"), sha256=sha, size=None,
                                            n_frames=None))
            return cat.upsert_frame(sha, "k", None, None, {}, QualityReport(metrics={"snr": 1.0}, flags=[
                Flag("noisy", 1.0, 3.0, "<")]))

        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(work, range(40)))
        assert len(set(ids)) == 10 and cat.count_frames() == 10
        assert cat.stats()["files"] == 10
