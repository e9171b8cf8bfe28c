"""The memory budget: how much memory one job may take, the check that refuses a job over it, and
the process-wide ledger that lets jobs running side by side share it.

The budget is the setting ``memory_budget`` (env ``ASTRO_PIPELINE_MEMORY_BUDGET``): a share of
physical memory (``"60%"``, the default; inside a container the container's memory limit counts
as physical memory) or a size (``"8GiB"``, ``"1500MB"``, ``"4000000000"``). Estimates of a job's
peak (``astro_pipeline.job_estimate`` for processing an input; the field alignment's own for
reprojection) go through :func:`check_budget` or :func:`reserve`, which raise
:class:`MemoryBudgetError` with the estimate and the setting to change. The pixel limit of the
readers follows from the budget (:func:`pixel_limit`).

No numpy, no torch: this module is arithmetic and a lock.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "BUDGET_ENV",
    "BUDGET_SETTING",
    "DEFAULT_BUDGET",
    "READ_BYTES_PER_PIXEL",
    "MemoryBudgetError",
    "check_budget",
    "default_pixel_limit",
    "format_bytes",
    "parse_budget",
    "physical_memory_bytes",
    "pixel_limit",
    "reserve",
]

#: The setting that holds the budget, and its environment variable (named in every refusal).
BUDGET_SETTING = "memory_budget"
BUDGET_ENV = "ASTRO_PIPELINE_MEMORY_BUDGET"
#: The default budget: this share of physical memory.
DEFAULT_BUDGET = "60%"

#: Bytes reading one grey pixel may hold at once: a float64 source sample decoded in memory (8),
#: its float32 copy (4), the validity mask (1), a saturation mask (1) and the masks' temporaries (2).
#: The readers' pixel limit is the budget divided by this.
READ_BYTES_PER_PIXEL = 16

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")
_SHARE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")


class MemoryBudgetError(Exception):
    """A job whose estimated peak memory is over the budget: refused before it starts.

    ``what`` names the job, ``estimate_bytes`` and ``budget_bytes`` give the figures; the message
    names the setting that raises the budget.
    """

    def __init__(self, what: str, estimate_bytes: int, budget_bytes: int, detail: str | None = None) -> None:
        self.what = what
        self.estimate_bytes = int(estimate_bytes)
        self.budget_bytes = int(budget_bytes)
        self.detail = detail
        text = (f"{what} needs an estimated {format_bytes(estimate_bytes)} of memory, above the memory budget of "
                f"{format_bytes(budget_bytes)} (setting {BUDGET_SETTING}, env {BUDGET_ENV})")
        super().__init__(text + (f": {detail}" if detail else ""))


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``12.0 MiB``, ``900 B``: binary units, one decimal."""
    n = float(n)
    for unit, size in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cgroup_limit() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), if any."""
    candidates = [Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")]
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, _, rel = line.split(":", 2)
            if rel and rel != "/":
                candidates.insert(0, Path("/sys/fs/cgroup") / rel.lstrip("/") / "memory.max")
    except (OSError, ValueError):
        pass
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge v1 value: no limit
            return int(text)
    return None


def physical_memory_bytes() -> int:
    """This machine's physical memory, or the container's memory limit when that is lower."""
    try:
        phys = int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - every Linux and macOS has these
        phys = 0
    limit = _cgroup_limit()
    if limit is not None and (phys <= 0 or limit < phys):
        return limit
    if phys <= 0:  # pragma: no cover
        raise RuntimeError(f"cannot tell this machine's memory; set {BUDGET_SETTING} to a size, e.g. 8GiB")
    return phys


def parse_budget(text: str | int, *, physical: int | None = None) -> int:
    """Bytes of a budget given as a share of physical memory (``"60%"``) or a size (``"8GiB"``, ``8e9`` bytes).

    Raises ``ValueError`` naming the accepted forms for anything else, zero or a share above 100%.
    """
    if isinstance(text, bool):
        raise ValueError(f"{BUDGET_SETTING} must be a size or a share of memory, not {text!r}")
    if isinstance(text, int):
        value = text
    else:
        share = _SHARE.match(str(text))
        if share:
            pct = float(share.group(1))
            if not 0 < pct <= 100:
                raise ValueError(f"{BUDGET_SETTING} {text!r}: a share of memory must be in (0%, 100%]")
            return int(pct / 100.0 * (physical if physical is not None else physical_memory_bytes()))
        size = _SIZE.match(str(text))
        unit = size.group(2).lower() if size else ""
        if not size or unit not in _UNITS:
            raise ValueError(f"{BUDGET_SETTING} {text!r} is not a size or a share of memory "
                             "(e.g. 60%, 8GiB, 1500MB, 4000000000)")
        value = int(float(size.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"{BUDGET_SETTING} {text!r} must be more than 0 bytes")
    return value


def pixel_limit(budget_bytes: int, explicit: int | None = None) -> int:
    """The most pixels a header may declare: what reading alone can hold within the budget
    (:data:`READ_BYTES_PER_PIXEL` each), or ``explicit`` (``max_image_pixels``) when that is lower."""
    derived = max(1, int(budget_bytes) // READ_BYTES_PER_PIXEL)
    return derived if explicit is None else max(1, min(int(explicit), derived))


def default_pixel_limit() -> int:
    """The pixel limit of the default budget on this machine (for callers that hold no settings)."""
    return pixel_limit(parse_budget(DEFAULT_BUDGET))


def check_budget(estimate_bytes: int | float, *, what: str, budget: int, detail: str | None = None) -> None:
    """Raise :class:`MemoryBudgetError` when ``estimate_bytes`` is over ``budget`` bytes.

    ``what`` names the job in the message ("colorize of HDU 1 (4096x4096)", "reprojection of
    field M51 onto 8000x8000"); ``detail`` may say what the estimate is made of.
    """
    estimate = int(math.ceil(estimate_bytes))
    if estimate > int(budget):
        raise MemoryBudgetError(what, estimate, int(budget), detail)


class _Ledger:
    """Memory reserved by the jobs of this process that are running now, against one budget."""

    def __init__(self, budget: int) -> None:
        self.budget = int(budget)
        self.reserved = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.reserved + nbytes <= self.budget or self.reserved == 0)
            self.reserved += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.reserved -= nbytes
                self._cond.notify_all()


_LEDGERS: dict[int, _Ledger] = {}
_LEDGERS_LOCK = threading.Lock()


@contextmanager
def reserve(estimate_bytes: int | float, *, what: str, budget: int, detail: str | None = None) -> Iterator[None]:
    """Hold ``estimate_bytes`` of the process's ``budget`` while the block runs.

    A job over the whole budget is refused at once (:func:`check_budget`); a job that fits waits
    until the jobs running beside it leave it room, so that jobs of one process together stay within
    the budget however many threads run them.
    """
    check_budget(estimate_bytes, what=what, budget=budget, detail=detail)
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(int(budget))
        if ledger is None:
            ledger = _LEDGERS[int(budget)] = _Ledger(int(budget))
    with ledger.hold(int(math.ceil(estimate_bytes))):
        yield
