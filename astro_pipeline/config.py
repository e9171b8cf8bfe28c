"""All settings in one place: env vars ``ASTRO_PIPELINE_*`` and an optional TOML file.

Precedence (highest first): explicit keyword arguments, environment variables
(``ASTRO_PIPELINE_OUTPUT_DIR``, nested fields with ``__``, e.g.
``ASTRO_PIPELINE_QUALITY__NOISY_SNR_MIN``), the TOML file named by
``ASTRO_PIPELINE_CONFIG`` (or ``astro-pipeline.toml`` in the current directory), defaults.

Project paths (``weights/``, the shared data folder) resolve relative to the installed
project, never to the current directory; run state lives under ``output_dir``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "PROJECT_ROOT",
    "QualityThresholds",
    "DownloadSettings",
    "FieldSettings",
    "Region",
    "Settings",
    "get_settings",
    "shared_dir",
]

#: Root of the project checkout (the folder holding ``pyproject.toml`` and ``weights/``).
PROJECT_ROOT: Path = Path(__file__).resolve().parent.parent


def shared_dir() -> Path:
    """The team's shared data folder (``../shared`` beside the project), overridable by env."""
    env = os.environ.get("ASTRO_PIPELINE_SHARED_DIR")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


class QualityThresholds(BaseModel):
    """Thresholds that turn quality metrics into named flags (each flag records value and threshold)."""

    noisy_snr_min: float = 3.0  # flag `noisy` when (p99.5 of 4x4-binned - bkg) / pixel noise is below this
    low_signal_dynamic_range_min: float = 5.0  # flag `low_signal` when that structure / binned noise < this
    mostly_blank_max: float = 0.5  # flag `mostly_blank` when the invalid/blank fraction exceeds this
    saturated_max: float = 0.01  # flag `saturated` when the saturated fraction exceeds this
    cosmic_rays_max: float = 0.001  # flag `cosmic_rays` when the hot-pixel/CR fraction exceeds this
    cosmic_ray_sigma: float = 8.0  # detector threshold (sigma above the 3x3 median)


class DownloadSettings(BaseModel):
    """How the shared downloader talks to archives."""

    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    retries: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    per_host_concurrency: int = 2
    min_interval_s: float = 0.2  # polite rate limit: at least this long between requests to one host
    user_agent: str = "astro-pipeline/0.1 (+https://github.com/astro-pipeline)"
    #: the most (decoded) bytes one file may take when the archive declares no size; with a declared
    #: size the cap is that size + 1%. Past the cap the transfer stops: a permanent error.
    max_file_bytes: int = Field(default=4 * 1024**3, gt=0)
    #: one transfer of one file must finish within this (besides the read timeout, which a slow drip
    #: of bytes never trips); past it the transfer stops: a permanent error.
    file_deadline_s: float = Field(default=30 * 60.0, gt=0)
    #: the most (decoded) bytes of a reply read whole: a query's JSON, a resolver answer, a listing
    #: page. Past it the reply is refused (a permanent error) and the rest never read.
    max_reply_bytes: int = Field(default=64 * 1024**2, gt=0)


class FieldSettings(BaseModel):
    """How frames of one field are grouped across filters and aligned (``astro_pipeline.fields``)."""

    min_overlap: float = Field(0.5, gt=0.0, le=1.0)  # intersection area over the smaller footprint
    reproject_order: Literal["bilinear", "bicubic"] = "bicubic"  # reproject_interp's interpolation
    # Until the memory budget exists: the largest reference grid (pixels) a field may be aligned on.
    max_grid_pixels: int = Field(64_000_000, gt=0)


class Region(BaseModel):
    """A sky region on the nightly watch list."""

    name: str
    ra: float
    dec: float
    radius_deg: float = 0.1
    archives: list[str] = Field(default_factory=lambda: ["mast", "hla", "esahubble"])
    instruments: list[str] = Field(default_factory=list)
    filters: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid_cone(self) -> Region:
        """RA in [0, 360), Dec in [-90, 90], a finite radius in (0, 180] (``astro_pipeline.sky``)."""
        from astro_pipeline.sky import check_cone

        check_cone(self.ra, self.dec, self.radius_deg)
        return self


def _default_perceptual() -> Path:
    return shared_dir() / "data" / "perceptual" / "vgg16_features_lpips.safetensors"


class Settings(BaseSettings):
    """Pipeline settings. See the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="ASTRO_PIPELINE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # --- paths -------------------------------------------------------------------------------
    output_dir: Path = Field(default_factory=lambda: Path.cwd() / "astro_output")
    weights_dir: Path = PROJECT_ROOT / "weights"
    catalog_url: str | None = None  # default: sqlite:///<output_dir>/catalog.sqlite
    perceptual_weights: Path = Field(default_factory=_default_perceptual)
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "astro_pipeline")

    # --- archives (live hosts are configuration, never hard-wired in tests) ------------------
    mast_url: str = "https://mast.stsci.edu"
    mast_resolver_url: str = "http://mastresolver.stsci.edu/Santa-war/query"
    hla_url: str = "https://hla.stsci.edu"
    esahubble_url: str = "https://esahubble.org"
    extra_allowed_hosts: list[str] = Field(default_factory=list)
    download: DownloadSettings = Field(default_factory=DownloadSettings)
    hla_cutout_px: int | None = None  # HLA: None fetches whole datasets (size=ALL), N a centred N px cutout

    # --- browser -------------------------------------------------------------------------------
    chromium_path: Path | None = Path("/usr/bin/chromium")
    browser_timeout_s: float = 20.0

    # --- ingestion and quality -------------------------------------------------------------------
    quality: QualityThresholds = Field(default_factory=QualityThresholds)
    max_image_pixels: int | None = None  # a lower pixel limit than the budget gives (see ``pixel_limit``)

    # --- memory ------------------------------------------------------------------------------------
    #: what one job may take: a share of physical memory ("60%") or a size ("8GiB"); a job whose
    #: estimated peak is over it is refused (``astro_pipeline.memory``)
    memory_budget: str = "60%"

    # --- fields: frames of one sky field across filters ------------------------------------------
    fields: FieldSettings = Field(default_factory=FieldSettings)

    # --- inference -------------------------------------------------------------------------------
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    batch_size: int | Literal["auto"] = "auto"  # auto: calibrated once per machine (cache_dir/engine-calibration.json)
    memory_format: Literal["auto", "contiguous", "channels_last"] = "auto"
    compile: bool = False

    # --- operations ------------------------------------------------------------------------------
    watch_list: list[Region] = Field(default_factory=list)
    max_files_per_run: int | None = None
    max_bytes_per_run: int | None = None
    min_free_disk_bytes: int = 2 * 1024**3
    keep_raw: bool = True
    task_runner: str = "threads"  # threads | dask
    dask_address: str | None = None

    # --- review app ------------------------------------------------------------------------------
    review_tokens: dict[str, str] = Field(default_factory=dict)  # token -> reviewer name
    review_secret: str | None = None  # signs session cookies; random per process if unset
    review_allowed_hosts: list[str] = Field(default_factory=list)  # names besides loopback (a TLS proxy's)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = config_file_path()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @field_validator("memory_budget", mode="before")
    @classmethod
    def _valid_budget(cls, value: Any) -> str:
        from astro_pipeline.memory import parse_budget

        text = str(value).strip()
        parse_budget(text, physical=1 << 40)  # the form only; the share is taken of this machine's memory later
        return text

    @property
    def memory_budget_bytes(self) -> int:
        """The memory budget in bytes (a share is taken of this machine's physical memory)."""
        from astro_pipeline.memory import parse_budget

        return parse_budget(self.memory_budget)

    @property
    def pixel_limit(self) -> int:
        """The most pixels an image header may declare: what reading can hold within the budget, or
        ``max_image_pixels`` when that is lower (``astro_pipeline.memory.pixel_limit``)."""
        from astro_pipeline.memory import pixel_limit

        return pixel_limit(self.memory_budget_bytes, self.max_image_pixels)

    # --- derived paths ---------------------------------------------------------------------------
    @property
    def catalog_database_url(self) -> str:
        """SQLAlchemy URL of the catalog: ``catalog_url`` or SQLite under the output dir."""
        if self.catalog_url:
            return self.catalog_url
        return f"sqlite:///{(Path(self.output_dir) / 'catalog.sqlite').resolve()}"

    @property
    def allowed_hosts(self) -> set[str]:
        """Hosts the downloader may fetch from: the configured archives plus extras."""
        from urllib.parse import urlsplit

        hosts = {
            urlsplit(u).hostname or ""
            for u in (self.mast_url, self.hla_url, self.esahubble_url, self.mast_resolver_url)
        }
        hosts.update(self.extra_allowed_hosts)
        return {h for h in hosts if h}

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some fields replaced (validated)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return Settings(**data)


def config_file_path() -> Path | None:
    """The TOML settings file in force, if any."""
    env = os.environ.get("ASTRO_PIPELINE_CONFIG")
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"ASTRO_PIPELINE_CONFIG names {path}, which does not exist")
        return path
    local = Path.cwd() / "astro-pipeline.toml"
    return local if local.is_file() else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached; call ``get_settings.cache_clear()`` after changing env)."""
    return Settings()
