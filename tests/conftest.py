"""Test-wide setup: offline astropy/Prefect, temporary homes, and the shared-data fixture.

Warnings are errors (pyproject). No network except 127.0.0.1.
"""

from __future__ import annotations

import os
import tempfile
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

from astro_pipeline.config import shared_dir  # noqa: E402

SHARED = shared_dir()


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
