"""Planning: emergency admissions, A&E attendances and new diagnoses per region per year, from
futures sampled by the model for the people registered at the landmark.

Futures are sampled for a random subsample of people (all of them when there are few, or when
the view's risks come from everyone's futures, which it reuses); each region's totals are scaled
by its people over its sampled people (a ratio estimator), and intervals come from the same
Poisson bootstrap over the sampled people. The cohort is closed:
people who are born or register after the landmark are not in it, and deaths in the sampled
futures end them, so later years count a shrinking, ageing cohort.

Where the data reach past the landmark, `recorded` counts the same events as recorded, among the
people followed through each year (or to their death), to set beside the projections.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from farr.forecast.generate import Futures, death_tokens, sample_futures
from farr.forecast.landmark import Landmark, Outcome, followed, outcome_lookup
from farr.population.groups import group_index
from farr.population.rates import INTERVAL, bootstrap_totals, group_sums

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
    counts = np.zeros((len(mark.people), years, len(planning_measures(outcomes))))
    m = _measure_of(outcomes)[which]
    hit = m >= 0
    np.add.at(counts, (futures.row[hit], year[hit], m[hit]), 1.0)
    counts[..., -1] = _new_diagnoses(futures, which, year, mark, outcomes, years, draws)
    return counts.reshape(len(mark.people), -1) / draws


def _new_diagnoses(futures, which, year, mark: Landmark, outcomes, years: int, draws: int) -> np.ndarray:
    """(people, years) first records of conditions not recorded before the landmark, in each year."""
    diagnosis = _diagnoses(outcomes)
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


def _measure_of(outcomes: list[Outcome]) -> np.ndarray:
    """(outcomes + 1,) each outcome's place among the counted measures (`planning_measures`), or
    -1; the last entry, -1, is where an outcome lookup's "none" (-1) lands."""
    measure_of, names = np.full(len(outcomes) + 1, -1), [o.name for o in outcomes]
    for m, measure in enumerate(planning_measures(outcomes)[:-1]):
        measure_of[names.index(MEASURES[measure])] = m
    return measure_of


def _diagnoses(outcomes: list[Outcome]) -> np.ndarray:
    """(outcomes,) bool: the conditions whose first record is a new diagnosis."""
    return np.array([not o.recurrent and o.name != "death" for o in outcomes])


def recorded(timelines, mark: Landmark, outcomes: list[Outcome], regions: np.ndarray, years: int,
             chunk: int = 100_000) -> pl.DataFrame:
    """Long table: region, measure, year, `followed` (people followed through that year, or to
    their death; null where none) and `observed_events` (the events recorded among them in it,
    counted as `yearly_counts` counts futures')."""
    counts = _recorded_counts(timelines, mark, outcomes, years, chunk)
    through = followed(mark, np.arange(1, years + 1)).astype(float)  # (people, years)
    names, index = group_index(regions)
    people = group_sums(index, len(names), through)
    events = group_sums(index, len(names), (counts * through[..., None]).reshape(len(counts), -1))
    g, y, m = np.meshgrid(np.arange(len(names)), np.arange(years), np.arange(counts.shape[-1]), indexing="ij")
    table = pl.DataFrame({"region": names[g.ravel()], "measure": np.array(planning_measures(outcomes))[m.ravel()],
                          "year": y.ravel() + 1, "followed": people[g, y].ravel().astype(np.int64),
                          "observed_events": events.reshape(g.shape).ravel().astype(np.int64)})
    return table.with_columns(pl.when(pl.col("followed") > 0).then(pl.col(c)).otherwise(None)
                              for c in ("followed", "observed_events"))


def _recorded_counts(timelines, mark: Landmark, outcomes: list[Outcome], years: int, chunk: int) -> np.ndarray:
    """(people, years, measures) each person's recorded events in each year after the landmark;
    the people's tokens are read in chunks, so memory stays bounded."""
    lookup = outcome_lookup(outcomes, int(timelines.tokens.max(initial=0)) + 1)
    measure_of, new_diagnoses = _measure_of(outcomes), len(planning_measures(outcomes)) - 1
    counts = np.zeros((len(mark.people), years, new_diagnoses + 1))
    for lo in range(0, len(mark.people), chunk):
        owner, index = timelines.rows_of(mark.people[lo:lo + chunk])
        since = timelines.ages[index] - mark.age[lo:lo + chunk][owner]
        m = measure_of[lookup[timelines.tokens[index]]]
        hit = (m >= 0) & (since >= 0) & (since < years)
        np.add.at(counts, (lo + owner[hit], since[hit].astype(int), m[hit]), 1.0)
    row, outcome = np.nonzero(_diagnoses(outcomes) & ~mark.had_before & (mark.first_after < years))
    np.add.at(counts, (row, mark.first_after[row, outcome].astype(int), new_diagnoses), 1.0)
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
