"""Disclosure control of every released number, through `farr.privacy.sdc`.

Counts (people, people at risk, expected and observed cases, projected events) go through the
chosen SDC profile, with the groups of one grouping as a margin (their total is released as
the "all" row). A rate is released only where every count it is made of is released; observed
rates are recomputed from the released (rounded) counts, as OpenSAFELY asks. Model-based rates
and indices are rounded to three significant figures. Nothing is dropped silently: each row
says whether it was released or which rule suppressed it.
"""

from __future__ import annotations

import polars as pl

from farr.privacy.sdc import apply_sdc
from farr.population.rates import PER_100K

SIGNIFICANT = 3
RATE_COUNTS = ("people", "at_risk", "expected_cases")
OBSERVED_COUNTS = ("followed", "observed_cases", "model_cases_followed")
CELL = ["grouping", "outcome", "horizon_years"]


def _status(table: pl.DataFrame, findings, columns) -> pl.Series:
    """Per row: "released", or "suppressed (<rules>)" when a cell of `columns` was hidden."""
    rules: dict[int, set[str]] = {}
    for f in findings:
        if f.rule != "rounding" and f.column in columns:
            rules.setdefault(f.row, set()).add(f.rule)
    return pl.Series("sdc", [f"suppressed ({', '.join(sorted(rules[i]))})" if i in rules else "released"
                             for i in range(table.height)])


def _whole(table: pl.DataFrame, counts) -> pl.DataFrame:
    """Expected counts (sums of risks) rounded to whole people first, so that thresholds and
    rounding act on them as on counts (7.3 expected cases is 7, and redacted)."""
    return table.with_columns(pl.col(c).round(0) for c in counts if table.schema[c].is_float())


def _released(columns) -> pl.Expr:
    return pl.all_horizontal(pl.col(c).is_not_null() for c in columns)


def _rounded(columns) -> list[pl.Expr]:
    return [pl.col(c).round_sig_figs(SIGNIFICANT) for c in columns]


def release_rates(table: pl.DataFrame, profile: str) -> tuple[pl.DataFrame, dict]:
    counts = [c for c in (*RATE_COUNTS, *OBSERVED_COUNTS) if c in table.columns]
    result = apply_sdc(_whole(table, counts), counts, profile, group_columns=[CELL])
    safe = result.table.with_columns(_status(table, result.findings, RATE_COUNTS))
    model_rates = ["rate_per_100k", *(f"{i}_{end}_per_100k" for i in ("ci", "pi") for end in ("lower", "upper"))] + [
        c for c in ("model_rate_per_100k", "oracle_per_100k") if c in table.columns]
    safe = safe.with_columns(pl.when(_released(RATE_COUNTS)).then(pl.col(c)).otherwise(None).alias(c)
                             for c in model_rates)
    if "followed" in safe.columns:
        safe = safe.with_columns(_per_followed(name, cases) for name, cases in (
            ("observed_per_100k", "observed_cases"), ("model_per_100k_followed", "model_cases_followed")))
    return safe.with_columns(_rounded([c for c in safe.columns if c.endswith("_100k") or c in (
        "expected_cases", "model_cases_followed")])), result.summary()


def _per_followed(name: str, cases: str, per: pl.Expr | float = PER_100K) -> pl.Expr:
    """Cases per `per` people (default 100,000) from those followed, from the released counts only."""
    return (pl.when(_released(["followed", cases]) & (pl.col("followed") > 0))
            .then(pl.col(cases) / pl.col("followed") * per).otherwise(None).alias(name))


def release_inequality(table: pl.DataFrame, rates: pl.DataFrame) -> pl.DataFrame:
    """Inequality measures of an outcome and horizon only where every IMD quintile's rate is released."""
    imd = (rates.filter((pl.col("grouping") == "imd") & (pl.col("group") != "unknown"))
           .group_by("outcome", "horizon_years")
           .agg(pl.col("rate_per_100k").is_not_null().all().alias("ok")))
    safe = table.join(imd, on=["outcome", "horizon_years"], how="left").with_columns(pl.col("ok").fill_null(False))
    values = ["value", "lower", "upper"]
    return (safe.with_columns(*(pl.when(pl.col("ok")).then(pl.col(c)).otherwise(None).alias(c) for c in values),
                              pl.when(pl.col("ok")).then(pl.lit("released"))
                              .otherwise(pl.lit("suppressed (an IMD quintile's counts are disclosive)")).alias("sdc"))
            .with_columns(_rounded(values)).drop("ok"))


def release_planning(table: pl.DataFrame, profile: str) -> tuple[pl.DataFrame, dict]:
    """Projections, and beside them the events recorded among the people followed through each
    year, scaled to the region's people from the released counts (`observed_scaled`)."""
    projected = ["projected", "people", "people_sampled"]
    counts = projected + [c for c in ("followed", "observed_events") if c in table.columns]
    result = apply_sdc(_whole(table, counts), counts, profile, group_columns=[["measure", "year"]])
    safe = result.table.with_columns(_status(table, result.findings, projected))
    safe = safe.with_columns(pl.when(_released(projected)).then(pl.col(c)).otherwise(None).alias(c)
                             for c in ("lower", "upper"))
    if "followed" in safe.columns:  # the people's count is null where suppressed, and so is the product
        safe = safe.with_columns(_per_followed("observed_scaled", "observed_events", pl.col("people")))
    return safe.with_columns(_rounded([c for c in ("projected", "lower", "upper", "observed_scaled")
                                       if c in safe.columns])), result.summary()
