"""Decimal calendar years (2019.5 = about 2 July 2019), the simulator's clock, to Arrow times."""

from __future__ import annotations

import numpy as np

DAYS_PER_YEAR = 365.2425
_EPOCH = 1970.0
_US_PER_SECOND = 1_000_000


def to_datetime_us(years: np.ndarray) -> np.ndarray:
    """Microseconds since 1970-01-01, rounded to the second."""
    seconds = np.round((np.asarray(years) - _EPOCH) * DAYS_PER_YEAR * 86_400)
    return seconds.astype(np.int64) * _US_PER_SECOND


def to_days(years: np.ndarray) -> np.ndarray:
    """Whole days since 1970-01-01."""
    return np.floor((np.asarray(years) - _EPOCH) * DAYS_PER_YEAR).astype(np.int32)


def from_datetime_us(us: np.ndarray) -> np.ndarray:
    return _EPOCH + np.asarray(us, dtype=np.float64) / (_US_PER_SECOND * 86_400 * DAYS_PER_YEAR)


def from_days(days: np.ndarray) -> np.ndarray:
    """Decimal years from (fractional) days since 1970-01-01."""
    return _EPOCH + np.asarray(days, dtype=np.float64) / DAYS_PER_YEAR
