"""The sweep flows against the replica (real HTTP on 127.0.0.1, real Chromium for HLA/ESA, real
SQLite catalog, real Prefect API from the test harness), plus the library pieces they compose."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from astro_pipeline import pipeline
from astro_pipeline.archives.records import ArchiveRecord
from astro_pipeline.config import Region


def _record(i: int, *, size: int | None = 100, kind: str = "science", ra: float = 10.0, dec: float = 20.0) -> ArchiveRecord:
    return ArchiveRecord(archive="mast", id=f"mast:HST/product/x{i}_drz.fits", url=f"http://127.0.0.1:1/x{i}",
                         size=size, kind=kind, ra=ra, dec=dec)


# ---------------------------------------------------------------------------------- library


def test_angular_distance_and_region_membership() -> None:
    assert pipeline.angular_distance_deg(10, 20, 10, 20) == pytest.approx(0.0)
    assert pipeline.angular_distance_deg(0, 89.9, 180, 89.9) == pytest.approx(0.2, abs=1e-9)
    assert pipeline.angular_distance_deg(359.95, 0, 0.05, 0) == pytest.approx(0.1, abs=1e-9)
    region = Region(name="r", ra=359.99, dec=0.0, radius_deg=0.05)
    assert pipeline.in_region(_record(1, ra=0.02, dec=0.0), region)
    assert not pipeline.in_region(_record(2, ra=0.2, dec=0.0), region)


def test_sample_overrides_point_every_archive_at_the_replica() -> None:
    from astro_pipeline.config import Settings

    over = pipeline.sample_overrides("http://127.0.0.1:5555", Settings())
    assert {over[k] for k in ("mast_url", "hla_url", "esahubble_url")} == {"http://127.0.0.1:5555"}
    assert over["hla_cutout_px"] == pipeline.SAMPLE_HLA_CUTOUT_PX
    assert "hla_cutout_px" not in pipeline.sample_overrides("http://x", Settings(hla_cutout_px=64))


def test_region_criteria_match_instrument_prefix_and_filter() -> None:
    region = Region(name="r", ra=10, dec=20, instruments=["acs"], filters=["F606W"])
    rec = _record(1).model_copy(update={"instrument": "ACS/WFC", "filters": ["F606W"]})
    assert pipeline.matches_criteria(rec, region)
    assert not pipeline.matches_criteria(rec.model_copy(update={"filters": ["F814W"]}), region)
    assert not pipeline.matches_criteria(rec.model_copy(update={"instrument": "WFC3/UVIS"}), region)
    colour = rec.model_copy(update={"kind": "color", "filters": [], "instrument": "WFPC2"})
    assert pipeline.matches_criteria(colour, region)


def test_select_new_dedupes_and_chooses_operation() -> None:
    recs = [_record(1), _record(1), _record(2, kind="color")]
    plans = pipeline.select_new(recs, None, region="r")
    assert [p.key for p in plans] == [recs[0].key, recs[2].key]
    assert [p.operation for p in plans] == ["enhance", "upscale"]
    listings = [("a", [_record(1), _record(2)]), ("b", [_record(2), _record(3)])]
    plans = pipeline.plan_items(listings, None, models=None)
    assert [(p.region, p.record.id[-11:]) for p in plans] == [("a", "x1_drz.fits"), ("a", "x2_drz.fits"),
                                                             ("b", "x3_drz.fits")]


def test_run_budget_caps_files_bytes_and_disk(tmp_path: Path) -> None:
    b = pipeline.RunBudget(max_files=2, path=tmp_path)
    assert [b.admit(_record(i)).admitted for i in range(3)] == [True, True, False]
    b = pipeline.RunBudget(max_bytes=250, path=tmp_path)
    decisions = [b.admit(_record(i, size=100)) for i in range(3)]
    assert [d.admitted for d in decisions] == [True, True, False]
    assert decisions[2].status == "over_budget" and "max_bytes_per_run=250" in decisions[2].reason
    assert pipeline.RunBudget(min_free_bytes=0, path=tmp_path / "not" / "yet").disk_ok().admitted
    low = pipeline.RunBudget(min_free_bytes=10**18, path=tmp_path).disk_ok()
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
               for r in pipeline.sample_watch_list(index) if r.name in ("hdf", "m101")]
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
                                                        tmp_path: Path) -> None:
    import torch

    from flows.train import train_models

    torch.set_num_threads(1)
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
