"""Inequality across IMD quintiles: rate ratios, and the slope and relative indices of inequality.

The slope index (SII) and relative index (RII) come from a regression of the quintiles' rates
on their ridit scores, weighted by each quintile's share of the people at risk. The ridit of a
quintile is the share of people in less deprived quintiles plus half its own share, running
from 0 (least deprived end) to 1 (most deprived end): SII is the fitted rate at the most
deprived end minus that at the least deprived end, RII their ratio. Positive SII (RII > 1):
the more deprived, the higher the rate.
"""

from __future__ import annotations

import numpy as np

IMD_ORDER = ("5", "4", "3", "2", "1")  # least to most deprived


def ridits(shares: np.ndarray) -> np.ndarray:
    """Ridit scores of ordered categories from their population shares (..., categories)."""
    shares = shares / shares.sum(axis=-1, keepdims=True)
    return np.cumsum(shares, axis=-1) - shares / 2


def slope_indices(rates: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SII, RII) of `rates` (..., categories) in deprivation order, weighted by `shares` (same shape)."""
    weight = shares / shares.sum(axis=-1, keepdims=True)
    x = ridits(shares)
    x_mean = (weight * x).sum(axis=-1, keepdims=True)
    y_mean = (weight * rates).sum(axis=-1, keepdims=True)
    slope = (weight * (x - x_mean) * (rates - y_mean)).sum(axis=-1) / (weight * (x - x_mean) ** 2).sum(axis=-1)
    intercept = y_mean[..., 0] - slope * x_mean[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return slope, (intercept + slope) / intercept


def imd_positions(names: np.ndarray) -> np.ndarray | None:
    """Positions of the quintiles in `names`, least to most deprived; None unless all five are there."""
    found = {str(n): i for i, n in enumerate(names)}
    return None if any(q not in found for q in IMD_ORDER) else np.array([found[q] for q in IMD_ORDER])
