"""prefect.yaml end to end: a real ``prefect server start``, the process work pool, ``prefect deploy
--all``, ``prefect deployment run 'reprocess-region/...'`` and ``prefect worker start --run-once``.

The flow run sweeps one region of the mini sample from the replica on 127.0.0.1 and must finish
COMPLETED, having written its run manifest. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from astro_pipeline.config import PROJECT_ROOT

pytestmark = pytest.mark.slow

PREFECT = [sys.executable, "-m", "prefect"]


def _wait_health(api: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited early with code {proc.returncode}")
        try:
            if httpx.get(f"{api}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"prefect server did not answer {api}/health within {timeout}s")


def _run(cmd: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd[2:])} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


def test_deploy_all_and_run_reprocess_region_through_a_worker(tmp_path: Path, sweep_env: dict[str, str]) -> None:
    from astro_pipeline.archives.replica.server import free_port

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        **sweep_env,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PWD": str(PROJECT_ROOT),  # prefect.yaml's pull step: set_working_directory {{ $PWD }}
        "ASTRO_PIPELINE_OUTPUT_DIR": str(tmp_path / "out"),
    }
    env.pop("PREFECT_SERVER_EPHEMERAL_ENABLED", None)
    server = subprocess.Popen(
        [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_health(api, server)
        _run([*PREFECT, "work-pool", "create", "astro-pipeline", "--type", "process"], env)
        _run([*PREFECT, "--no-prompt", "deploy", "--all"], env, timeout=180)

        deps = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
        names = {d["name"]: d for d in deps}
        assert {"nightly-sweep", "reprocess-region", "training"} <= set(names), names.keys()
        nightly = names["nightly-sweep"]
        crons = [s["schedule"].get("cron") for s in nightly["schedules"]]
        assert crons == ["0 2 * * *"] and nightly["schedules"][0]["schedule"]["timezone"] == "UTC"
        assert nightly["work_pool_name"] == "astro-pipeline"
        pull = names["reprocess-region"]["pull_steps"]
        assert pull and "prefect.deployments.steps.set_working_directory" in pull[0]

        region = json.loads(sweep_env["ASTRO_TEST_REGION"])
        out = _run([
            *PREFECT, "deployment", "run", "reprocess-region/reprocess-region",
            "-p", f"ra={region['ra']}", "-p", f"dec={region['dec']}", "-p", f"radius_deg={region['radius_deg']}",
            "-p", 'archives=["mast"]', "-p", 'filters=["F606W"]',
        ], env)
        assert "Created flow run" in out, out

        _run([*PREFECT, "worker", "start", "--pool", "astro-pipeline", "--run-once"], env, timeout=240)

        runs = httpx.post(
            f"{api}/flow_runs/filter",
            json={"deployments": {"id": {"any_": [names["reprocess-region"]["id"]]}}}, timeout=10,
        ).json()
        assert len(runs) == 1
        assert runs[0]["state"]["type"] == "COMPLETED", runs[0]["state"]
        manifests = list((tmp_path / "out" / "manifests").glob("*.parquet"))
        assert any(p.name != "all.parquet" for p in manifests), manifests
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
