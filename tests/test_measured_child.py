"""The child-process memory runner of the bomb tests reports the child's own peak, however large the
test process that started it once grew (in a whole-suite run the pytest process passes 2 GiB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_GROWN_PARENT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from hostile_inputs import python_child, run_measured
grown = bytearray(1_200_000_000)
for i in range(0, len(grown), 4096):
    grown[i] = 1  # resident, so the parent's peak is about 1.2 GB
del grown
small = run_measured(python_child("x = bytearray(50_000_000); x[::4096] = b'1' * len(x[::4096])"),
                     workdir=Path({work!r}) / "small")
large = run_measured(python_child("x = bytearray(400_000_000); x[::4096] = b'1' * len(x[::4096])"),
                     workdir=Path({work!r}) / "large")
failed = run_measured(python_child("import sys; sys.exit(3)"), workdir=Path({work!r}) / "failed")
print(small.maxrss_bytes, large.maxrss_bytes, failed.returncode)
"""


def test_a_small_child_of_a_grown_test_process_measures_small(tmp_path: Path) -> None:
    code = _GROWN_PARENT.format(tests=str(Path(__file__).parent), work=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    small, large, failed_code = (int(v) for v in done.stdout.split())
    assert 50_000_000 < small < 200_000_000  # its 50 MB and an interpreter, not the parent's 1.2 GB
    assert 400_000_000 < large < 600_000_000  # a larger child still measures its own size
    assert failed_code == 3  # the child's exit status comes through the measuring wrapper
