"""Exact, order-independent column statistics for feature screening.

The fill values (column means) and the label correlations of ``feature_screening`` decide the
feature set and its imputation, so they enter the partition keys (docs/architecture.md#partition-keys)
and must be reproducible to the last bit. Floating-point addition is not associative: a parallel
``avg()`` adds its per-thread partial sums in whatever order the threads finish, and its last bits
change from run to run. So no float is ever summed here:

- every finite value ``x`` of a column becomes the integer ``q = round(x · 2^k)`` (half to even),
  a fixed function of the value alone, with ``k`` chosen from the column's exact bound so that
  ``|q| ≤ 2^bits``: for the mean ``bits = MEAN_BITS`` (62) over ``|x| ≤ max |x|``, for the
  correlation ``bits = CORRELATION_BITS`` (30) over ``x`` minus the middle of its range;
- the integers are summed exactly (DuckDB accumulates BIGINT sums in 128-bit HUGEINT; here in
  Python integers), and integer addition gives the same sum in any order, on any number of threads;
- the mean and the correlation are made from the integer sums with exact rational arithmetic and
  one correctly rounded conversion to float.

A value within a factor 2^9 of the column's largest magnitude loses no bit (a 53-bit mantissa
scaled below 2^62 is an integer), so the mean of a constant column is that constant and the mean
of values of one magnitude is the correctly rounded true mean; smaller values are resolved to
2^-62 of the largest magnitude. The correlation resolves 2^-30 of the half range, ample for a
screen at |r| ≥ 0.95. SQL (``fixed_point_sql``) and NumPy (``fixed_point``) map a value to the same
integer.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

MEAN_BITS = 62          # |q| ≤ 2^62: a BIGINT; sums of up to 2^64 rows fit a HUGEINT
CORRELATION_BITS = 30   # |q| ≤ 2^30: q² ≤ 2^60 is a BIGINT too


def scale_exponent(bound: float, bits: int) -> int:
    """The ``k`` for which every ``|x| ≤ bound`` scales to ``|x · 2^k| ≤ 2^bits`` (``bound`` > 0, finite)."""
    if not (math.isfinite(bound) and bound > 0):
        raise ValueError(f"scale bound must be a positive finite number, not {bound!r}")
    return bits - math.frexp(bound)[1]   # bound < 2^e


def center_and_bound(lo: float, hi: float) -> tuple[float, float]:
    """The middle of [lo, hi] and the largest distance of a value of [lo, hi] from it."""
    center = lo / 2 + hi / 2
    return center, max(hi - center, center - lo)


def _power_of_two_factors(k: int) -> tuple[float, ...]:
    """Doubles whose product is exactly 2^k (one, or two where 2^k itself is not a double)."""
    if -1022 <= k <= 1023:
        return (math.ldexp(1.0, k),)
    return math.ldexp(1.0, k // 2), math.ldexp(1.0, k - k // 2)


def fixed_point_sql(value: str, k: int, center: float = 0.0) -> str:
    """SQL of ``round((value - center) · 2^k)`` as BIGINT (DuckDB casts half to even); NULL stays NULL."""
    expr = f"({value})" if center == 0.0 else f"(({value}) - CAST({center!r} AS DOUBLE))"
    for f in _power_of_two_factors(k):
        expr = f"({expr} * CAST({f!r} AS DOUBLE))"
    return f"CAST({expr} AS BIGINT)"


def fixed_point(values: np.ndarray, k: int, center: float = 0.0) -> np.ndarray:
    """``round((values - center) · 2^k)`` (half to even) as int64: ``fixed_point_sql`` in NumPy."""
    x = np.asarray(values, dtype=np.float64)
    if center != 0.0:
        x = x - center
    for f in _power_of_two_factors(k):
        x = x * f
    return np.rint(x).astype(np.int64)


def exact_sum(q: np.ndarray) -> int:
    """The exact sum of int64 values (Python integers: no overflow, no order)."""
    return int(np.sum(np.asarray(q, dtype=np.int64).astype(object))) if len(q) else 0


def mean_from_sum(total: int, count: int, k: int) -> float | None:
    """``total / count / 2^k``, correctly rounded (None for no values)."""
    if count <= 0:
        return None
    return float(Fraction(total, count) * (Fraction(2) ** -k))


def correlation_from_sums(n: int, s: int, ss: int, n_pos: int, s_pos: int) -> float | None:
    """Pearson correlation of ``q`` with a 0/1 label from exact sums: ``n`` values, ``s = Σq``,
    ``ss = Σq²``, ``n_pos`` of them labelled 1 and ``s_pos = Σq`` over those. None when either
    side is constant (as SQL ``corr`` gives NULL/NaN). The same value in any summation order."""
    var_x = n * ss - s * s
    var_y = n * n_pos - n_pos * n_pos
    if n < 2 or var_x <= 0 or var_y <= 0:
        return None
    cov = n * s_pos - s * n_pos
    return math.copysign(math.sqrt((cov * cov) / (var_x * var_y)), cov) if cov else 0.0


def exact_mean(values: np.ndarray) -> float | None:
    """Mean of finite ``values`` by the fixed-point rule above (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    bound = float(np.max(np.abs(v)))
    if bound == 0.0:
        return 0.0
    k = scale_exponent(bound, MEAN_BITS)
    return mean_from_sum(exact_sum(fixed_point(v, k)), len(v), k)


def exact_label_correlation(values: np.ndarray, positive: np.ndarray) -> float | None:
    """Pearson correlation of the finite ``values`` with the boolean ``positive`` of their rows."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    v, pos = v[ok], np.asarray(positive, dtype=bool)[ok]
    if len(v) < 2:
        return None
    center, bound = center_and_bound(float(v.min()), float(v.max()))
    if bound == 0.0:
        return None
    q = fixed_point(v, scale_exponent(bound, CORRELATION_BITS), center)
    return correlation_from_sums(len(q), exact_sum(q), exact_sum(q * q), int(pos.sum()), exact_sum(q[pos]))
