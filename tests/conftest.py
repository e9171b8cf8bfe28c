"""Test-wide setup: offline astropy/Prefect, temporary homes, and the shared-data fixture.

Warnings are errors (pyproject). No network except 127.0.0.1.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="astro-pipeline-tests-"))

# Offline, isolated environment for everything the tests start (set before imports that read it).
os.environ.setdefault("PREFECT_HOME", str(_SESSION_TMP / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
os.environ.setdefault("ASTRO_PIPELINE_CACHE_DIR", str(_SESSION_TMP / "cache"))
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["NO_PROXY"] = "127.0.0.1,localhost"

from astropy.utils import iers  # noqa: E402

iers.conf.auto_download = False
iers.conf.auto_max_age = None

from astro_pipeline.config import Settings, shared_dir  # noqa: E402

SHARED = shared_dir()


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for the test, restored after (modules that run models ask for it with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``: steadier on a shared 2-core machine)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test with a clear reason when it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"shared data folder {data} is absent (tests that read real files need ../shared)")
    return data


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch):
    """Each test sees settings built from its own environment."""
    from astro_pipeline.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# --- PostgreSQL for the catalog (CATALOG helper) -------------------------------------------------


@pytest.fixture()
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    The server comes from ``ASTRO_PIPELINE_TEST_POSTGRES_URL`` (``.ci/run`` starts one with
    ``scripts/start_postgres.sh``); the role needs CREATEDB. Skips with the reason otherwise.
    """
    import uuid

    url = os.environ.get("ASTRO_PIPELINE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set ASTRO_PIPELINE_TEST_POSTGRES_URL (scripts/start_postgres.sh prints one)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"astro_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable server or no CREATEDB privilege
        admin.dispose()
        pytest.skip(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} unusable: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ---- sweep fixtures (flows helper): the replica with the mini sample, tiny weights, env ----------


@pytest.fixture(scope="session")
def sweep_weights_dir(session_tmp: Path) -> Path:
    """Tiny random ``colorizer``/``superres`` weights in a temp folder (fast; real models not needed)."""
    import torch
    from model_helpers import random_weights

    from astro_pipeline.models.registry import save_weights

    torch.set_num_threads(1)
    folder = session_tmp / "sweep-weights"
    folder.mkdir(exist_ok=True)
    for task, name in (("colorize", "colorizer"), ("superres", "superres")):
        if not (folder / f"{name}.safetensors").is_file():
            model, meta = random_weights(task, tiny=True, seed=0)
            save_weights(model, folder / f"{name}.safetensors", meta)
    return folder


@pytest.fixture(scope="session")
def sweep_replica():
    """The archive replica serving the mini sample on 127.0.0.1 for the whole session."""
    from astro_pipeline.archives.replica.server import ReplicaServer

    with ReplicaServer(mini=True, cache_dir=Settings().cache_dir) as server:
        yield server


@pytest.fixture(scope="session")
def sweep_env(sweep_replica, sweep_weights_dir: Path) -> dict[str, str]:
    """``ASTRO_PIPELINE_*`` variables pointing every archive at the replica, plus a test region.

    ``ASTRO_TEST_REGION`` is JSON (name, ra, dec, radius_deg) of the sample field with the most
    MAST items.
    """
    import json

    from astro_pipeline.sample_watch_list import sample_watch_list
    from astro_pipeline.sample import load_sample

    index = load_sample(sweep_replica.state.sample_root)
    regions = sample_watch_list(index)
    mast_counts = {f: sum(1 for i in items if i.archive == "mast") for f, items in index.fields().items()}
    best = max(regions, key=lambda r: mast_counts.get(r.name, 0))
    url = sweep_replica.url
    return {
        "ASTRO_PIPELINE_MAST_URL": url,
        "ASTRO_PIPELINE_HLA_URL": url,
        "ASTRO_PIPELINE_ESAHUBBLE_URL": url,
        "ASTRO_PIPELINE_WEIGHTS_DIR": str(sweep_weights_dir),
        "ASTRO_PIPELINE_MIN_FREE_DISK_BYTES": str(10 * 1024**2),
        "ASTRO_PIPELINE_DOWNLOAD__MIN_INTERVAL_S": "0",
        "ASTRO_TEST_REGION": json.dumps(best.model_dump(mode="json")),
    }


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API (SQLite) for every flow test in the session (~17 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
