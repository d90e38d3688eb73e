"""Analytic risks scaled to the model's sampled futures, by age band.

The analytic reading (`forecast.risk`) counts an outcome only when it is the next event after
the landmark (or an anniversary), with nothing happening in between. A model that has learnt how
records arrive puts much of an outcome's rate after other events: a hospital diagnosis is coded
just after the admission that opens it, a diagnosis follows the tests that find it. The reading
then misses those cases, and more of them the longer the horizon. Sampled futures let the
events in between happen. They cost a model step per event, so they are drawn for a subsample;
for each age band, outcome and horizon the subsample's sampled risk over its analytic risk
scales everyone's analytic risk (to at most 1), so a band's expected cases match its futures'.

A sampled future's risk is its rate of the outcome integrated along it up to the outcome's first
event (`model.sampling`): its mean is the risk, with far less noise than whether it happened.
"""

from __future__ import annotations

import numpy as np

from farr.population.groups import age_band, group_index

MIN_PEOPLE = 200  # sampled people an age band needs for its own factors (else those of everyone)


def rollout_factors(analytic: np.ndarray, sampled: np.ndarray, age: np.ndarray) -> dict[str, np.ndarray]:
    """Age band -> (outcomes, horizons) sampled over analytic risk, summed over the subsample's
    people at risk (`analytic`, `sampled`: (n, outcomes, horizons), 0 where not at risk; `age`: (n,)).
    "all" holds everyone's factors; 1 where the model expects no case."""
    bands = age_band(age)

    def ratio(rows: np.ndarray) -> np.ndarray:
        expected = analytic[rows].sum(axis=0)
        return np.where(expected > 0, sampled[rows].sum(axis=0) / np.where(expected > 0, expected, 1.0), 1.0)

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
