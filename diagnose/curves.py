"""Robust primitives for reading training curves: smoothing, trends, spikes, stalls.

Every function takes a ``pd.Series`` of values indexed by step (what
``Run.series`` returns) and copes with what real logs hold: per-step noise,
a handful of points, hundreds of thousands of points, NaN and Inf, negative
losses, uneven logging intervals (appended runs whose step counter restarts
are split apart by the readers, before any rule sees them). Nothing loops
in Python over the points; long curves are reduced with :func:`downsample`
before anything quadratic (Theil-Sen, segmentation) runs on them.

Shape comparisons are scale-free: a positive curve is compared on a log scale
(a drop from 2.0 to 1.0 weighs the same as one from 0.02 to 0.01); a curve that
goes to zero or below is compared on its own range instead.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from diagnose import ordering

# 1.4826 * MAD estimates the standard deviation of normally distributed data.
MAD_TO_STD = 1.4826
# Theil-Sen is O(n^2) in memory and time; above this many points the curve is
# reduced to bin medians first (the estimate barely moves, the cost is bounded).
THEIL_SEN_MAX_POINTS = 400
# The two-sided 95% quantile of the standard normal distribution (norm.ppf(0.975)), for the
# interval of a Theil-Sen slope as Sen (1968) gives it.
_Z_95 = 1.959963984540054
# Curves at least this long are worth sharing between rules (see `shared_views`);
# on shorter ones computing again is as cheap as recognising the curve (a checksum).
SHARE_MIN_POINTS = 64
# Shape tests (smoothing, noise) on a curve longer than this read a reduced
# view of it: bin medians, or evenly spaced stretches at full resolution. Every
# log in sample_runs and the real-run corpus is shorter, so nothing there changes.
SHAPE_POINTS = 50_000

_Result = TypeVar("_Result")
# Per thread: a live judgement may analyse one run on its own thread while the training thread
# analyses another (two watched models), and neither may see or end the other's block.
_local = threading.local()


# -- sharing work between rules --------------------------------------------------


@contextmanager
def shared_views() -> Iterator[None]:
    """Within this block, what is computed on a long curve is computed once and shared.

    The rules each read the same few curves (the loss, the gradient norm) and
    ask for the same views of them: the finite part, the same rolling medians,
    the same bin medians. Each is kept, keyed by the curve's contents, until
    the block ends (the engine opens one per analysed run), so a second rule
    asking for it pays a checksum of the curve instead of another pass. Within
    the block the curves given and returned are only read, never changed in
    place (the rules copy what they change).
    """
    outer = getattr(_local, "views", None)
    _local.views = {} if outer is None else outer
    try:
        yield
    finally:
        _local.views = outer


def _shared(kind: str, series: pd.Series, params: tuple, compute: Callable[[], _Result]) -> _Result:
    """``compute()``, or what it gave before within `shared_views` for a curve with these contents."""
    views = getattr(_local, "views", None)
    if views is None or series is None or len(series) < SHARE_MIN_POINTS:
        return compute()
    key = (kind, params, series.name, _fingerprint(views, series))
    if key not in views:
        views[key] = compute()
    return views[key]


def _fingerprint(views: dict[tuple, Any], series: pd.Series) -> tuple:
    """What tells two long curves apart: their length and checksums of every value and step. A
    curve seen before in this block is known by its identity (curves are read, never changed in
    place, within `shared_views`); it is held here, so its identity is not reused."""
    seen = views.get(("seen", id(series)))
    if seen is not None and seen[0] is series:
        return seen[1]
    values = np.ascontiguousarray(series.to_numpy(dtype="float64"))
    fingerprint = (len(values), _values_checksum(views, values), *_steps_fingerprint(views, series.index))
    views[("seen", id(series))] = (series, fingerprint)
    return fingerprint


def _values_checksum(views: dict[tuple, Any], values: np.ndarray) -> int:
    """A checksum of a curve's numbers; known by their memory when seen before. Many curves share
    the numbers of another (`finite` of a run's series, the same series read with ``keep_nan``), and
    a checksum of a million values costs 2-6 ms. The array is held here, so its memory is not reused
    by another curve within the block (and numbers are read, never changed in place, there)."""
    where = ("seen values", values.__array_interface__["data"][0], values.shape, values.strides)
    seen = views.get(where)
    if seen is None:
        seen = views[where] = (values, zlib.crc32(values))
    return seen[1]


def _steps_fingerprint(views: dict[tuple, Any], index: pd.Index) -> tuple:
    """The dtype and a checksum of a curve's steps; known by identity when seen before (the curves
    of one run, and the views computed of them, mostly share one index)."""
    seen = views.get(("seen index", id(index)))
    if seen is not None and seen[0] is index:
        return seen[1]
    steps = np.ascontiguousarray(index.to_numpy())
    if steps.dtype.kind not in "iuf":
        steps = np.ascontiguousarray(steps, dtype="float64")
    fingerprint = (steps.dtype.str, zlib.crc32(steps))
    views[("seen index", id(index))] = (index, fingerprint)
    return fingerprint


# -- cleaning -------------------------------------------------------------------


def finite(series: pd.Series) -> pd.Series:
    """Finite values as float, sorted by step, one value per step (the mean of repeats)."""
    if series is None or len(series) == 0:
        return pd.Series(dtype="float64")
    return _shared("finite", series, (), lambda: _finite(series))


def _finite(series: pd.Series) -> pd.Series:
    numbers, steps = np.asarray(series, dtype="float64"), np.asarray(series.index, dtype="float64")
    usable = np.isfinite(numbers) & np.isfinite(steps)
    # Steps compared in place, not through np.diff: a long curve's 8 MB temporary costs more in page faults.
    if usable.all() and (steps[1:] > steps[:-1]).all():  # the common case: nothing to drop or sort
        same = series.index.dtype == "float64" and series.index.name == "step"  # a run's series: its index is kept
        index = series.index if same else pd.Index(steps, name="step")
        if getattr(_local, "views", None) is None:
            return pd.Series(numbers, index=index)
        # Within `shared_views` curves are only read: the view shares the curve's numbers, read-only, so
        # a rule that wrote into it would fail there rather than change the run and other rules' views.
        numbers = numbers.view()
        numbers.flags.writeable = False
        return pd.Series(numbers, index=index, copy=False)
    values = pd.Series(numbers, index=steps)[usable]
    if values.index.has_duplicates:
        values = values.groupby(level=0).mean()
    values = values.sort_index()
    values.index.name = "step"
    return values


def first_nonfinite_step(series: pd.Series) -> float | None:
    """Step of the first NaN or Inf in a series read with ``keep_nan=True``; None when all finite."""
    return _shared("first nonfinite", series, (), lambda: _first_nonfinite_step(series))


def _first_nonfinite_step(series: pd.Series) -> float | None:
    bad = ~np.isfinite(series.to_numpy(dtype="float64"))
    return float(series.index[np.argmax(bad)]) if bad.any() else None


def before_nonfinite(series: pd.Series) -> pd.Series:
    """The finite curve up to the first NaN or Inf (what the run did while it still worked).

    Everything after a loss turns NaN is a consequence of it; rules that judge
    the shape of a curve look only at this part.
    """
    return _shared("before_nonfinite", series, (), lambda: _before_nonfinite(series))


def _before_nonfinite(series: pd.Series) -> pd.Series:
    cut = first_nonfinite_step(series)
    return finite(series if cut is None else series[series.index < cut])


def starts_midway(series: pd.Series, fraction: float = 0.25) -> bool:
    """True when the first logged step is past ``fraction`` of the last: a resumed or continued run.

    Such a log misses the start of training, so "where the loss started"
    means nothing there.
    """
    if len(series) < 2:
        return False
    first, last = float(series.index[0]), float(series.index[-1])
    return last > 0 and first > fraction * last


def downsample(series: pd.Series, max_points: int) -> pd.Series:
    """At most ``max_points`` points: medians of equal-count bins, indexed by each bin's median step.

    Medians keep the level of a noisy curve and ignore isolated spikes, so the
    reduced curve is fit for trend and plateau tests. Short curves come back unchanged.
    A curve longer than `SHAPE_POINTS` is read once, into its `SHAPE_POINTS` bin medians;
    coarser views of it are bin medians of those (a median of medians of neighbouring points).
    """
    if len(series) <= max_points:
        return series
    if len(series) > SHAPE_POINTS > max_points:
        return _shared(
            "downsample", series, (max_points,), lambda: _bin_medians(downsample(series, SHAPE_POINTS), max_points)
        )
    return _shared("downsample", series, (max_points,), lambda: _bin_medians(series, max_points))


def _bin_medians(series: pd.Series, max_points: int) -> pd.Series:
    n = len(series)
    # Point i falls in bin i * max_points // n, so bin b starts at the first i with i * max_points >= b * n.
    starts = -(-np.arange(max_points) * n // max_points)
    values, steps = series.to_numpy(dtype="float64"), np.asarray(series.index, dtype="float64")
    if np.isnan(values).any():
        bins = np.repeat(np.arange(max_points), np.diff(np.r_[starts, n]))
        medians = pd.Series(values, index=bins).groupby(level=0).median().to_numpy()
    else:
        medians = _equal_bin_medians(values, starts)
    in_order = ordering.never_falls(steps)
    middles = _bin_middles(steps, starts) if in_order else _equal_bin_medians(steps, starts)
    reduced = pd.Series(medians, index=middles, name=series.name)
    reduced.index.name = "step"
    return reduced


def _bin_middles(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """`_equal_bin_medians` of values already in order (the steps of a curve): the middle of each bin."""
    ends = np.r_[starts[1:], len(values)] - 1
    return (values[(starts + ends) // 2] + values[(starts + ends + 1) // 2]) / 2


def _equal_bin_medians(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Median of each bin of consecutive values (bins of at most two sizes, each starting at one of
    ``starts``), without a group-by: the bins of each size are stacked as rows and reduced at once,
    by sorting them (numpy sorts short rows several times faster than it selects their middle). The
    rows are taken from a strided view of every window of that size: a million values are gathered
    without a million indices (8 MB more of fresh memory) to gather them by."""
    sizes = np.diff(np.r_[starts, len(values)])
    medians = np.empty(len(starts))
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        gathered = np.lib.stride_tricks.sliding_window_view(values, size)[starts[rows]]  # a copy, not a view
        medians[rows] = _row_medians(gathered)
    return medians


def _row_medians(rows: np.ndarray) -> np.ndarray:
    """``np.median(rows, axis=1)``, the same numbers, from sorted rows (rows holding NaN: by np.median).
    The rows are sorted in place: the caller's gathered copy, of no further use. A sorted copy of
    the 50,000 bins of a million-point curve took twice as long (0.008 s against 0.004 s, and 0.04 s
    when its 8 MB were fresh memory)."""
    if np.isnan(rows).any():
        return np.median(rows, axis=1)
    rows.sort(axis=1)
    ordered = rows
    size = rows.shape[1]
    if size % 2:
        return ordered[:, size // 2]
    return (ordered[:, size // 2 - 1] + ordered[:, size // 2]) / 2


# -- scale ------------------------------------------------------------------------


def is_positive(series: pd.Series) -> bool:
    """True when every value is above zero, so a log scale is meaningful."""
    # Shared: the rules ask it of the same long curves some twenty times, a pass over each.
    return len(series) > 0 and _shared("positive", series, (), lambda: bool((series.to_numpy() > 0).all()))


def to_log(series: pd.Series) -> pd.Series | None:
    """Natural log of a positive curve; None when any value is zero or negative."""
    if not is_positive(series):
        return None
    return pd.Series(np.log(series.to_numpy()), index=series.index, name=series.name, copy=False)  # a new array


def comparable(series: pd.Series) -> pd.Series:
    """The curve on the scale shapes are compared on: log when positive, else divided by its range.

    Either way a difference of 0.1 means about the same thing on any run:
    about 10% on a log scale, a tenth of the travelled range otherwise.
    """
    return _shared("comparable", series, (), lambda: _comparable(series))


def _comparable(series: pd.Series) -> pd.Series:
    logged = to_log(series)
    if logged is not None:
        return logged
    with np.errstate(over="ignore"):  # values near the float limit: an infinite spread flattens the curve
        spread = float(series.max() - series.min()) if len(series) else 0.0
    return series / spread if spread > 0 else series - series


def log_ratio(numerator: float, denominator: float) -> float:
    """log(numerator / denominator) for positive numbers, NaN otherwise."""
    if numerator <= 0 or denominator <= 0:
        return float("nan")
    return float(np.log(numerator / denominator))


# -- smoothing --------------------------------------------------------------------


def ema(series: pd.Series, span: float) -> pd.Series:
    """Exponential moving average, bias-corrected at the start (as TensorBoard's smoothing is not)."""
    return series.ewm(span=max(span, 1.0), adjust=True).mean()


def rolling_median(series: pd.Series, window: int, *, causal: bool = False) -> pd.Series:
    """Median over ``window`` points: centred, or of the points before each one when ``causal``.

    Windows cut short by the ends of the curve hold the points there are.
    """
    window = max(int(window), 1)
    return _shared("rolling_median", series, (window, causal), lambda: _rolling_median(series, window, causal))


def _rolling_median(series: pd.Series, window: int, causal: bool) -> pd.Series:
    values = series.to_numpy(dtype="float64")
    missing = np.isnan(values)
    if causal and missing.any() and not missing[np.argmin(missing) :].any():
        # Only a run of NaN first (what a causal median leaves at the start): a
        # causal window there holds nothing, later ones skip it.
        lead = int(np.argmin(missing))
        rest = _rolling_median(series.iloc[lead:], window, causal)
        return pd.Series(np.r_[values[:lead], rest.to_numpy()], index=series.index, name=series.name)
    if missing.any() or not np.isfinite(values).all():
        return _pandas_rolling_median(series, window, causal)
    if len(values) * window <= _WINDOWED_MAX:
        return pd.Series(_windowed_medians(values, window, causal), index=series.index, name=series.name)
    if len(values) <= SHAPE_POINTS or len(values) < 4 * window:
        return _pandas_rolling_median(series, window, causal)
    # Very long curves (the rules read reduced views of them; a spike test on a
    # very noisy one reads every point): scipy's rank filters are several times
    # faster than pandas' rolling median and exact wherever the window is whole,
    # which on these outweighs importing scipy. pandas computes the windows cut
    # short at the ends, on short slices.
    whole = _whole_window_medians(values, window)
    result = np.empty_like(values)
    n, half = len(values), window // 2
    if causal:  # points i - window .. i - 1
        result[window:] = whole[half : n - window + half]
        result[:window] = _pandas_rolling_median(series.iloc[: window + 1], window, True).to_numpy()[:window]
    else:
        result[half : n - (window - 1) // 2] = whole[half : n - (window - 1) // 2]
        result[:half] = _pandas_rolling_median(series.iloc[: 2 * window], window, False).to_numpy()[:half]
        tail_count = (window - 1) // 2
        if tail_count:
            result[n - tail_count :] = _pandas_rolling_median(series.iloc[-2 * window :], window, False).to_numpy()[
                -tail_count:
            ]
    return pd.Series(result, index=series.index, name=series.name)


# Curves up to this many points times the window get their rolling medians from every window at once
# (numpy, one array of that many values: 8 MB); longer ones from pandas' or scipy's running medians.
_WINDOWED_MAX = 1_000_000


def _windowed_medians(values: np.ndarray, window: int, causal: bool) -> np.ndarray:
    """`_pandas_rolling_median` of finite values, from every window at once: each window sorted, its
    middle value (or the mean of its two middle values) taken; the same medians at a fraction of
    pandas' cost on a short curve. Windows cut short by an end hold the points there are."""
    n = len(values)
    starts = np.arange(n) - (window if causal else window // 2)  # each point's window: starts .. starts + window
    padded = np.concatenate([np.full(window, np.nan), values, np.full(window, np.nan)])
    ordered = np.sort(np.lib.stride_tricks.sliding_window_view(padded, window)[starts + window], axis=1)  # NaN last
    counts = np.minimum(starts + window, n) - np.maximum(starts, 0)
    rows = np.flatnonzero(counts > 0)
    low, high = ordered[rows, (counts[rows] - 1) // 2], ordered[rows, counts[rows] // 2]
    result = np.full(n, np.nan)
    with np.errstate(over="ignore"):  # two middle values near the float limit: pandas' mean is infinite too
        result[rows] = np.where(counts[rows] % 2 == 1, low, (low + high) / 2)
    return result


def _pandas_rolling_median(series: pd.Series, window: int, causal: bool) -> pd.Series:
    if causal:
        return series.shift(1).rolling(window, min_periods=1).median()
    return series.rolling(window, center=True, min_periods=1).median()


def _whole_window_medians(values: np.ndarray, window: int) -> np.ndarray:
    """Median of the window starting ``window // 2`` points before each point (pandas' centred window;
    the mean of the two middle values for an even window). Entries whose window runs past an end are
    padded, not meaningful."""
    from scipy import ndimage  # only long curves need it; importing scipy costs a short report more than its rules

    if window % 2:
        return ndimage.median_filter(values, size=window, mode="nearest")
    low = ndimage.rank_filter(values, window // 2 - 1, size=window, mode="nearest")
    high = ndimage.rank_filter(values, window // 2, size=window, mode="nearest")
    return (low + high) / 2


def rolling_mad(series: pd.Series, window: int, *, causal: bool = False) -> pd.Series:
    """Scaled median absolute deviation from the rolling median (a robust local std)."""
    deviation = np.abs(_residual(series, rolling_median(series, window, causal=causal)))
    return (
        rolling_median(pd.Series(deviation, index=series.index, name=series.name), window, causal=causal) * MAD_TO_STD
    )


def _residual(series: pd.Series, level: pd.Series) -> np.ndarray:
    """``series - level`` for a level computed from the series (the same steps), as an array: the
    numbers pandas gives, without its alignment and a new Series (the rules ask for this often)."""
    return series.to_numpy(dtype="float64") - level.to_numpy(dtype="float64")


def default_window(n: int, fraction: float = 0.05, lo: int = 5, hi: int = 200) -> int:
    """A smoothing window that scales with the curve: ``fraction`` of it, within [lo, hi] points."""
    return int(np.clip(round(n * fraction), lo, hi))


def smooth(series: pd.Series, window: int | None = None) -> pd.Series:
    """Rolling median then a light EMA: robust to spikes, keeps the shape of drops."""
    if len(series) < 3:
        return series
    window = window or default_window(len(series))
    if len(series) > SHAPE_POINTS:
        return _shared("smooth", series, (window,), lambda: _smooth_reduced(series, window))
    return ema(rolling_median(series, window), span=max(window / 2, 1.0))


def _smooth_reduced(series: pd.Series, window: int) -> pd.Series:
    """`smooth` of a very long curve from its bin medians (each already the median of a few
    neighbouring points), the window shrunk to match, read back at every step."""
    reduced = downsample(series, SHAPE_POINTS)
    bin_window = max(3, round(window * SHAPE_POINTS / len(series)))
    smoothed = ema(rolling_median(reduced, bin_window), span=max(bin_window / 2, 1.0))
    return pd.Series(value_at(smoothed, series.index), index=series.index, name=series.name)


# -- levels and noise -------------------------------------------------------------


def head(series: pd.Series, fraction: float = 0.1, min_points: int = 1) -> pd.Series:
    """The first ``fraction`` of the points (at least ``min_points``)."""
    return series.iloc[: max(min_points, int(np.ceil(len(series) * fraction)))]


def tail(series: pd.Series, fraction: float = 0.1, min_points: int = 1) -> pd.Series:
    """The last ``fraction`` of the points (at least ``min_points``)."""
    return series.iloc[-max(min_points, int(np.ceil(len(series) * fraction))) :]


def start_level(series: pd.Series, fraction: float = 0.05, max_points: int = 5) -> float:
    """Median of the first few points: where the run started, robust to one odd value."""
    count = max(1, min(max_points, int(np.ceil(len(series) * fraction))))
    return _median(series.to_numpy(dtype="float64")[:count])


def end_level(series: pd.Series, fraction: float = 0.1, min_points: int = 3) -> float:
    """Median of the last ``fraction`` of the run: where it ended up."""
    count = max(min_points, int(np.ceil(len(series) * fraction)))
    return _shared("end_level", series, (count,), lambda: _median(series.to_numpy(dtype="float64")[-count:]))


def _median(values: np.ndarray) -> float:
    """pandas' median (NaN skipped; NaN when nothing is left) on an array: these few points are
    asked for by most rules, and a pandas slice and median cost far more than the numbers."""
    values = values[~np.isnan(values)]
    return float(np.median(values)) if len(values) else float("nan")


def noise(series: pd.Series, window: int | None = None) -> float:
    """Typical point-to-point scatter around the local level, on the comparable scale.

    On a positive curve 0.1 means points scatter about 10% around their
    rolling median. NaN for fewer than 5 points.
    """
    if len(series) < 5:
        return float("nan")
    scaled = comparable(series)
    window = window or default_window(len(series), lo=5, hi=50)
    if len(series) > SHAPE_POINTS:
        return _shared("noise", series, (window,), lambda: _sampled_noise(scaled, window))
    residual = _residual(scaled, rolling_median(scaled, window))
    return float(np.median(np.abs(residual)) * MAD_TO_STD)


def difference_noise(series: pd.Series, *, raw: bool = False) -> float:
    """Standard deviation of one point's noise, on the comparable scale, from second differences.

    For a few noisy evaluations, where a rolling median follows the points
    themselves (and `noise` reads too little), the second difference
    ``x[i-1] - 2 x[i] + x[i+1]`` of independent noise has 6 times its variance,
    and a steady trend adds nothing to it; its scaled median absolute value
    ignores a bend or a jump or two. NaN under 4 points. ``raw``: in the curve's own units instead (an
    accuracy's points, where a log scale would weigh the same miss differently at 0.3 and at 0.9).
    """
    if len(series) < 4:
        return float("nan")
    values = (series if raw else comparable(series)).to_numpy(dtype="float64")
    second = values[:-2] - 2 * values[1:-1] + values[2:]
    return float(np.median(np.abs(second)) * MAD_TO_STD / np.sqrt(6))


def _sampled_noise(scaled: pd.Series, window: int) -> float:
    """`noise` of a very long curve from evenly spaced stretches of it (see `_stretches`)."""
    _, residual = _stretches(scaled.to_numpy(), window)
    return float(np.median(np.abs(residual)) * MAD_TO_STD)


# A very long curve's local scatter is measured on this many evenly spaced stretches of it.
_STRETCHES = 20


def _stretch_length(window: int) -> int:
    return max(SHAPE_POINTS // _STRETCHES, 4 * window)


def _stretch_starts(n: int, window: int) -> np.ndarray:
    return np.linspace(0, n - _stretch_length(window), _STRETCHES).astype(int)


def _stretches(values: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling medians over `_STRETCHES` evenly spaced stretches of a very long curve, together
    `SHAPE_POINTS` long, and the points' residuals from them (whole windows only): scatter is a
    local property, so a sample of stretches across the run measures it as the whole curve does,
    at a fraction of the cost. The stretches are put end to end for one rolling median (pandas';
    at this length it beats importing scipy), of which each keeps the windows within it."""
    length = _stretch_length(window)
    stretches = values[_stretch_starts(len(values), window)[:, None] + np.arange(length)]
    joined = pd.Series(stretches.ravel()).rolling(window, center=True).median().to_numpy()
    half = window // 2
    medians = joined.reshape(stretches.shape)[:, half : length - half]
    return medians, stretches[:, half : length - half] - medians


def scatter_and_level(series: pd.Series, window: int) -> tuple[float, float]:
    """(robust scatter of the points around their rolling median, the median of that rolling
    median), both in the curve's own units. A curve longer than `SHAPE_POINTS` is measured on
    evenly spaced stretches of it, as `noise` is."""
    if len(series) > SHAPE_POINTS and len(series) > 4 * window and not series.isna().any():
        medians, residual = _shared(
            "stretches", series, (window,), lambda: _stretches(series.to_numpy(dtype="float64"), window)
        )
        return float(np.median(np.abs(residual)) * MAD_TO_STD), float(np.median(medians))
    local = rolling_median(series, window)
    return float(np.median(np.abs(_residual(series, local))) * MAD_TO_STD), _median(local.to_numpy())


def bounce(series: pd.Series, window: int = 5) -> pd.Series:
    """Each point's distance from the centred rolling median of its neighbours, on the comparable scale.

    What is left of a curve once its level is taken out: on a positive curve
    0.7 means a point stands twice as high as the points around it. A trend
    barely shows in it (the median follows a steady fall), an evaluation that
    jumps and comes back does.
    """
    scaled = comparable(series)
    return pd.Series(_residual(scaled, rolling_median(scaled, window)), index=scaled.index, name=scaled.name)


# -- trend --------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """A robust straight-line fit: ``slope`` per step, with its 95% interval."""

    slope: float
    intercept: float
    low: float
    high: float
    points: int

    @property
    def falling(self) -> bool:
        """The whole 95% interval of the slope is below zero."""
        return self.high < 0

    @property
    def rising(self) -> bool:
        return self.low > 0


def trend(series: pd.Series, max_points: int = THEIL_SEN_MAX_POINTS) -> Trend | None:
    """Theil-Sen slope of a curve (median of pairwise slopes), None under 3 points."""
    series = downsample(series, max_points)
    if len(series) < 3:
        return None
    x = np.asarray(series.index, dtype="float64")
    y = series.to_numpy(dtype="float64")
    if np.ptp(x) == 0:
        return None
    return Trend(*_theil_sen(x, y), len(series))


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Slope, intercept and the slope's 95% interval, as ``scipy.stats.theilslopes`` computes them
    (Sen 1968, eq. 2.6, with its correction for tied values), without importing scipy.stats (a
    second of start-up, more than the rules of a short report take). The order statistics are
    selected (`np.partition`), not sorted for: the same values in a fraction of the time."""
    first, second = _pairs(len(x))
    dx = x[second] - x[first]
    distinct = dx != 0
    slopes = (y[second] - y[first])[distinct] / dx[distinct]  # the same for either order of a pair
    count = len(slopes)
    if not count:
        return float("nan"), float("nan"), float("nan"), float("nan")
    ties = sum(k * (k - 1) * (2 * k + 5) for values in (x, y) for k in _repeat_counts(values))
    n = len(y)
    variance = (n * (n - 1) * (2 * n + 5) - ties) / 18.0
    middle = [(count - 1) // 2, count // 2]
    ranks = set(middle)
    if variance >= 0:  # else ties everywhere: no interval (scipy gives NaN too)
        sigma = np.sqrt(variance)
        upper = min(int(np.round((count + _Z_95 * sigma) / 2.0)), count - 1)
        lower = max(int(np.round((count - _Z_95 * sigma) / 2.0)) - 1, 0)
        ranks |= {lower, upper}
    ranked = np.partition(slopes, sorted(ranks))
    slope = float(np.mean(ranked[middle]))
    intercept = float(np.median(y) - slope * np.median(x))
    if variance < 0:
        return slope, intercept, float("nan"), float("nan")
    return slope, intercept, float(ranked[lower]), float(ranked[upper])


_pair_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions i < j among ``n`` (kept: trends are taken of a few lengths only)."""
    if n not in _pair_cache:
        if len(_pair_cache) > 8:
            _pair_cache.clear()
        _pair_cache[n] = np.triu_indices(n, 1)
    return _pair_cache[n]


def _repeat_counts(values: np.ndarray) -> np.ndarray:
    counts = np.unique(values, return_counts=True)[1]
    return counts[counts > 1]


def linearity(series: pd.Series, max_points: int = THEIL_SEN_MAX_POINTS) -> float:
    """R^2 of a straight line through the (downsampled) curve: 1 means it falls at a constant rate."""
    series = downsample(series, max_points)
    if len(series) < 3 or np.ptp(series.to_numpy()) == 0:
        return float("nan")
    x, y = np.asarray(series.index, dtype="float64"), series.to_numpy(dtype="float64")
    if np.ptp(x) == 0:
        return float("nan")
    # Pearson's r as scipy.stats.linregress computes it (its covariances, clipped to [-1, 1]).
    ssx, ssxy, _, ssy = np.cov(x, y, bias=True).flat
    return float(np.clip(ssxy / np.sqrt(ssx * ssy), -1.0, 1.0)) ** 2


# -- spikes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Spike:
    """An isolated jump above the local level.

    ``step`` is where the jump starts, ``peak`` its highest value. ``height``
    is how far the peak stands above the baseline on the comparable scale
    (log units on a positive curve: 1.0 is e times the baseline).
    ``recovered_step`` is the first later step back near the baseline, or None.
    """

    step: float
    peak: float
    baseline: float
    height: float
    points: int
    recovered_step: float | None


def find_spikes(series: pd.Series, *, window: int = 20, min_height: float = 0.7, min_z: float = 6.0) -> list[Spike]:
    """Jumps far above the median of the ``window`` points before them.

    A point is a spike when it stands ``min_height`` above that causal
    baseline (on the comparable scale: 0.7 in log units is about 2x) and more
    than ``min_z`` robust standard deviations of the local scatter. Neighbouring
    spike points are merged into one spike. The baseline ignores the spike
    itself, so a curve that jumps and stays up shows one unrecovered spike.
    """
    if len(series) < 5:
        return []
    return _shared(
        "spikes", series, (window, min_height, min_z), lambda: _find_spikes(series, window, min_height, min_z)
    )


def _find_spikes(series: pd.Series, window: int, min_height: float, min_z: float) -> list[Spike]:
    scaled = comparable(series)
    values = scaled.to_numpy()
    if len(series) > SHAPE_POINTS and np.isfinite(values).all():
        found = _spikes_of_long(values, window, min_height, min_z)
        if found is not None:
            return _group_spikes(series, values, *found, min_height)
    baseline = rolling_median(scaled, window, causal=True)
    excess = (scaled - baseline).to_numpy()
    high = excess > min_height
    if not high.any():  # most curves: no point clears the height, so the local scatter cannot matter
        return []
    scatter = rolling_mad(scaled, window, causal=True)
    floor = float(np.nanmedian(scatter.to_numpy())) if scatter.notna().any() else 0.0
    scatter = scatter.clip(lower=max(floor * 0.5, 1e-12))
    is_spike = high & (excess > min_z * scatter.to_numpy())
    is_spike[: min(3, len(is_spike))] = False  # no baseline yet
    return _group_spikes(series, values, baseline.to_numpy(), is_spike, min_height)


# A very long curve's spike test computes its causal medians only where they can matter, unless more
# than this share of the points could clear the height (a very noisy curve): then at every point.
_SPARSE_SHARE = 0.05


def _spikes_of_long(
    values: np.ndarray, window: int, min_height: float, min_z: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """`find_spikes`' test on a very long finite curve, as (the causal baseline where it is needed,
    which points are spikes), at the cost of a pass over the curve: the causal median of a window
    is at least its lowest value, so only a point ``min_height`` above the lowest point before it
    needs its median, and only a point above its median needs its local scatter. The typical level
    of that scatter comes from evenly spaced stretches of the curve (see `_stretches`). None when
    too many points need their median for this to pay."""
    n = len(values)
    candidates = _may_clear(values, window, min_height)
    if len(candidates) > _SPARSE_SHARE * n:
        return None
    baseline = np.full(n, np.nan)
    baseline[candidates] = _causal_window_medians(values, candidates, window)
    high = candidates[values[candidates] - baseline[candidates] > min_height]
    is_spike = np.zeros(n, dtype=bool)
    if len(high) > _SPARSE_SHARE * n:
        return None
    if len(high):
        floor = _typical_causal_scatter(values, window)
        local = np.maximum(_causal_scatter_at(values, high, window), max(floor * 0.5, 1e-12))
        is_spike[high] = values[high] - baseline[high] > min_z * local
    is_spike[:3] = False  # no baseline yet
    return baseline, is_spike


def _may_clear(values: np.ndarray, window: int, height: float) -> np.ndarray:
    """The points (from the second on) that stand ``height`` above the lowest of the ``window``
    points before them, and maybe some others: each is compared with the lowest point of its own
    block of ``window`` points and the block before (which together hold the points before it)."""
    blocks = -(-len(values) // window)
    grid = np.full(blocks * window, np.inf)
    grid[: len(values)] = values
    grid = grid.reshape(blocks, window)
    lowest = grid.min(axis=1)
    lowest[1:] = np.minimum(lowest[1:], lowest[:-1])
    grid -= lowest[:, None]  # in place: the grid is this function's copy (a million points: 8 MB)
    found = np.flatnonzero(grid > height)
    return found[(found > 0) & (found < len(values))]


def _causal_scatter_at(values: np.ndarray, at: np.ndarray, window: int) -> np.ndarray:
    """`rolling_mad` with ``causal=True`` at the positions ``at`` only (its value there is NaN
    until two points precede them)."""
    before = np.unique(np.maximum(at[:, None] - window + np.arange(window), 0))
    deviation = np.full(len(values), np.nan)
    deviation[before] = np.abs(values[before] - _causal_window_medians(values, before, window))
    return _causal_window_medians(deviation, at, window) * MAD_TO_STD


def _typical_causal_scatter(values: np.ndarray, window: int) -> float:
    """The median of `rolling_mad` (causal) of a very long curve, from evenly spaced stretches of it
    put end to end: each stretch's first two windows, which look back past its start, are left out."""
    length = _stretch_length(window)
    joined = pd.Series(values[_stretch_starts(len(values), window)[:, None] + np.arange(length)].ravel())
    deviation = (joined - _pandas_rolling_median(joined, window, True)).abs()
    scatter = _pandas_rolling_median(deviation, window, True).to_numpy().reshape(_STRETCHES, length)
    return float(np.nanmedian(scatter[:, 2 * window :])) * MAD_TO_STD


def _causal_window_medians(values: np.ndarray, at: np.ndarray, window: int) -> np.ndarray:
    """Median of the ``window`` values before each position in ``at`` (NaN skipped), as
    `rolling_median` with ``causal=True`` gives it there."""
    result = np.full(len(at), np.nan)
    whole = at > window  # the window lies past the first value (NaN: no baseline before it)
    windows = np.lib.stride_tricks.sliding_window_view(values, window)
    result[whole] = np.median(windows[at[whole] - window], axis=1)
    for index in np.flatnonzero(~whole):
        start = at[index]
        part = values[max(0, start - window) : start]
        if np.isfinite(part).any():
            result[index] = np.nanmedian(part)
    return result


def _group_spikes(
    series: pd.Series, values: np.ndarray, baseline: np.ndarray, is_spike: np.ndarray, min_height: float
) -> list[Spike]:
    """Spikes from the points flagged in ``is_spike``, ``values`` and ``baseline`` on the comparable
    scale (the baseline is read at the first point of each spike only)."""
    if not is_spike.any():
        return []
    positions = np.flatnonzero(is_spike)
    starts = positions[np.r_[True, np.diff(positions) > 1]]
    ends = positions[np.r_[np.diff(positions) > 1, True]]
    steps = np.asarray(series.index, dtype="float64")
    spikes = []
    for start, end in zip(starts, ends, strict=False):  # one iteration per spike, not per point
        base = float(baseline[start])
        peak_at = start + int(np.argmax(values[start : end + 1]))
        back = np.flatnonzero(values[end + 1 :] - base < min_height / 2)
        spikes.append(
            Spike(
                step=float(steps[start]),
                peak=float(series.iloc[peak_at]),
                baseline=_unscale(series, base),
                height=float(values[peak_at] - base),
                points=int(end - start + 1),
                recovered_step=float(steps[end + 1 + back[0]]) if back.size else None,
            )
        )
    return spikes


def _unscale(series: pd.Series, value: float) -> float:
    """A value on the comparable scale back in the curve's own units."""
    if is_positive(series):
        return float(np.exp(value))
    spread = float(series.max() - series.min())
    return value * spread if spread > 0 else float(series.iloc[0])


# -- stalls and change points -----------------------------------------------------


def stall_start(series: pd.Series, tolerance: float, *, max_points: int = 200) -> float | None:
    """First step after which the curve never improves (falls) by more than ``tolerance`` again.

    Works on bin medians of the comparable scale, each then replaced by the
    median of itself and its neighbours, so noise, spikes and one lucky bin
    do not count as improvement. A curve still improving finds its stall only
    in its last few points: the caller judges how much of the run the stall
    covers. None under 5 points.
    """
    if len(series) < 5:
        return None
    reduced = comparable(downsample(series, max_points))
    values = rolling_median(reduced, 3).to_numpy()
    best_after = np.minimum.accumulate(values[::-1])[::-1]
    still_improving = values - best_after > tolerance
    improving_at = np.flatnonzero(still_improving)
    first_flat = int(improving_at[-1]) + 1 if improving_at.size else 0
    return float(reduced.index[first_flat])


def change_points(
    series: pd.Series, *, max_changes: int = 3, min_gain: float = 0.2, min_size: int = 3, max_points: int = 300
) -> list[float]:
    """Steps where the level of the curve shifts, by binary segmentation.

    The curve (comparable scale, bin medians) is split where a two-level fit
    lowers the squared error most; a split is kept when it removes at least
    ``min_gain`` of the segment's error. Sorted steps; empty for short curves.
    """
    reduced = comparable(downsample(series, max_points))
    values = reduced.to_numpy()
    found: list[int] = []
    segments = [(0, len(values))]
    while segments and len(found) < max_changes:
        a, b = segments.pop(0)
        split = _best_split(values[a:b], min_gain, min_size)
        if split is None:
            continue
        found.append(a + split)
        segments += [(a, a + split), (a + split, b)]
    return sorted(float(reduced.index[i]) for i in found)


def _best_split(values: np.ndarray, min_gain: float, min_size: int) -> int | None:
    """Index that best splits ``values`` into two constant levels, if it helps enough."""
    n = len(values)
    if n < 2 * min_size:
        return None
    total_error = float(((values - values.mean()) ** 2).sum())
    if total_error <= 0:
        return None
    sums = np.cumsum(values)
    squares = np.cumsum(values**2)
    left_n = np.arange(1, n)
    left_error = squares[:-1] - sums[:-1] ** 2 / left_n
    right_error = (squares[-1] - squares[:-1]) - (sums[-1] - sums[:-1]) ** 2 / (n - left_n)
    error = left_error + right_error
    error[: min_size - 1] = np.inf
    error[n - min_size :] = np.inf
    best = int(np.argmin(error))
    if 1 - error[best] / total_error < min_gain:
        return None
    return best + 1


# -- aligning curves logged at different intervals -------------------------------


def value_at(series: pd.Series, steps: np.ndarray | pd.Index) -> np.ndarray:
    """The curve's value at other steps, interpolated linearly (held flat beyond its ends).

    For comparing a per-step training curve with a validation curve that is
    logged every few hundred steps.
    """
    if len(series) == 0:
        return np.full(len(steps), np.nan)
    return np.interp(
        np.asarray(steps, dtype="float64"), np.asarray(series.index, dtype="float64"), series.to_numpy(dtype="float64")
    )


def fraction_of_run(series: pd.Series, step: float) -> float:
    """Where ``step`` lies in the span of the curve's steps: 0 at its first, 1 at its last."""
    first, last = float(series.index[0]), float(series.index[-1])
    return 0.0 if last == first else (step - first) / (last - first)
