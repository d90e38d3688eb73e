"""The population health report: group rates with intervals, inequality gradients, the region
chart of planning projections and, on simulated data, the check against the oracle. Every number
and plot is drawn from the disclosure-controlled tables only."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from farr.population.inequality import IMD_ORDER
from farr.reporting import Report

PANEL_COLUMNS = 4
_BACKTEST = {True: "Backtest: the same forecast made one horizon before the landmark was checked against what "
                   "then happened (for everyone then whose earlier history the view's own forward pass could read, "
                   "and at most {backtest_people:,} of the others, a random subsample weighted up); each rate is "
                   "corrected first by the observed/expected ratios then of the age-sex strata its people belong "
                   "to, weighted by its expected cases in each, and then by the ratio the group had beyond them "
                   "(shrunk towards its outcome's overall ratio as far as that group's numbers are noisy), and both "
                   "intervals are widened by the model error the backtest found, and by how far that error "
                   "moved between two backtests a horizon apart where the data reach back that far (the older "
                   "backtest's ratios then join the recent ones, weighted down by that move). A shorter "
                   "horizon's corrections also draw on each group's ratio at the longest horizon, weighted "
                   "down by how far the two horizons' ratios differ.",
             False: "No backtest was asked for: the intervals leave out the model's own error."}
_CALENDAR = ("Every cohort's risks (the landmark's and each backtest's) are also scaled in each age band to their "
             "mean over calendar time moved across one period of the model's calendar encoding ({calendar_people:,} "
             "people of the cohort read at each shift), so that neither the rates nor their corrections hang on the "
             "phase of one date. ")
_RISKS = {"analytic": "analytic risks (its rates read at the landmark and on each anniversary), scaled in "
                      "each age band to the risks of the futures sampled for the planning subsample, in which "
                      "cases that come after other events (a diagnosis coded in the admission that finds it) "
                      "count too",
          "rollout": "sampled futures (each future's rate of the outcome integrated along it to its first event)"}


def _panels(count: int, width: float = 3.2, height: float = 2.4):
    rows = max(1, int(np.ceil(count / PANEL_COLUMNS)))
    columns = min(count, PANEL_COLUMNS)
    fig, axes = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def group_figure(rates: pl.DataFrame, grouping: str, horizon: float) -> plt.Figure:
    """Bars of each group's rate with its 90% interval, one panel per outcome."""
    part = rates.filter((pl.col("grouping") == grouping) & (pl.col("horizon_years") == horizon))
    outcomes = part["outcome"].unique(maintain_order=True).to_list()
    fig, axes = _panels(len(outcomes))
    for ax, outcome in zip(axes, outcomes):
        rows = part.filter(pl.col("outcome") == outcome).sort("group")
        rate = rows["rate_per_100k"].to_numpy().astype(float)
        error = np.abs(np.stack([rate - rows["pi_lower_per_100k"].to_numpy().astype(float),
                                 rows["pi_upper_per_100k"].to_numpy().astype(float) - rate]))
        y = np.arange(rows.height)
        ax.barh(y, np.nan_to_num(rate), xerr=np.nan_to_num(error), color="#4477aa", ecolor="#222", capsize=2)
        ax.set_yticks(y, [g if r == r else f"{g} (suppressed)" for g, r in zip(rows["group"], rate)], fontsize=6)
        ax.set_title(outcome, fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    fig.suptitle(f"Expected cases per 100,000 at risk within {horizon:g} years, by {grouping} "
                 "(90% prediction intervals)")
    fig.tight_layout()
    return fig


def gradient_figure(rates: pl.DataFrame, horizon: float) -> plt.Figure:
    """Rate ratio against the least deprived quintile, across quintiles, one line per outcome."""
    part = rates.filter((pl.col("grouping") == "imd") & (pl.col("horizon_years") == horizon))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for outcome, rows in part.group_by("outcome", maintain_order=True):
        by = dict(zip(rows["group"].cast(pl.String), rows["rate_per_100k"]))
        rate = np.array([by.get(q) if by.get(q) is not None else np.nan for q in IMD_ORDER], dtype=float)
        ax.plot(range(5), rate / rate[0], marker="o", lw=1, label=outcome[0])
    ax.set_xticks(range(5), ["5 (least)", "4", "3", "2", "1 (most deprived)"])
    ax.set_yscale("log")
    ax.axhline(1.0, color="#888", lw=0.8)
    ax.set_ylabel("rate ratio vs IMD quintile 5")
    ax.set_title(f"Deprivation gradient of each outcome within {horizon:g} years")
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    return fig


def region_figure(planning: pl.DataFrame) -> plt.Figure:
    """Projected events per year in each region, one panel per measure, with 90% intervals."""
    measures = planning["measure"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, len(measures), figsize=(5 * len(measures), 4), squeeze=False)
    for ax, measure in zip(axes[0], measures):
        for (region,), rows in planning.filter(pl.col("measure") == measure).group_by("region", maintain_order=True):
            rows = rows.sort("year")
            ax.errorbar(rows["year"], rows["projected"].to_numpy().astype(float),
                        yerr=np.abs(np.stack([rows["projected"] - rows["lower"], rows["upper"] - rows["projected"]])
                                    .astype(float)), marker="o", capsize=2, lw=1, label=region)
        ax.set_title(measure.replace("_", " "))
        ax.set_xticks(sorted(planning["year"].unique()))
        ax.set_xlabel("year after the landmark")
    axes[0][0].set_ylabel("projected events")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def comparison_figure(rates: pl.DataFrame, column: str, label: str, model_column: str) -> plt.Figure:
    """Model group rates against `column` (the oracle's or the observed), log-log, with y = x."""
    rows = rates.filter(pl.col(column).is_not_null() & pl.col(model_column).is_not_null()
                        & (pl.col("grouping") != "all") & (pl.col(column) > 0) & (pl.col(model_column) > 0))
    fig, ax = plt.subplots(figsize=(5, 5))
    for (horizon,), part in rows.group_by("horizon_years", maintain_order=True):
        ax.scatter(part[column], part[model_column], s=6, alpha=0.6, label=f"{horizon:g} years")
    if rows.height:
        low, high = rows.select(pl.min_horizontal(pl.col(column).min(), pl.col(model_column).min())).item(), \
            rows.select(pl.max_horizontal(pl.col(column).max(), pl.col(model_column).max())).item()
        ax.plot([low, high], [low, high], color="#888", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"{label} rate per 100,000")
    ax.set_ylabel("model rate per 100,000")
    ax.legend()
    return fig


def _model(members: int) -> str:
    return "model" if members == 1 else f"an ensemble of {members} models (the mean of their rates), each"


def write_population_report(result: dict, out: str | Path) -> Path:
    cfg, rates = result["config"], result["group_rates"]
    horizon = max(cfg["horizons"])
    report = Report("Population health view")
    people = "A suppressed number of" if result["people"] is None else f"{result['people']:,}"
    report.text(f"{people} people registered and alive at the landmark {cfg['at']}; horizons "
                f"{', '.join(f'{h:g} years' for h in cfg['horizons'])}; {_model(result['models'])} trained on a "
                f"{result['training_window_years']:g}-year window. Rates are the model's expected cases per 100,000 "
                "people at risk (people who already have a condition are not at risk of a new one), from its "
                f"{_RISKS[cfg['risks']]}. {_CALENDAR.format(**cfg) if cfg['calendar_people'] else ''}"
                f"90% intervals from a Poisson bootstrap over people ({cfg['replicates']} "
                "replicates): confidence intervals (CI) for the expected rate, and prediction intervals (PI) for the "
                "rate that will be observed, which add each person's chance of the outcome. "
                f"{_BACKTEST[cfg['backtest']].format(**cfg)} Disclosure control: "
                f"profile {cfg['sdc']!r}, applied to every count; a rate is shown only where all of its counts are "
                "released.")
    for note in cfg["notes"]:
        report.text(f"Note: {note}")
    report.text("Computed in " + ", ".join(f"{phase} {seconds:,.0f} s" for phase, seconds in result["seconds"].items())
                + ".")
    report.heading("Rates by group")
    for grouping in cfg["groupings"]:
        report.figure(group_figure(rates, grouping, horizon), f"groups_{grouping}",
                      f"Expected cases per 100,000 at risk within {horizon:g} years by {grouping}")
    followed = rates.filter(pl.col("observed_per_100k").is_not_null())
    if followed.height:
        report.figure(comparison_figure(rates, "observed_per_100k", "observed", "model_per_100k_followed"),
                      "observed", "Model against observed group rates, for people followed to the horizon")
    else:
        report.text("No follow-up after the landmark in this dataset: no observed rates to compare with.")
    if "inequality" in result:
        _inequality(report, result["inequality"], rates, horizon)
    report.heading("Highest-risk groups")
    top = result["highest_risk"].filter((pl.col("horizon_years") == horizon) & (pl.col("rank") <= 3))
    report.table(["outcome", "rank", "grouping", "group", "per 100,000", "90% CI"],
                 [[r["outcome"], r["rank"], r["grouping"], r["group"], r["rate_per_100k"],
                   f"{_sig(r['ci_lower_per_100k'])}–{_sig(r['ci_upper_per_100k'])}"]
                  for r in top.iter_rows(named=True)])
    if "planning" in result:
        _planning(report, result["planning"], cfg)
    if "validation" in result:
        _validation(report, result["validation"], rates)
    report.heading("Disclosure control")
    report.table(["table", "profile", "cells suppressed", "findings by rule"],
                 [[name, s["profile"], s["cells_suppressed"],
                   ", ".join(f"{k}: {v}" for k, v in s["findings_by_rule"].items())]
                  for name, s in result["sdc"].items()])
    suppressed = rates.filter(pl.col("sdc") != "released").select("grouping", "group").unique()
    if suppressed.height:
        report.text("Groups with suppressed cells: " + "; ".join(
            f"{g}={v}" for g, v in suppressed.sort("grouping", "group").iter_rows()))
    return report.save(out)


def _inequality(report: Report, table: pl.DataFrame, rates: pl.DataFrame, horizon: float) -> None:
    report.heading("Inequality across deprivation")
    report.text("Rate ratios against the least deprived IMD quintile (5). Slope index of inequality (SII): "
                "the fitted difference in rate per 100,000 between the most and least deprived ends, from a "
                "regression of the quintiles' rates on their ridit scores weighted by their people at risk; "
                "relative index (RII): the ratio of those fitted ends.")
    report.figure(gradient_figure(rates, horizon), "imd_gradient", f"Deprivation gradients within {horizon:g} years")
    wide = table.filter(pl.col("horizon_years") == horizon)
    rows = []
    for (outcome,), part in wide.group_by("outcome", maintain_order=True):
        by = {r["measure"]: r for r in part.iter_rows(named=True)}
        rows.append([outcome] + [_with_interval(by[m]) for m in ("rate_ratio_imd1_vs_imd5", "sii_per_100k", "rii")])
    report.table(["outcome", "rate ratio IMD 1 vs 5", "SII per 100,000", "RII"], rows)


def _with_interval(row: dict) -> str:
    if row["value"] is None:
        return "suppressed"
    return f"{_sig(row['value'])} ({_sig(row['lower'])} to {_sig(row['upper'])})"


def _sig(value: float) -> str:
    """Three significant figures, with thousands separators rather than an exponent."""
    return f"{float(f'{value:.3g}'):,g}"


def _planning(report: Report, planning: pl.DataFrame, cfg: dict) -> None:
    report.heading("Planning: projected events per region and year")
    who = "each person" if cfg["risks"] == "rollout" else f"each of up to {cfg['planning_people']:,} people"
    report.text(f"From {cfg['samples']} futures sampled by the model for {who}, scaled to each region's people "
                "at the landmark. A closed cohort: no births or new registrations, so later years count a shrinking, "
                "ageing population.")
    report.figure(region_figure(planning), "regions", "Projected events per year by region (90% intervals)")
    last = planning["year"].max()
    rows = planning.filter(pl.col("year").is_in([1, last])).sort("measure", "region", "year")
    recorded = "observed_scaled" in planning.columns and planning["observed_scaled"].is_not_null().any()
    if recorded:
        report.text("Where the data reach past the landmark, *recorded* counts the same events as recorded among "
                    "the people followed through that year (or to their death), scaled to the region's people.")
    report.table(["measure", "region", "year", "projected", "90% interval"] + ["recorded"] * recorded,
                 [[r["measure"], r["region"], r["year"], r["projected"] if r["projected"] is not None else "suppressed",
                   "" if r["lower"] is None else f"{r['lower']:,.0f}–{r['upper']:,.0f}"]
                  + [_or_dash(r["observed_scaled"])] * recorded for r in rows.iter_rows(named=True)])


def impossible_cells(zero: dict) -> str:
    """A sentence on the large groups' cells where the oracle's rate is 0 (`validation_summary`), the
    model's highest rates there first."""
    worst = sorted(zero["where"], key=lambda w: -w["highest_rate_per_100k"])
    where = "; ".join(f"{w['outcome']} at {w['horizon_years']:g} year{'' if w['horizon_years'] == 1 else 's'} "
                      f"({w['groups']} of its groups, up to {w['highest_rate_per_100k']:,.1f} per 100,000)"
                      for w in worst)
    return (f"The oracle's rate is 0 in {zero['cells']} large-group cells (an event that cannot happen there); "
            f"with no relative error they are left out above. The model expects a case or more in "
            f"{zero['model_expects_a_case']} of them" + (f": {where}." if where else "."))


def _or_dash(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _validation(report: Report, validation: dict, rates: pl.DataFrame) -> None:
    report.heading("Validation against the simulator's oracle")
    report.text("Each group's projected rate against the oracle's true expected rate for the same people "
                f"(bias = model / oracle − 1); large groups have at least "
                f"{validation['min_people_for_large']:,} people. Relative: each group's rate over its outcome's "
                "overall rate, against the oracle's same ratio (the pattern between groups, without the level).")
    groups = {name: v for name, v in validation.items() if name.endswith("_groups")}
    report.table(["groups", "cells", "median |bias|", "median |bias| before the backtest", "within 10%",
                  "within 10%, relative", "90% CI covers oracle", "90% PI covers oracle"],
                 [[name, v["cells"], *("–" if v.get(key) is None else v[key] for key in (
                     "median_abs_bias", "median_abs_bias_before_backtest", "share_within_10pct",
                     "share_within_10pct_relative", "coverage_90pct_ci", "coverage_90pct_pi"))]
                  for name, v in groups.items()])
    level = validation.get("outcomes", {})
    if level.get("share_within_10pct") is not None:
        report.text(f"Overall rates (one an outcome and horizon) within 10% of the oracle's: "
                    f"{level['share_within_10pct']:.0%} of {level['cells']}.")
    zero = validation.get("large_groups", {}).get("oracle_zero", {})
    if zero.get("cells"):
        report.text(impossible_cells(zero))
    report.figure(comparison_figure(rates, "oracle_per_100k", "oracle", "rate_per_100k"), "oracle",
                  "Model against oracle group rates")
