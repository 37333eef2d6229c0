"""Summaries of a few seeds, and when a difference between two recipes counts as a finding.

A difference is a finding only when its 95% interval excludes zero. With the same seeds on both sides (paired:
same initial weights, data order and augmentation), the interval is that of the mean per-seed difference,
which removes the seed-to-seed variation the two share; otherwise Welch's interval for two independent means.
Intervals use Student's t, whose quantile is computed here (no SciPy): a handful of seeds is far from normal.
"""

import dataclasses
import functools
import math
import statistics

CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and the ``CONFIDENCE`` t-interval of the mean of ``n`` values."""

    n: int
    mean: float
    std: float
    low: float
    high: float

    def text(self, scale=1.0, digits=2):
        """``mean ± std [low, high] (n=N)``, each value times ``scale`` (100 for percent)."""
        f = lambda v: f"{v * scale:.{digits}f}"  # noqa: E731
        if self.n < 2:
            return f"{f(self.mean)} (n=1, no interval)"
        return f"{f(self.mean)} ± {f(self.std)} [{f(self.low)}, {f(self.high)}] (n={self.n})"


def summarize(values):
    """The ``Summary`` of ``values``; with one value the interval is unknown (nan)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarize")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = statistics.stdev(values)
    half = t_quantile(0.5 + CONFIDENCE / 2, len(values) - 1) * std / math.sqrt(len(values))
    return Summary(len(values), mean, std, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Difference:
    """``b - a`` (mean), its interval, and whether the interval excludes zero."""

    paired: bool
    n: int
    mean: float
    low: float
    high: float

    @property
    def is_finding(self):
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def text(self, scale=1.0, digits=2):
        f = lambda v: f"{v * scale:+.{digits}f}"  # noqa: E731
        kind = "paired" if self.paired else "Welch"
        if math.isnan(self.low):
            return f"{f(self.mean)} (n={self.n}, no interval)"
        verdict = "excludes 0" if self.is_finding else "includes 0"
        return f"{f(self.mean)} [{f(self.low)}, {f(self.high)}] ({kind}, n={self.n}; {verdict})"


def paired_difference(a, b):
    """``b - a`` over values paired by position (the same seeds, in the same order)."""
    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs: {len(a)} and {len(b)}")
    summary = summarize([y - x for x, y in zip(a, b)])
    return Difference(True, summary.n, summary.mean, summary.low, summary.high)


def welch_difference(a, b):
    """``mean(b) - mean(a)`` for independent samples, with Welch's interval (unequal variances)."""
    if len(a) < 2 or len(b) < 2:
        return Difference(False, min(len(a), len(b)), statistics.fmean(b) - statistics.fmean(a), math.nan, math.nan)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    mean = statistics.fmean(b) - statistics.fmean(a)
    if va + vb == 0:
        return Difference(False, min(len(a), len(b)), mean, mean, mean)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + CONFIDENCE / 2, dof) * math.sqrt(va + vb)
    return Difference(False, min(len(a), len(b)), mean, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``b / a`` over pairs: the geometric mean of the per-pair ratios and its interval, the t-interval of the
    mean of their logarithms taken back (a ratio's spread is multiplicative: 0.5x and 2x are as far from 1)."""

    n: int
    geometric_mean: float
    low: float
    high: float

    def text(self, digits=3):
        f = lambda v: f"{v:.{digits}f}"  # noqa: E731
        if math.isnan(self.low):
            return f"{f(self.geometric_mean)} (n={self.n}, no interval)"
        return f"{f(self.geometric_mean)} [{f(self.low)}, {f(self.high)}] (paired, n={self.n}; geometric mean)"


def paired_ratio(a, b):
    """``b / a`` over positive values paired by position (the same seeds, in the same order), as a ``Ratio``."""
    if len(a) != len(b):
        raise ValueError(f"paired values must come in pairs: {len(a)} and {len(b)}")
    if any(value <= 0 for value in (*a, *b)):
        raise ValueError("a ratio is taken of positive values")
    summary = summarize([math.log(y / x) for x, y in zip(a, b)])
    return Ratio(summary.n, math.exp(summary.mean), math.exp(summary.low), math.exp(summary.high))


@functools.cache  # ~30 ms a call; a table asks for the same few quantiles once per point
def t_quantile(p, dof):
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``dof`` degrees of freedom (any real > 0), by bisection
    on its distribution function."""
    if not 0.5 < p < 1 or dof <= 0:
        raise ValueError(f"t_quantile needs 0.5 < p < 1 and dof > 0, got p={p}, dof={dof}")
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < p:
        high *= 2
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, dof) < p else (low, middle)
    return (low + high) / 2


def t_cdf(x, dof):
    """P(T <= x) for x >= 0: one half plus the density integrated from 0 to x. The substitution x = tan(u)
    keeps the integrand smooth and the range finite however heavy the tail; Simpson's rule then converges fast."""
    if x < 0:
        raise ValueError("t_cdf is computed for x >= 0")
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def integrand(u):  # density(tan u) * d(tan u)/du
        t = math.tan(u)
        return math.exp(log_norm - (dof + 1) / 2 * math.log1p(t * t / dof)) / math.cos(u) ** 2

    end, intervals = math.atan(x), 2000
    h = end / intervals
    total = integrand(0) + integrand(end)
    total += sum((4 if i % 2 else 2) * integrand(i * h) for i in range(1, intervals))
    return 0.5 + total * h / 3
