"""On a simulated dataset: the oracle's true expected rate of each outcome in each group, for the
same people at the same landmark, through the simulator's public oracle."""

from __future__ import annotations

import numpy as np
import polars as pl

from farr.forecast.truth import oracle_risk, simulated_truth
from farr.population.groups import group_index
from farr.population.rates import PER_100K, cell_table, group_sums

PERSON_DRAWS = 10_000_000  # simulated futures in all: about 90 s on one core
MIN_DRAWS = 10


def _oracle_risk(dataset, timelines, mark, outcomes, horizons, *, draws: int, seed: int) -> np.ndarray | None:
    """(n, outcomes, horizons) true risk of each outcome being recorded within each horizon; None
    for a dataset without ground truth."""
    truth = simulated_truth(dataset)
    return None if truth is None else oracle_risk(*truth, timelines, mark, outcomes, horizons, draws=draws, seed=seed)


def draws_for(people: int, draws: int) -> int:
    """Futures per person: `draws`, or fewer in a large cohort, so that people × draws stays near
    PERSON_DRAWS (never under MIN_DRAWS). Every group grows with the cohort, so its yardstick
    error, about 1/sqrt(cases × draws), stays as small as in a cohort of PERSON_DRAWS / draws."""
    return max(min(draws, MIN_DRAWS), min(draws, PERSON_DRAWS // max(people, 1)))


def oracle_group_rates(dataset, timelines, mark, outcomes, horizons, groups: dict[str, np.ndarray],
                       at_risk: np.ndarray, *, draws: int, seed: int) -> pl.DataFrame | None:
    """Per grouping, group, outcome and horizon: the oracle's expected cases per 100,000 at risk."""
    risk = _oracle_risk(dataset, timelines, mark, outcomes, horizons, draws=draws, seed=seed)
    if risk is None:
        return None
    known = at_risk[:, :, None] & ~np.isnan(risk)
    values = np.concatenate([np.where(known, risk, 0.0).reshape(len(risk), -1), known.reshape(len(risk), -1)], axis=1)
    k, h = len(outcomes), len(horizons)
    parts = []
    for grouping, lab in groups.items():
        names, index = group_index(lab)
        total = group_sums(index, len(names), values)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = total[:, :k * h] / total[:, k * h:] * PER_100K
        parts.append(cell_table(grouping, names, [o.name for o in outcomes], horizons,
                                {"oracle_per_100k": rate.reshape(len(names), k, h)}))
    return pl.concat(parts).with_columns(pl.col("oracle_per_100k").fill_nan(None))
