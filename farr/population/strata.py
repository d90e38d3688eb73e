"""The model's error in each age-sex stratum, carried to every group by the make-up of its people.

A model's errors follow age and sex far more than region, deprivation or ethnicity, and groups
differ in their age-sex make-up: an ethnic group younger than the country inherits the model's
error in the young. A group's own backtest is noisy where it is small or its outcome rare, and
shrinking it towards its outcome's overall error (`backtest.py`) ignores what its make-up says.
So the backtest first measures the error in each age-sex stratum (a `model_error` of the
strata), every person's risk is scaled by their stratum's correction (as indirect
standardisation scales a reference rate), and only the error each group has left beyond its
make-up is measured and shrunk as before. A group's correction is its strata's, weighted by its
expected cases in each (`standardised`), times its own; its variance adds its strata's error
variances weighted by the squares of those shares (the strata's corrections rest on separate
people). On the 1M-patient benchmark (docs/population.md's `--seed 0` model) this raised the large groups
within 10% of the oracle from 89.0% to 91.3% at 2014-01-01 and from 80.5% to 82.2% at 2019-01-01;
ethnic groups' from 81% to 88% and from 68% to 74%. Raking every grouping so in turn (backfitting)
gained nothing more, and its intervals, each grouping's error left to the next, covered the oracle
in 87% of groups; finer strata (5- or 10-year age bands by sex) did worse, each with fewer cases
(docs/population.md lists what else was tried).
A stratum with none recorded of many expected is corrected to about half a case (`backtest.py`),
so a group of several such strata keeps a case or so (there, at most 3 per 100,000).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from farr.population.backtest import CELL, KEYS
from farr.population.groups import group_index
from farr.population.rates import cell_table, group_sums

STRATUM = "age_sex"  # the grouping name of the strata in a backtest's tables
STRATIFIED_BY = ("age_band", "sex")  # the groupings (`groups.py`) whose labels make a stratum


def strata_of(labels: dict[str, np.ndarray]) -> np.ndarray:
    """Each person's age-sex stratum, "65-74|F", from their labels of (at least) `STRATIFIED_BY`."""
    age, sex = (labels[g] for g in STRATIFIED_BY)
    return np.char.add(np.char.add(age, "|"), sex)


def stratum_corrections(error: pl.DataFrame, strata: np.ndarray, outcomes: list[str], horizons: list[float]
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(index, log corrections, error variances): each person's row among their `strata`'s
    distinct names, and each stratum's (strata, outcomes, horizons) correction and variance from
    a `model_error` of the strata; a stratum the backtest lacked takes everyone's, and an outcome
    it could not measure none."""
    names, index = group_index(strata)
    everyone = error.filter(pl.col("grouping") == "all").select(
        *CELL, pl.col("log_correction").alias("mu"), pl.col("error_variance").alias("v_mu"))
    cells = (cell_table(STRATUM, names, outcomes, horizons, {})
             .join(error, on=KEYS, how="left", maintain_order="left").join(everyone, on=CELL, how="left")
             .select(pl.col("log_correction").fill_null(pl.col("mu")).fill_null(0.0),
                     pl.col("error_variance").fill_null(pl.col("v_mu")).fill_null(0.0)))
    shape = (len(names), len(outcomes), len(horizons))
    return index, cells["log_correction"].to_numpy().reshape(shape), cells["error_variance"].to_numpy().reshape(shape)


def stratum_scaled(risk: np.ndarray, index: np.ndarray, log_correction: np.ndarray) -> np.ndarray:
    """Each person's `risk` (n, outcomes, horizons) times their stratum's correction, to at most 1."""
    return np.minimum(risk * np.exp(log_correction)[index], 1.0).astype(risk.dtype)


def standardised(groups: dict[str, np.ndarray], index: np.ndarray, log_correction: np.ndarray,
                 variance: np.ndarray, risk: np.ndarray, outcomes: list[str], horizons: list[float]) -> pl.DataFrame:
    """Per grouping, group, outcome and horizon: `log_standard`, the log of its strata's correction
    of its expected cases (Σ min(risk × correction, 1) / Σ risk), and `standard_variance`, the strata's
    error variances weighted by the squared shares of the corrected cases each holds."""
    strata, risk = log_correction.shape[0], risk.astype(np.float64)
    flat, corrected = (r.reshape(len(risk), -1) for r in (risk, stratum_scaled(risk, index, log_correction)))
    parts = []
    for grouping, labels in groups.items():
        names, group = group_index(labels)
        before = group_sums(group, len(names), flat)
        after = group_sums(group * strata + index, len(names) * strata, corrected).reshape(len(names), strata, -1)
        total = after.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(before > 0, total / before, 1.0)
            share = np.where(total[:, None] > 0, after / total[:, None], 0.0)
        spread = (share ** 2 * variance.reshape(strata, -1)[None]).sum(axis=1)
        shape = (len(names), len(outcomes), len(horizons))
        parts.append(cell_table(grouping, names, outcomes, horizons, {
            "log_standard": np.log(ratio).reshape(shape), "standard_variance": spread.reshape(shape)}))
    return pl.concat(parts)
