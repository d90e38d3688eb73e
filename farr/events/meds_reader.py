"""Read MEDS datasets written by any tool, not only farr.

Foreign MEDS data differs from farr's in small ways, each handled here: shards nested below
``data/`` (``data/train/0.parquet``), extra columns (dropped), float64 ``numeric_value`` (cast to
float32), no ``numeric_value`` at all (added as null), int32 ``subject_id`` (widened).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from farr.events.io import conform, parquet_files, read_parquet
from farr.events.schema import BIRTH_CODE, DATA_DIR, EVENT_SCHEMA, SUBJECT_FIELDS

# The static codes MEDS ETLs such as MIMIC-IV's use for sex.
SEX_CODES = {"GENDER//F": "F", "GENDER//M": "M"}

# The farr subject columns, any of which may be unknown (null) for foreign data.
MEDS_SUBJECT_SCHEMA = pa.schema([field.with_nullable(True) for field in SUBJECT_FIELDS])


def _read_events(file: Path) -> pa.Table:
    table = read_parquet(file, EVENT_SCHEMA.names)
    if "numeric_value" not in table.column_names:
        table = table.append_column("numeric_value", pa.nulls(table.num_rows, pa.float32()))
    elif pa.types.is_floating(table["numeric_value"].type):
        # farr stores float32 (MEDS's own type); the precision lost is accepted.
        numeric = table["numeric_value"].cast(pa.float32())
        index = table.column_names.index("numeric_value")
        table = table.set_column(index, "numeric_value", numeric)
    return conform(table, EVENT_SCHEMA, file)


def _subjects_of(events: pa.Table, where: Path) -> pa.Table:
    """One row per subject: sex from the first GENDER//F or GENDER//M code, year and month of
    birth from the earliest MEDS_BIRTH event; every other column null."""
    facts = events.filter(pc.is_in(events["code"], pa.array([*SEX_CODES, BIRTH_CODE])))
    facts = pl.from_arrow(facts.select(["subject_id", "time", "code"]))
    sex = (
        facts.filter(pl.col("code").is_in(list(SEX_CODES)))
        .group_by("subject_id")
        .agg(sex=pl.col("code").first().replace_strict(SEX_CODES))
    )
    birth = (
        facts.filter(pl.col("code") == BIRTH_CODE)
        .group_by("subject_id")
        .agg(year_month_of_birth=pl.col("time").min().dt.strftime("%Y-%m"))
    )
    ids = pl.from_arrow(pa.table({"subject_id": pc.unique(events["subject_id"])}))
    ids = ids.sort("subject_id")
    known = ids.join(sex, on="subject_id", how="left").join(birth, on="subject_id", how="left")
    known = known.to_arrow()
    columns = {
        field.name: known[field.name]
        if field.name in known.column_names
        else pa.nulls(known.num_rows, field.type)
        for field in MEDS_SUBJECT_SCHEMA
    }
    return conform(pa.table(columns), MEDS_SUBJECT_SCHEMA, where)


def read_meds(path: str | Path) -> tuple[pa.Table, pa.Table]:
    """(events, subjects) of the MEDS dataset at ``path``, read whole into memory.

    Events follow ``EVENT_SCHEMA`` in file order (files sorted by path); null times (static
    facts) are kept. Subjects follow ``MEDS_SUBJECT_SCHEMA``: see ``_subjects_of`` for what is
    inferred. Errors name the file and column.
    """
    root = Path(path)
    files = parquet_files(root / DATA_DIR, "**/*.parquet")
    events = pa.concat_tables([_read_events(file) for file in files])
    return events, _subjects_of(events, root / DATA_DIR)
