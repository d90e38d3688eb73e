"""Planning: emergency admissions, A&E attendances and new diagnoses per region per year, from
futures sampled by the model for the people registered at the landmark.

Futures are sampled for a random subsample of people (all of them when there are few, or when
the view's risks come from everyone's futures, which it reuses); each region's totals are scaled
by its people over its sampled people (a ratio estimator), and intervals come from the same
Poisson bootstrap over the sampled people. The cohort is closed:
people who are born or register after the landmark are not in it, and deaths in the sampled
futures end them, so later years count a shrinking, ageing cohort.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from farr.forecast.generate import Futures, death_tokens, sample_futures
from farr.forecast.landmark import Landmark, Outcome, outcome_lookup
from farr.population.rates import INTERVAL, bootstrap_totals

MEASURES = {"emergency_admissions": "unplanned_admission", "ae_attendances": "ae_attendance"}
NEW_DIAGNOSES = "new_diagnoses"


def planning_measures(outcomes: list[Outcome]) -> list[str]:
    names = {o.name for o in outcomes}
    return [m for m, outcome in MEASURES.items() if outcome in names] + [NEW_DIAGNOSES]


def rollouts(model, timelines, mark: Landmark, outcomes: list[Outcome], horizons: list[float], *, draws: int,
             people: int, seed: int) -> tuple[np.ndarray, Futures]:
    """(sample, futures): a random `people` of the landmark rows (all of them when fewer), and
    `draws` futures of each for the longest horizon in whole years, with each outcome's rate
    integrated to each horizon (`Futures.exposed`)."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(mark.people), min(people, len(mark.people)), replace=False))
    futures = sample_futures(model, timelines, mark.subset(sample), float(np.ceil(max(horizons))), draws,
                             stop_tokens=death_tokens(outcomes), seed=seed, watch=(outcomes, list(horizons)))
    return sample, futures


def yearly_counts(futures: Futures, mark: Landmark, outcomes: list[Outcome], years: int, draws: int) -> np.ndarray:
    """(people, years × measures) events per person per year, averaged over the `draws` futures
    of each person of `mark`."""
    which = outcome_lookup(outcomes, int(futures.token.max(initial=0)) + 1)[futures.token]
    year = np.minimum((futures.age - mark.age[futures.row]).astype(int), years - 1)
    measures = planning_measures(outcomes)
    counts = np.zeros((len(mark.people), years, len(measures)))
    names = [o.name for o in outcomes]
    for m, measure in enumerate(measures[:-1]):
        hit = which == names.index(MEASURES[measure])
        np.add.at(counts, (futures.row[hit], year[hit], m), 1.0)
    counts[..., -1] = _new_diagnoses(futures, which, year, mark, outcomes, years, draws)
    return counts.reshape(len(mark.people), -1) / draws


def _new_diagnoses(futures, which, year, mark: Landmark, outcomes, years: int, draws: int) -> np.ndarray:
    """(people, years) first records of conditions not recorded before the landmark, in each year."""
    diagnosis = np.array([not o.recurrent and o.name != "death" for o in outcomes])
    hit = which >= 0
    row, draw, outcome, yr = futures.row[hit], futures.draw[hit], which[hit], year[hit]
    keep = diagnosis[outcome] & ~mark.had_before[row, outcome]
    row, draw, outcome, yr, age = row[keep], draw[keep], outcome[keep], yr[keep], futures.age[hit][keep]
    order = np.lexsort((age, outcome, draw, row))
    key = np.stack([row, draw, outcome])[:, order]
    first = order[np.concatenate([[True], np.any(key[:, 1:] != key[:, :-1], axis=0)])] if len(order) else order
    counts = np.zeros((len(mark.people), years))
    np.add.at(counts, (row[first], yr[first]), 1.0)
    return counts


def project(futures: Futures, sample: np.ndarray, mark: Landmark, outcomes: list[Outcome], regions: np.ndarray, *,
            years: int, draws: int, replicates: int, seed: int) -> pl.DataFrame:
    """Long table: region, measure, year (1 = the first year after the landmark), projected
    count with its 90% interval, people in the region and people whose futures were sampled,
    from the `rollouts` of the landmark rows `sample`."""
    counts = yearly_counts(futures, mark.subset(sample), outcomes, years, draws)
    sums = bootstrap_totals({"region": regions[sample]}, counts, replicates=replicates, seed=seed)["region"]
    names, population = np.unique(regions, return_counts=True)
    scale = population[np.searchsorted(names, sums.names)].astype(float)
    estimate = sums.totals / sums.people[:, None] * scale[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        replicate = sums.replicates / sums.replicate_people[..., None] * scale[None, :, None]
    lower, upper = np.nanpercentile(replicate, INTERVAL, axis=0)
    measures = planning_measures(outcomes)
    g, cell = np.meshgrid(np.arange(len(sums.names)), np.arange(counts.shape[1]), indexing="ij")
    return pl.DataFrame({
        "region": sums.names[g.ravel()], "measure": np.array(measures)[cell.ravel() % len(measures)],
        "year": cell.ravel() // len(measures) + 1, "projected": estimate.ravel(),
        "lower": lower.ravel(), "upper": upper.ravel(), "people": scale[g.ravel()].astype(np.int64),
        "people_sampled": sums.people[g.ravel()].astype(np.int64)})
