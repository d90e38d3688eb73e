"""Draw an England-like registered population and its true life histories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farr.simulate import england as eng
from farr.simulate.engine import Histories, categorical, simulate
from farr.simulate.hazards import MAX_AGE, HazardModel, static_log_hazard


@dataclass
class Population:
    """One chunk of people: demographics (n,), hidden frailty and true histories."""

    male: np.ndarray
    ethnicity: np.ndarray  # index into ETHNICITIES
    imd_quintile: np.ndarray  # 1 = most deprived
    region: np.ndarray  # index into REGIONS
    site: np.ndarray  # integrated care board, 0..41
    practice: np.ndarray  # practice number within its site
    birth_year: np.ndarray  # decimal calendar year of birth
    entry_age: np.ndarray  # registration start
    exit_age: np.ndarray  # registration end: death, moving away or end of extract
    end_reason: np.ndarray  # index into END_REASONS
    frailty: np.ndarray
    histories: Histories

    def __len__(self) -> int:
        return len(self.male)


def draw_population(model: HazardModel, n: int, rng: np.random.Generator,
                    practices_per_site: np.ndarray) -> Population:
    male, entry_age, entry_year, moved_rate = _draw_entry(rng, n)
    region = categorical(rng, np.tile(eng.REGION_MILLIONS, (n, 1)))
    site_region, site_share = eng.sites()
    site = categorical(rng, np.where(site_region[None, :] == region[:, None], site_share, 0.0))
    ethnicity = _draw_ethnicity(rng, entry_age, region)
    imd_weights = np.asarray(eng.REGION_IMD)[region] * np.asarray(eng.ETHNICITY_IMD_TILT)[ethnicity]
    imd = categorical(rng, imd_weights).astype(np.int8) + 1
    practice = np.floor(rng.random(n) * practices_per_site[site]).astype(np.int32)

    birth_year = entry_year - entry_age
    planned_exit = np.minimum(entry_age + rng.standard_exponential(n) / moved_rate,
                              eng.EXTRACT_END - birth_year)
    planned_exit = np.minimum(planned_exit, MAX_AGE + 0.999)
    frailty, histories = _histories_surviving_to_entry(model, rng, male, ethnicity, imd, birth_year,
                                                       entry_age, planned_exit)
    death = histories.onset[:, model.death]
    died = ~np.isnan(death)
    end_reason = np.where(died, 1, np.where(planned_exit < eng.EXTRACT_END - birth_year - 1e-9, 2, 0))
    return Population(male, ethnicity, imd, region, site, practice, birth_year, entry_age,
                      np.where(died, death, planned_exit), end_reason.astype(np.int8), frailty,
                      histories)


def _draw_entry(rng: np.random.Generator, n: int):
    """Sex, age and calendar year at registration start, and the rate of moving away."""
    kind = categorical(rng, np.tile([eng.START_COHORT, eng.BIRTHS, eng.ARRIVALS], (n, 1)))
    band = categorical(rng, np.tile(eng.AGE_BAND_THOUSANDS, (n, 1)))
    within = np.where(band == len(eng.AGE_BANDS) - 1,
                      rng.standard_exponential(n) * eng.OLDEST_MEAN_EXCESS, rng.random(n) * 5)
    age = np.minimum(eng.AGE_BANDS[band] + within, MAX_AGE - 5)
    male = rng.random(n) >= eng.FEMALE_SHARE[band]
    arrival_age = 18 + rng.random(n) * 27  # most arrivals are young adults
    # Newborns join a practice in their first weeks (so registration never dates the birth).
    newborn_age = (14 + rng.random(n) * 42) / 365.25
    age = np.select([kind == 1, kind == 2], [newborn_age, arrival_age], age)
    window = eng.EXTRACT_END - eng.EXTRACT_START
    year = np.where(kind == 0, eng.EXTRACT_START, eng.EXTRACT_START + rng.random(n) * window)
    moved_rate = np.where(kind == 2, eng.ARRIVALS_MOVE_AWAY_PER_YEAR, eng.MOVE_AWAY_PER_YEAR)
    return male, age, year, moved_rate


def _draw_ethnicity(rng: np.random.Generator, age: np.ndarray, region: np.ndarray) -> np.ndarray:
    bounds = np.array(sorted(eng.ETHNICITY_BY_AGE))
    shares = np.array([eng.ETHNICITY_BY_AGE[b] for b in bounds])[np.searchsorted(bounds, age, "right") - 1]
    odds = np.asarray(eng.REGION_MINORITY_ODDS)
    odds = (odds / np.average(odds, weights=eng.REGION_MILLIONS))[region]  # keep the national mix
    shares[:, 1:] *= odds[:, None]
    return categorical(rng, shares).astype(np.int8)


def _histories_surviving_to_entry(model, rng, male, ethnicity, imd, birth_year, entry_age, exit_age):
    """Simulate lives from birth; redraw (frailty and history) anyone who died before registering.

    Rejection is exact: the kept lives follow the model conditional on surviving to entry.
    """
    n = len(male)
    frailty = np.empty(n)
    onset = np.empty((n, len(model.names)))
    end_age = np.empty(n)
    events: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    todo, attempt = np.arange(n), 0
    while todo.size:
        # Later rounds try several lives at once for the few (the very old) still without one.
        tries = np.repeat(todo, 2 ** min(attempt, 8))
        z = rng.standard_normal(tries.size)
        lp = static_log_hazard(model, male[tries], ethnicity[tries], imd[tries], z)
        h = simulate(model, lp, birth_year[tries], np.zeros(tries.size), exit_age[tries], rng,
                     window=(entry_age[tries], exit_age[tries]))
        survived = ~(h.onset[:, model.death] < entry_age[tries])
        first = np.flatnonzero(_first_of_each(tries, survived))
        rows = tries[first]
        frailty[rows], onset[rows], end_age[rows] = z[first], h.onset[first], h.end_age[first]
        kept = np.zeros(tries.size, bool)
        kept[first] = True
        keep_event = kept[h.recurrent_person]
        events.append((tries[h.recurrent_person[keep_event]], h.recurrent_age[keep_event],
                       h.recurrent_process[keep_event]))
        todo, attempt = np.setdiff1d(todo, rows), attempt + 1
    person, age, process = (np.concatenate(x) for x in zip(*events))
    return frailty, Histories(onset, end_age, person, age, process)


def _first_of_each(owner: np.ndarray, success: np.ndarray) -> np.ndarray:
    """Mask of the first successful try of each owner (`owner` is grouped, as np.repeat makes it)."""
    order = np.flatnonzero(success)
    first = np.zeros(owner.size, bool)
    _, at = np.unique(owner[order], return_index=True)
    first[order[at]] = True
    return first
