"""Published England figures the simulated population is checked against (within a factor of 1.5).

Values are rounded as the sources publish them; check the source before reusing a figure.
Incidence and prevalence are of *recorded* diagnoses, as an analyst of the extract would
measure them, since that is what the sources count too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    outcome: str
    measure: str  # "incidence" (per 1,000 person-years), "prevalence" (%), "share_75_plus" (%),
    # "life_expectancy" (years at birth)
    value: float
    source: str
    sex: str = "all"  # "F", "M" or "all"
    min_age: int = 0


QOF = "NHS Digital, Quality and Outcomes Framework 2022-23, England (recorded prevalence)"
CANCER_REG = "NHS Digital, Cancer Registration Statistics, England 2019 (new cases / population)"
CRUK = "Cancer Research UK, cancer incidence by age, UK 2016-2018 (share of cases aged 75+)"

FIGURES: tuple[Figure, ...] = (
    Figure("type2_diabetes", "incidence", 3.69,
           "Sharma et al., BMJ Open 2016;6:e010210 (UK primary care, 2013, all ages)"),
    Figure("type2_diabetes", "prevalence", 5.26, "Sharma et al., BMJ Open 2016 (type 2, 2013, all ages)"),
    Figure("type2_diabetes", "prevalence", 7.5, QOF + ", diabetes, age 17+", min_age=17),
    Figure("hypertension", "prevalence", 14.4, QOF + ", hypertension, all ages"),
    Figure("myocardial_infarction", "incidence", 1.5,
           "British Heart Foundation UK factsheet: ~100,000 heart-attack admissions a year"),
    Figure("stroke", "incidence", 1.5, "Stroke Association, State of the Nation: ~100,000 strokes a year (UK)"),
    Figure("stroke", "prevalence", 1.8, QOF + ", stroke and TIA, all ages"),
    Figure("breast_cancer", "incidence", 1.6, CANCER_REG + ", breast, women", sex="F"),
    Figure("prostate_cancer", "incidence", 1.75, CANCER_REG + ", prostate, men", sex="M"),
    Figure("lung_cancer", "incidence", 0.70, CANCER_REG + ", lung"),
    Figure("colorectal_cancer", "incidence", 0.60, CANCER_REG + ", colorectal"),
    Figure("breast_cancer", "share_75_plus", 24, CRUK, sex="F"),
    Figure("prostate_cancer", "share_75_plus", 35, CRUK, sex="M"),
    Figure("lung_cancer", "share_75_plus", 44, CRUK),
    Figure("colorectal_cancer", "share_75_plus", 44, CRUK),
)

# Mortality is checked on the model itself: life expectancy at birth.
LIFE_EXPECTANCY = (
    Figure("death", "life_expectancy", 79.4, "ONS, National life tables, England 2018-2020", sex="M"),
    Figure("death", "life_expectancy", 83.1, "ONS, National life tables, England 2018-2020", sex="F"),
)

TOLERANCE = 1.5  # simulated / published must lie in [1/1.5, 1.5]

# Incidence is measured over a pre-pandemic period; prevalence on its last day.
PERIOD = (2015.0, 2020.0)
