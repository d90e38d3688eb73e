"""Quasi-identifier risk of a de-identified dataset: k-anonymity and uniqueness.

The quasi-identifiers are what an attacker could know of a neighbour: year of birth (in bands),
sex, ethnicity, NHS region and IMD quintile. Records with equal values form an equivalence
class; a record in a class of size 1 is unique, and the dataset is k-anonymous for the smallest
class size. ``generalise`` makes it k-anonymous by local suppression, as sdcMicro's
``localSuppression`` and ARX do: for the records still in classes below k, it blanks IMD
quintile, then region, then ethnicity (null is a value of its own); records still below k after
that are withheld (counted in the manifest, not written).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

QUASI_IDENTIFIERS = ("birth_band", "sex", "ethnicity", "region", "imd_quintile")
SUPPRESSION_ORDER = ("imd_quintile", "region", "ethnicity")


def quasi_identifiers(subjects: pl.DataFrame, band_years: int) -> pl.DataFrame:
    """subject_id and the quasi-identifiers, year of birth cut into ``band_years`` bands."""
    if band_years < 1:
        raise ValueError(f"--birth-band must be at least 1 year, got {band_years}")
    start = pl.col("year_month_of_birth").str.slice(0, 4).cast(pl.Int32) // band_years * band_years
    band = pl.format("{}-{}", start, start + band_years - 1) if band_years > 1 else start.cast(pl.String)
    return subjects.select("subject_id", band.alias("birth_band"), *QUASI_IDENTIFIERS[1:])


def _class_size() -> pl.Expr:
    return pl.len().over(QUASI_IDENTIFIERS).alias("class_size")


@dataclass(frozen=True)
class Risk:
    k: int  # the threshold asked for
    records: int
    classes: int
    smallest_class: int  # the k the data achieves
    unique: int  # records alone in their class
    below_k: list[tuple[int, int, int]]  # (class size, classes, records) for each size below k
    class_sizes: np.ndarray  # size of every class, for the histogram

    @property
    def met(self) -> bool:
        return self.smallest_class >= self.k

    def summary(self) -> dict:
        return {
            "k": self.k, "quasi_identifiers": list(QUASI_IDENTIFIERS), "records": self.records,
            "classes": self.classes, "smallest_class": self.smallest_class, "met": self.met,
            "unique_records": self.unique,
            "records_below_k": sum(records for _, _, records in self.below_k),
            "below_k_by_class_size": [{"class_size": s, "classes": c, "records": r}
                                      for s, c, r in self.below_k],
        }


def assess(qi: pl.DataFrame, k: int) -> Risk:
    if k < 1:
        raise ValueError(f"--k must be at least 1, got {k}")
    sizes = qi.group_by(QUASI_IDENTIFIERS).len()["len"].to_numpy()
    small, counts = np.unique(sizes[sizes < k], return_counts=True)
    return Risk(
        k=k, records=qi.height, classes=len(sizes),
        smallest_class=int(sizes.min()) if len(sizes) else 0,
        unique=int((sizes == 1).sum()),
        below_k=[(int(s), int(c), int(s * c)) for s, c in zip(small, counts, strict=False)],
        class_sizes=sizes,
    )


def generalise(qi: pl.DataFrame, k: int) -> tuple[pl.DataFrame, list[dict], np.ndarray]:
    """(quasi-identifiers after local suppression, the steps taken, subject ids to withhold)."""
    steps = []
    for column in SUPPRESSION_ORDER:
        small = qi.select(_class_size() < k).to_series()
        if not small.any():
            break
        qi = qi.with_columns(pl.when(small).then(None).otherwise(pl.col(column)).alias(column))
        steps.append({"suppressed": column, "records": int(small.sum())})
    small = qi.select(_class_size() < k).to_series()
    withheld = qi.filter(small)["subject_id"].to_numpy()
    if len(withheld):
        steps.append({"withheld": "records", "records": len(withheld)})
    return qi.filter(~small), steps, withheld
