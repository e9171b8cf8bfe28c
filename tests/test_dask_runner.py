"""The Dask path: ``task_runner = "dask"`` runs the region flow's tasks on a real LocalCluster.

One small cluster (one worker process); the flow sweeps one MAST region of the mini sample from the
replica and must produce the same kind of result as the default thread runner.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_pipeline.config import Settings

pytestmark = pytest.mark.slow


def test_build_task_runner_choices() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.common import build_task_runner

    assert isinstance(build_task_runner(Settings(task_runner="threads")), ThreadPoolTaskRunner)
    remote = build_task_runner(Settings(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    local = build_task_runner(Settings(task_runner="dask"), max_workers=1)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    with pytest.raises(ValueError, match="task_runner"):
        build_task_runner(Settings(task_runner="ray"))


def test_reprocess_region_on_a_dask_local_cluster(
    prefect_harness: None, sweep_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed import LocalCluster
    from prefect_dask import DaskTaskRunner

    from flows.sweep import reprocess_region

    for k, v in sweep_env.items():
        monkeypatch.setenv(k, v)
    region = json.loads(sweep_env["ASTRO_TEST_REGION"])
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as cluster:
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        report = reprocess_region.with_options(task_runner=runner)(
            ra=region["ra"], dec=region["dec"], radius_deg=region["radius_deg"], archives=["mast"], filters=["F606W"],
            overrides={"output_dir": str(tmp_path / "out")},
        )
    assert report.counts.get("ok", 0) >= 1, report.counts
    assert not report.counts.get("error") and not report.counts.get("download_failed"), report.summary_rows()
    manifest = Path(report.manifest_parquet)
    assert manifest.is_file() and manifest.parent == tmp_path / "out" / "manifests"
    import pandas as pd

    df = pd.read_parquet(manifest)
    assert len(df) == report.n_products and (df["status"] == "ok").all()
