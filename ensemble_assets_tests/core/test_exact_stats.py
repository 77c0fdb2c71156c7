"""Exact, order-independent statistics (core/data/exact_stats.py): the same fixed-point integers in
SQL and NumPy, sums that do not depend on the order of the values, and means and correlations
that agree with the textbook figures."""

import math
from fractions import Fraction

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from ensemble_assets.core.data.exact_stats import (
    CORRELATION_BITS,
    MEAN_BITS,
    center_and_bound,
    exact_label_correlation,
    exact_mean,
    exact_sum,
    fixed_point,
    fixed_point_sql,
    mean_from_sum,
    scale_exponent,
)


def _values(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.44, 0.2, 5000), rng.lognormal(0, 6, 500), -rng.exponential(3, 500),
                           [0.5, 1.5, 2.5, -2.5, 0.0, 1e-300]])   # halves: rounded half to even everywhere


@pytest.mark.parametrize("bound, bits", [(1.0, MEAN_BITS), (0.44, MEAN_BITS), (3e300, MEAN_BITS),
                                         (1e-310, MEAN_BITS), (2.0 ** 40, CORRELATION_BITS), (7.5, CORRELATION_BITS)])
def test_the_scale_keeps_every_value_of_the_bound_within_its_bits(bound, bits):
    k = scale_exponent(bound, bits)
    assert abs(Fraction(bound) * Fraction(2) ** k) <= 2 ** bits
    assert abs(Fraction(bound) * Fraction(2) ** (k + 1)) >= 2 ** bits   # and at most one bit coarser than need be
    q = fixed_point(np.array([bound, -bound]), k)
    assert abs(int(q[0])) <= 2 ** bits and q[1] == -q[0]


@pytest.mark.parametrize("k, center", [(0, 0.0), (40, 0.0), (-20, 0.0), (1100, 0.0), (30, 0.37)])
def test_sql_and_numpy_map_each_value_to_the_same_integer(k, center):
    v = _values()
    if k == 1100:   # 2^1100 is not a double: two factors (values near the smallest doubles)
        v = np.ldexp(v / np.max(np.abs(v)), -1040)
    elif k == 40:
        v = v[np.abs(v) < 2 ** 20]
    elif k == 30:
        v = v[np.abs(v - center) < 2 ** 30 * 0.9]
    con = duckdb.connect()
    con.register("t", pa.table({"x": v}))
    sql = con.sql(f"SELECT {fixed_point_sql('x', k, center)} FROM t").fetchnumpy()
    got = np.asarray(next(iter(sql.values())), dtype=np.int64)
    assert np.array_equal(got, fixed_point(v, k, center))
    assert con.sql(f"SELECT {fixed_point_sql('CAST(NULL AS DOUBLE)', k)}").fetchall() == [(None,)]


def test_the_mean_is_the_same_in_any_order_and_float_sums_are_not():
    v = _values(1)
    orders = [v, v[::-1], np.random.default_rng(2).permutation(v), np.sort(v)]
    means = {exact_mean(o) for o in orders}
    assert len(means) == 1
    # the property is not trivial: summing the same floats in these orders gives different bits
    assert len({float(np.sum(o)) / len(o) for o in orders} | {sum(o.tolist()) / len(o) for o in orders}) > 1


def test_the_mean_is_the_true_mean_to_the_documented_resolution():
    v = _values(3)
    true = Fraction(sum(Fraction(x) for x in v.tolist()), len(v))
    bound = float(np.max(np.abs(v)))
    assert abs(Fraction(exact_mean(v)) - true) <= Fraction(bound) * Fraction(2) ** -MEAN_BITS
    # values of one magnitude lose no bit: the correctly rounded true mean
    w = np.random.default_rng(4).uniform(0.3, 0.6, 10_000)
    assert exact_mean(w) == float(Fraction(sum(Fraction(x) for x in w.tolist()), len(w)))
    assert exact_mean(np.full(7, 0.44051689189982995)) == 0.44051689189982995
    assert exact_mean(np.array([np.nan, np.inf, 2.0, 4.0])) == 3.0   # non-finite values are not values
    assert exact_mean(np.array([np.nan])) is None and exact_mean(np.zeros(3)) == 0.0
    assert mean_from_sum(0, 0, 5) is None


def test_sums_of_large_integers_do_not_overflow():
    q = np.full(16, 2 ** 62, dtype=np.int64)
    assert exact_sum(q) == 16 * 2 ** 62 and exact_sum(np.array([], dtype=np.int64)) == 0


def test_the_label_correlation_matches_pearson_and_ignores_order():
    rng = np.random.default_rng(5)
    y = rng.random(4000) < 0.2
    x = np.where(y, rng.normal(1.0, 1.0, 4000), rng.normal(0.0, 1.0, 4000))
    x[::97] = np.nan
    ok = np.isfinite(x)
    r = exact_label_correlation(x, y)
    assert r == pytest.approx(np.corrcoef(x[ok], y[ok].astype(float))[0, 1], abs=1e-8)
    perm = rng.permutation(len(x))
    assert exact_label_correlation(x[perm], y[perm]) == r
    assert exact_label_correlation(np.full(10, 3.0), y[:10]) is None              # constant feature
    assert exact_label_correlation(x[:10], np.zeros(10, dtype=bool)) is None      # one class
    assert exact_label_correlation(2 * x + 7, y) == pytest.approx(r, abs=1e-8)
    assert exact_label_correlation(-x, y) == pytest.approx(-r, abs=1e-8)


def test_center_and_bound_cover_the_range():
    c, b = center_and_bound(-3.0, 5.0)
    assert (c, b) == (1.0, 4.0)
    assert math.isfinite(center_and_bound(-1.7e308, 1.7e308)[1])
