"""ECE, reliability bins, Brier score and log loss against hand-computed cases."""

import numpy as np
import pytest

from ensemble_assets.core.evaluation.calibration_analysis import (
    binary_log_loss,
    brier_score,
    calibration_report,
    expected_calibration_error,
    reliability_bins,
)

# six rows; probabilities and outcomes chosen so every bin can be computed by hand
P = np.array([0.05, 0.15, 0.35, 0.45, 0.75, 0.95])
Y = np.array([0, 1, 0, 1, 1, 1])


def test_ece_uniform_bins_hand_computed():
    # 2 uniform bins: [0, .5) holds .05 .15 .35 .45 (mean .25, positives 2/4 = .5) → |.25-.5| = .25, weight 4/6
    #                 [.5, 1] holds .75 .95        (mean .85, positives 2/2 = 1)  → |.85-1|  = .15, weight 2/6
    expected = 4 / 6 * 0.25 + 2 / 6 * 0.15
    assert expected_calibration_error(Y, P, n_bins=2, strategy="uniform") == pytest.approx(expected)
    # 10 uniform bins: every row alone in its bin → mean |p - y|
    assert expected_calibration_error(Y, P, n_bins=10) == pytest.approx(np.mean(np.abs(P - Y)))


def test_ece_quantile_bins_hand_computed():
    # 3 quantile bins over six distinct values: edges at the 0, 1/3, 2/3, 1 quantiles
    # (np.quantile, linear): 0.05, 0.2833.., 0.55, 0.95 → bins {.05 .15} {.35 .45} {.75 .95}
    # |.10 - .5| = .40, |.40 - .5| = .10, |.85 - 1| = .15, each weight 1/3
    expected = (0.40 + 0.10 + 0.15) / 3
    assert expected_calibration_error(Y, P, n_bins=3, strategy="quantile") == pytest.approx(expected)
    bins = reliability_bins(Y, P, 3, "quantile")
    assert bins["count"].tolist() == [2, 2, 2]
    assert bins["fraction_positive"].tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_quantile_bins_merge_tied_edges_and_uniform_keeps_p_equal_one():
    p = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    b = reliability_bins(y, p, 5, "quantile")
    assert b["count"].sum() == 6 and len(b["count"]) == 2
    u = reliability_bins(y, p, 4, "uniform")
    assert u["count"].tolist() == [4, 2] and u["upper"][-1] == 1.0
    assert expected_calibration_error(y, p, 4) == pytest.approx(4 / 6 * 0.25)


def test_perfectly_calibrated_bins_have_zero_ece():
    p = np.repeat([0.25, 0.75], 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(y, p, 10) == pytest.approx(0.0)
    assert expected_calibration_error(y, p, 2, "quantile") == pytest.approx(0.0)


def test_brier_and_log_loss_hand_computed():
    assert brier_score(Y, P) == pytest.approx(np.mean((P - Y) ** 2))
    assert brier_score([1, 0], [0.8, 0.4]) == pytest.approx((0.04 + 0.16) / 2)
    assert binary_log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2)


def test_calibration_report_per_class_and_kind():
    y = np.array([0, 1, 2, 0, 1, 2])
    proba = np.eye(3)[y] * 0.9 + 0.1 / 3
    raw = np.full((6, 3), 1 / 3)
    summary, bins = calibration_report(y, {"calibrated": proba, "raw": raw}, n_bins=10)
    assert [(r["kind"], r["class"]) for r in summary] == [
        ("calibrated", "neither"), ("calibrated", "donor"), ("calibrated", "acceptor"),
        ("raw", "neither"), ("raw", "donor"), ("raw", "acceptor")]
    raw_donor = next(r for r in summary if r["kind"] == "raw" and r["class"] == "donor")
    assert raw_donor["ece_uniform"] == pytest.approx(0.0)  # 1/3 predicted, 1/3 positive
    cal_donor = next(r for r in summary if r["kind"] == "calibrated" and r["class"] == "donor")
    # two bins: p = .0333 (4 rows, none positive) and p = .9333 (2 rows, all positive)
    assert cal_donor["ece_uniform"] == pytest.approx(4 / 6 * (0.1 / 3) + 2 / 6 * (0.2 / 3))
    assert {b["strategy"] for b in bins} == {"uniform", "quantile"}


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="strategy"):
        reliability_bins(Y, P, 3, "log")
    with pytest.raises(ValueError, match="5 values, p has 6"):
        reliability_bins(Y[:-1], P, 3)
