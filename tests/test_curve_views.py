"""Views of very long curves: shared between rules, reduced for shape tests, exact where it counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from diagnose import curves

LONG = 200_000


def noisy_loss(n: int = LONG, seed: int = 0) -> pd.Series:
    rng = np.random.default_rng(seed)
    steps = np.arange(1, n + 1, dtype="float64")
    values = (2.3 * np.exp(-steps / (n / 5)) + 0.2) * np.exp(rng.normal(0, 0.05, n))
    return pd.Series(values, index=pd.Index(steps, name="step"), name="loss")


def full_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(curves, "SHAPE_POINTS", 10 * LONG)


def test_bin_medians_equal_a_group_by_median_for_uneven_bins() -> None:
    series = noisy_loss(10_007)
    reduced = curves.downsample(series, 300)
    bins = np.minimum((np.arange(len(series)) * 300) // len(series), 299)
    expected = series.groupby(bins).median().to_numpy()
    np.testing.assert_array_equal(reduced.to_numpy(), expected)
    np.testing.assert_array_equal(
        reduced.index.to_numpy(), pd.Series(series.index, index=bins).groupby(level=0).median().to_numpy()
    )


def test_a_causal_median_after_leading_nan_is_what_pandas_computes() -> None:
    values = noisy_loss(20_000).to_numpy().copy()
    values[:3] = np.nan
    series = pd.Series(values)
    expected = series.shift(1).rolling(20, min_periods=1).median()
    np.testing.assert_allclose(
        curves.rolling_median(series, 20, causal=True).to_numpy(), expected.to_numpy(), equal_nan=True
    )


def test_within_shared_views_a_curve_with_the_same_contents_is_computed_once() -> None:
    first, again = noisy_loss(), noisy_loss()
    assert first is not again
    with curves.shared_views():
        assert curves.rolling_median(first, 50) is curves.rolling_median(again, 50)
        assert curves.rolling_median(first, 50) is not curves.rolling_median(first, 51)
        changed = again.copy()
        changed.iloc[LONG // 2] *= 1.5
        assert curves.rolling_median(changed, 50) is not curves.rolling_median(first, 50)
    assert curves.rolling_median(first, 50) is not curves.rolling_median(again, 50)


def test_the_reduced_smoothing_follows_the_full_resolution_one(monkeypatch: pytest.MonkeyPatch) -> None:
    series = noisy_loss()
    reduced = curves.smooth(series)
    full_resolution(monkeypatch)
    full = curves.smooth(series)
    assert reduced.index.equals(series.index)
    relative = np.abs(reduced.to_numpy() - full.to_numpy()) / full.to_numpy()
    assert np.median(relative) < 0.01 and relative[1000:].max() < 0.05


def test_the_sampled_noise_matches_the_full_resolution_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    series = noisy_loss()
    sampled = curves.noise(series)
    full_resolution(monkeypatch)
    assert sampled == pytest.approx(curves.noise(series), rel=0.05)
    assert sampled == pytest.approx(0.05, rel=0.1)  # the scatter put into the curve


def test_spikes_on_a_long_curve_are_found_as_at_full_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    series = noisy_loss()
    for at in (5_000, 90_000, 150_000):
        series.iloc[at : at + 3] *= 10
    series.iloc[170_000:] *= 4  # jumps and stays up
    found = curves.find_spikes(series)
    full_resolution(monkeypatch)
    assert found == curves.find_spikes(series)
    assert [s.step for s in found] == [5_001.0, 90_001.0, 150_001.0, 170_001.0]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 6, 25])
def test_rolling_medians_from_sorted_windows_equal_pandas(window: int, causal: bool) -> None:
    rng = np.random.default_rng(window)
    curves_tried = [rng.normal(size=n) for n in (1, 2, window, 2 * window + 1, 97)] + [
        rng.integers(0, 3, size=60).astype("float64"),  # ties
        rng.choice([1.7e308, -1.7e308, 3.0, -0.0, 5e-324], size=40),  # near the float limit
    ]
    for values in curves_tried:
        series = pd.Series(values)
        if causal:
            expected = series.shift(1).rolling(window, min_periods=1).median()
        else:
            expected = series.rolling(window, center=True, min_periods=1).median()
        np.testing.assert_array_equal(curves._windowed_medians(values, window, causal), expected.to_numpy())


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 20, 25])
def test_medians_of_sorted_rows_equal_numpy_medians(size: int) -> None:
    rng = np.random.default_rng(size)
    tried = [
        rng.normal(size=(50, size)),
        rng.integers(0, 3, size=(50, size)).astype("float64"),  # ties
        rng.choice([np.inf, -np.inf, 1.7e308, -0.0, 5e-324], size=(50, size)),
    ]
    with np.errstate(all="ignore"):  # infinities of both signs in a row: NaN medians either way
        for rows in tried:
            np.testing.assert_array_equal(curves._row_medians(rows), np.median(rows, axis=1))


def test_every_point_that_clears_its_causal_median_is_a_candidate() -> None:
    values = np.log(noisy_loss(20_000, seed=4).to_numpy())
    values[[30, 4_000, 12_345]] += 2.0
    baseline = pd.Series(values).shift(1).rolling(20, min_periods=1).median().to_numpy()
    for height in (0.05, 0.2, 0.7):
        clears = set(np.flatnonzero(values - baseline > height))
        assert clears <= set(curves._may_clear(values, 20, height))


def test_a_long_curve_too_noisy_for_the_sparse_test_is_judged_at_every_point(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(7)
    series = pd.Series(np.exp(rng.normal(0, 1.0, LONG)), index=pd.Index(np.arange(1.0, LONG + 1), name="step"))
    values = curves.comparable(series).to_numpy()
    assert curves._spikes_of_long(values, 20, 0.7, 6.0) is None
    found = curves.find_spikes(series)
    full_resolution(monkeypatch)
    assert found == curves.find_spikes(series)


def test_within_shared_views_the_finite_curve_is_read_only_and_outside_it_is_the_callers() -> None:
    # Integer values: the finite curve is a new float array, which other rules asking for it then share.
    curve = pd.Series(np.arange(50, 0, -1), index=pd.Index(np.arange(1.0, 51.0), name="step"))
    with curves.shared_views():
        shared = curves.finite(curve)
        with pytest.raises(ValueError, match="read-only"):
            shared.iloc[0] = -1.0
        assert curves.finite(curve.copy()).iloc[0] == 50.0
    own = curves.finite(curve)
    own.iloc[0] = -1.0
    assert curve.iloc[0] == 50 and own.iloc[0] == -1.0


def test_curves_sharing_their_numbers_are_checksummed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    summed = []
    monkeypatch.setattr(curves.zlib, "crc32", lambda data: summed.append(len(data)) or 0)
    series = noisy_loss()
    with curves.shared_views():
        curves.finite(series)  # the finite curve shares the series' numbers and steps
        assert curves.is_positive(curves.finite(series))
        curves.rolling_median(pd.Series(series.to_numpy(), index=series.index, name="again", copy=False), 50)
    assert summed == [LONG, LONG]  # the numbers once, the steps once
    with curves.shared_views():  # a new block knows nothing of the last
        curves.finite(series)
    assert len(summed) == 4
