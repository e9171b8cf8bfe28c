"""The colour targets of issue 23, checked for any colour method on the per-case rows.

- two bands given (each pair case the method applies to): PSNR at least 1.0 dB above that pair's
  naive fill, and a lower CIEDE76;
- lightness alone (a palette must appear without being invented wholesale): CIEDE76 at or below
  grey's, PSNR within 0.5 dB of grey's, pooled chroma ratio at least 0.6, hue spread at least half
  the truth's, KID at most half of grey's;
- the Horseshoe: with F606W alone CIEDE76 below grey's; with F606W + F814W below the naive fill's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["colour_targets"]


def _row(rows: list[dict[str, Any]], protocol: str, method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["protocol"] == protocol and r["method"] == method), None)


def colour_targets(rows: list[dict[str, Any]], method: str, *, horseshoe: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Checks (``model``, ``check``, ``value``, ``threshold``, ``met``) for ``method`` where it has rows."""
    out: list[dict[str, Any]] = []

    def add(check: str, value: float | None, threshold: float, ok: bool | None) -> None:
        out.append({"model": method, "check": check, "value": value, "threshold": threshold, "met": ok})

    for pair in ("R+B", "G+R", "B+G"):
        m, b = _row(rows, f"given-{pair}", method), _row(rows, f"given-{pair}", "baseline-fill")
        if m and b:
            add(f"{pair}: PSNR gain over the naive fill (dB) >= 1.0", m["psnr_rgb"] - b["psnr_rgb"], 1.0, m["psnr_rgb"] - b["psnr_rgb"] >= 1.0)
            add(f"{pair}: CIEDE76 - naive fill's < 0", m["ciede76"] - b["ciede76"], 0.0, m["ciede76"] < b["ciede76"])
    m, g = _row(rows, "colorize", method), _row(rows, "colorize", "baseline-grey")
    if m and g:
        add("L: CIEDE76 - grey's <= 0", m["ciede76"] - g["ciede76"], 0.0, m["ciede76"] <= g["ciede76"])
        add("L: PSNR - grey's (dB) >= -0.5", m["psnr_rgb"] - g["psnr_rgb"], -0.5, m["psnr_rgb"] - g["psnr_rgb"] >= -0.5)
        add("L: pooled chroma ratio >= 0.6", m["chroma_ratio"], 0.6, m["chroma_ratio"] >= 0.6)
        if m.get("hue_spread") is not None and m.get("hue_spread_truth"):
            ratio = m["hue_spread"] / m["hue_spread_truth"]
            add("L: hue spread / truth's >= 0.5", ratio, 0.5, ratio >= 0.5)
        if m.get("kid") is not None and g.get("kid"):
            ratio = m["kid"] / g["kid"]
            add("L: KID / grey's <= 0.5", ratio, 0.5, ratio <= 0.5)
    cases = (horseshoe or {}).get("cases", {})
    for case, base in (("G", "baseline-replicate"), ("G+R", "baseline-fill")):
        c = cases.get(case, {})
        if method in c and base in c:
            d = c[method]["ciede76"] - c[base]["ciede76"]
            add(f"Horseshoe {case}: CIEDE76 - {base}'s < 0", d, 0.0, d < 0)
    return out
