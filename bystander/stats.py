"""Domain-free statistics for evaluation and studies: 95 % intervals.

- :func:`mean_ci`: mean and Student-t interval of a sample (NaNs ignored).
- :func:`wilson_ci`: a rate and its Wilson score interval.
- :func:`t_critical_95`: the two-sided 95 % Student-t critical value.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["mean_ci", "t_critical_95", "wilson_ci"]

# Two-sided 95 % Student-t critical values, df = 1..30 (then 1.96 beyond 120).
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t_critical_95(df: int) -> float:
    """Two-sided 95 % Student-t critical value for ``df`` >= 1 degrees of freedom."""
    if df < 1:
        raise ValueError(f"df: expected an int >= 1, got {df}")
    if df <= 30:
        return _T95[df - 1]
    if df <= 40:
        return 2.042 + (2.021 - 2.042) * (df - 30) / 10
    if df <= 60:
        return 2.021 + (2.000 - 2.021) * (df - 40) / 20
    if df <= 120:
        return 2.000 + (1.980 - 2.000) * (df - 60) / 60
    return 1.960


def mean_ci(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval of finite ``values`` ``(n,)`` (NaNs ignored)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if len(v) == 1:
        return m, math.nan, math.nan
    half = t_critical_95(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return m, m - half, m + half


def wilson_ci(successes: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """Rate and 95 % Wilson score interval of ``successes`` out of ``n`` trials."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return p, max(0.0, centre - half), min(1.0, centre + half)
