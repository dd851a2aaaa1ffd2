"""The order tests of `diagnose.ordering` answer as the `np.diff` tests they replace."""

from __future__ import annotations

import itertools

import numpy as np

from diagnose import ordering

_VALUES = (-np.inf, -1.0, 0.0, 2.0, np.inf, np.nan)


def _arrays():
    for length in range(5):
        for values in itertools.product(_VALUES, repeat=length):
            yield np.array(values, dtype="float64")
    yield np.array([3, 1, 2], dtype="int64")
    yield np.arange(10, dtype="int64")


def test_each_order_test_agrees_with_np_diff_on_every_short_array() -> None:
    for values in _arrays():
        _agree(values)


def _agree(values: np.ndarray) -> None:
    with np.errstate(invalid="ignore"):  # inf - inf, which the tests replaced read as NaN
        in_order = bool((np.diff(values) >= 0).all())
        rises, repeats = bool((np.diff(values) > 0).all()), bool((np.diff(values) == 0).any())
        distinct = int(np.count_nonzero(np.diff(values))) + 1
    assert ordering.rises(values) == rises, values
    assert ordering.never_falls(values) == in_order, values
    if in_order:
        assert ordering.repeats(values) == repeats, values
        if len(values):
            assert ordering.distinct(values) == distinct, values
