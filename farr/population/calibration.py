"""Per-person risks scaled, in each age band, by how a second reading of a subsample compares.

Two readings of the model are too costly for everyone, so each is made for a random subsample,
and for each age band, outcome and horizon the subsample's second reading over its first scales
everyone's risk (to at most 1), so that a band's expected cases match the second reading's.

Sampled futures. The analytic reading (`forecast.risk`) counts an outcome only when it is the
next event after the landmark (or an anniversary), with nothing happening in between. A model
that has learnt how records arrive puts much of an outcome's rate after other events: a hospital
diagnosis is coded just after the admission that opens it, a diagnosis follows the tests that
find it. The reading then misses those cases, and more of them the longer the horizon. Sampled
futures let the events in between happen; they cost a model step per event. A sampled future's
risk is its rate of the outcome integrated along it up to the outcome's first event
(`model.sampling`): its mean is the risk, with far less noise than whether it happened.

The calendar. The model reads calendar time through sinusoids (`model.gpt.TimeEncoding`), the
shortest of one `calendar_period`, and a model trained for minutes ties its rates to their phase:
on the simulator, whose hazards have no calendar trend but the pandemic's, a cohort's mean rates
move by a median 13% within a year of the date alone (`benchmarks/calendar_swing.py`), and not as
they moved a horizon earlier, so a backtest's correction carries the wrong error. Reading the
same people with their calendar time moved to the midpoints of quarters of one period
(`calendar_shifts`) and averaging cancels that period's sinusoid and its next two harmonics
exactly, and leaves trends slower than a period (a pandemic's, a secular one) nearly whole.
"""

from __future__ import annotations

import numpy as np

from farr.population.groups import age_band, group_index

MIN_PEOPLE = 200  # subsample people an age band needs for its own factors (else those of everyone)
CALENDAR_POINTS = 4  # shifts a period: their mean cancels sinusoids of the period and of a half and a third of it


def band_factors(first: np.ndarray, second: np.ndarray, age: np.ndarray) -> dict[str, np.ndarray]:
    """Age band -> (outcomes, horizons) second over first reading's risks, summed over the
    subsample's people at risk (`first`, `second`: (n, outcomes, horizons), 0 where not at risk;
    `age`: (n,)). "all" holds everyone's factors; 1 where the first reading expects no case."""
    bands = age_band(age)

    def ratio(rows: np.ndarray) -> np.ndarray:
        expected = first[rows].sum(axis=0)
        return np.where(expected > 0, second[rows].sum(axis=0) / np.where(expected > 0, expected, 1.0), 1.0)

    factors = {"all": ratio(np.ones(len(age), bool))}
    for band in np.unique(bands):
        rows = bands == band
        factors[band] = ratio(rows) if rows.sum() >= MIN_PEOPLE else factors["all"]
    return factors


def calibrated(risk: np.ndarray, age: np.ndarray, factors: dict[str, np.ndarray]) -> np.ndarray:
    """`risk` (n, outcomes, horizons) scaled by each person's age band's factors (those of
    everyone for a band the subsample did not hold), to at most 1."""
    bands, index = group_index(age_band(age))
    scale = np.stack([factors.get(band, factors["all"]) for band in bands])[index]
    return np.minimum(risk * scale, 1.0).astype(risk.dtype)


def halfway(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per age band of `first`, the geometric mean of two readings' factors (`band_factors`); `second`'s
    everyone's where it has no such band."""
    return {band: np.sqrt(factor * second.get(band, second["all"])) for band, factor in first.items()}


def calendar_shifts(period: float, points: int = CALENDAR_POINTS) -> np.ndarray:
    """Calendar shifts (years) at the midpoints of `points` equal parts of one `period` centred on
    the date: the mean of a sinusoid of that period, or of period / k for 0 < k < points, over them is 0."""
    return ((np.arange(points) + 0.5) / points - 0.5) * period
