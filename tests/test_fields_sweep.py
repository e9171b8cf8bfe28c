"""Done when (issue 16): ``astro-pipeline sweep --sample`` writes one colour product per sample field
with at least two filters, and its manifest says which channel came from which filter.

A real sweep of the mini sample through the CLI (Prefect, the archive replica on 127.0.0.1, tiny
random weights), then the run's manifest read back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

CLI = [sys.executable, "-c", "from astro_pipeline.cli import main; main()"]


@pytest.mark.slow
def test_the_sample_sweep_writes_one_colour_product_per_field_with_its_channels(sweep_weights_dir: Path,
                                                                                tmp_path: Path) -> None:
    from astro_pipeline.config import Settings
    from astro_pipeline.sample import build_sample

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "ASTRO_PIPELINE_WEIGHTS_DIR": str(sweep_weights_dir),
           "ASTRO_PIPELINE_MIN_FREE_DISK_BYTES": str(10 * 1024**2)}
    env.pop("PREFECT_API_URL", None)
    out = tmp_path / "out"
    cmd = [*CLI, "sweep", "--sample", "--mini", "--output", str(out), "--archives", "mast"]
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    shown = run.stdout + run.stderr
    assert run.returncode == 0, shown[-3000:]

    # the sample's fields: its linear frames by field, and their filters
    index = build_sample(mini=True, cache_dir=Settings(output_dir=tmp_path / "x").cache_dir)
    filters: dict[str, set[str]] = defaultdict(set)
    names: dict[str, str] = {}
    for item in index.items:
        if item.archive == "mast" and item.kind == "science":
            filters[item.field].add(item.filter)
            names[Path(item.path).name] = item.field
    expected = {f: fs for f, fs in filters.items() if len(fs) >= 2}
    assert {"m83", "ngc4414", "m101"} <= set(expected)

    (parquet,) = [p for p in (out / "manifests").glob("*.parquet") if p.name != "all.parquet"]
    df = pd.read_parquet(parquet)
    fields = df[df["product_type"] == "field"]
    assert (fields["status"] == "ok").all(), fields[["field_name", "error"]]
    by_field: dict[str, list[pd.Series]] = defaultdict(list)
    for _, row in fields.iterrows():
        members = json.loads(row["members"])
        (sample_field,) = {names[m["file"]] for m in members}  # every member from one sample field
        by_field[sample_field].append(row)
    assert set(by_field) == set(expected), (set(by_field), set(expected))
    for name, rows in by_field.items():
        assert len(rows) == 1, (name, len(rows))  # one colour product per field
        row = rows[0]
        assert set(row["filter"].split(",")) == expected[name]
        # the manifest says which channel came from which filter, agreeing with the member rows
        channels = dict(part.split(":", 1) for part in row["channels"].split(", "))
        members = json.loads(row["members"])
        used = {m["filter"]: m["channel"] for m in members if m["role"] == "band"}
        assert used and all(channels[slot] == f for f, slot in used.items()), (row["channels"], used)
        assert set(channels) == {"R", "G", "B"}
        for kind in ("png", "tif", "fits", "png_4x", "tif_4x", "fits_4x"):
            path = out / row[f"{kind}_path"]
            assert path.is_file(), path
        assert json.loads(row["reference_wcs"])["wcs"]["CTYPE1"] == "RA---TAN"
    # m83 (two instruments, two grids): three real bands, none inferred; ngc4414: two, one inferred
    assert by_field["m83"][0]["channels"] == "R:F160W, G:F606W, B:F435W"
    assert by_field["ngc4414"][0]["channels"] == "R:F814W, G:F606W, B:inferred(nearer G)"
    assert all(bool(rows[0]["visualisation"]) for rows in by_field.values())  # the 4x files are the SR model's
    detail = json.loads(by_field["m83"][0]["channels_detail"])
    assert [(c["slot"], c["sources"][0]["filter"]) for c in detail] == [("R", "F160W"), ("G", "F606W"), ("B", "F435W")]
    # the frame rows say which field each frame is in
    frames = df[df["product_type"] == "frame"]
    m83_frames = frames[frames["source_path"].map(lambda p: names.get(Path(p).name)) == "m83"]
    assert len(m83_frames) == 3 and m83_frames["field_name"].nunique() == 1
    assert f"field {by_field['m83'][0]['field_name']} (F160W, F435W, F606W): composed: R:F160W" in shown, shown[-2000:]
