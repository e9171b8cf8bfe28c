"""The evaluation report: :class:`EvalReport` and its Markdown / CSV / JSON files, one function per section.

``write_report(report, out_dir, sections=SECTIONS)`` joins the sections in order; a new section is a
function ``(EvalReport) -> list[str]`` of Markdown lines added to :data:`SECTIONS` (an empty list
leaves it out). Sections only read the report; figures are written before, and named in
``report.figures``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astro_pipeline.fileio import atomic_write_bytes
from astro_pipeline.training.sky_gap import SkyGap

__all__ = [
    "EvalReport",
    "METRIC_COLUMNS",
    "SECTIONS",
    "Section",
    "write_report",
    "load_report",
    "sky_gap_summary",
    "case_of",
    "section_header",
    "section_models",
    "section_colour_accuracy",
    "section_colour_palette",
    "section_colour_targets",
    "section_horseshoe",
    "section_sky_gap",
    "section_super_resolution",
    "section_sources",
    "section_targets",
    "section_notes",
    "section_figures",
]

#: The metrics stored in weights metadata and compared by the promotion gate.
METRIC_COLUMNS = ["psnr_rgb", "psnr_y", "ssim", "ciede76", "lpips", "chroma_ratio", "lr_rmse"]
#: Extra per-row measures written to report.csv.
EXTRA_COLUMNS = ["hue_spread", "hue_spread_truth", "hue_crops", "kid", "given_err", "baseline"]

_PROTOCOLS_OF = {
    "colorizer": ("colorize",),
    "superres": ("sr-clean", "sr-degraded"),
    "superres-gan": ("sr-clean", "sr-degraded"),
}
_SR_PROTOCOLS = ("sr-clean", "sr-degraded", "enhance")


@dataclass
class EvalReport:
    """Rows of (protocol, method) metrics, the real-data check, sky gap, target verdicts and written files."""

    table: list[dict[str, Any]]
    horseshoe: dict[str, Any] | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    colour_targets: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_crops: int = 0
    crop: int = 256
    val_groups: list[str] = field(default_factory=list)
    n_images: int = 0
    per_image: int = 1
    seed: int = 0
    val_fraction: float = 0.12
    n_boot: int = 0
    kid_truth_split: list[float] | None = None
    kid_halves: tuple[int, int] | None = None
    linear_fill: dict[str, Any] | None = None
    sky_gap: SkyGap | None = None
    sky_gap_summary: dict[str, Any] | None = None  # what the report shows of ``sky_gap`` (kept in report.json)
    eval_set: str = ""  # fingerprint of the scored crops: metrics compare only on one set (promotion gate)
    sources: dict[str, Any] | None = None  # the source-level run (``source_eval.report_summary``), if any
    figures: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    machine: str = ""
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, protocol: str, method: str) -> dict[str, Any] | None:
        return next((r for r in self.table if r["protocol"] == protocol and r["method"] == method), None)

    def metrics_for(self, name: str) -> dict[str, Any]:
        """The metrics to store in a model's weights metadata: its rows and its baselines' rows, on
        the protocols its promotion gate reads (for a name the gate does not know: where it has rows)."""
        protos = _PROTOCOLS_OF.get(name) or tuple(dict.fromkeys(r["protocol"] for r in self.table if r["method"] == name))
        out: dict[str, Any] = {"eval_crops": self.n_crops}
        if self.eval_set:
            out["eval_set"] = self.eval_set
        for r in self.table:
            if r["protocol"] not in protos:
                continue
            if r["method"] == name:
                key = r["protocol"]
            elif r["method"].startswith("baseline"):
                key = f"{r['protocol']}:{r['method']}"
            else:
                continue
            out[key] = {k: r[k] for k in METRIC_COLUMNS if r.get(k) is not None}
        return out


Section = Callable[[EvalReport], list[str]]


def case_of(protocol: str) -> str | None:
    """Colour case name of a protocol (``colorize`` -> ``L``, ``given-R+B`` -> ``R+B``), else None."""
    if protocol == "colorize":
        return "L"
    return protocol[len("given-"):] if protocol.startswith("given-") else None


def _fmt(v: Any, digits: int | None = None) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if digits is not None:
            return f"{v:.{digits}f}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _ci(row: dict[str, Any], key: str, digits: int, scale: float = 1.0) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    lo, hi = (row.get("ci") or {}).get(key, (None, None))
    s = f"{v * scale:.{digits}f}"
    return s if lo is None else f"{s} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def _delta(row: dict[str, Any], key: str, digits: int) -> str:
    d = (row.get("delta") or {}).get(key)
    if not d:
        return "-"
    return f"{d[0]:+.{digits}f} [{d[1]:+.{digits}f}, {d[2]:+.{digits}f}]"


def _colour_rows(report: EvalReport) -> list[dict[str, Any]]:
    return [r for r in report.table if case_of(r["protocol"]) is not None]


# -- sections ------------------------------------------------------------------------------------

def section_header(report: EvalReport) -> list[str]:
    lines = ["# Evaluation report", "",
             f"Validation: {report.n_crops} crops of {report.crop} px ({report.per_image} per image, seed {report.seed}) from "
             f"{report.n_images} images of {len(report.val_groups)} held-out ESA releases, split by release, never by file (a salted "
             f"hash of the release id puts {report.val_fraction:.0%} of releases in validation: the split the models are trained "
             "with). Outputs are quantised to 8 bits before scoring."]
    if report.n_boot:
        lines += ["", f"Brackets are 95% bootstrap intervals over crops ({report.n_boot} resamples, percentile method; a "
                  "difference from the baseline is resampled paired). Crops of one release are correlated, so these are a lower "
                  "bound on the uncertainty from release to release."]
    if report.timings:
        total = sum(report.timings.values())
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in report.timings.items())
        lines += ["", f"Run time: {total / 60:.1f} min ({parts}){' on ' + report.machine if report.machine else ''}."]
    return lines


def section_models(report: EvalReport) -> list[str]:
    if not report.models:
        return []
    lines = ["Models:", ""]
    for name, m in report.models.items():
        seen = m.get("trained_on_eval")
        held = ("held-out split not recorded in its metadata" if seen is None else
                f"all {len(report.val_groups)} releases scored here were held out of its training" if not seen else
                f"WARNING: trained on {len(seen)} of the releases scored here ({', '.join(seen)})")
        lines.append(f"- `{name}`: {m['arch']} {json.dumps(m['kwargs'])}, version {m['version']}, {m['steps']} steps, "
                     f"sha256 {m['sha256'][:12]}; {held}")
    return lines


def section_colour_accuracy(report: EvalReport) -> list[str]:
    rows = _colour_rows(report)
    if not rows:
        return []
    lines = ["## Colour, per case: accuracy", "",
             "Each case hides part of a truth crop; every method is scored on the same crops beside the case's naive answer "
             "(the first row of each case). Slots follow the chromatic rule of issue 20: B is the image's blue channel, G its "
             "green, R its red. `L`: lightness alone (truth L*), naive = grey-as-colour. `B`, `G`, `R`: one slot given, naive = "
             "that slot replicated; the colorizer gets it as lightness (the L* of that grey), as the pipeline does today. Pairs: "
             "naive = the mean for R+B, the nearer given band for G+R and B+G; `baseline-linear` is a global linear fit of the "
             "missing slot from the given two, fitted on crops of TRAINING releases.", "",
             "| case | method | PSNR (dB) | PSNR - naive | CIEDE76 | CIEDE76 - naive | SSIM | LPIPS | given max err |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {case_of(r['protocol'])} | {r['method']} | {_ci(r, 'psnr_rgb', 2)} | {_delta(r, 'psnr_rgb', 2)} | "
                     f"{_ci(r, 'ciede76', 2)} | {_delta(r, 'ciede76', 2)} | {_fmt(r.get('ssim'), 4)} | {_fmt(r.get('lpips'), 4)} | "
                     f"{_fmt(r.get('given_err'))} |")
    lines += ["", "`given max err`: the largest difference, in 8-bit levels, between an output and the truth on the channels "
              "that were given (0 = they come back exactly)."]
    lf = report.linear_fill
    if lf:
        coefs = "; ".join(f"{k}: {v[0]:+.3f}, {v[1]:+.3f}, {v[2]:+.3f}" for k, v in lf["coefficients"].items())
        lines += ["", f"Linear fit (missing = w1 x first given + w2 x second given + c, given slots in R, G, B order), least squares "
                  f"on {lf['n_pixels']} pixels of {lf['n_crops']} training-release crops: {coefs}."]
    return lines


def section_colour_palette(report: EvalReport) -> list[str]:
    rows = _colour_rows(report)
    if not rows:
        return []
    hue_crops = next((r["hue_crops"] for r in rows if r.get("hue_crops") is not None), 0)
    lines = ["## Colour, per case: palette (chroma, hue spread, KID)", "",
             "Pooled chroma ratio: the sum of Lab chroma of the outputs over that of the truth, over all pixels of all crops (1 = as "
             f"colourful as the truth). Hue spread: the circular standard deviation of hue, in degrees, over the pixels with chroma "
             f"above 5, mean over the {hue_crops} crops where at least 1% of the truth's pixels qualify (0 for an output with no "
             "such pixel); a tint has a spread near 0. KID (x 1000): the kernel inception distance, cubic polynomial kernel, on "
             "VGG16 relu5_3 features average-pooled over the crop, between the outputs and the truth crops they were made from "
             "(Gretton's unbiased MMD^2 for equal samples: every term pairing a crop with itself, or with its own truth, is left "
             "out, so shared content gives no bonus; the truth itself scores 0, and lower is better)."]
    if report.kid_truth_split:
        v, lo, hi = report.kid_truth_split
        ha, hb = report.kid_halves or (0, 0)
        lines += ["", f"For scale: the truth crops of one half of the validation releases against the other half ({ha} | {hb} crops, "
                  f"no release in both), two sets of real crops of different content: KID x 1000 = {v * 1e3:.2f} [{lo * 1e3:.2f}, {hi * 1e3:.2f}]."]
    lines += ["", "| case | method | chroma ratio | hue spread (deg) | truth hue spread | KID x 1000 |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {case_of(r['protocol'])} | {r['method']} | {_ci(r, 'chroma_ratio', 3)} | {_ci(r, 'hue_spread', 1)} | "
                     f"{_fmt(r.get('hue_spread_truth'), 1)} | {_ci(r, 'kid', 2, 1e3)} |")
    return lines


def section_colour_targets(report: EvalReport) -> list[str]:
    if not report.colour_targets:
        return []
    lines = ["## Colour targets of issue 23 (checked for each colour model)", "",
             "| model | check | value | threshold | met |", "|---|---|---|---|---|"]
    for t in report.colour_targets:
        lines.append(f"| {t['model']} | {t['check']} | {_fmt(t['value'])} | {_fmt(t['threshold'])} | {'yes' if t['met'] else 'NO'} |")
    return lines


def section_horseshoe(report: EvalReport) -> list[str]:
    hs = report.horseshoe
    if not hs:
        return []
    lines = ["## Real data: Cosmic Horseshoe against make_lupton_rgb(F814W, F606W, F475W)", ""]
    if "error" in hs:
        return [*lines, f"Not run: {hs['error']}"]
    lines += [f"Same Lupton asinh stretch (stretch={hs['stretch']:.4g}, Q={hs['Q']}); {hs['size'][0]}x{hs['size'][1]} px. "
              "`G`: F606W alone, input make_lupton_rgb(F606W x 3); its naive answer is that grey. `G+R`: F606W + F814W given "
              "as the composite's own G and R channels, B missing. "
              f"The composite's hue spread is {hs.get('truth_hue_spread', float('nan')):.1f} degrees.", "",
              "| case | method | ciede76 | ab_error | chroma_ratio | psnr_rgb | hue spread | lpips |", "|---|---|---|---|---|---|---|---|"]
    for case, scores in hs.get("cases", {}).items():
        for name, m in scores.items():
            lines.append(f"| {case} | {name} | {_fmt(m['ciede76'])} | {_fmt(m['ab_error'])} | {_fmt(m['chroma_ratio'])} | "
                         f"{_fmt(m['psnr_rgb'])} | {_fmt(m.get('hue_spread'), 1)} | {_fmt(m.get('lpips'))} |")
    if "horseshoe" in report.figures:
        lines += ["", f"![horseshoe: rows G and G+R; columns input | methods | composite]({report.figures['horseshoe']})"]
    return lines


def sky_gap_summary(gap: SkyGap) -> dict[str, Any]:
    """What the report keeps of a sky-gap measurement: the preparation, the rows and what was left out."""
    return {"prepare": gap.prepare, "rows": gap.rows(), "skipped": [x for s in gap.sets for x in s.skipped]}


def section_sky_gap(report: EvalReport) -> list[str]:
    g = report.sky_gap_summary or (sky_gap_summary(report.sky_gap) if report.sky_gap is not None else None)
    if g is None:
        return []
    lines = ["## Sky and histogram gap: what the colorizer sees in use against what it trained on", "",
             "The colorizer trained on the L* of ESA release images; in the sweep it gets the pipeline's own stretch "
             f"(`{g['prepare']}`: ZScale + asinh, then L*) of raw frames. Sky L*: per image, the median L* of the pixels that survive "
             "iterative 3-sigma clipping (median centre, MAD sigma); then the median and quartiles over images. Dark fraction: the "
             "share of valid pixels below L* 10. Histogram distances against the training images' L* histogram (each image weighs "
             "the same): earth mover's distance in L* units, and total variation. Off-footprint pixels are left out. "
             "`astro_pipeline.training.sky_gap.default_sky_gap(cache_dir=..., prepare=...)` measures a new input preparation the same way.", "",
             "| set | images | sky L* median [q25, q75] | sky gap | dark fraction | mean L* | histogram EMD (L*) | histogram TV |",
             "|---|---|---|---|---|---|---|---|"]
    for r in g["rows"]:
        lines.append(f"| {r['set']} | {r['n_images']} | {r['sky_median']:.1f} [{r['sky_q25']:.1f}, {r['sky_q75']:.1f}] | "
                     f"{r['sky_gap']:+.1f} | {r['dark_fraction']:.2f} | {r['mean_lightness']:.1f} | {r['hist_emd']:.1f} | {r['hist_tv']:.2f} |")
    if g["skipped"]:
        named = []
        for x in g["skipped"]:
            head, _, why = x.partition(": ")
            named.append(f"{Path(head).name}: {why}")
        lines += ["", f"Left out ({len(named)}): " + "; ".join(named) + "."]
    return lines


def _protocol_table(report: EvalReport, proto: str) -> list[str]:
    lines = [f"## {proto}", "", "| method | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    for r in report.table:
        if r["protocol"] == proto:
            cells = [_ci(r, "psnr_rgb", 2) if k == "psnr_rgb" else _fmt(r.get(k)) for k in METRIC_COLUMNS]
            lines.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    return lines


def section_super_resolution(report: EvalReport) -> list[str]:
    protos = [p for p in _SR_PROTOCOLS if any(r["protocol"] == p for r in report.table)]
    if not protos:
        return []
    lines: list[str] = []
    for p in protos:
        lines += [*_protocol_table(report, p), ""]
    lines.append("Lower is better for ciede76, lpips and lr_rmse; chroma_ratio should be near 1. `enhance`: 64 px grey (L* of the "
                 "clean LR) -> colorizer -> superres, against bicubic-upscaled grey.")
    return lines


def section_sources(report: EvalReport) -> list[str]:
    """The source-level SR evaluation (issue 19) and the science gate, when it ran."""
    if not report.sources:
        return []
    from astro_pipeline.training.source_eval import summary_section

    return summary_section(report.sources)


def section_targets(report: EvalReport) -> list[str]:
    if not report.targets:
        return []
    lines = ["## Targets (issues 4 and 22, clean protocol)", "", "| model | check | value | threshold | met |", "|---|---|---|---|---|"]
    for t in report.targets:
        lines.append(f"| {t['model']} | {t['check']} | {_fmt(t['value'])} | {_fmt(t['threshold'])} | {'yes' if t['met'] else 'NO'} |")
    return lines


def section_notes(report: EvalReport) -> list[str]:
    if not report.notes:
        return []
    return ["## Training runs and gaps", "", *[f"- {n}" for n in report.notes]]


def section_figures(report: EvalReport) -> list[str]:
    if not report.figures:
        return []
    lines = ["## Figures", ""]
    sheets = [(k, v) for k, v in report.figures.items() if k.startswith("case:")]
    if sheets:
        lines.append("Contact sheets per colour case (columns: input | naive | other baselines and models | truth; rows: three "
                     "validation crops from the middle to the top of the truth's chroma):")
        lines.append("")
        lines += [f"- `{k[5:]}`: ![{k[5:]}]({v})" for k, v in sheets]
        lines.append("")
    if "contact_sheet" in report.figures:
        lines.append(f"`{report.figures['contact_sheet']}`: rows colorize, superres, superres-gan; columns input | baseline | model | truth.")
    losses = [v for k, v in report.figures.items() if k.startswith("loss:")]
    if losses:
        lines.append("Training losses: " + ", ".join(f"`{v}`" for v in losses) + ".")
    return lines


#: The report, in order.
SECTIONS: list[Section] = [
    section_header, section_models, section_colour_accuracy, section_colour_palette, section_colour_targets,
    section_horseshoe, section_sky_gap, section_super_resolution, section_sources, section_targets, section_notes, section_figures,
]


def _csv(report: EvalReport) -> str:
    cols = ["protocol", "method", "n", *METRIC_COLUMNS, *EXTRA_COLUMNS]
    ci_cols = ["psnr_rgb", "ciede76", "chroma_ratio", "hue_spread", "kid"]
    header = cols + [f"{k}_{e}" for k in ci_cols for e in ("lo", "hi")] + [f"delta_{k}{e}" for k in ("psnr_rgb", "ciede76") for e in ("", "_lo", "_hi")]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    for r in report.table:
        cells = ["" if r.get(k) is None else r[k] for k in cols]
        for k in ci_cols:
            lo, hi = (r.get("ci") or {}).get(k, ("", ""))
            cells += [lo, hi]
        for k in ("psnr_rgb", "ciede76"):
            cells += list((r.get("delta") or {}).get(k, ("", "", "")))
        w.writerow(cells)
    return buf.getvalue()


_JSON_FIELDS = ("n_crops", "crop", "per_image", "seed", "val_fraction", "val_groups", "n_images", "n_boot", "models", "table",
                "kid_truth_split", "kid_halves", "linear_fill", "targets", "colour_targets", "timings", "machine", "figures", "notes",
                "eval_set", "sources")


def _json(report: EvalReport) -> str:
    payload: dict[str, Any] = {k: getattr(report, k) for k in _JSON_FIELDS}
    hs = report.horseshoe or {}
    payload["horseshoe"] = {k: v for k, v in hs.items() if k != "images"} or None
    payload["sky_gap"] = report.sky_gap_summary or (sky_gap_summary(report.sky_gap) if report.sky_gap is not None else None)
    return json.dumps(payload, indent=1, default=float)


def load_report(path: str | Path) -> EvalReport:
    """An :class:`EvalReport` back from ``report.json`` (no images), to re-render the Markdown (new
    notes, a new section) without evaluating again."""
    raw = json.loads(Path(path).read_text())
    report = EvalReport(table=raw["table"])
    for k in _JSON_FIELDS:
        if k in raw:
            setattr(report, k, raw[k])
    if report.kid_halves is not None:
        report.kid_halves = (int(report.kid_halves[0]), int(report.kid_halves[1]))
    report.horseshoe = raw.get("horseshoe")
    report.sky_gap_summary = raw.get("sky_gap")
    return report


def write_report(report: EvalReport, out_dir: Path, *, sections: Sequence[Section] = SECTIONS) -> list[Path]:
    """``report.md`` (the sections, in order), ``report.csv`` (one row per protocol x method, with
    intervals) and ``report.json`` (everything but images, for programs comparing runs)."""
    out_dir = Path(out_dir)
    csv_path = atomic_write_bytes(out_dir / "report.csv", _csv(report).encode())
    json_path = atomic_write_bytes(out_dir / "report.json", _json(report).encode())
    lines: list[str] = []
    for section in sections:
        part = section(report)
        if part:
            lines += [*part, ""]
    md_path = atomic_write_bytes(out_dir / "report.md", "\n".join(lines).encode())
    return [csv_path, md_path, json_path]
