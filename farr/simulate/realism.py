"""Measure a dataset the way an analyst would, and compare it with published England figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from farr.events.io import scan_events, scan_subjects
from farr.simulate import england as eng
from farr.simulate.calendar import DAYS_PER_YEAR
from farr.simulate.codes import DIAGNOSES
from farr.simulate.engine import simulate
from farr.simulate.hazards import MAX_AGE, HazardModel, static_log_hazard
from farr.simulate.reference import FIGURES, LIFE_EXPECTANCY, PERIOD, TOLERANCE, Figure

AGE_BAND_YEARS = 5


@dataclass(frozen=True)
class Comparison:
    figure: Figure
    simulated: float

    @property
    def ratio(self) -> float:
        return self.simulated / self.figure.value

    @property
    def within_tolerance(self) -> bool:
        return 1 / TOLERANCE <= self.ratio <= TOLERANCE


def _year_start(year: float) -> pl.Expr:
    return pl.date(int(year), 1, 1)


def _subjects(path: Path) -> pl.LazyFrame:
    return scan_subjects(path).select(
        "subject_id", "sex", "registration_start", "registration_end",
        pl.col("year_month_of_birth").str.to_date("%Y-%m").alias("birth"))


def first_diagnoses(path: Path) -> pl.LazyFrame:
    """subject_id, outcome, date of the first recorded code of each simulated disease."""
    code_to_outcome = {f"SNOMED/{r.snomed}": name for name, r in DIAGNOSES.items()}
    code_to_outcome |= {f"ICD10/{r.icd10}": name for name, r in DIAGNOSES.items()}
    return (scan_events(path)
            .filter(pl.col("code").is_in(list(code_to_outcome)))
            .with_columns(pl.col("code").replace_strict(code_to_outcome).alias("outcome"))
            .group_by("subject_id", "outcome").agg(pl.col("time").min().dt.date().alias("date")))


def _years(later: pl.Expr, earlier: pl.Expr) -> pl.Expr:
    return (later - earlier).dt.total_days() / DAYS_PER_YEAR


def _registered_in_period() -> tuple[pl.Expr, pl.Expr]:
    """Start and end of each person's registered time inside PERIOD."""
    return (pl.max_horizontal("registration_start", _year_start(PERIOD[0])),
            pl.min_horizontal("registration_end", _year_start(PERIOD[1])))


def _in_period(column: str) -> pl.Expr:
    return pl.col(column).is_between(_year_start(PERIOD[0]), _year_start(PERIOD[1]), closed="left")


def _person_years(subjects: pl.LazyFrame) -> pl.LazyFrame:
    """Registered person-time inside PERIOD, by sex."""
    start, end = _registered_in_period()
    return subjects.select("sex", _years(end, start).clip(0).alias("years"))


def measure(path: str | Path) -> list[Comparison]:
    path = Path(path)
    subjects = _subjects(path).collect().lazy()
    first = first_diagnoses(path).join(subjects, on="subject_id").collect().lazy()
    person_years = _person_years(subjects).collect()
    return [Comparison(f, _simulated(f, subjects, first, person_years)) for f in FIGURES]


def _simulated(f: Figure, subjects: pl.LazyFrame, first: pl.LazyFrame, person_years: pl.DataFrame) -> float:
    sex = pl.lit(True) if f.sex == "all" else pl.col("sex") == f.sex
    cases = first.filter((pl.col("outcome") == f.outcome) & sex)
    in_period = cases.filter(_in_period("date"))
    if f.measure == "incidence":
        years = person_years.filter(sex)["years"].sum()
        return 1000 * in_period.select(pl.len()).collect().item() / years if years else float("nan")
    if f.measure == "share_75_plus":
        age = _years(pl.col("date"), pl.col("birth"))
        share = in_period.select((age >= 75).mean()).collect().item()
        return float("nan") if share is None else 100 * share  # no cases: nothing to measure
    day = _year_start(PERIOD[1])
    registered = subjects.filter(sex & (pl.col("registration_start") <= day) & (pl.col("registration_end") >= day)
                                 & (_years(day, pl.col("birth")) >= f.min_age))
    had = cases.filter(pl.col("date") <= day).select("subject_id")
    n = registered.select(pl.len()).collect().item()
    with_it = registered.join(had, on="subject_id", how="semi").select(pl.len()).collect().item()
    if not n:
        return float("nan")
    return 100 * with_it / n


def life_expectancy(model: HazardModel, lives: int = 40_000, seed: int = 0) -> list[Comparison]:
    """Life expectancy at birth of the true model (born 1990, England's IMD and ethnic mix)."""
    rng = np.random.default_rng(seed)
    male = rng.random(lives) < 0.5
    ethnicity = rng.choice(len(eng.ETHNICITY_CENSUS_2021), lives, p=eng.ETHNICITY_CENSUS_2021).astype(np.int8)
    imd = rng.integers(1, 6, lives).astype(np.int8)
    lp = static_log_hazard(model, male, ethnicity, imd, rng.standard_normal(lives))
    h = simulate(model, lp, np.full(lives, 1990.0), np.zeros(lives), np.full(lives, MAX_AGE + 1.0), rng)
    death = np.where(np.isnan(h.onset[:, model.death]), MAX_AGE + 1.0, h.onset[:, model.death])
    return [Comparison(f, float(death[male if f.sex == "M" else ~male].mean())) for f in LIFE_EXPECTANCY]


def incidence_by_age(path: str | Path, outcomes: list[str]) -> pl.DataFrame:
    """Recorded first-diagnosis rate per 1,000 person-years by 5-year age band, over PERIOD.

    Person-time is split by age band exactly: each registered interval is cut at band edges.
    """
    path = Path(path)
    subjects = _subjects(path)
    start, end = _registered_in_period()
    spans = subjects.select(_years(start, pl.col("birth")).alias("a0"), _years(end, pl.col("birth")).alias("a1"))
    bands = pl.LazyFrame({"band": list(range(0, 100, AGE_BAND_YEARS))})
    exposure = (spans.filter(pl.col("a1") > pl.col("a0")).join(bands, how="cross")
                .select("band", (pl.min_horizontal("a1", pl.col("band") + AGE_BAND_YEARS)
                                 - pl.max_horizontal("a0", "band")).clip(0).alias("years"))
                .group_by("band").agg(pl.col("years").sum()))
    cases = (first_diagnoses(path).join(subjects, on="subject_id")
             .filter(pl.col("outcome").is_in(outcomes) & _in_period("date"))
             .with_columns((_years(pl.col("date"), pl.col("birth")) // AGE_BAND_YEARS * AGE_BAND_YEARS)
                           .cast(pl.Int64).clip(0, 95).alias("band"))
             .group_by("outcome", "band").agg(pl.len().alias("cases")))
    return (cases.join(exposure, on="band")
            .with_columns((1000 * pl.col("cases") / pl.col("years")).alias("per_1000"))
            .sort("outcome", "band").collect())


COMPARISON_HEADER = ["outcome", "measure", "sex", "published", "simulated", "ratio", "within 1.5x", "source"]


def comparison_rows(comparisons: list[Comparison]) -> list[list[object]]:
    return [[c.figure.outcome, c.figure.measure + (f" (age {c.figure.min_age}+)" if c.figure.min_age else ""),
             c.figure.sex, c.figure.value, round(c.simulated, 2), round(c.ratio, 2),
             "yes" if c.within_tolerance else "NO", c.figure.source] for c in comparisons]
