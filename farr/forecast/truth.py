"""The simulator's ground truth for a landmark cohort: its rows of the truth table, and the
oracle's risk of each outcome, through the simulator's public oracle."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from farr.forecast.landmark import Landmark, landmark_day
from farr.model.tokenizer import Timelines


def simulated_truth(dataset):
    """(oracle, truth table) of a simulated dataset; None for any other."""
    from farr.simulate.oracle import Oracle

    try:
        return Oracle.from_dataset(dataset)
    except FileNotFoundError:
        return None


def truth_rows(truth: pa.Table, subject_id: np.ndarray) -> pa.Table:
    """The truth table's rows for these subjects, in their order."""
    rows = pl.DataFrame({"subject_id": subject_id}).with_row_index("order")
    return rows.join(pl.from_arrow(truth), on="subject_id", how="left").sort("order").drop("order").to_arrow()


def oracle_risk(oracle, truth, timelines: Timelines, mark: Landmark, outcomes, horizons, *, draws: int,
                seed: int) -> np.ndarray:
    """(people, outcomes, horizons) the oracle's risk of each outcome being coded within each
    horizon (NaN for outcomes the simulator does not know)."""
    rows = truth_rows(truth, timelines.subject_id[mark.people])
    risks = oracle.risk_on_day(rows, landmark_day(timelines, mark), horizons, draws=draws, seed=seed, recorded=True)
    column = {name: j for j, name in enumerate(risks.outcomes)}
    return np.stack([risks.probability[:, column[o.name]] if o.name in column
                     else np.full((len(mark.people), len(horizons)), np.nan) for o in outcomes], axis=1)
