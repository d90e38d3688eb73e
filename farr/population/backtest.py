"""The model's own error, measured on the past: group rates forecast one horizon before the
landmark against what then happened, and the corrections and wider intervals that follow.

The bootstrap intervals (`rates.py`) measure which people make up a group, not how wrong the
model is. A forecast made `years` before the landmark can be checked: per group, outcome and
horizon, the observed cases O against the model's expected cases E for the same people. For
each outcome and horizon, the overall log(O/E) corrects every group (recalibration in the
large); the spread of one grouping's groups' log(O/E) beyond its Poisson noise is the model's
error variance τ² for that grouping (a DerSimonian–Laird moment estimate). Each group's own
log(O/E), shrunk towards the overall one by τ² / (τ² + 1/λ), corrects it further (empirical
Bayes). The variance left, τ²·(1/λ) / (τ² + 1/λ), plus the overall ratio's own Poisson variance,
widens its intervals. The view measures each age-sex stratum's error so first and scales every
person's risk by it (`strata.py`), so that a group's log(O/E) is then what it erred beyond its
people's make-up.

A model errs far more by age than by region, so each grouping has its own τ². One τ² over every
grouping's groups, weighted by their cases, was set by the large groups that erred alike: on the
simulator it shrank a 0–17 age band's log(O/E) for deaths of −0.61 (standard error 0.1) to +0.01,
and left its rate twice the oracle's. A grouping's τ² rests on its few groups, though, and is often
clipped to 0 by chance, so the variance left is never taken below what the τ² pooled over every
grouping would leave (as the drift is floored, below). On the 1M-patient benchmark (two models, two
landmarks) the share of large groups within 10% of the oracle rose by 1.1 to 1.9 points in each
view, and their 90% coverage by 0.6 to 2.6 points (to 90.4–95.3%).

A group's Poisson variance 1/λ counts the cases λ = E × (the outcome's overall O/E) it would have
had at the overall ratio, as a funnel plot does, not the cases O it had: with 1/O, a group that
fell short of the model's expectation looked noisier than one that exceeded it by as much, so
the groups' spread, and each group's own correction, leant towards the groups with more cases.
On the simulator (three models, four landmark views) this raised the large groups' 90%
coverage by 2 to 3.5 points (to 88% at 2019-01-01), the intervals about 5% wider. In a backtest
cohort whose costly people were subsampled and weighted up (`view.backtest_sample`), E is the
weighted sum Σwe, and the variance 1/λ grows by the design effect Σw²y / Σwy, the cases' mean
weight (1 for weights of 1): people who died since are all among the subsampled ones, so a
death's weight, not the model's expected deaths, says how noisy the weighted count is.

So a group keeps its own log(O/E) where λ, not O, reaches `MIN_CASES`: none recorded of many
expected (a cancer of the other sex, a disease of old age in children) is strong evidence, and
corrects the group to about half a case. On the simulator (1M patients at 2019-01-01, one model)
that took women's 5-year prostate cancer rate from 81 per 100,000 to 0.25, where the oracle's is
0; a rule on O left every such group at its outcome's overall correction.

The correction is one horizon old by the landmark. Where the data reach back two horizons, a
second backtest measures how far the groups' log(O/E) moved in one horizon beyond their Poisson
noise, the drift δ²; it widens every interval too, as the error's likely move since the first
backtest. One outcome's drift rests on one period's moves, and its Poisson noise often hides
them (the estimate is clipped to 0), so an outcome's drift is never taken below the drift pooled
over every outcome's groups at that horizon, nor below the mean squared move of the outcomes'
overall log(O/E). Every group of an outcome shares its overall move, so its groups' mean rests on
one draw of it, and small groups' noise hides it; the outcomes' overall moves are many draws, each
on the whole cohort's cases. On the simulator, 1-year intervals without that floor covered the
oracle in 79% of large groups, and with it in 91%.

The second backtest's evidence also joins the first's: each cell's log(O/E) is the two
backtests' inverse-variance mean, the older one's variance larger by δ² (a random walk), so a
group's correction rests on up to twice the cases where its error has held still.

A model that overestimates an outcome over 5 years mostly overestimates it over 1 (on the
simulator, the overall log(O/E) of the two horizons differed by about 0.05 rms over outcomes, where
a 1-year backtest's Poisson noise alone is 0.1 or more), and each horizon's backtest holds evidence
the other lacks: the longer one several times the cases, the shorter one a more recent window.
So each horizon's correction also pools in the other backtest's log(O/E) per group, its variance
larger by how far the two horizons' log(O/E) differ beyond their Poisson noise (measured as the
drift is). Only the correction borrows: the interval keeps the cell's own error variance, because
the other evidence is years apart and the discrepancy rests on one pair of backtests; on the
simulator, intervals narrowed by the borrowed evidence covered the oracle too rarely.

An outcome the backtest's whole cohort never had recorded, though the model expected at least
`MIN_CASES` cases, did not yet exist in the data then (a new disease, a new code): the backtest
cannot measure the model's error for it, so it corrects none of its rates. Its intervals count the
error the model typically made on the outcomes the backtest did measure at that horizon (their mean
squared log(O/E) plus their error variance): an error unmeasured is not an error of zero. On
simulated data the oracle check tests every step.
"""

from __future__ import annotations

import polars as pl

KEYS = ["grouping", "group", "outcome", "horizon_years"]
CELL = ["outcome", "horizon_years"]
Z90 = 1.6449  # a two-sided 90% normal interval
MIN_CASES = 10  # fewer cases expected in a group's backtest: it gets only its outcome's correction
_W = 1.0 / pl.col("v")
_EXCESS = (_W * (pl.col("y") - pl.col("mu")) ** 2).sum() - (pl.len() - 1)  # Cochran's Q minus its expectation
_SCALE = _W.sum() - (_W ** 2).sum() / _W.sum()
# the groups' variance around their outcome's overall log(O/E) beyond their Poisson noise (DerSimonian–Laird)
_TAU2 = pl.when(_SCALE > 0).then((_EXCESS / _SCALE).clip(lower_bound=0.0)).otherwise(0.0)
# the mean squared move in log(O/E) between two backtests beyond its Poisson variance
_MOVED = ((pl.col("y") - pl.col("y_older")) ** 2 - pl.col("v") - pl.col("v_older")).mean().clip(lower_bound=0.0)


def model_error(backtest: pl.DataFrame, drift: pl.DataFrame | None = None, older: pl.DataFrame | None = None,
                *, other: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """From a backtest's observed_cases and model_cases_followed per group, outcome and horizon:
    each group's `log_correction` and `error_variance` (log-rate scale), and each outcome and
    horizon's overall log(O/E) `mu` and error variance `tau2`; both variances include the
    `drift` (from `drift`) where given. With the `older` backtest too, each cell's log(O/E) is
    both backtests' inverse-variance mean, the older one's variance counting the drift since.
    With `other`, another horizon's `evidence`, each correction borrows its group's log(O/E) at
    the longest horizon there; the error variances stay the cell's own."""
    cells = evidence(backtest, drift, older)
    error, outcome_wide = _shrunk(cells)
    if other is not None:
        point, _ = _shrunk(_borrowed(cells, other))
        error = point.drop("error_variance").join(error.select(*KEYS, "error_variance"), on=KEYS, how="left")
    if drift is None:
        return error, outcome_wide
    return _plus_drift(error, "error_variance", drift), _plus_drift(outcome_wide, "tau2", drift)


def evidence(backtest: pl.DataFrame, drift: pl.DataFrame | None = None, older: pl.DataFrame | None = None
             ) -> pl.DataFrame:
    """Each cell's observed `o`, log(O/E) `y` and its variance `v`, the `older` backtest pooled in."""
    cells = _log_ratios(backtest)
    if older is not None and drift is not None:
        cells = _pooled(cells, _log_ratios(older), drift)
    return cells


def _shrunk(cells: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each group's log(O/E) shrunk towards its outcome's overall one (empirical Bayes) by its
    grouping's between-group variance, with the variance left (under the larger of that and the one
    pooled over every grouping's groups); and each outcome's overall `mu` and pooled variance `tau2`."""
    overall = _overall(cells)
    groups = cells.filter(pl.col("grouping") != "all").join(overall, on=CELL)
    tau2 = groups.group_by(CELL).agg(_TAU2.alias("tau2"))
    grouping_tau2 = groups.group_by("grouping", *CELL).agg(_TAU2.alias("tau2"))
    own, floor = pl.col("tau2"), pl.max_horizontal("tau2", "pooled")
    corrected = (groups.join(grouping_tau2, on=["grouping", *CELL]).join(tau2.rename({"tau2": "pooled"}), on=CELL)
                 .select(*KEYS, (pl.col("mu") + _kept(own) * (pl.col("y") - pl.col("mu"))).alias("log_correction"),
                         (floor * (1 - _kept(floor)) + pl.col("v_mu")).alias("error_variance")))
    everyone = overall.select(pl.lit("all").alias("grouping"), pl.lit("all").alias("group"), *CELL,
                              pl.col("mu").alias("log_correction"), pl.col("v_mu").alias("error_variance"))
    outcome_wide = overall.join(tau2, on=CELL, how="left").with_columns(
        (pl.col("tau2").fill_null(0.0) + pl.col("v_mu")).alias("tau2")).drop("v_mu")
    return pl.concat([everyone, corrected.select(everyone.columns)]), outcome_wide


def _kept(tau2: pl.Expr) -> pl.Expr:
    """The share of a group's own log(O/E) its correction keeps, τ² / (τ² + v): none with under
    `MIN_CASES` cases expected at its outcome's overall O/E (1 / v)."""
    return pl.when(1 / pl.col("v") >= MIN_CASES).then(tau2 / (tau2 + pl.col("v"))).otherwise(0.0)


def _borrowed(cells: pl.DataFrame, other: pl.DataFrame) -> pl.DataFrame:
    """`cells` with each group's log(O/E) at the longest horizon of `other` (another horizon's
    `evidence`) pooled in, that evidence's variance larger by the two horizons' discrepancy."""
    longest = other.filter(pl.col("horizon_years") == pl.col("horizon_years").max())
    there = cells.select(*KEYS).join(longest.select("grouping", "group", "outcome", "o", "y", "v"),
                                     on=["grouping", "group", "outcome"])
    return _pooled(cells, there, _moves(cells, there))


def _overall(cells: pl.DataFrame) -> pl.DataFrame:
    """Each outcome and horizon's overall log(O/E) `mu` and its variance `v_mu`."""
    return cells.filter(pl.col("grouping") == "all").select(*CELL, pl.col("y").alias("mu"), pl.col("v").alias("v_mu"))


def drift(recent: pl.DataFrame, older: pl.DataFrame) -> pl.DataFrame:
    """Per outcome and horizon, `drift` δ²: the mean over groups (with `MIN_CASES` in both) of the
    squared move in log(O/E) between an `older` backtest and a `recent` one, less its Poisson
    variance; never below 0, nor below the same mean over every outcome's groups at that horizon,
    nor below the mean over outcomes of their overall log(O/E)'s move. Every group of an outcome
    shares its overall move, so the mean over its groups rests on one draw of it; the outcomes'
    moves are many draws."""
    recent, older = _log_ratios(recent), _log_ratios(older)
    everyone = (cells.filter(pl.col("grouping") == "all") for cells in (recent, older))
    overall = _pooled_move(_both(*everyone)).rename({"pooled": "overall"})
    return (_moves(recent, older).join(overall, on="horizon_years", how="left")
            .select(*CELL, pl.max_horizontal("drift", pl.col("overall").fill_null(0.0)).alias("drift")))


def _moves(recent: pl.DataFrame, older: pl.DataFrame) -> pl.DataFrame:
    """Per cell, the mean over its groups of the squared move in log(O/E) between two tables of
    cells (`evidence`) less its Poisson variance, never below 0 nor below the same mean over every
    outcome's groups at that horizon."""
    both = _both(recent, older)
    own = both.group_by(CELL).agg(_MOVED.alias("own"))
    return own.join(_pooled_move(both), on="horizon_years").select(
        *CELL, pl.max_horizontal("own", "pooled").alias("drift"))


def _both(recent: pl.DataFrame, older: pl.DataFrame) -> pl.DataFrame:
    """The cells in both tables with `MIN_CASES` observed in each."""
    return (recent.join(older, on=KEYS, suffix="_older")
            .filter((pl.col("o") >= MIN_CASES) & (pl.col("o_older") >= MIN_CASES)))


def _pooled_move(both: pl.DataFrame) -> pl.DataFrame:
    return both.group_by("horizon_years").agg(_MOVED.alias("pooled"))


def _pooled(recent: pl.DataFrame, older: pl.DataFrame, drift: pl.DataFrame) -> pl.DataFrame:
    """`recent`'s cells with the `older` backtest's evidence added: a log(O/E) one horizon older
    is as good as a recent one whose variance is larger by the drift δ² (a random walk)."""
    old = older.join(drift, on=CELL, how="left").select(
        *KEYS, pl.col("o").alias("o_older"), pl.col("y").alias("y_older"),
        (pl.col("v") + pl.col("drift").fill_null(0.0)).alias("v_older"))
    w, w_older = 1.0 / pl.col("v"), (1.0 / pl.col("v_older")).fill_null(0.0)
    return (recent.join(old, on=KEYS, how="left")
            .with_columns(((w * pl.col("y") + w_older * pl.col("y_older").fill_null(0.0)) / (w + w_older)).alias("y"),
                          (1.0 / (w + w_older)).alias("v"), (pl.col("o") + pl.col("o_older").fill_null(0.0)).alias("o"))
            .drop("o_older", "y_older", "v_older"))


def unrecorded(backtest: pl.DataFrame) -> pl.DataFrame:
    """The outcomes and horizons (`CELL`) the backtest's whole cohort never had recorded, though the
    model expected at least `MIN_CASES` cases: not yet in the data then, so not correctable."""
    return backtest.filter((pl.col("grouping") == "all") & (pl.col("observed_cases") == 0)
                           & (pl.col("model_cases_followed") >= MIN_CASES)).select(*CELL)


def _log_ratios(backtest: pl.DataFrame) -> pl.DataFrame:
    """Each cell's observed `o`, expected `e`, log(O/E) `y` (half a case added to both) and its
    Poisson variance `v`, 1 / the cases expected at its outcome's overall O/E (times, in a weighted
    backtest sample, the cases' `design_effect`, or its whole cohort's where it had none); none
    for an outcome `unrecorded` then."""
    ratio = (pl.col("o") + 0.5) / (pl.col("e") + 0.5)
    overall = ratio.filter(pl.col("grouping") == "all").first().over(CELL)
    design = pl.col("design_effect") if "design_effect" in backtest.columns else pl.lit(1.0)
    everyone = design.filter(pl.col("grouping") == "all").first().over(CELL)
    return (backtest.filter(pl.col("model_cases_followed") > 0).join(unrecorded(backtest), on=CELL, how="anti")
            .with_columns(pl.col("observed_cases").cast(pl.Float64).fill_null(0.0).alias("o"),
                          pl.col("model_cases_followed").alias("e"))
            .with_columns(ratio.log().alias("y"),
                          (design.fill_null(everyone).fill_null(1.0) / ((pl.col("e") + 0.5) * overall)).alias("v")))


def _plus_drift(table: pl.DataFrame, variance: str, drift: pl.DataFrame) -> pl.DataFrame:
    return (table.join(drift, on=CELL, how="left")
            .with_columns((pl.col(variance) + pl.col("drift").fill_null(0.0)).alias(variance)).drop("drift"))


def corrected(table: pl.DataFrame, error: pl.DataFrame, outcome_wide: pl.DataFrame,
              by_strata: pl.DataFrame | None = None) -> pl.DataFrame:
    """`table`'s model rates and expected cases corrected, and their intervals widened, by the
    backtest's `error`; a group the backtest did not see gets its outcome's overall correction, and
    an outcome it could not measure none, with the typical error of those it did as its variance.
    With `by_strata` (`strata.standardised`), each group's correction by its age-sex strata comes
    first, and `error` is what the groups erred beyond it. The uncorrected rate stays as
    `model_rate_per_100k`."""
    fallback = outcome_wide.select(*CELL, pl.col("mu").alias("mu_all"), pl.col("tau2").alias("tau2_all"))
    typical = outcome_wide.group_by("horizon_years").agg((pl.col("mu") ** 2 + pl.col("tau2")).mean().alias("tau2_typical"))
    joined = (table.join(error, on=KEYS, how="left").join(fallback, on=CELL, how="left")
              .join(typical, on="horizon_years", how="left")
              .with_columns(pl.col("log_correction").fill_null(pl.col("mu_all")).fill_null(0.0),
                            pl.col("error_variance").fill_null(pl.col("tau2_all")).fill_null(pl.col("tau2_typical"))
                            .fill_null(0.0)))
    if by_strata is not None:
        joined = (joined.join(by_strata, on=KEYS, how="left")
                  .with_columns(pl.col("log_correction") + pl.col("log_standard").fill_null(0.0),
                                pl.col("error_variance") + pl.col("standard_variance").fill_null(0.0))
                  .drop("log_standard", "standard_variance"))
    factor, spread = pl.col("log_correction").exp(), Z90 * pl.col("error_variance").sqrt()

    def widened(bound: str, side: float) -> pl.Expr:
        half = (pl.col("rate_per_100k") / pl.col(bound)).log().abs()  # the bootstrap's half-width, log scale
        return (pl.col("rate_per_100k") * factor * (side * (half ** 2 + spread ** 2).sqrt()).exp()).alias(bound)

    return joined.with_columns(
        pl.col("rate_per_100k").alias("model_rate_per_100k"),
        (pl.col("rate_per_100k") * factor).alias("rate_per_100k"),
        (pl.col("expected_cases") * factor).alias("expected_cases"),
        *(widened(f"{i}_{end}_per_100k", side) for i in ("ci", "pi") for end, side in (("lower", -1.0), ("upper", 1.0))),
    ).drop("log_correction", "error_variance", "mu_all", "tau2_all", "tau2_typical")
