"""The report that comes with a simulated population: who is in it, what happens to them, and how
it compares with England."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from farr.events.io import read_metadata, scan_events, scan_subjects
from farr.events.schema import ETHNICITIES
from farr.reporting import Report
from farr.simulate import england as eng
from farr.simulate.calendar import DAYS_PER_YEAR
from farr.simulate.codes import codebook
from farr.simulate.realism import COMPARISON_HEADER, comparison_rows, incidence_by_age, life_expectancy, measure
from farr.simulate.reference import PERIOD
from farr.simulate.simulator import read_model

REPORT_DIR = "report"
CENSUS_DAY = (2021, 3, 21)  # census day, to compare the registered population with the census
PLOTTED = ["type2_diabetes", "hypertension", "myocardial_infarction", "stroke", "atrial_fibrillation",
           "dementia", "lung_cancer", "colorectal_cancer"]


def write_report(dataset: str | Path) -> Path:
    dataset = Path(dataset)
    meta = read_metadata(dataset)
    report = Report("farr simulated population")
    sim = meta.get("extra", {}).get("simulation", {})
    report.text(f"{meta['subjects']:,} people, {meta['rows']:,} events ({meta['rows'] / meta['subjects']:.0f} per "
                f"person) in {meta['shards']} shards; seed {sim.get('seed')}; extract window "
                f"{sim.get('extract_window')}; identifiable: {meta['identifiable']}.")
    registered = _registered_on_census_day(dataset)
    _population(report, registered)
    _follow_up(report, dataset)
    comparisons = measure(dataset) + life_expectancy(read_model(dataset))
    report.heading("Against published England figures")
    passed = sum(c.within_tolerance for c in comparisons)
    report.text(f"{passed} of {len(comparisons)} figures within a factor of 1.5. Incidence is of first recorded "
                f"diagnoses over {PERIOD[0]:.0f}-{PERIOD[1] - 1:.0f} per registered person-year; prevalence "
                f"is on 1 January {PERIOD[1]:.0f}; life expectancy is of the true model.")
    report.table(COMPARISON_HEADER, comparison_rows(comparisons))
    report.figure(_incidence_figure(dataset), "incidence_by_age",
                  "Recorded first-diagnosis rate by age (per 1,000 person-years, log scale)")
    _codes(report, dataset)
    return report.save(dataset / REPORT_DIR)


def _registered_on_census_day(dataset: Path) -> pl.DataFrame:
    day = pl.date(*CENSUS_DAY)
    age = (day - pl.col("year_month_of_birth").str.to_date("%Y-%m")).dt.total_days() / DAYS_PER_YEAR
    return (scan_subjects(dataset)
            .filter((pl.col("registration_start") <= day) & (pl.col("registration_end") >= day))
            .with_columns((age // 5 * 5).clip(0, 90).cast(pl.Int64).alias("band"))
            .collect())


def _population(report: Report, registered: pl.DataFrame) -> None:
    report.heading("Population registered on census day 2021")
    n = len(registered)
    census = eng.AGE_BAND_THOUSANDS / eng.AGE_BAND_THOUSANDS.sum()
    counts = registered.group_by("band", "sex").len().pivot(on="sex", index="band", values="len").sort("band")
    counts = pl.DataFrame({"band": eng.AGE_BANDS}).join(counts, on="band", how="left").fill_null(0)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    y = np.arange(len(eng.AGE_BANDS))
    for sex, sign, colour in (("F", 1, "#c0504d"), ("M", -1, "#4f81bd")):
        share = counts[sex].to_numpy() / n * 100 if sex in counts.columns else np.zeros(len(y))
        census_share = census * np.where(sex == "F", eng.FEMALE_SHARE, 1 - eng.FEMALE_SHARE) * 100
        ax.barh(y, sign * share, color=colour, alpha=0.7, label=f"simulated {sex}")
        ax.step(sign * census_share, y, where="mid", color="k", lw=1)
    ax.set_yticks(y, [f"{a}+" if a == 90 else f"{a}-{a + 4}" for a in eng.AGE_BANDS], fontsize=7)
    ax.set_xlabel("% of population (black: ONS Census 2021, England)")
    ax.legend(fontsize=8)
    report.figure(fig, "age_pyramid", "Age-sex pyramid of the registered population vs Census 2021")
    shares = registered["ethnicity"].value_counts(normalize=True)
    rows = [[e, round(100 * _share(shares, "ethnicity", e), 1), round(100 * census, 1)]
            for e, census in zip(ETHNICITIES, eng.ETHNICITY_CENSUS_2021)]
    report.table(["ethnic group", "simulated %", "Census 2021 %"], rows)
    imd = registered["imd_quintile"].value_counts(normalize=True).sort("imd_quintile")
    report.table(["IMD quintile (1 = most deprived)", "simulated %"],
                 [[int(q), round(100 * s, 1)] for q, s in imd.iter_rows()])


def _share(shares: pl.DataFrame, column: str, value: str) -> float:
    match = shares.filter(pl.col(column) == value)["proportion"]
    return float(match[0]) if len(match) else 0.0


def _follow_up(report: Report, dataset: Path) -> None:
    subjects = scan_subjects(dataset)
    years = (pl.col("registration_end") - pl.col("registration_start")).dt.total_days() / DAYS_PER_YEAR
    summary = subjects.group_by("end_reason").agg(pl.len().alias("people"), years.mean().alias("years")).collect()
    report.heading("Follow-up")
    report.table(["registration ended by", "people", "mean years registered"],
                 [[r, n, round(y, 1)] for r, n, y in summary.sort("end_reason").iter_rows()])


def _incidence_figure(dataset: Path) -> plt.Figure:
    rates = incidence_by_age(dataset, PLOTTED)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for outcome in PLOTTED:
        mine = rates.filter(pl.col("outcome") == outcome)
        ax.plot(mine["band"] + 2.5, mine["per_1000"], marker=".", label=outcome.replace("_", " "))
    ax.set_yscale("log")
    ax.set_xlabel("age")
    ax.set_ylabel("per 1,000 person-years")
    ax.legend(fontsize=7, ncol=2)
    return fig


def _codes(report: Report, dataset: Path) -> None:
    counts = scan_events(dataset).group_by("code").len().sort("len", descending=True).head(15).collect()
    names = codebook()
    report.heading("Most frequent codes")
    report.table(["code", "description", "events"],
                 [[code, names.get(code, ""), n] for code, n in counts.iter_rows()])
