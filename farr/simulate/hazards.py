"""The true disease model: competing hazards whose parameters the oracle shares.

Every process k has a piecewise-constant hazard in age,

    log λ_k(t) = log base_k(⌊t⌋) + x·β_k + φ_k·z − φ_k²/2 + Σ_j Γ_jk·1[j before t] + Δ_jk·1[j in acute window]
                 + log covid_k(calendar year)

with x = (sex, ethnicity, deprivation), z ~ N(0, 1) one hidden frailty per person (the −φ²/2
term keeps its mean multiplier at one), Γ the comorbidity multipliers and Δ the extra risk while
a condition is recent (its acute window). Pieces break at whole ages and at acute-window ends, so
the process is exactly piecewise constant and can be simulated and queried without
discretisation error.

First-onset outcomes are absorbing (each occurs at most once); recurrent ones (admissions,
A&E attendances, GP consultations) do not change the state; death ends everything.

Each process states its target: the population-average rate per 1,000 person-years (at risk)
at given ages, interpolated log-linearly. Comorbidity and frailty selection move realised rates
away from the baseline, so the baselines used (`baseline.py`) are calibrated to meet those
targets by `tools/calibrate_hazards.py`. `reference.py` then checks the recorded result against
published England figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from farr.events.schema import ETHNICITIES
from farr.simulate.baseline import BASELINE

MAX_AGE = 110


@dataclass(frozen=True)
class Process:
    name: str
    incidence: dict[int, float]  # target: age -> population rate per 1,000 person-years at risk
    male: float = 0.0  # log hazard ratio, male vs female (applied as ±male/2)
    sexes: str = "FM"
    ethnicity: dict[str, float] = field(default_factory=dict)  # log HR vs White
    deprivation: float = 0.0  # log HR per IMD quintile step towards the most deprived
    frailty: float = 0.5  # loading on the hidden frailty
    recurrent: bool = False
    acute_years: float = 0.0  # length of the acute window after onset
    covid_era: bool = False  # hazard follows the pandemic calendar


SA = {"Asian": 0.9, "Black": 0.6, "Mixed": 0.3, "Other": 0.4}  # T2D excess, South Asian esp.

PROCESSES: tuple[Process, ...] = (
    Process("type2_diabetes", {20: 0.4, 40: 2.5, 50: 5.0, 60: 8.0, 70: 10.0, 80: 9.0}, male=0.35,
            ethnicity=SA, deprivation=0.12, frailty=0.6),
    Process("hypertension", {20: 1.0, 30: 3.0, 40: 9.0, 50: 20.0, 60: 32.0, 70: 40.0, 80: 42.0},
            male=0.2, ethnicity={"Black": 0.6, "Asian": 0.2}, deprivation=0.07, frailty=0.5),
    Process("chronic_kidney_disease", {30: 0.2, 50: 1.5, 60: 4.0, 70: 12.0, 80: 30.0, 90: 45.0},
            male=-0.1, ethnicity={"Black": 0.4, "Asian": 0.3}, deprivation=0.08, frailty=0.6),
    Process("atrial_fibrillation", {40: 0.3, 50: 1.0, 60: 3.0, 70: 9.0, 80: 20.0, 90: 30.0},
            male=0.4, ethnicity={"Black": -0.5, "Asian": -0.4}, deprivation=0.02, frailty=0.4),
    Process("heart_failure", {40: 0.2, 50: 0.6, 60: 1.8, 70: 5.0, 80: 14.0, 90: 30.0},
            male=0.35, deprivation=0.1, frailty=0.6, acute_years=0.5),
    Process("myocardial_infarction", {30: 0.1, 40: 0.6, 50: 1.6, 60: 2.8, 70: 4.5, 80: 7.0, 90: 9.0},
            male=0.75, ethnicity={"Asian": 0.4, "Black": -0.3}, deprivation=0.12, frailty=0.6,
            acute_years=0.5),
    Process("stroke", {30: 0.1, 40: 0.3, 50: 0.9, 60: 2.0, 70: 4.5, 80: 10.0, 90: 16.0}, male=0.25,
            ethnicity={"Black": 0.5, "Asian": 0.2}, deprivation=0.1, frailty=0.6, acute_years=0.5),
    Process("copd", {35: 0.2, 45: 1.0, 55: 2.5, 65: 5.0, 75: 7.0, 85: 7.0}, male=0.2,
            ethnicity={"Black": -0.7, "Asian": -0.6}, deprivation=0.3, frailty=0.5),
    Process("asthma", {0: 6.0, 5: 5.0, 15: 2.5, 30: 2.0, 60: 1.5, 90: 1.0}, male=-0.1,
            ethnicity={"Black": 0.2, "Asian": 0.1}, deprivation=0.07, frailty=0.3),
    Process("depression", {12: 4.0, 20: 10.0, 40: 8.0, 60: 6.0, 80: 6.0}, male=-0.6,
            ethnicity={"Black": -0.4, "Asian": -0.4, "Mixed": 0.2}, deprivation=0.12, frailty=0.4),
    Process("dementia", {55: 0.2, 65: 1.5, 75: 8.0, 85: 30.0, 95: 60.0}, male=-0.05,
            ethnicity={"Black": 0.2}, deprivation=0.08, frailty=0.4),
    Process("breast_cancer", {25: 0.05, 40: 1.3, 50: 2.4, 60: 2.8, 70: 3.1, 85: 3.3}, sexes="F",
            ethnicity={"Black": -0.2, "Asian": -0.3}, deprivation=-0.04, frailty=0.2, acute_years=1.0),
    Process("lung_cancer", {40: 0.06, 50: 0.35, 60: 1.2, 70: 2.9, 80: 3.9, 90: 3.4}, male=0.15,
            ethnicity={"Black": -0.5, "Asian": -0.6}, deprivation=0.22, frailty=0.3, acute_years=1.0),
    Process("colorectal_cancer", {40: 0.12, 50: 0.5, 60: 1.1, 70: 2.1, 80: 3.1, 90: 3.6}, male=0.35,
            ethnicity={"Black": -0.3, "Asian": -0.5}, deprivation=0.03, frailty=0.2, acute_years=1.0),
    Process("prostate_cancer", {45: 0.1, 55: 1.8, 65: 6.5, 75: 8.2, 85: 7.0}, sexes="M",
            ethnicity={"Black": 0.8, "Asian": -0.5}, deprivation=-0.04, frailty=0.2, acute_years=1.0),
    Process("covid19", {0: 300.0, 60: 300.0, 90: 300.0}, ethnicity={"Asian": 0.3, "Black": 0.3},
            deprivation=0.05, frailty=0.2, covid_era=True, acute_years=0.1),
    Process("obesity", {5: 1.0, 18: 7.0, 40: 8.0, 60: 6.0, 80: 2.0}, male=0.0,
            ethnicity={"Black": 0.3, "Asian": -0.1}, deprivation=0.12, frailty=0.5),
    Process("osteoarthritis", {35: 1.0, 50: 6.0, 65: 12.0, 80: 14.0}, male=-0.35, deprivation=0.05,
            frailty=0.4),
    Process("anxiety", {12: 3.0, 20: 6.0, 40: 5.0, 60: 3.0, 80: 2.0}, male=-0.6,
            ethnicity={"Black": -0.4, "Asian": -0.4}, deprivation=0.08, frailty=0.4),
    Process("hypercholesterolaemia", {25: 1.0, 40: 6.0, 50: 12.0, 60: 16.0, 75: 12.0}, male=0.15,
            ethnicity={"Asian": 0.2, "Black": -0.3}, deprivation=0.02, frailty=0.3),
    Process("unplanned_admission", {0: 60.0, 5: 25.0, 20: 40.0, 50: 60.0, 70: 130.0, 85: 300.0},
            male=0.05, deprivation=0.12, frailty=0.8, recurrent=True),
    Process("ae_attendance", {0: 400.0, 5: 220.0, 20: 300.0, 40: 230.0, 70: 300.0, 85: 550.0},
            male=0.1, ethnicity={"Black": 0.2}, deprivation=0.15, frailty=0.6, recurrent=True),
    Process("gp_consultation", {0: 3300.0, 5: 1300.0, 16: 1600.0, 45: 2300.0, 65: 3300.0, 80: 4600.0},
            male=-0.4, deprivation=0.05, frailty=0.3, recurrent=True),
    Process("death", {0: 3.5, 1: 0.2, 10: 0.1, 20: 0.35, 30: 0.55, 40: 1.1, 50: 2.4, 60: 5.5,
                      70: 13.0, 80: 38.0, 90: 120.0, 100: 350.0, 110: 600.0},
            male=0.35, deprivation=0.1, frailty=0.5),
)

# Comorbidity multipliers: cause -> {effect: (log HR while present, extra log HR in acute window)}.
COMORBIDITY: dict[str, dict[str, tuple[float, float]]] = {
    "type2_diabetes": {"chronic_kidney_disease": (1.0, 0), "myocardial_infarction": (0.6, 0),
                       "stroke": (0.5, 0), "heart_failure": (0.6, 0), "hypertension": (0.4, 0),
                       "depression": (0.3, 0), "dementia": (0.4, 0), "death": (0.35, 0),
                       "unplanned_admission": (0.4, 0), "gp_consultation": (0.3, 0)},
    "hypertension": {"stroke": (0.8, 0), "myocardial_infarction": (0.5, 0),
                     "chronic_kidney_disease": (0.6, 0), "atrial_fibrillation": (0.5, 0),
                     "heart_failure": (0.6, 0), "dementia": (0.2, 0), "gp_consultation": (0.15, 0)},
    "obesity": {"type2_diabetes": (1.2, 0), "hypertension": (0.7, 0), "osteoarthritis": (0.6, 0),
                "heart_failure": (0.4, 0), "atrial_fibrillation": (0.3, 0), "depression": (0.2, 0)},
    "hypercholesterolaemia": {"myocardial_infarction": (0.6, 0), "stroke": (0.3, 0)},
    "chronic_kidney_disease": {"heart_failure": (0.5, 0), "myocardial_infarction": (0.3, 0),
                               "death": (0.5, 0), "unplanned_admission": (0.4, 0)},
    "atrial_fibrillation": {"stroke": (1.0, 0.5), "heart_failure": (0.8, 0), "dementia": (0.3, 0),
                            "death": (0.3, 0), "gp_consultation": (0.15, 0)},
    "heart_failure": {"death": (1.0, 1.0), "unplanned_admission": (0.8, 1.0),
                      "atrial_fibrillation": (0.6, 0), "gp_consultation": (0.3, 0)},
    "myocardial_infarction": {"heart_failure": (1.0, 1.5), "death": (0.6, 2.0), "stroke": (0.3, 0),
                              "atrial_fibrillation": (0.4, 0), "depression": (0.4, 0),
                              "unplanned_admission": (0.3, 1.0)},
    "stroke": {"dementia": (1.0, 0), "death": (0.7, 2.0), "depression": (0.6, 0),
               "atrial_fibrillation": (0.2, 0), "unplanned_admission": (0.5, 1.0)},
    "copd": {"lung_cancer": (1.0, 0), "heart_failure": (0.4, 0), "death": (0.6, 0),
             "unplanned_admission": (0.7, 0), "depression": (0.3, 0), "myocardial_infarction": (0.3, 0)},
    "asthma": {"copd": (1.0, 0), "unplanned_admission": (0.3, 0), "ae_attendance": (0.3, 0)},
    "depression": {"anxiety": (1.2, 0), "dementia": (0.3, 0), "ae_attendance": (0.5, 0),
                   "death": (0.2, 0), "gp_consultation": (0.3, 0)},
    "anxiety": {"depression": (1.0, 0), "ae_attendance": (0.3, 0), "gp_consultation": (0.2, 0)},
    "dementia": {"death": (1.2, 0), "unplanned_admission": (0.6, 0), "ae_attendance": (0.5, 0)},
    "osteoarthritis": {"gp_consultation": (0.2, 0)},
    "breast_cancer": {"death": (0.6, 1.5), "unplanned_admission": (0.3, 1.2), "depression": (0.3, 0)},
    "lung_cancer": {"death": (1.5, 2.5), "unplanned_admission": (0.6, 1.5), "depression": (0.3, 0)},
    "colorectal_cancer": {"death": (1.0, 2.0), "unplanned_admission": (0.5, 1.5), "depression": (0.3, 0)},
    "prostate_cancer": {"death": (0.4, 0.8), "unplanned_admission": (0.2, 1.0)},
    "covid19": {"death": (0.0, 2.5), "unplanned_admission": (0.0, 2.0), "ae_attendance": (0.0, 1.0)},
}

# Relative force of infection by calendar year (1.0 = the `incidence` of covid19). Before March
# 2020 there was none; the waves of 2021-22 (Alpha, Delta, Omicron) infected most people.
COVID_CALENDAR = {2020: 0.15, 2021: 0.5, 2022: 1.0, 2023: 0.3, 2024: 0.15}


@dataclass(frozen=True)
class HazardModel:
    """Array form of the disease model, indexed by process (columns) and age (rows)."""

    names: tuple[str, ...]
    log_base: np.ndarray  # (MAX_AGE + 1, P) log rate per year
    male: np.ndarray  # (P,)
    female_allowed: np.ndarray  # (P,) bool
    male_allowed: np.ndarray  # (P,) bool
    ethnicity: np.ndarray  # (len(ETHNICITIES), P)
    deprivation: np.ndarray  # (P,)
    frailty: np.ndarray  # (P,)
    chronic: np.ndarray  # (P, P) Γ: row = cause, column = effect
    acute: np.ndarray  # (P, P) Δ
    acute_years: np.ndarray  # (P,)
    recurrent: np.ndarray  # (P,) bool
    covid_log_calendar: np.ndarray  # (n_years,) log multiplier by calendar year for covid_era
    covid_first_year: int
    covid_era: np.ndarray  # (P,) bool
    spec: dict  # the parameters it was built from, as JSON-ready data

    @property
    def death(self) -> int:
        return self.names.index("death")

    def index(self, name: str) -> int:
        return self.names.index(name)

    @property
    def first_onset(self) -> np.ndarray:
        """Indices of the absorbing, non-death processes (the diseases)."""
        return np.flatnonzero(~self.recurrent & (np.arange(len(self.names)) != self.death))

    def to_json(self) -> str:
        return json.dumps(self.spec, indent=1, sort_keys=True)


def _log_base(knots: dict[int, float]) -> np.ndarray:
    ages = np.array(sorted(knots))
    log_rates = np.log(np.array([knots[a] for a in ages]) / 1000.0)
    grid = np.arange(MAX_AGE + 1)
    out = np.interp(grid, ages, log_rates)
    out[grid < ages[0]] = -np.inf  # no onset before the first knot
    return out


def default_spec() -> dict:
    """The model's parameters as JSON-ready data (what `truth/hazards.json` holds)."""
    return json.loads(json.dumps({"processes": [asdict(p) for p in PROCESSES], "baseline": BASELINE,
                                  "comorbidity": COMORBIDITY, "covid_calendar": COVID_CALENDAR}))


def build_model(spec: dict | None = None) -> HazardModel:
    """The array form of `spec` (default: this module's parameters)."""
    spec = default_spec() if spec is None else spec
    processes = [Process(**{**p, "incidence": _int_keys(p["incidence"])}) for p in spec["processes"]]
    baseline = {name: _int_keys(knots) for name, knots in spec.get("baseline", {}).items()}
    names = tuple(p.name for p in processes)
    col = {n: i for i, n in enumerate(names)}
    chronic = np.zeros((len(names), len(names)))
    acute = np.zeros_like(chronic)
    for cause, effects in spec["comorbidity"].items():
        for effect, (log_hr, acute_log_hr) in effects.items():
            chronic[col[cause], col[effect]] = log_hr
            acute[col[cause], col[effect]] = acute_log_hr
    covid = {int(year): v for year, v in spec["covid_calendar"].items()}
    first_year = min(covid)
    calendar = np.array([covid[y] for y in range(first_year, max(covid) + 1)])
    return HazardModel(
        names=names,
        log_base=np.stack([_log_base(baseline.get(p.name, p.incidence)) for p in processes], axis=1),
        male=np.array([p.male for p in processes]),
        female_allowed=np.array(["F" in p.sexes for p in processes]),
        male_allowed=np.array(["M" in p.sexes for p in processes]),
        ethnicity=np.array([[p.ethnicity.get(e, 0.0) for p in processes] for e in ETHNICITIES]),
        deprivation=np.array([p.deprivation for p in processes]),
        frailty=np.array([p.frailty for p in processes]),
        chronic=chronic,
        acute=acute,
        acute_years=np.array([p.acute_years for p in processes]),
        recurrent=np.array([p.recurrent for p in processes]),
        covid_log_calendar=np.log(calendar),
        covid_first_year=first_year,
        covid_era=np.array([p.covid_era for p in processes]),
        spec=spec,
    )


def _int_keys(knots: dict) -> dict[int, float]:
    return {int(age): rate for age, rate in knots.items()}  # JSON keys are strings


def static_log_hazard(model: HazardModel, male: np.ndarray, ethnicity: np.ndarray,
                      imd_quintile: np.ndarray, frailty: np.ndarray) -> np.ndarray:
    """The part of each person's log hazard that never changes: (n, P)."""
    sex_term = np.where(male[:, None], model.male / 2, -model.male / 2)
    allowed = np.where(male[:, None], model.male_allowed, model.female_allowed)
    lp = (sex_term
          + model.ethnicity[ethnicity]
          + (3 - imd_quintile)[:, None] * model.deprivation
          + frailty[:, None] * model.frailty - model.frailty**2 / 2)
    return np.where(allowed, lp, -np.inf)


def covid_log_multiplier(model: HazardModel, calendar_year: np.ndarray) -> np.ndarray:
    """log multiplier of the covid-era processes at these calendar years (−inf outside the era)."""
    year = np.floor(calendar_year).astype(np.int64) - model.covid_first_year
    inside = (year >= 0) & (year < len(model.covid_log_calendar))
    return np.where(inside, model.covid_log_calendar[np.clip(year, 0, len(model.covid_log_calendar) - 1)],
                    -np.inf)
