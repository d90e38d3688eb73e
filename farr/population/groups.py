"""Patient groups: which group of each grouping variable every landmark person belongs to."""

from __future__ import annotations

import numpy as np
import polars as pl

from farr.events.io import scan_subjects

# grouping name -> subjects column ("age_band" is derived from the landmark age)
GROUPINGS = {"region": "region", "imd": "imd_quintile", "ethnicity": "ethnicity", "sex": "sex",
             "age_band": None}
AGE_BANDS = (0, 18, 30, 45, 65, 75, 85)  # lower edges, years
UNKNOWN = "unknown"
LEAST_DEPRIVED_IMD = "5"  # quintile 1 is the most deprived


def parse_groupings(text: str) -> list[str]:
    """"region,imd" -> names; an unknown or repeated name is an error naming it."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError(f"--by {text!r} names no grouping; choose from {', '.join(GROUPINGS)}")
    for name in names:
        if name not in GROUPINGS:
            raise ValueError(f"--by: unknown grouping {name!r}; choose from {', '.join(GROUPINGS)}")
    if len(set(names)) < len(names):
        raise ValueError(f"--by {text!r} names a grouping twice")
    return names


def age_band(age: np.ndarray) -> np.ndarray:
    edges = np.asarray(AGE_BANDS)
    names = np.array([f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])] + [f"{edges[-1]}+"])
    return names[np.searchsorted(edges, np.floor(age), side="right") - 1]


def group_labels(dataset, subject_id: np.ndarray, landmark_age: np.ndarray, groupings: list[str]
                 ) -> dict[str, np.ndarray]:
    """grouping -> (n,) label of each person (missing values: "unknown")."""
    columns = [GROUPINGS[g] for g in groupings if GROUPINGS[g]]
    scan = scan_subjects(dataset)
    missing = [c for c in columns if c not in scan.collect_schema().names()]
    if missing:
        raise ValueError(f"{dataset}: its subjects table has no {', '.join(missing)} column, so it cannot be "
                         "grouped by it (leave that grouping out of --by)")
    people = pl.DataFrame({"subject_id": subject_id}).with_row_index("order")
    subjects = scan.select("subject_id", *columns).collect()
    joined = people.join(subjects, on="subject_id", how="left").sort("order")
    return {g: age_band(landmark_age) if GROUPINGS[g] is None
            else joined[GROUPINGS[g]].cast(pl.String).fill_null(UNKNOWN).to_numpy().astype(str)
            for g in groupings}


def group_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(names, index): the sorted distinct labels and each person's position among them."""
    names, index = np.unique(labels, return_inverse=True)
    return names, index
