"""Per-case colour protocols: what a colour method is given, and the naive answers it must beat.

A case hides some of an ESA/Hubble truth crop and asks a method for full colour back:

- ``L``: lightness alone (the filter is unknown), against grey-as-colour (a* = b* = 0);
- ``B``, ``G``, ``R``: one chromatic slot given, against that slot replicated into all three;
- ``R+B``, ``G+R``, ``B+G``: two slots given, against the naive fill of the missing one (the mean
  for R + B, the nearer given band for G + R and B + G: HLA's rule), and against a global linear
  fit of the missing slot from the given two, fitted on crops of TRAINING releases.

Slots follow the chromatic rule of issue 20: for ESA RGB truth, B is the image's blue channel, G
its green and R its red. Tensors keep sRGB channel order (R, G, B).

A method is anything with a ``name``, an ``applies(case)`` and a call taking a :class:`ColourInput`
(the given slots with a presence mask, plus lightness) and returning sRGB; :class:`FunctionMethod`
wraps a plain function. A new colour model becomes one more method row without touching the
protocol code::

    model = FunctionMethod("band-model", lambda inp: my_model(inp.slots, inp.present, inp.lightness),
                           cases=frozenset(c.name for c in CASES))
    evaluate_models(colour_methods=[model], ...)   # rows in every case, beside each case's baselines
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from astro_pipeline.training.colorspace import lab_to_srgb, srgb_to_lab

__all__ = [
    "SLOTS",
    "ColourCase",
    "CASES",
    "case_by_name",
    "ColourInput",
    "ColourMethod",
    "FunctionMethod",
    "make_input",
    "grey_from_lightness",
    "grey_method",
    "replicate_method",
    "naive_fill_method",
    "LinearFill",
    "fit_linear_fill",
    "colorizer_methods",
    "baseline_methods",
    "methods_for",
]

#: Channel order of every tensor here (sRGB): index 0 is the R slot, 1 G, 2 B.
SLOTS = ("R", "G", "B")
_INDEX = {s: i for i, s in enumerate(SLOTS)}


@dataclass(frozen=True)
class ColourCase:
    """Which chromatic slots are given (sorted channel indices, R=0 G=1 B=2); none = lightness alone."""

    name: str
    given: tuple[int, ...]

    @property
    def protocol(self) -> str:
        """Report protocol name; the lightness-only case keeps the historical ``colorize``."""
        return "colorize" if not self.given else f"given-{self.name}"

    @property
    def missing(self) -> tuple[int, ...]:
        return tuple(i for i in range(3) if i not in self.given)

    @property
    def kind(self) -> str:
        return {0: "lightness", 1: "one band", 2: "two bands"}[len(self.given)]


def _case(name: str) -> ColourCase:
    return ColourCase(name, tuple(sorted(_INDEX[s] for s in name.split("+"))) if name != "L" else ())


#: The cases, in report order.
CASES: tuple[ColourCase, ...] = tuple(_case(n) for n in ("L", "B", "G", "R", "R+B", "G+R", "B+G"))


def case_by_name(name: str) -> ColourCase:
    for c in CASES:
        if c.name == name:
            return c
    raise ValueError(f"unknown colour case {name!r}; choose one of {', '.join(c.name for c in CASES)}")


@dataclass(frozen=True)
class ColourInput:
    """What a colour method is given for a batch of crops.

    ``slots``: (N, 3, H, W) float32 sRGB in [0, 1], channel order R, G, B, zero where absent.
    ``present``: (N, 3) bool, which slots are given. ``lightness``: (N, 1, H, W) CIE L* in [0, 100]:
    the truth's own L* when no slot is given (the product keeps it), otherwise the L* of the grey
    whose value is the mean of the given slots (what today's pipeline hands the colorizer for one band).
    """

    slots: torch.Tensor
    present: torch.Tensor
    lightness: torch.Tensor

    def __len__(self) -> int:
        return int(self.slots.shape[0])

    def chunk(self, start: int, stop: int) -> ColourInput:
        return ColourInput(self.slots[start:stop], self.present[start:stop], self.lightness[start:stop])

    @property
    def given(self) -> tuple[int, ...]:
        """The given slot indices, shared by the batch (protocol batches are one case each)."""
        p = self.present[0]
        if not bool((self.present == p).all()):
            raise ValueError("this batch mixes cases; index .present per crop instead")
        return tuple(int(i) for i in torch.nonzero(p).flatten())


@runtime_checkable
class ColourMethod(Protocol):
    """A colour method: ``method(inp) -> (N, 3, H, W)`` sRGB in [0, 1] for the cases it ``applies`` to."""

    name: str

    def applies(self, case: ColourCase) -> bool: ...

    def __call__(self, inp: ColourInput) -> torch.Tensor: ...


@dataclass(frozen=True)
class FunctionMethod:
    """A :class:`ColourMethod` from a plain function and the names of the cases it handles.

    ``baseline`` marks naive methods (their rows are named ``baseline-*`` in the report and they
    are what the other rows are measured against).
    """

    name: str
    fn: Callable[[ColourInput], torch.Tensor]
    cases: frozenset[str]
    baseline: bool = False

    def applies(self, case: ColourCase) -> bool:
        return case.name in self.cases

    def __call__(self, inp: ColourInput) -> torch.Tensor:
        return self.fn(inp)


def grey_from_lightness(lightness: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) L* -> the neutral sRGB grey with that L* (N, 3, H, W)."""
    L = lightness.double()
    return lab_to_srgb(torch.cat([L, torch.zeros_like(L), torch.zeros_like(L)], 1)).float()


def _lightness_of_grey(grey: torch.Tensor) -> torch.Tensor:
    """L* of sRGB grey values (N, 1, H, W) in [0, 1] (R = G = B = grey)."""
    return srgb_to_lab(grey.double().expand(-1, 3, -1, -1))[:, :1].float()


def make_input(truth: torch.Tensor, case: ColourCase) -> ColourInput:
    """Hide what the case hides from truth crops (N, 3, H, W) sRGB in [0, 1]."""
    n = truth.shape[0]
    present = torch.zeros(n, 3, dtype=torch.bool)
    slots = torch.zeros_like(truth, dtype=torch.float32)
    for i in case.given:
        present[:, i] = True
        slots[:, i] = truth[:, i].float()
    if case.given:
        mean = slots[:, list(case.given)].mean(1, keepdim=True)
        lightness = _lightness_of_grey(mean)
    else:
        lightness = srgb_to_lab(truth.double())[:, :1].float()
    return ColourInput(slots=slots, present=present, lightness=lightness)


# -- naive baselines ---------------------------------------------------------------------------

def _grey(inp: ColourInput) -> torch.Tensor:
    return grey_from_lightness(inp.lightness)


def _replicate(inp: ColourInput) -> torch.Tensor:
    (i,) = inp.given
    return inp.slots[:, i : i + 1].expand(-1, 3, -1, -1).clone()


def _nearer_or_mean(case_given: tuple[int, ...], missing: int) -> tuple[float, float]:
    """Weights of the two given slots for the missing one: the mean when the missing slot lies
    between them (R + B -> G), else all weight on the nearer given band in wavelength order."""
    a, b = case_given
    if min(a, b) < missing < max(a, b):
        return 0.5, 0.5
    return (1.0, 0.0) if abs(a - missing) < abs(b - missing) else (0.0, 1.0)


def _fill(inp: ColourInput) -> torch.Tensor:
    given = inp.given
    if len(given) != 2:
        raise ValueError(f"the naive fill needs two given slots, got {len(given)}")
    (m,) = (i for i in range(3) if i not in given)
    wa, wb = _nearer_or_mean(given, m)
    out = inp.slots.clone()
    out[:, m] = wa * inp.slots[:, given[0]] + wb * inp.slots[:, given[1]]
    return out


_SINGLE = frozenset({"B", "G", "R"})
_PAIRS = frozenset({"R+B", "G+R", "B+G"})


def grey_method() -> FunctionMethod:
    """Grey-as-colour: the given lightness with a* = b* = 0."""
    return FunctionMethod("baseline-grey", _grey, frozenset({"L"}), baseline=True)


def replicate_method() -> FunctionMethod:
    """One slot given: copy it into all three channels (a grey image of that band)."""
    return FunctionMethod("baseline-replicate", _replicate, _SINGLE, baseline=True)


def naive_fill_method() -> FunctionMethod:
    """Two slots given: the missing slot is their mean (R + B) or the nearer given band (G + R, B + G)."""
    return FunctionMethod("baseline-fill", _fill, _PAIRS, baseline=True)


# -- the global linear fit (second baseline for pairs) ------------------------------------------

@dataclass(frozen=True)
class LinearFill:
    """missing = w0 * given[0] + w1 * given[1] + c per pair case, least squares on training pixels."""

    coefficients: dict[str, tuple[float, float, float]]
    n_pixels: int = 0
    n_crops: int = 0
    name: str = "baseline-linear"
    baseline: bool = True

    def applies(self, case: ColourCase) -> bool:
        return case.name in self.coefficients

    def __call__(self, inp: ColourInput) -> torch.Tensor:
        given = inp.given
        name = next(c.name for c in CASES if c.given == given)
        w0, w1, c = self.coefficients[name]
        (m,) = (i for i in range(3) if i not in given)
        out = inp.slots.clone()
        out[:, m] = (w0 * inp.slots[:, given[0]] + w1 * inp.slots[:, given[1]] + c).clamp(0, 1)
        return out


def fit_linear_fill(crops: Iterable[np.ndarray], *, stride: int = 4) -> LinearFill:
    """Fit :class:`LinearFill` on (H, W, 3) uint8 crops of TRAINING releases (every ``stride``-th
    pixel each way), by accumulating the normal equations (no pixel array is kept)."""
    pair_cases = [c for c in CASES if len(c.given) == 2]
    xtx = {c.name: np.zeros((3, 3)) for c in pair_cases}
    xty = {c.name: np.zeros(3) for c in pair_cases}
    n_px = n_crops = 0
    for crop in crops:
        px = crop[::stride, ::stride].reshape(-1, 3).astype(np.float64) / 255.0
        n_px += len(px)
        n_crops += 1
        for c in pair_cases:
            (m,) = c.missing
            x = np.column_stack([px[:, c.given[0]], px[:, c.given[1]], np.ones(len(px))])
            xtx[c.name] += x.T @ x
            xty[c.name] += x.T @ px[:, m]
    if n_px == 0:
        raise ValueError("no training crops to fit the linear fill on")
    coef = {name: tuple(float(v) for v in np.linalg.lstsq(xtx[name], xty[name], rcond=None)[0]) for name in xtx}
    return LinearFill(coefficients=coef, n_pixels=n_px, n_crops=n_crops)  # type: ignore[arg-type]


# -- the shipped colorizer, where it applies ---------------------------------------------------

@dataclass
class _ColorizerMethod:
    """The L -> ab colorizer as the pipeline runs it: on the given lightness (for one band, the L*
    of that band's grey), recombined with that L* exactly (out-of-gamut chroma scaled down)."""

    model: nn.Module
    name: str = "colorizer"
    cases: frozenset[str] = field(default_factory=lambda: frozenset({"L"}) | _SINGLE)
    batch: int = 4
    baseline: bool = False

    def applies(self, case: ColourCase) -> bool:
        return case.name in self.cases

    @torch.inference_mode()
    def __call__(self, inp: ColourInput) -> torch.Tensor:
        from astro_pipeline.inference import lab_to_srgb_keep_lightness

        out = []
        for i in range(0, len(inp), self.batch):
            L = inp.lightness[i : i + self.batch].float()
            ab = self.model(L / 50.0 - 1.0).float() * 110.0
            for Lk, abk in zip(L, ab, strict=True):
                rgb = lab_to_srgb_keep_lightness(Lk[0].numpy(), abk.permute(1, 2, 0).numpy())
                out.append(torch.from_numpy(rgb).permute(2, 0, 1))
        return torch.stack(out)


def colorizer_methods(model: nn.Module, *, name: str = "colorizer") -> list[ColourMethod]:
    """The shipped L -> ab colorizer, scored on lightness alone and on one band used as lightness."""
    return [_ColorizerMethod(model, name=name)]


def baseline_methods(linear: LinearFill | None = None) -> list[ColourMethod]:
    """The naive baseline of every case, plus the linear fit for pairs when one was fitted."""
    out: list[ColourMethod] = [grey_method(), replicate_method(), naive_fill_method()]
    if linear is not None:
        out.append(linear)
    return out


def methods_for(case: ColourCase, methods: Sequence[ColourMethod]) -> list[ColourMethod]:
    """The methods that apply to a case, baselines first (in the given order)."""
    applicable = [m for m in methods if m.applies(case)]
    return sorted(applicable, key=lambda m: not getattr(m, "baseline", False))
