"""Bootstrap confidence intervals over validation crops: means, pooled ratios, paired differences.

One :class:`Bootstrap` holds a fixed set of resampled crop indices (seeded), so every method on a
protocol is resampled the same way and a method-minus-baseline difference is paired. Percentile
intervals (Efron); crops of one release are correlated, so intervals over crops are a lower bound
on the release-to-release uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Bootstrap", "Interval"]


@dataclass(frozen=True)
class Interval:
    """A point estimate with its (lo, hi) percentile interval."""

    value: float
    lo: float
    hi: float

    def as_list(self) -> list[float]:
        return [self.value, self.lo, self.hi]


class Bootstrap:
    """``n_boot`` resamples (with replacement) of ``n`` crops, fixed by ``seed``."""

    def __init__(self, n: int, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> None:
        if n < 1:
            raise ValueError("bootstrap needs at least one crop")
        self.n, self.level = n, level
        self.index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))

    def _interval(self, value: float, samples: np.ndarray) -> Interval:
        samples = samples[np.isfinite(samples)]
        if samples.size == 0:
            return Interval(value, float("nan"), float("nan"))
        a = (1 - self.level) / 2
        lo, hi = np.quantile(samples, [a, 1 - a])
        return Interval(float(value), float(lo), float(hi))

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n,):
            raise ValueError(f"expected {self.n} per-crop values, got shape {x.shape}")
        return x

    def mean(self, values: np.ndarray, *, where: np.ndarray | None = None) -> Interval:
        """Mean of per-crop values (only crops with ``where`` true, when given)."""
        v = self._check(values)
        w = np.ones(self.n) if where is None else self._check(np.asarray(where, dtype=np.float64))
        if w.sum() == 0:
            return Interval(float("nan"), float("nan"), float("nan"))
        vw = np.where(w > 0, v, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples = vw[self.index].sum(1) / w[self.index].sum(1)
        return self._interval(float(vw.sum() / w.sum()), samples)

    def ratio(self, num: np.ndarray, den: np.ndarray) -> Interval:
        """Pooled ratio sum(num) / sum(den) of per-crop sums (e.g. the pooled chroma ratio)."""
        a, b = self._check(num), self._check(den)
        with np.errstate(invalid="ignore", divide="ignore"):
            samples = a[self.index].sum(1) / b[self.index].sum(1)
            value = a.sum() / b.sum() if b.sum() else float("nan")
        return self._interval(float(value), samples)

    def paired_difference(self, values: np.ndarray, baseline: np.ndarray, *, where: np.ndarray | None = None) -> Interval:
        """Mean of (values - baseline) over the same crops, resampled together."""
        return self.mean(self._check(values) - self._check(baseline), where=where)
