"""The observation layer: what a GP and hospital record would hold of each true life.

Only what happens while a person is registered is recorded, except coded diagnoses made before
registration, which follow the patient (GP2GP transfer). Diagnoses are coded after a delay or
never; measurements are taken at consultations and depend on the true (possibly undiagnosed)
state; repeat prescriptions follow a coded diagnosis; COVID-19 vaccinations follow the national
programme's age priority. Vaccination is recorded only: it does not change the true hazards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from farr.events.schema import BIRTH_CODE, DEATH_CODE
from farr.simulate import codes as c
from farr.simulate.engine import categorical
from farr.simulate.hazards import HazardModel
from farr.simulate.population import Population

CODE_INDEX = {code: i for i, code in enumerate(c.codebook())}
TRANSFERRED = 0.9  # share of diagnoses made before registration that arrive with the record


@dataclass
class Observed:
    """Recorded events of a chunk, unsorted: person row, age at the event, code index, value."""

    person: np.ndarray
    age: np.ndarray
    code: np.ndarray
    value: np.ndarray  # float32, NaN where the code has no value


def observe(model: HazardModel, pop: Population, rng: np.random.Generator) -> Observed:
    recorded = _diagnosis_ages(model, pop, rng)
    parts = [
        _births(pop),
        _deaths(model, pop),
        *_diagnoses(model, pop, recorded, rng),
        *_encounters(model, pop, rng),
        _prescriptions(model, pop, recorded, rng),
        *_measurements(model, pop, recorded, rng),
        *_vaccinations(pop, rng),
    ]
    return Observed(*(np.concatenate(column) for column in zip(*parts)))


def _rows(person, age, code, value=None):
    person = np.asarray(person)
    code = np.broadcast_to(np.asarray(code, dtype=np.int32), person.shape)
    value = np.full(person.shape, np.nan, np.float32) if value is None else value.astype(np.float32)
    return person, np.asarray(age, dtype=float), code, value


def _births(pop: Population):
    # MEDS_BIRTH sits at the start of the month of birth: the exact date is an identifier.
    month_start = np.floor(pop.birth_year * 12) / 12
    return _rows(np.arange(len(pop)), month_start - pop.birth_year, CODE_INDEX[BIRTH_CODE])


def _deaths(model: HazardModel, pop: Population):
    died = np.flatnonzero(pop.end_reason == 1)
    return _rows(died, pop.histories.onset[died, model.death], CODE_INDEX[DEATH_CODE])


def _diagnosis_ages(model: HazardModel, pop: Population, rng) -> np.ndarray:
    """Age at which each disease is first coded (NaN: never), (n, len(DIAGNOSES))."""
    onset = pop.histories.onset[:, [model.index(name) for name in c.DIAGNOSES]]
    delay = np.array([r.delay_years for r in c.DIAGNOSES.values()])
    coded = np.array([r.recorded for r in c.DIAGNOSES.values()])
    at = onset + rng.standard_exponential(onset.shape) * delay
    kept = (rng.random(onset.shape) < coded) & (at <= pop.exit_age[:, None])
    kept &= (at >= pop.entry_age[:, None]) | (rng.random(onset.shape) < TRANSFERRED)
    return np.where(kept, at, np.nan)


def _diagnoses(model: HazardModel, pop: Population, recorded: np.ndarray, rng):
    """Primary-care codes when recorded; hospital-diagnosed cases also get an ICD-10 admission."""
    out = []
    for k, (name, rec) in enumerate(c.DIAGNOSES.items()):
        person = np.flatnonzero(~np.isnan(recorded[:, k]))
        out.append(_rows(person, recorded[person, k], CODE_INDEX[f"SNOMED/{rec.snomed}"]))
        onset = pop.histories.onset[person, model.index(name)]
        in_hospital = (rng.random(person.size) < rec.hospital) & (onset >= pop.entry_age[person])
        admitted = person[in_hospital]
        for code in (c.ENCOUNTERS["unplanned_admission"][0], f"ICD10/{rec.icd10}"):
            out.append(_rows(admitted, onset[in_hospital], CODE_INDEX[code]))
    return out


def _encounters(model: HazardModel, pop: Population, rng):
    """Consultations, admissions (with a primary ICD-10 diagnosis) and A&E attendances."""
    h = pop.histories
    out = []
    for name, (code, _) in c.ENCOUNTERS.items():
        mine = h.recurrent_process == model.index(name)
        out.append(_rows(h.recurrent_person[mine], h.recurrent_age[mine], CODE_INDEX[code]))
    admission = h.recurrent_process == model.index("unplanned_admission")
    weights = np.array([w for _, w in c.ADMISSION_DIAGNOSES.values()], dtype=float)
    which = categorical(rng, np.broadcast_to(weights, (admission.sum(), len(weights))))
    diagnosis = np.array([CODE_INDEX[f"ICD10/{code}"] for code in c.ADMISSION_DIAGNOSES])[which]
    out.append(_rows(h.recurrent_person[admission], h.recurrent_age[admission], diagnosis))
    return out


def _prescriptions(model: HazardModel, pop: Population, recorded: np.ndarray, rng):
    """Six-monthly repeat issues from the diagnosis to the end of registration.

    A repeat for a diagnosis recorded before registration is already running: its first issue
    falls anywhere in the first interval. Issued on the registration day itself, every repeat of
    everyone registered at the extract start fell on the same two days of each year, and a model
    learnt that calendar rhythm: the 5-year risks it read at landmarks three months apart differed
    by 23% (max/min, median over outcomes; 69% for breast cancer)."""
    parts = []
    interval = c.PRESCRIPTION_INTERVAL_YEARS
    for k, rec in enumerate(c.DIAGNOSES.values()):
        if rec.drug is None:
            continue
        person = np.flatnonzero(~np.isnan(recorded[:, k]))
        diagnosed, entry = recorded[person, k], pop.entry_age[person]
        first = np.where(diagnosed < entry, entry + rng.random(person.size) * interval, diagnosed)
        issues = np.floor((pop.exit_age[person] - first) / interval).astype(int) + 1
        issues = np.maximum(issues, 0)
        who = np.repeat(person, issues)
        nth = np.arange(who.size) - np.repeat(np.cumsum(issues) - issues, issues)
        age = np.repeat(first, issues) + nth * interval
        age = np.minimum(age + rng.random(who.size) * 0.05, pop.exit_age[who])
        parts.append(_rows(who, age, CODE_INDEX[f"BNF/{rec.drug}"]))
    return tuple(np.concatenate(col) for col in zip(*parts))


def _measurements(model: HazardModel, pop: Population, recorded: np.ndarray, rng):
    """Tests at consultations: more often once a related diagnosis is coded; values track the truth."""
    h = pop.histories
    visit = h.recurrent_process == model.index("gp_consultation")
    person, age = h.recurrent_person[visit], h.recurrent_age[visit]
    names = list(c.DIAGNOSES)

    def true(name):  # disease present at the visit, whether or not it is coded
        return h.onset[person, model.index(name)] <= age

    def coded(*diseases):
        return np.any([recorded[person, names.index(d)] <= age for d in diseases], axis=0)

    adult = age >= 16
    noise = rng.standard_normal((5, person.size))
    tests = {
        "hba1c": (np.where(coded("type2_diabetes"), 0.5, 0.04),
                  37 + 0.06 * (age - 30) + true("type2_diabetes") * 22 + noise[0] * np.where(
                      true("type2_diabetes"), 11, 3.5)),
        "systolic_bp": (np.where(coded("hypertension", "type2_diabetes", "chronic_kidney_disease"), 0.5, 0.15),
                        114 + 0.45 * (age - 30) + true("hypertension") * 24
                        - coded("hypertension") * 10 + noise[1] * 12),
        "bmi": (np.full(person.size, 0.08),
                np.where(true("obesity"), 34 + noise[2] * 3.5, 25 + noise[2] * 3)),
        "egfr": (np.where(coded("chronic_kidney_disease", "type2_diabetes", "hypertension"), 0.35, 0.04),
                 np.where(true("chronic_kidney_disease"), 45 + noise[3] * 10,
                          np.clip(112 - 0.8 * age, 65, None) + noise[3] * 9)),
        "cholesterol": (np.where(coded("hypercholesterolaemia", "type2_diabetes"), 0.3, 0.04),
                        5.0 + 0.01 * (age - 30) + true("hypercholesterolaemia") * 1.6
                        - coded("hypercholesterolaemia") * 1.5 + noise[4] * 0.9),
    }
    out = []
    for name, (probability, value) in tests.items():
        taken = adult & (rng.random(person.size) < probability)
        value = np.round(np.clip(value[taken], 1.0, None), 1)
        out.append(_rows(person[taken], age[taken], CODE_INDEX[c.MEASUREMENTS[name][0]], value))
    return out


# COVID-19 vaccination programme: (minimum age, first-dose window start, window length in years,
# log-odds of uptake). Older groups were invited first, from December 2020.
VACCINE_WAVES = ((80, 2020.95, 0.10, 3.0), (70, 2021.02, 0.12, 2.8), (50, 2021.10, 0.20, 2.4),
                 (30, 2021.30, 0.25, 1.5), (18, 2021.40, 0.25, 0.9), (12, 2021.70, 0.30, 0.0))
VACCINE_ETHNICITY_LOG_ODDS = np.array([0.0, -0.5, -1.5, -0.7, -0.6])


def _vaccinations(pop: Population, rng):
    """First, second and booster doses, recorded when alive and registered."""
    age_2021 = 2021.0 - pop.birth_year
    wave = np.full(len(pop), -1)
    for i, (min_age, *_rest) in reversed(list(enumerate(VACCINE_WAVES))):
        wave[age_2021 >= min_age] = i
    eligible = np.flatnonzero(wave >= 0)
    start, length, log_odds = (np.array([w[j] for w in VACCINE_WAVES])[wave[eligible]] for j in (1, 2, 3))
    log_odds = log_odds + VACCINE_ETHNICITY_LOG_ODDS[pop.ethnicity[eligible]] - 0.15 * (3 - pop.imd_quintile[eligible])
    uptake = 1 / (1 + np.exp(-log_odds))
    first = start + rng.random(eligible.size) * length
    second = first + 0.2 + rng.random(eligible.size) * 0.05
    booster = np.maximum(second + 0.5, 2021.75) + rng.random(eligible.size) * 0.2
    u = rng.random((3, eligible.size))
    doses = (u[0] < uptake, (u[0] < uptake) & (u[1] < 0.93),
             (u[0] < uptake) & (u[1] < 0.93) & (u[2] < uptake * 0.9) & (age_2021[eligible] >= 18))
    out = []
    for when, given, (code, _) in zip((first, second, booster), doses, c.VACCINES):
        age = when - pop.birth_year[eligible]
        inside = given & (age >= pop.entry_age[eligible]) & (age <= pop.exit_age[eligible])
        out.append(_rows(eligible[inside], age[inside], CODE_INDEX[code]))
    return out
