"""What a few seeds and one validation set can say: paired differences and sampling errors.

Two networks trained with the same seed see the same data in the same order and start
from the same initial weights wherever their layers coincide, so their scores are
compared **by seed**: :func:`paired_difference` takes the per-seed differences
``a - b``, their mean, a ``confidence`` (95 %) Student-t interval and the two-sided
paired t-test p-value (``scipy.stats.t`` for the distribution; the arithmetic is plain
NumPy, tested equal to ``scipy.stats.ttest_rel``).  With 3 seeds the interval has 2
degrees of freedom (t = 4.30): a difference is *detectable* only when the interval
excludes 0, and :meth:`PairedDifference.verdict` says "no detectable difference"
otherwise -- never "level" or "ahead" on the mean alone.

The validation set has its own sampling error, beside the seeds' spread:
:func:`binomial_se` treats a PCKh score as the share of ``n`` independent joints
(``sqrt(p (1 - p) / n)``), and :func:`bootstrap_se` resamples *people* (a person's
joints are not independent: it is the larger, more honest of the two).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """The mean of per-seed differences ``a - b`` with its t interval and paired t-test.

    ``low``/``high``/``t``/``p`` are None with fewer than 2 pairs (no spread to measure)."""

    n: int
    mean: float
    sd: float | None
    se: float | None
    low: float | None
    high: float | None
    t: float | None
    p: float | None
    confidence: float
    differences: tuple[float, ...]

    @property
    def detectable(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    def interval(self, digits: int = 1) -> str:
        """``+1.2 [-0.3, +2.7]`` (the mean and its interval), or the mean alone."""
        if self.low is None:
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def verdict(self, a: str = "a", b: str = "b", lower_is_better: bool = False) -> str:
        """One phrase: which is ahead, or "no detectable difference" when the interval
        covers 0 (with the number of seeds when it is small).  ``lower_is_better``: the
        measure is an error rate, so the lower mean is ahead."""
        seeds = f"{self.n} seed{'s' if self.n != 1 else ''}"
        if self.low is None:
            return f"one seed: {self.mean:+.1f} ({a} - {b}), no interval"
        if not self.detectable:
            return f"no detectable difference ({seeds}, p = {self.p:.2f})"
        ahead = a if (self.mean > 0) != lower_is_better else b
        p = "p < 0.001" if self.p < 0.001 else f"p = {self.p:.3f}"
        lower = "lower is better; " if lower_is_better else ""
        return f"{ahead} ahead by {abs(self.mean):.1f} ({lower}{seeds}, {p})"

    def as_json(self) -> dict:
        out = asdict(self)
        out["differences"] = list(self.differences)
        out["detectable"] = self.detectable
        return out


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(2.0 * stats.t.sf(abs(t), df))


def paired_difference(a, b, confidence: float = CONFIDENCE) -> PairedDifference:
    """Per-pair differences ``a - b`` (same seed = same pair), their mean, the
    ``confidence`` t interval of the mean and the two-sided paired t-test p-value."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores need two equal, non-empty 1-D lists, got shapes "
                         f"{a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = a - b
    n, mean = len(d), float(d.mean())
    diffs = tuple(float(v) for v in d)
    if n < 2:
        return PairedDifference(n, mean, None, None, None, None, None, None, confidence, diffs)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    if se > 0:
        t = mean / se
        p = t_two_sided_p(t, n - 1)
    else:  # identical differences: no spread (exactly 0 apart, or apart every time)
        t = math.copysign(math.inf, mean) if mean else math.nan
        p = 0.0 if mean else 1.0
    return PairedDifference(n, mean, sd, se, mean - half, mean + half, t, p, confidence, diffs)


def mean_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float | None,
                                                                   float | None]:
    """The mean of ``values`` and its ``confidence`` t interval (None, None for one value)."""
    v = np.asarray(values, float)
    diff = paired_difference(v, np.zeros_like(v), confidence)
    return diff.mean, diff.low, diff.high


def binomial_se(percent: float, n: int) -> float:
    """The standard error, in percentage points, of a share of ``n`` independent joints
    measured at ``percent`` %: ``100 sqrt(p (1 - p) / n)``."""
    if n < 1:
        raise ValueError(f"a share needs n >= 1 joints, got {n}")
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def bootstrap_se(correct, counted, resamples: int = 2000, seed: int = 0) -> float:
    """The standard error, in percentage points, of ``sum(correct) / sum(counted)`` when
    the *people* are resampled with replacement (``correct``, ``counted``: per person, the
    joints right and the joints scored)."""
    correct, counted = np.asarray(correct, float), np.asarray(counted, float)
    if correct.shape != counted.shape or correct.ndim != 1 or counted.sum() <= 0:
        raise ValueError("bootstrap_se needs per-person counts of equal length with at "
                         "least one scored joint")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(correct), (resamples, len(correct)))
    shares = correct[pick].sum(1) / np.maximum(counted[pick].sum(1), 1)
    return float(100.0 * shares.std(ddof=1))


def sampling_error(percent: float | None, correct, counted, seed: int = 0) -> dict:
    """The sampling error of one score on its validation set: the joints scored, the
    binomial and the people-bootstrap standard errors (percentage points)."""
    n = int(np.sum(counted))
    if percent is None or n < 1:
        return {"joints": n, "binomial_se": None, "bootstrap_se": None}
    return {"joints": n, "binomial_se": binomial_se(percent, n),
            "bootstrap_se": bootstrap_se(correct, counted, seed=seed)}
