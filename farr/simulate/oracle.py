"""The oracle: the true probability of each outcome within a horizon, given a person's true history.

It runs the simulator's own engine forward from the person's state at the landmark age (their
covariates, hidden frailty and the conditions they truly have by then), `draws` times, so it
answers from exactly the hazards that generated the data, including future comorbidity.
Monte-Carlo error is at most 0.5/sqrt(draws) per probability.

Two questions can be asked. `recorded=False`: will the disease truly start within h? And
`recorded=True`: will it be *coded* within h, the question a model of the record answers,
through the observation layer's own recording model (coding probability, delay, hospital
diagnosis), for new onsets and for onsets before the landmark not yet coded.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from farr.simulate.calendar import from_days
from farr.simulate.codes import DIAGNOSES
from farr.simulate.engine import simulate
from farr.simulate.hazards import MAX_AGE, HazardModel, covid_log_multiplier, static_log_hazard
from farr.simulate.simulator import read_truth

ROWS_PER_BATCH = 200_000  # people × draws simulated at once, to bound memory
# Processes the record holds exactly as they happen (while registered): their likelihood under
# the true model is the yardstick for a model's likelihood of the same events.
EXACTLY_RECORDED = ("ae_attendance", "death")


@dataclass
class Risks:
    outcomes: tuple[str, ...]
    horizons: tuple[float, ...]
    probability: np.ndarray  # (n, outcomes, horizons); NaN where not at risk (had it, or dead)


class Oracle:
    def __init__(self, model: HazardModel):
        self.model = model
        consultation = model.names.index("gp_consultation")
        self._outcomes = np.array([k for k in range(len(model.names)) if k != consultation])

    @classmethod
    def from_dataset(cls, path: str | Path) -> tuple[Oracle, pa.Table]:
        """The oracle of a simulated dataset and its per-person truth table."""
        model, truth = read_truth(path)
        return cls(model), truth

    @property
    def outcomes(self) -> tuple[str, ...]:
        return tuple(self.model.names[k] for k in self._outcomes)

    def risk(self, truth: pa.Table, age: float | np.ndarray, horizons: Sequence[float], *,
             draws: int = 200, seed: int = 0, recorded: bool = False, workers: int | None = None) -> Risks:
        """P(first onset, first recurrent event, or death in (age, age + h]) for each person.

        NaN where the person is dead at `age` or (true onsets only) already has the disease.
        Batches of people run in `workers` processes (default: one per core), each with its own
        seeded stream, so the answer does not depend on how many there are."""
        n = truth.num_rows
        age = np.broadcast_to(np.asarray(age, dtype=float), (n,)).copy()
        horizons = tuple(float(h) for h in horizons)
        per_batch = max(1, ROWS_PER_BATCH // draws)
        state = self._state(truth)
        jobs = [(*(x[start:start + per_batch] for x in (*state, age)), horizons, draws,
                 np.random.default_rng([seed, batch]), recorded)
                for batch, start in enumerate(range(0, n, per_batch))]
        workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
        if workers == 1:
            parts = [self._batch(*job) for job in jobs]
        else:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                parts = list(pool.map(self._batch, *zip(*jobs)))
        out = np.concatenate(parts) if parts else np.empty((0, len(self._outcomes), len(horizons)))
        return Risks(self.outcomes, horizons, out)

    def risk_on_day(self, truth: pa.Table, day: np.ndarray, horizons: Sequence[float], **options) -> Risks:
        """As `risk`, at a date per person (days since 1970-01-01) rather than an age."""
        age = from_days(np.asarray(day, dtype=float)) - truth["birth_year"].to_numpy()
        return self.risk(truth, age, horizons, **options)

    def negative_log_likelihood(self, truth: pa.Table, window: tuple[np.ndarray, np.ndarray],
                                event_person: np.ndarray, event_day: np.ndarray, event_process: list[str],
                                processes: Sequence[str] = EXACTLY_RECORDED) -> float:
        """−log-likelihood under the true hazards of the events of `processes` seen in each
        person's window (first day, last day): −Σ log λ(event) + ∫ Σ λ over the windows.
        Days are (fractional) days since 1970-01-01."""
        m = self.model
        columns = np.array([m.index(p) for p in processes])
        onset, static, birth_year = self._state(truth)
        event_age = from_days(event_day) - birth_year[event_person]
        window = tuple(from_days(w) - birth_year for w in window)
        which = np.array([m.index(p) for p in event_process], dtype=int)
        at_events = self._log_hazard(onset, static, birth_year, event_person, event_age)
        person, start, length = self._pieces(onset, *window)
        rates = np.exp(self._log_hazard(onset, static, birth_year, person, start)[:, columns])
        return float(-at_events[np.arange(len(which)), which].sum() + (rates.sum(axis=1) * length).sum())

    def _state(self, truth: pa.Table):
        m = self.model
        onset = np.column_stack([truth[f"onset_{name}"].to_numpy(zero_copy_only=False)
                                 if f"onset_{name}" in truth.column_names else np.full(truth.num_rows, np.nan)
                                 for name in m.names])
        static = static_log_hazard(m, *(truth[c].to_numpy(zero_copy_only=False)
                                        for c in ("male", "ethnicity", "imd_quintile", "frailty")))
        return onset, static, truth["birth_year"].to_numpy()

    def _log_hazard(self, onset, static, birth_year, person: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(m, P) log hazards of `person` at ages `t`, as the engine defines them (its pieces
        start at whole ages, onsets and acute-window ends; the pandemic calendar is read there)."""
        m = self.model
        on = onset[person]
        had = on <= t[:, None]
        acute_end = on + m.acute_years
        inside = had & (t[:, None] < acute_end) & (m.acute_years > 0)
        lp = (static[person] + m.log_base[np.minimum(t.astype(int), MAX_AGE)] + had @ m.chronic
              + inside @ m.acute)
        piece_start = np.fmax(np.floor(t), np.nanmax(np.where(had, on, -np.inf), axis=1))
        piece_start = np.fmax(piece_start, np.max(np.where((acute_end <= t[:, None]) & (m.acute_years > 0),
                                                           acute_end, -np.inf), axis=1))
        lp[:, m.covid_era] += covid_log_multiplier(m, birth_year[person] + piece_start)[:, None]
        return lp

    def _pieces(self, onset: np.ndarray, first: np.ndarray, last: np.ndarray):
        """(person, start, length) of the constant-hazard pieces covering each window."""
        people, starts, lengths = [], [], []
        ends = onset + self.model.acute_years
        for i, (a, b) in enumerate(zip(first, last)):
            cuts = np.concatenate([[a, b], np.arange(np.ceil(a), b), onset[i], ends[i]])
            cuts = np.unique(cuts[(cuts >= a) & (cuts <= b)])
            people.append(np.full(len(cuts) - 1, i))
            starts.append(cuts[:-1])
            lengths.append(np.diff(cuts))
        return np.concatenate(people), np.concatenate(starts), np.concatenate(lengths)

    def _batch(self, onset, static, birth_year, age: np.ndarray, horizons, draws: int, rng, recorded: bool
               ) -> np.ndarray:
        m = self.model
        history = np.where(onset <= age[:, None], onset, np.nan)  # only the past is known
        person = np.repeat(np.arange(len(age)), draws)
        start, stop = age[person], age[person] + max(horizons)
        h = simulate(m, static[person], birth_year[person], start, stop, rng, onset=history[person],
                     window=(start, stop))

        first = np.where(np.isnan(history[person]), h.onset, np.nan)  # new onsets only
        recurrent_first = np.full_like(first, np.inf)
        np.minimum.at(recurrent_first, (h.recurrent_person, h.recurrent_process), h.recurrent_age)
        if recorded:
            died = np.where(np.isnan(h.onset[:, m.death]), np.inf, h.onset[:, m.death])
            first, admitted = self._when_coded(first, history[person], start, died, rng)
            k = m.index("unplanned_admission")  # a hospital diagnosis is coded with an admission
            recurrent_first[:, k] = np.minimum(recurrent_first[:, k], admitted)
        first = np.where(m.recurrent, recurrent_first, first)[:, self._outcomes]
        hit = np.stack([first <= (start + hz)[:, None] for hz in horizons], axis=-1)
        p = hit.reshape(len(age), draws, *hit.shape[1:]).mean(axis=1)

        had = ~np.isnan(history[:, self._outcomes]) & ~m.recurrent[self._outcomes] & ~recorded
        dead = history[:, m.death] <= age
        return np.where(had[:, :, None] | dead[:, None, None], np.nan, p)

    def _when_coded(self, onset: np.ndarray, before: np.ndarray, now: np.ndarray, died: np.ndarray, rng):
        """Age at which each disease is first coded, from new onsets (`onset`) and from onsets
        before `now` that are not coded yet (`before`), by the observation layer's model; and
        the first emergency admission that diagnoses a new onset. As in that layer, a case is
        recorded only if its primary-care code would come before the record ends (at death,
        `died`): many who fall ill near the end of life are never coded."""
        coded = onset.copy()
        admitted = np.full(len(now), np.inf)
        for name, rec in DIAGNOSES.items():
            k = self.model.index(name)
            n = len(now)
            delay = rng.standard_exponential(n) * rec.delay_years
            in_hospital = rng.random(n) < rec.hospital
            kept = rng.random(n) < rec.recorded
            kept &= onset[:, k] + delay <= died
            new = np.where(kept, onset[:, k] + np.where(in_hospital, 0.0, delay), np.inf)
            admitted = np.fmin(admitted, np.where(kept & in_hospital, onset[:, k], np.inf))
            # Not coded by now, P(ever) = q(1-h)e^(-s/d) / (1 - q(h + (1-h)(1 - e^(-s/d)))); the rest of
            # an exponential delay is again exponential.
            waiting = np.exp(-(now - before[:, k]) / max(rec.delay_years, 1e-12))
            q, hosp = rec.recorded, rec.hospital
            later = q * (1 - hosp) * waiting / (1 - q * (hosp + (1 - hosp) * (1 - waiting)))
            coded_later = ~np.isnan(before[:, k]) & (rng.random(n) < later) & (now + delay <= died)
            old = np.where(coded_later, now + delay, np.inf)
            coded[:, k] = np.fmin(np.where(np.isnan(new), np.inf, new), old)
        return coded, admitted
