"""The sweep flows against the replica (real HTTP on 127.0.0.1, real Chromium for HLA/ESA, real
SQLite catalog, real Prefect API from the test harness), plus the library pieces they compose."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from astro_pipeline import planning, steps
from astro_pipeline.archives.listing import in_region, matches_criteria
from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.config import Region, Settings
from astro_pipeline.items import ItemPlan, ItemResult, ItemStatus
from astro_pipeline.products import Operation
from astro_pipeline.sample_watch_list import SAMPLE_HLA_CUTOUT_PX, sample_overrides, sample_watch_list


def _record(i: int, *, size: int | None = 100, kind: str = "science", ra: float = 10.0, dec: float = 20.0) -> ArchiveRecord:
    return ArchiveRecord(archive="mast", id=f"mast:HST/product/x{i}_drz.fits", url=f"http://127.0.0.1:1/x{i}",
                         size=size, kind=kind, ra=ra, dec=dec)


# ---------------------------------------------------------------------------------- library


def test_angular_distance_and_region_membership() -> None:
    from astro_pipeline.sky import mean_position, separation_deg

    assert separation_deg(10, 20, 10, 20) == pytest.approx(0.0)
    assert separation_deg(0, 89.9, 180, 89.9) == pytest.approx(0.2, abs=1e-9)
    assert separation_deg(359.95, 0, 0.05, 0) == pytest.approx(0.1, abs=1e-9)
    assert mean_position([(359.9, 10.0), (0.1, 10.0)]) == pytest.approx((0.0, 10.0), abs=1e-3)
    region = Region(name="r", ra=359.99, dec=0.0, radius_deg=0.05)
    assert in_region(_record(1, ra=0.02, dec=0.0), region)
    assert not in_region(_record(2, ra=0.2, dec=0.0), region)


def test_sample_overrides_point_every_archive_at_the_replica() -> None:
    over = sample_overrides("http://127.0.0.1:5555", Settings())
    assert {over[k] for k in ("mast_url", "hla_url", "esahubble_url")} == {"http://127.0.0.1:5555"}
    assert over["hla_cutout_px"] == SAMPLE_HLA_CUTOUT_PX
    assert "hla_cutout_px" not in sample_overrides("http://x", Settings(hla_cutout_px=64))


def test_region_criteria_match_instrument_prefix_and_filter() -> None:
    region = Region(name="r", ra=10, dec=20, instruments=["acs"], filters=["F606W"])
    rec = _record(1).model_copy(update={"instrument": "ACS/WFC", "filters": ["F606W"]})
    assert matches_criteria(rec, region)
    assert not matches_criteria(rec.model_copy(update={"filters": ["F814W"]}), region)
    assert not matches_criteria(rec.model_copy(update={"instrument": "WFC3/UVIS"}), region)
    colour = rec.model_copy(update={"kind": "color", "filters": [], "instrument": "WFPC2"})
    assert matches_criteria(colour, region)


def _plan(listings: dict[str, list[ArchiveRecord]], *, budget: planning.RunBudget | None = None) -> planning.RunPlan:
    regions = [Region(name=name, ra=10.0, dec=20.0, archives=["mast"]) for name in listings]
    found = [planning.Listing(request=planning.ListingRequest("mast", r), records=listings[r.name]) for r in regions]
    return planning.plan_run(regions, found, catalog=None, versions=None,
                             budget=budget or planning.RunBudget(path=Path.cwd()))


def test_planner_dedupes_orders_and_chooses_operation() -> None:
    recs = [_record(1), _record(1), _record(2, kind="color")]
    plans = _plan({"r": recs}).admitted
    assert [p.key for p in plans] == [recs[0].key, recs[2].key]
    assert [p.operation for p in plans] == [Operation.ENHANCE, Operation.UPSCALE]
    plans = _plan({"a": [_record(1), _record(2)], "b": [_record(2), _record(3)]}).admitted
    assert [(p.region, p.record.id[-11:]) for p in plans] == [("a", "x1_drz.fits"), ("a", "x2_drz.fits"),
                                                             ("b", "x3_drz.fits")]
    # ESA/Hubble is listed once, whole, and each region keeps the images inside its cone
    regions = [Region(name="near", ra=10.0, dec=20.0, radius_deg=0.1, archives=["esahubble"]),
               Region(name="far", ra=50.0, dec=-10.0, radius_deg=0.1, archives=["mast", "esahubble"])]
    requests = planning.listing_requests(regions)
    assert [r.name for r in requests] == ["esahubble:*", "mast:far"]
    esa = [_record(7, kind="color", ra=10.01, dec=20.0), _record(8, kind="color", ra=50.0, dec=-10.02)]
    plan = planning.plan_run(regions, [planning.Listing(request=requests[0], records=esa),
                                       planning.Listing(request=requests[1], records=[])],
                             catalog=None, versions=None, budget=planning.RunBudget(path=Path.cwd()))
    assert [(p.region, p.record.id[-11:]) for p in plan.admitted] == [("near", "x7_drz.fits"), ("far", "x8_drz.fits")]
    # an archive that could not be listed is one list_failed item per region, and the rest is planned
    down = planning.plan_run(regions, [planning.Listing(request=requests[0], records=esa),
                                       planning.Listing(request=requests[1], error="mast listing of region far failed")],
                             catalog=None, versions=None, budget=planning.RunBudget(path=Path.cwd()))
    assert len(down.admitted) == 2
    assert [(r.status, r.archive, r.region, r.error) for r in down.not_run] == [
        (ItemStatus.LIST_FAILED, "mast", "far", "mast listing of region far failed")]


def test_planner_admits_under_the_budget_and_a_dry_run_is_the_plan() -> None:
    plan = _plan({"r": [_record(i) for i in range(4)]}, budget=planning.RunBudget(max_files=2, path=Path.cwd()))
    assert len(plan.admitted) == 2 and [r.status for r in plan.not_run] == [ItemStatus.OVER_BUDGET] * 2
    dry = plan.dry_run_items()
    assert [r.status for r in dry] == [ItemStatus.PLANNED] * 2 + [ItemStatus.OVER_BUDGET] * 2
    assert [r.key for r in plan.sort(reversed(dry))] == [r.key for r in dry]


def test_run_budget_caps_files_bytes_and_disk(tmp_path: Path) -> None:
    b = planning.RunBudget(max_files=2, path=tmp_path)
    assert [b.admit(_record(i)).admitted for i in range(3)] == [True, True, False]
    b = planning.RunBudget(max_bytes=250, path=tmp_path)
    decisions = [b.admit(_record(i, size=100)) for i in range(3)]
    assert [d.admitted for d in decisions] == [True, True, False]
    assert decisions[2].status == "over_budget" and "max_bytes_per_run=250" in decisions[2].reason
    assert planning.RunBudget(min_free_bytes=0, path=tmp_path / "not" / "yet").disk_ok().admitted
    low = planning.RunBudget(min_free_bytes=10**18, path=tmp_path).disk_ok()
    assert not low.admitted and low.status == "low_disk" and "min_free_disk_bytes" in low.reason
    import pickle

    clone = pickle.loads(pickle.dumps(b))  # tasks on Dask workers get a copy
    assert clone.bytes == 200 and clone.admit(_record(9, size=10)).admitted


# ---------------------------------------------------------------------------------- flows


@pytest.fixture()
def env(sweep_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for k, v in sweep_env.items():
        monkeypatch.setenv(k, v)
    return sweep_env


@pytest.mark.slow
def test_archive_sweep_end_to_end_then_rerun_skips(prefect_harness: None, env: dict[str, str], tmp_path: Path,
                                                   sweep_replica) -> None:
    from prefect.client.orchestration import get_client

    from astro_pipeline.catalog import Catalog
    from astro_pipeline.sample import load_sample
    from flows.common import inference_limit_name
    from flows.sweep import archive_sweep

    index = load_sample(sweep_replica.state.sample_root)
    # hdf and m101 (whose cone holds the qa field too); F606W frames only, to keep the test short
    regions = [r.model_copy(update={"filters": ["F606W"]} if r.name == "m101" else {})
               for r in sample_watch_list(index) if r.name in ("hdf", "m101")]
    out = tmp_path / "out"
    overrides = {"output_dir": str(out), "hla_cutout_px": 64}  # HLA as 64 px fitscut cutouts
    report = archive_sweep(regions=regions, overrides=overrides)

    assert report.counts.get("ok", 0) >= 3, report.summary_rows()
    assert not report.counts.get("error") and not report.counts.get("download_failed"), report.summary_rows()
    archives = {it.archive for it in report.items if it.status == "ok"}
    assert archives == {"mast", "hla", "esahubble"}
    science = [it.record for it in report.items if it.record is not None and it.record.kind == "science"]
    assert science and all(r.filters == ["F606W"] for r in science)  # the region's criteria held
    # manifests: per run and cumulative, readable by pandas; contact sheet next to them
    run_df = pd.read_parquet(report.manifest_parquet)
    assert len(run_df) == report.n_products > 0
    hla_rows = run_df[run_df["archive"] == "hla"]
    assert len(hla_rows) and (hla_rows["metric_output_width"] == 4 * 64).all()  # 64 px cutouts, 4x
    assert Path(report.manifest_csv).is_file()
    all_df = pd.read_parquet(out / "manifests" / "all.parquet")
    assert len(all_df) == len(run_df)
    sheet = Path(report.contact_sheet)
    assert sheet.parent == out / "manifests" and sheet.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # expected quality flags from the sample's truth show up as flags
    flagged = {f for it in report.items for f in it.flags}
    expected = {f for i in index.items for f in i.expected_flags}
    assert flagged & expected, (flagged, expected)
    # catalog records the run as finished with its counts
    cat = Catalog.for_output(out, create=False)
    info = cat.run(report.run_id)
    assert info is not None and info.status == "completed"

    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(inference_limit_name())
        assert limit.limit == 1
        keys = {a.key for a in client.read_artifacts()}
    assert {"sweep-manifest", "sweep-summary"} <= keys
    assert "contact" in report.markdown() and "| ok |" in report.markdown()

    # a rerun: the catalog says everything is done, so nothing is fetched or made again
    again = archive_sweep(regions=regions, overrides=overrides)
    assert again.n_products == 0 and set(again.counts) <= {"already_done", "skipped_done"}, again.counts
    assert sum(again.counts.values()) == len(report.items)
    assert len(pd.read_parquet(out / "manifests" / "all.parquet")) == len(all_df)
    assert {it.key for it in again.items} == {it.key for it in report.items}


@pytest.mark.slow
def test_reprocess_region_caps_retention_and_disk_guard(prefect_harness: None, env: dict[str, str],
                                                        tmp_path: Path) -> None:
    from flows.sweep import reprocess_region

    region = json.loads(env["ASTRO_TEST_REGION"])
    args = {"ra": region["ra"], "dec": region["dec"], "radius_deg": region["radius_deg"], "archives": ["mast"]}
    out = tmp_path / "capped"
    # a dry run lists what would be fetched and made, and changes nothing
    dry = reprocess_region(**args, dry_run=True, overrides={"output_dir": str(out)})
    assert dry.dry_run and dry.counts.get("planned", 0) >= 2 and dry.n_products == 0, dry.counts
    assert {it.operation for it in dry.items} == {"enhance"}
    assert not (out / "raw").exists() and not (out / "manifests").exists()

    report = reprocess_region(**args, overrides={"output_dir": str(out), "max_files_per_run": 1, "keep_raw": False})
    assert report.counts.get("ok") == 1 and report.counts.get("over_budget", 0) >= 1, report.counts
    done = next(it for it in report.items if it.status == "ok")
    assert done.raw_deleted and not Path(done.raw_path).exists()  # deleted after products were verified
    for product in done.products:
        assert all(Path(f.path).is_file() for f in product.files.values())
    df = pd.read_parquet(report.manifest_parquet)
    assert "raw_path" in df.columns and df["raw_path"].astype(str).str.len().gt(0).all()
    # what is done is no longer planned; --force plans it again with the current weights
    again = reprocess_region(**args, dry_run=True, overrides={"output_dir": str(out)})
    assert again.counts.get("already_done") == 1 and again.counts.get("planned") == dry.counts["planned"] - 1
    forced = reprocess_region(**args, dry_run=True, force=True, overrides={"output_dir": str(out)})
    assert forced.counts == {"planned": dry.counts["planned"]}

    # the free-disk guard stops cleanly: nothing fetched, the flow still completes
    full = reprocess_region(**args, overrides={"output_dir": str(tmp_path / "full"), "min_free_disk_bytes": 10**18})
    assert set(full.counts) == {"low_disk"} and full.n_products == 0
    assert not list((tmp_path / "full" / "raw").rglob("*.fits"))

    with pytest.raises(ValueError, match="unknown archive"):
        reprocess_region(**{**args, "archives": ["skyview"]})


@pytest.mark.slow
def test_train_models_flow_trains_a_resumable_candidate(prefect_harness: None, shared_data: Path,
                                                        tmp_path: Path, one_torch_thread: None) -> None:
    from flows.train import train_models

    out = tmp_path / "runs"
    summary = train_models(models=["superres"], steps=2, output_dir=str(out), evaluate=False,
                           recipe={"crop": 32, "batch_size": 2})
    weights = Path(summary["superres"]["weights"])
    assert summary["superres"]["steps"] == 2 and weights.is_file() and weights.suffix == ".safetensors"
    # a second run with more steps resumes from the checkpoint instead of starting again
    again = train_models(models=["superres"], steps=3, output_dir=str(out), evaluate=False,
                         recipe={"crop": 32, "batch_size": 2})
    assert again["superres"]["steps"] == 3
    with pytest.raises(ValueError, match="unknown model"):
        train_models(models=["vae"])


def test_cli_rejects_bad_regions_and_an_empty_watch_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from astro_pipeline.cli import app

    monkeypatch.chdir(tmp_path)  # no astro-pipeline.toml here: the watch list is empty
    runner = CliRunner()
    bad = runner.invoke(app, ["reprocess", "--ra", "400", "--dec", "0", "--radius", "0.1"])
    assert bad.exit_code == 2 and "0 <= ra < 360" in bad.output
    bad = runner.invoke(app, ["reprocess", "--ra", "10", "--dec", "0", "--radius", "0.1", "--archives", "skyview"])
    assert bad.exit_code == 2 and "unknown archive" in bad.output
    empty = runner.invoke(app, ["sweep", "--output", str(tmp_path / "o")])
    assert empty.exit_code == 2 and "watch list is empty" in empty.output


# ---------------------------------------------------------------------------------- defects (issue 13)


@pytest.fixture()
def own_replica():
    """A fresh replica of the mini sample with an (empty) fault plan, for server-side counts."""
    from astro_pipeline.archives.replica.faults import FaultPlan
    from astro_pipeline.archives.replica.server import ReplicaServer

    with ReplicaServer(mini=True, cache_dir=Settings().cache_dir, faults=FaultPlan(rules=[])) as server:
        yield server


def _region_args(env: dict[str, str], **extra: object) -> dict[str, object]:
    region = json.loads(env["ASTRO_TEST_REGION"])
    return {"ra": region["ra"], "dec": region["dec"], "radius_deg": region["radius_deg"], **extra}


def _point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    from astro_pipeline.config import get_settings

    for key in ("MAST_URL", "HLA_URL", "ESAHUBBLE_URL"):
        monkeypatch.setenv(f"ASTRO_PIPELINE_{key}", url)
    get_settings.cache_clear()


def _task_run_count(state) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return int(client.read_task_run(state.state_details.task_run_id).run_count)


@pytest.mark.slow
def test_permanent_download_errors_are_attempted_once_and_checksum_failures_twice(
        prefect_harness: None, env: dict[str, str], own_replica, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """A 404 and a host off the allow-list are tried once; a body failing its checksum is tried twice by
    the downloader and never again by the flow (counted server-side by the replica's fault plan)."""
    from prefect import flow

    from astro_pipeline.config import get_settings
    from flows.sweep import download_task

    _point_at(monkeypatch, own_replica.url)
    settings = get_settings().with_overrides(output_dir=tmp_path / "out")
    plan = own_replica.state.faults
    base = f"{own_replica.url}/api/v0.1/Download/file?uri="
    real_uri = "mast:HST/product/hst_sample_m101_acs_wfc_f606w_drz.fits"
    plan.load("404:/api/v0.1/Download/file?uri=mast:HST/product/gone_drz.fits,"
              f"slow:/api/v0.1/Download/file?uri={real_uri}:delay=0")  # delay 0: a counter only
    size = (own_replica.state.sample_root / "mast/m101/hst_sample_m101_acs_wfc_f606w_drz.fits").stat().st_size
    port = own_replica.url.rsplit(":", 1)[1]
    records = {
        "missing": ArchiveRecord(archive="mast", id="mast:HST/product/gone_drz.fits", url=base + "mast:HST/product/gone_drz.fits",
                                 filename="gone_drz.fits"),
        "foreign": ArchiveRecord(archive="mast", id="mast:HST/product/foreign_drz.fits",
                                 url=f"http://localhost:{port}/api/v0.1/Download/file?uri={real_uri}",
                                 filename="foreign_drz.fits"),  # 'localhost' is not a configured archive host
        "corrupt": ArchiveRecord(archive="mast", id=real_uri, url=base + real_uri, filename="f606w_drz.fits",
                                 size=size, sha256="0" * 64),  # the published checksum never matches
    }

    @flow(name="download-once")
    def fetch_all() -> dict[str, object]:
        budget = planning.RunBudget.from_settings(settings)
        return {k: download_task(ItemPlan(record=r, region="r", operation=Operation.ENHANCE), settings, budget,
                                 return_state=True) for k, r in records.items()}

    states = fetch_all()
    for name, state in states.items():
        assert _task_run_count(state) == 1, f"{name}: the flow retried a download the downloader owns"
        result = state.result(raise_on_failure=False)
        assert isinstance(result, ItemResult) and result.status == "download_failed", (name, result)
    assert "HTTP 404" in states["missing"].result().error
    assert "not a configured archive host" in states["foreign"].result().error
    assert "sha256 mismatch" in states["corrupt"].result().error
    by_rule = {mode: sum(e.mode == mode for e in plan.events) for mode in ("404", "slow")}
    assert by_rule == {"404": 1, "slow": 2}, plan.events  # 404 once; the bad checksum twice, no more


@pytest.mark.slow
def test_one_host_gate_per_process_and_no_sessions_left_open(prefect_harness: None, env: dict[str, str],
                                                             own_replica, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path) -> None:
    """Concurrent download tasks share one per-host limit (counted server-side), and leave no connection open."""
    from flows.sweep import reprocess_region

    _point_at(monkeypatch, own_replica.url)
    plan = own_replica.state.faults
    plan.load("slow:/api/v0.1/Download/file:delay=0.3")
    report = reprocess_region(**_region_args(env, archives=["mast"]),
                              overrides={"output_dir": str(tmp_path / "out"),
                                         "download": {"per_host_concurrency": 1, "min_interval_s": 0.0}})
    fetched = sum(e.mode == "slow" for e in plan.events)
    assert fetched >= 4 and report.counts.get("ok", 0) >= 4, report.counts
    assert plan.peak_in_flight("/api/v0.1/Download/file") == 1  # never two downloads from one host at once
    connections = own_replica._server.server_state.connections
    deadline = time.monotonic() + 2.0  # the server itself drops idle keep-alive connections after 5 s
    while connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not connections, f"{len(connections)} connection(s) left open by the sweep's HTTP sessions"


@pytest.mark.slow
def test_quality_thresholds_given_to_a_flow_reach_the_flags(prefect_harness: None, env: dict[str, str],
                                                            tmp_path: Path) -> None:
    from astro_pipeline.catalog import Catalog
    from flows.sweep import reprocess_region

    args = _region_args(env, archives=["mast"], filters=["F606W"])
    runs = {}
    for name, quality in (("default", None), ("strict", {"noisy_snr_min": 1e6})):
        out = tmp_path / name
        overrides: dict[str, object] = {"output_dir": str(out)}
        if quality:
            overrides["quality"] = quality
        report = reprocess_region(**args, overrides=overrides)
        assert report.counts.get("ok", 0) >= 2, report.counts
        runs[name] = {it.record_id: set(it.flags) for it in report.items if it.status == "ok"}
        with Catalog.for_output(out, create=False) as cat:
            thresholds = {f["threshold"] for v in cat.flagged_frames(flag="noisy") for f in v.flags
                          if f["name"] == "noisy"}
        runs[name + "_thresholds"] = thresholds
    assert set(runs["default"]) == set(runs["strict"])
    # with snr >= 1e6 demanded, every frame whose signal rises above the noise at all is noisy
    strict = {k for k, f in runs["strict"].items() if "noisy" in f}
    assert all(f & {"noisy", "low_signal", "mostly_blank"} for f in runs["strict"].values()), runs["strict"]
    assert strict > {k for k, f in runs["default"].items() if "noisy" in f}
    assert runs["strict_thresholds"] == {1e6} and runs["default_thresholds"] <= {3.0}


@pytest.mark.slow
def test_sweep_writes_same_grid_composites_and_the_manifest_records_retention(
        prefect_harness: None, env: dict[str, str], tmp_path: Path) -> None:
    """The sweep makes the Lupton composites the CLI makes, and exports its manifest after retention."""
    from flows.sweep import reprocess_region

    out = tmp_path / "out"
    report = reprocess_region(**_region_args(env, archives=["mast"]),
                              overrides={"output_dir": str(out), "keep_raw": False})
    assert report.counts.get("ok", 0) >= 3 and not report.counts.get("error"), report.counts
    run_df = pd.read_parquet(report.manifest_parquet)
    df = run_df[run_df["product_type"] == "frame"]
    # the field step (issue 16) read the inputs before retention: M101's field has its colour product
    fields = run_df[run_df["product_type"] == "field"]
    (field_row,) = fields[fields["filter"] == "F435W,F606W,F814W"].itertuples()
    assert field_row.status == "ok" and field_row.channels == "R:F814W, G:F606W, B:F435W"
    # raw_deleted is true exactly for the raw files retention removed
    gone = df["raw_path"].map(lambda p: not Path(p).exists())
    assert gone.any() and (df["raw_deleted"].astype(bool) == gone).all(), df[["raw_path", "raw_deleted"]]
    # the three same-grid M101 filters give one composite, attached to each member's row
    m101 = df[df["source_path"].str.contains("hst_sample_m101_acs_wfc_")]
    assert len(m101) == 3 and m101["lupton_path"].notna().all(), df["lupton_path"].tolist()
    (composite,) = set(m101["lupton_path"])
    assert (out / composite).is_file() and composite.endswith("_f435w_f606w_f814w_lupton.png")
    all_df = pd.read_parquet(out / "manifests" / "all.parquet")
    all_df = all_df[all_df["product_type"] == "frame"]
    assert (all_df["raw_deleted"].astype(bool) == all_df["raw_path"].map(lambda p: not Path(p).exists())).all()


def test_the_download_step_closes_its_http_session(own_replica, tmp_path: Path) -> None:
    """Each download step closes its connections when it returns (not whenever garbage collection runs)."""
    settings = Settings(mast_url=own_replica.url, output_dir=tmp_path / "out", min_free_disk_bytes=0)
    uri = "mast:HST/product/j9qa03mbq_drz.fits"
    rec = ArchiveRecord(archive="mast", id=uri, url=f"{own_replica.url}/api/v0.1/Download/file?uri={uri}",
                        filename="j9qa03mbq_drz.fits")
    got = steps.fetch_item(ItemPlan(record=rec, region="r", operation=Operation.ENHANCE), settings,
                           budget=planning.RunBudget(path=tmp_path))
    assert isinstance(got, steps.Fetched) and Path(got.file.path).is_file()
    connections = own_replica._server.server_state.connections
    deadline = time.monotonic() + 1.0
    while connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not connections, "the download step left its HTTP connection open"
