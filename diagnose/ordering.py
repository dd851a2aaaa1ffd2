"""Whether a long array (steps, file positions) is in order, read without `np.diff`.

`np.diff` of a million-step column is 8 MB of fresh memory, whose page faults cost more than the
pass itself; comparing neighbours in place needs a mask of a byte a value. The answers are exactly
those of the `np.diff` tests they replace, NaN and infinite values included.
"""

from __future__ import annotations

import numpy as np


def rises(values: np.ndarray) -> bool:
    """``(np.diff(values) > 0).all()``: every value above the one before it."""
    return bool((values[1:] > values[:-1]).all())


def never_falls(values: np.ndarray) -> bool:
    """``(np.diff(values) >= 0).all()``: no NaN, no value below the one before it, and no infinite
    value right after itself (their difference is NaN)."""
    if not (values[1:] >= values[:-1]).all():
        return False
    # Values in order hold a repeated infinite value only at an end: -inf first, inf last.
    if values.dtype.kind == "f" and len(values) > 1:
        return not (values[0] == values[1] == -np.inf or values[-1] == values[-2] == np.inf)
    return True


def repeats(values: np.ndarray) -> bool:
    """``(np.diff(values) == 0).any()`` of values for which `never_falls` holds: a value repeated."""
    return bool((values[1:] == values[:-1]).any())


def distinct(values: np.ndarray) -> int:
    """``np.count_nonzero(np.diff(values)) + 1`` of values for which `never_falls` holds."""
    return int(np.count_nonzero(values[1:] != values[:-1])) + 1
