"""What every source reader hands the pipeline: patient-complete chunks in one canonical form.

A reader (``fhir``, ``omop``, ``meds``, ``identifiable``) turns its format into ``Chunk``s, each
holding every record of its patients, so that each chunk becomes one output shard:

- ``patients``: one row per source patient (``PATIENT_SCHEMA``): direct identifiers still in
  place, for the pipeline to check, pseudonymise and drop;
- ``events``: (patient_key, time, code, numeric_value) with provenance (file, record);
- ``problems``: records the reader could not read (malformed JSON or CSV, unknown resource
  types, bad values), for quarantine;
- tallies of what the reader read but does not ingest (resource types, unmapped codes).

``patient_key`` joins events to patients within a source (a FHIR Patient id, an OMOP
person_id, a MEDS subject_id; string or int64, the same in both tables); it is never written. ``file`` indexes ``Source.files``;
``record`` is the 1-based line (CSV, NDJSON) or the 0-based row or bundle entry.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import polars as pl
import pyarrow as pa

from farr.events.io import sha256_file

PATIENT_SCHEMA = pa.schema([
    pa.field("file", pa.int32()),
    pa.field("record", pa.int64()),
    pa.field("patient_key", pa.string()),
    pa.field("nhs_number", pa.string()),
    pa.field("local_id", pa.string()),  # "<system>|<id>": keys a patient with no NHS number
    pa.field("sex", pa.string()),  # "F" or "M"; anything else is quarantined
    pa.field("date_of_birth", pa.date32()),
    pa.field("year_month_of_birth", pa.string()),  # where only the month is known
    pa.field("ethnicity", pa.string()),  # ONS 2021 group
    pa.field("postcode", pa.string()),
    pa.field("region", pa.string()),
    pa.field("imd_quintile", pa.int8()),
    pa.field("practice_id", pa.string()),
    pa.field("site_id", pa.string()),
    pa.field("registration_start", pa.date32()),
    pa.field("registration_end", pa.date32()),
    pa.field("end_reason", pa.string()),
    pa.field("national_opt_out", pa.bool_()),
    pa.field("type1_opt_out", pa.bool_()),
])

EVENT_COLUMNS = pa.schema([
    pa.field("patient_key", pa.string()),
    pa.field("time", pa.timestamp("us")),
    pa.field("code", pa.string()),
    pa.field("numeric_value", pa.float64()),
    pa.field("file", pa.int32()),
    pa.field("record", pa.int64()),
])

PROBLEM_SCHEMA = pa.schema([
    pa.field("file", pa.int32()),
    pa.field("record", pa.int64()),
    pa.field("reason", pa.string()),
    pa.field("content", pa.string()),  # the record, direct identifiers masked
])


def _column(values, field: pa.Field) -> pa.Array | pa.ChunkedArray:
    if field.name == "patient_key" and isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values  # the source's own key type
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values.cast(field.type)
    return pa.array(values, field.type)


def _complete(columns: dict, schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` from ``columns``, missing columns null; all columns equally long."""
    rows = len(next(iter(columns.values()))) if columns else 0
    arrays = [_column(columns[f.name], f) if f.name in columns else pa.nulls(rows, f.type)
              for f in schema]
    return pa.table(dict(zip(schema.names, arrays, strict=False)))


def patients_table(columns: dict) -> pa.Table:
    return _complete(columns, PATIENT_SCHEMA)


def events_table(columns: dict) -> pa.Table:
    return _complete(columns, EVENT_COLUMNS)


def problems_table(columns: dict) -> pa.Table:
    return _complete(columns, PROBLEM_SCHEMA)


def as_canonical(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """A polars frame holding some of ``schema``'s columns, as a table of ``schema``."""
    return _complete({name: frame[name].to_arrow() for name in frame.columns if name in schema.names},
                     schema)


def parse_times(text: pl.Expr) -> pl.Expr:
    """ISO 8601 / FHIR dateTime / OMOP text as UTC timestamps; null where it is not one.

    Takes "2011-06-10T04:50:48-04:00", "...Z", fractional seconds, "2011-06-10 04:50:48",
    "2011-06-10", and the partial FHIR dates "2011-06" and "2011" (their first day).
    Local times without an offset are taken as UTC.
    """
    iso = (text.str.strip_chars()
           .str.replace(r"^(\d{4})$", "${1}-01")
           .str.replace(r"^(\d{4}-\d{2})$", "${1}-01")
           .str.replace(r"^(\d{4}-\d{2}-\d{2})$", "${1}T00:00:00")
           .str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
           .str.replace(r"Z$", "+00:00"))
    with_offset = (iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%:z", strict=False, time_unit="us")
                   .dt.convert_time_zone("UTC").dt.replace_time_zone(None))
    local = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="us")
    return pl.coalesce(with_offset, local)


@dataclass
class Tally:
    """What a reader read but did not turn into events: skipped resource types or tables,
    and codes it could not map to a vocabulary (``"<system>|<code>"``)."""

    skipped: Counter = field(default_factory=Counter)
    unmapped: Counter = field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.skipped.update(other.skipped)
        self.unmapped.update(other.unmapped)


@dataclass(frozen=True)
class InputFile:
    name: str  # as quarantine rows and messages name it
    bytes: int
    sha256: str

    @classmethod
    def of(cls, path: Path, name: str) -> InputFile:
        return cls(name, path.stat().st_size, sha256_file(path))


@dataclass
class Chunk:
    patients: pa.Table
    events: pa.Table
    problems: pa.Table
    tally: Tally = field(default_factory=Tally)
    inputs: list[InputFile] = field(default_factory=list)  # the files read for it


@dataclass
class Prepared:
    """The parts of a source, and what preparing them found (files read, problems)."""

    parts: list
    problems: pa.Table = field(default_factory=lambda: problems_table({}))
    tally: Tally = field(default_factory=Tally)
    inputs: list[InputFile] = field(default_factory=list)


class Unreadable(Exception):
    """A whole source file cannot be read (truncated, corrupt, missing a column): its records
    are skipped, with one quarantine row naming the file and the reason."""

    def __init__(self, file: int, reason: str):
        super().__init__(reason)
        self.file, self.reason = file, reason

    def problem(self) -> pa.Table:
        return problems_table({"file": [self.file], "record": [None], "reason": [self.reason],
                               "content": [None]})

    def chunk(self, inputs: list[InputFile]) -> Chunk:
        return Chunk(patients_table({}), events_table({}), self.problem(), inputs=inputs)


class Source(Protocol):
    """A readable source: its files, then its chunks, each read in a worker from a picklable part."""

    format: str
    files: list[str]  # names of the source files, indexed by the `file` columns

    def prepare(self, workdir: Path) -> Prepared:
        """The parts to read, each one output shard; may regroup the source under ``workdir``."""

    def read(self, part: object) -> Chunk: ...
