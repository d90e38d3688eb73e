"""Exact, vectorised simulation of the true disease process (see `hazards.py`).

All people advance together, one piece of their own piecewise-constant hazard at a time: at
each step every active person draws the waiting time to the next state-changing event from the
summed hazard; if it falls inside the piece, the event is drawn in proportion to the hazards.
Recurrent processes do not change the state, so their events are drawn afterwards as Poisson
counts over the piece (only inside the observation window, where they can be recorded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farr.simulate.hazards import MAX_AGE, HazardModel, covid_log_multiplier


@dataclass
class Histories:
    onset: np.ndarray  # (n, P) age at first onset (NaN: never); the death column holds age at death
    end_age: np.ndarray  # (n,) age at which simulation stopped (death or stop age)
    recurrent_person: np.ndarray  # (r,) row of each recurrent event
    recurrent_age: np.ndarray  # (r,)
    recurrent_process: np.ndarray  # (r,) process column


def simulate(model: HazardModel, static_lp: np.ndarray, birth_year: np.ndarray, start_age: np.ndarray,
             stop_age: np.ndarray, rng: np.random.Generator, *, onset: np.ndarray | None = None,
             window: tuple[np.ndarray, np.ndarray] | None = None) -> Histories:
    """Simulate from `start_age` to `stop_age` (or death), starting from the conditions in `onset`.

    `window` = (first age, last age) per person in which recurrent events are drawn; None draws none.
    """
    n, n_proc = static_lp.shape
    onset = np.full((n, n_proc), np.nan) if onset is None else onset.copy()
    absorbing = np.flatnonzero(~model.recurrent)
    recurrent = np.flatnonzero(model.recurrent)
    acute_cols = np.flatnonzero(model.acute_years > 0)
    covid_cols = np.flatnonzero(model.covid_era)

    had = ~np.isnan(onset) & (onset <= start_age[:, None])
    state_lp = had.astype(float) @ model.chronic
    state_lp[:, absorbing] = np.where(had[:, absorbing], -np.inf, state_lp[:, absorbing])
    t = start_age.astype(float).copy()
    events: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    active = np.flatnonzero(np.isnan(onset[:, model.death]) & (t < stop_age))
    while active.size:
        now = t[active]
        age = np.minimum(now.astype(np.int64), MAX_AGE)
        lp = static_lp[active] + state_lp[active] + model.log_base[age]
        lp[:, covid_cols] += covid_log_multiplier(model, birth_year[active] + now)[:, None]
        acute_end = _add_acute(model, lp, onset[active][:, acute_cols], acute_cols, now)
        rate = np.exp(lp)

        # Pieces end at the next whole age even past MAX_AGE (where the hazard stops changing):
        # ending them at the capped age would put the piece's end behind `now`, and time would stall.
        piece_end = np.minimum(np.minimum(np.floor(now) + 1.0, acute_end), stop_age[active])
        total = rate[:, absorbing].sum(axis=1)
        with np.errstate(divide="ignore"):
            wait = rng.standard_exponential(active.size) / total
        has_event = wait < piece_end - now
        elapsed = np.where(has_event, wait, piece_end - now)

        if window is not None:
            _draw_recurrent(rng, active, now, elapsed, rate[:, recurrent], recurrent, window, events)

        who = active[has_event]
        which = absorbing[categorical(rng, rate[has_event][:, absorbing])]
        onset[who, which] = now[has_event] + wait[has_event]
        state_lp[who] += model.chronic[which]
        state_lp[who, which] = -np.inf
        t[active] = now + elapsed
        active = active[np.isnan(onset[active, model.death]) & (t[active] < stop_age[active])]

    person, age, process = (np.concatenate(x) for x in zip(*events)) if events else (
        np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))
    return Histories(onset, t, person, age, process)


def _add_acute(model: HazardModel, lp: np.ndarray, onset: np.ndarray, acute_cols: np.ndarray,
               now: np.ndarray) -> np.ndarray:
    """Add the acute-window effects to `lp` in place; return when the earliest window closes."""
    ends = onset + model.acute_years[acute_cols]
    inside = (onset <= now[:, None]) & (now[:, None] < ends)  # NaN onsets compare False
    rows = np.flatnonzero(inside.any(axis=1))
    if rows.size:
        lp[rows] += inside[rows].astype(float) @ model.acute[acute_cols]
    return np.where(inside, ends, np.inf).min(axis=1)


def categorical(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One column index per row of an (n, k) weight matrix, drawn in proportion to the weights."""
    cumulative = np.cumsum(weights, axis=1)
    target = rng.random(len(weights)) * cumulative[:, -1]
    return np.minimum((cumulative < target[:, None]).sum(axis=1), weights.shape[1] - 1)


def _draw_recurrent(rng, active, now, elapsed, rate, columns, window, events):
    """Poisson events of the recurrent processes over the part of the piece inside the window."""
    start = np.maximum(now, window[0][active])
    exposure = np.clip(np.minimum(now + elapsed, window[1][active]) - start, 0.0, None)
    expected = rate * exposure[:, None]
    counts = rng.poisson(expected)
    if not counts.any():
        return
    flat = counts.ravel()
    row = np.repeat(np.repeat(np.arange(len(active)), len(columns)), flat)
    process = np.repeat(np.tile(columns, len(active)), flat)
    age = start[row] + rng.random(row.size) * exposure[row]
    events.append((active[row], age, process))
