"""Curve primitives on synthetic curves whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose import curves


def curve(values, steps=None) -> pd.Series:
    values = np.asarray(values, dtype="float64")
    steps = np.arange(1, len(values) + 1) if steps is None else np.asarray(steps)
    return pd.Series(values, index=steps)


def decaying(n=1000, noise=0.05, seed=0, floor=0.5) -> pd.Series:
    rng = np.random.default_rng(seed)
    x = np.arange(1, n + 1)
    return curve((2.0 * np.exp(-x / (n / 5)) + floor) * np.exp(rng.normal(0, noise, n)), x)


class TestCleaning:
    def test_finite_drops_nan_inf_and_merges_repeated_steps(self):
        raw = pd.Series([1.0, np.nan, np.inf, 2.0, 4.0], index=[3, 1, 2, 5, 5])
        clean = curves.finite(raw)
        assert clean.index.tolist() == [3.0, 5.0]
        assert clean.tolist() == [1.0, 3.0]

    def test_finite_of_empty_is_empty(self):
        assert curves.finite(pd.Series(dtype="float64")).empty

    def test_before_nonfinite_keeps_what_came_before_the_first_nan(self):
        raw = curve([3.0, 2.0, np.nan, 1.0, np.inf])
        assert curves.first_nonfinite_step(raw) == 3.0
        assert curves.before_nonfinite(raw).tolist() == [3.0, 2.0]
        assert curves.first_nonfinite_step(curve([1.0, 2.0])) is None

    def test_starts_midway_spots_a_continued_run(self):
        assert curves.starts_midway(curve([3, 2, 1], steps=[19_000, 30_000, 38_000]))
        assert not curves.starts_midway(curve([3, 2, 1], steps=[10, 500, 1000]))

    def test_downsample_keeps_level_and_ignores_a_spike(self):
        series = curve(np.ones(100_000))
        series.iloc[500] = 1e6
        reduced = curves.downsample(series, 100)
        assert len(reduced) == 100
        assert reduced.max() == 1.0
        assert reduced.index.is_monotonic_increasing

    def test_downsample_leaves_short_curves_alone(self):
        series = curve([3, 2, 1])
        assert curves.downsample(series, 10) is series


class TestScale:
    def test_log_only_for_positive_curves(self):
        assert curves.to_log(curve([1.0, np.e])).tolist() == pytest.approx([0.0, 1.0])
        assert curves.to_log(curve([1.0, 0.0])) is None
        assert curves.to_log(curve([-1.0, 2.0])) is None

    def test_comparable_of_a_negative_curve_is_range_scaled(self):
        scaled = curves.comparable(curve([-1.0, -2.0, -3.0]))
        assert np.ptp(scaled.to_numpy()) == pytest.approx(1.0)

    def test_comparable_of_a_constant_negative_curve_is_zero(self):
        assert (curves.comparable(curve([-1.0, -1.0])) == 0).all()

    def test_log_ratio(self):
        assert curves.log_ratio(np.e, 1.0) == pytest.approx(1.0)
        assert np.isnan(curves.log_ratio(-1.0, 1.0))


class TestSmoothing:
    def test_ema_of_constant_is_constant(self):
        assert curves.ema(curve(np.full(50, 3.0)), span=10).tolist() == pytest.approx([3.0] * 50)

    def test_rolling_median_causal_uses_only_earlier_points(self):
        med = curves.rolling_median(curve([1, 1, 1, 100, 1]), 3, causal=True)
        assert med.iloc[3] == 1.0  # the jump itself is not in its own baseline

    def test_smooth_removes_a_spike(self):
        series = decaying(noise=0.0)
        series.iloc[400] = 100.0
        assert curves.smooth(series).max() < 3.0

    def test_smooth_short_curve_is_unchanged(self):
        series = curve([1.0, 2.0])
        assert curves.smooth(series) is series


class TestLevelsAndNoise:
    def test_start_and_end_level_are_robust_medians(self):
        series = curve([5, 100, 5, 5, 5] + [1] * 95)
        assert curves.start_level(series) == 5
        assert curves.end_level(series) == 1

    def test_noise_measures_relative_scatter(self):
        quiet = curves.noise(decaying(noise=0.01))
        loud = curves.noise(decaying(noise=0.3))
        assert quiet == pytest.approx(0.01, rel=0.5)
        assert loud == pytest.approx(0.3, rel=0.3)

    def test_noise_needs_five_points(self):
        assert np.isnan(curves.noise(curve([1, 2, 3])))

    def test_difference_noise_reads_the_noise_of_few_points_and_ignores_a_trend(self):
        rng = np.random.default_rng(1)
        steady_rise = np.exp(np.linspace(0, 1, 30) + rng.normal(0, 0.1, 30))
        assert curves.difference_noise(curve(steady_rise)) == pytest.approx(0.1, rel=0.4)
        assert curves.difference_noise(curve(np.exp(np.linspace(0, 1, 30)))) == pytest.approx(0, abs=1e-9)
        # A rolling median follows a handful of noisy points; second differences do not.
        assert curves.difference_noise(curve(steady_rise)) > 2 * curves.noise(curve(steady_rise))
        assert np.isnan(curves.difference_noise(curve([1, 2, 3])))


class TestTrend:
    def test_theil_sen_recovers_slope_despite_outliers(self):
        x = np.arange(100)
        y = 10 - 0.05 * x
        y[[10, 50, 90]] = 1000
        fit = curves.trend(curve(y, x))
        assert fit.slope == pytest.approx(-0.05, rel=1e-6)
        assert fit.falling and not fit.rising

    def test_trend_of_long_curve_is_subsampled(self):
        x = np.arange(300_000)
        fit = curves.trend(curve(5 - 1e-5 * x, x))
        assert fit.points == curves.THEIL_SEN_MAX_POINTS
        assert fit.slope == pytest.approx(-1e-5, rel=1e-3)

    def test_trend_needs_three_points_over_distinct_steps(self):
        assert curves.trend(curve([1, 2])) is None
        assert curves.trend(curve([1, 2, 3], steps=[5, 5, 5])) is None

    def test_linearity_tells_a_line_from_a_decay(self):
        x = np.arange(1, 201)
        assert curves.linearity(curve(3 - 0.01 * x, x)) == pytest.approx(1.0)
        assert curves.linearity(curve(np.exp(-x / 10), x)) < 0.6


class TestSpikes:
    def test_finds_isolated_spike_and_its_recovery(self):
        series = decaying(n=500, noise=0.03)
        series.loc[250] = series.loc[250] * 20
        spikes = curves.find_spikes(series)
        assert [s.step for s in spikes] == [250.0]
        assert spikes[0].recovered_step == 251.0
        assert spikes[0].height == pytest.approx(np.log(20), abs=0.2)

    def test_noise_alone_is_not_a_spike(self):
        assert curves.find_spikes(decaying(n=2000, noise=0.1, seed=3)) == []

    def test_jump_that_stays_up_is_unrecovered(self):
        series = curve(np.r_[np.ones(100), np.full(50, 10.0)] * np.exp(np.random.default_rng(1).normal(0, 0.02, 150)))
        spikes = curves.find_spikes(series)
        assert spikes[0].step == 101.0
        assert spikes[0].recovered_step is None

    def test_spikes_on_a_negative_curve(self):
        rng = np.random.default_rng(2)
        series = curve(-1.0 + rng.normal(0, 0.01, 300))
        series.iloc[150] = 5.0
        assert [s.step for s in curves.find_spikes(series)] == [151.0]

    def test_too_short_for_spikes(self):
        assert curves.find_spikes(curve([1, 100, 1])) == []


class TestStallsAndChangePoints:
    def test_stall_starts_where_improvement_ends(self):
        x = np.arange(1, 1001)
        values = np.where(x < 300, 3.0 - 2.0 * x / 300, 1.0) * np.exp(np.random.default_rng(0).normal(0, 0.01, 1000))
        start = curves.stall_start(curve(values, x), tolerance=0.05)
        assert 250 <= start <= 350

    def test_still_improving_curve_stalls_only_in_its_last_points(self):
        x = np.arange(1, 1001)
        assert curves.stall_start(curve(3.0 - 0.002 * x, x), tolerance=0.02) > 950

    def test_stall_needs_five_points(self):
        assert curves.stall_start(curve([3, 2, 1]), tolerance=0.1) is None

    def test_change_point_at_a_level_drop(self):
        values = np.r_[np.full(200, 2.3), np.full(300, 0.5)] * np.exp(np.random.default_rng(0).normal(0, 0.02, 500))
        found = curves.change_points(curve(values), max_changes=1)
        assert found and abs(found[0] - 201) <= 3

    def test_flat_curve_has_no_change_points(self):
        assert curves.change_points(curve(np.ones(100))) == []


class TestAlignment:
    def test_value_at_interpolates_onto_other_steps(self):
        train = curve([4.0, 2.0, 0.0], steps=[0, 10, 20])
        assert curves.value_at(train, [5, 20, 30]).tolist() == [3.0, 0.0, 0.0]

    def test_value_at_on_empty_curve_is_nan(self):
        assert np.isnan(curves.value_at(pd.Series(dtype="float64"), [1])).all()

    def test_fraction_of_run(self):
        series = curve([1, 2, 3], steps=[100, 150, 300])
        assert curves.fraction_of_run(series, 200) == 0.5


@pytest.mark.parametrize("window", [1, 2, 3, 4, 50, 51, 200, 201])
@pytest.mark.parametrize("causal", [False, True])
def test_fast_rolling_median_equals_pandas_everywhere(window: int, causal: bool) -> None:
    rng = np.random.default_rng(window)
    series = pd.Series(rng.normal(size=5001) + np.linspace(0, 3, 5001), index=np.arange(5001) * 10.0)
    shifted = series.shift(1) if causal else series
    expected = shifted.rolling(window, center=not causal, min_periods=1).median()
    got = curves.rolling_median(series, window, causal=causal)
    assert np.allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-12, equal_nan=True)
    assert got.index.equals(series.index)


@pytest.mark.filterwarnings("ignore:invalid value")  # an infinite and a minus infinite middle pair: both warn
@pytest.mark.parametrize("n", [0, 1, 2, 4, 7, 40, 333])
def test_start_and_end_levels_are_pandas_medians_of_the_first_and_last_points(n: int) -> None:
    rng = np.random.default_rng(n)
    values = rng.normal(size=n)
    values[rng.random(n) < 0.3] = np.nan
    if n > 2:
        values[1], values[-2] = np.inf, -np.inf
    series = pd.Series(values, index=np.arange(n, dtype="float64"))
    for fraction in (0.05, 0.1, 0.5):
        first = series.iloc[: max(1, min(5, int(np.ceil(n * fraction))))].median()
        last = curves.tail(series, fraction, 3).median()
        np.testing.assert_equal(curves.start_level(series, fraction), first)
        np.testing.assert_equal(curves.end_level(series, fraction), last)
