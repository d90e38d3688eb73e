"""Reading an identifiable farr extract (``farr simulate --identifiable``), shard by shard.

Each shard of the extract is one part: its events and subjects files hold all of its patients,
so a part needs no regrouping and a worker reads it straight into a chunk. A shard whose files
are unreadable (truncated, corrupt) or lack a column is skipped whole, with a quarantine row
naming the file and the reason: half a shard would give its patients half a record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from farr.events.io import DatasetError, parquet_files, read_metadata, read_parquet
from farr.events.schema import DATA_DIR, SUBJECT_FIELDS, SUBJECTS_DIR
from farr.ingest.source import (
    Chunk,
    InputFile,
    Prepared,
    Unreadable,
    events_table,
    patients_table,
    problems_table,
)

_EVENT_COLUMNS = ("subject_id", "time", "code", "numeric_value")
_REQUIRED_EVENT_COLUMNS = ("subject_id", "time", "code")
_REQUIRED_SUBJECT_COLUMNS = ("subject_id", "sex", "nhs_number", "date_of_birth")
_SUBJECT_COLUMNS = [f.name for f in SUBJECT_FIELDS] + ["nhs_number", "date_of_birth", "postcode_district"]


@dataclass
class IdentifiableSource:
    root: Path
    format: str = "farr-identifiable"
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not read_metadata(self.root)["identifiable"]:
            raise ValueError(f"{self.root}: not an identifiable extract (no NHS numbers); "
                             "ingest a de-identified farr dataset with --from meds")
        shards = [f.name for f in parquet_files(self.root / DATA_DIR)]
        self.files = [f"{d}/{name}" for name in shards for d in (DATA_DIR, SUBJECTS_DIR)]

    def prepare(self, workdir: Path) -> Prepared:
        return Prepared(parts=self.files[::2])

    def read(self, part: str) -> Chunk:
        subjects_name = f"{SUBJECTS_DIR}/{Path(part).name}"
        inputs = [InputFile.of(self.root / name, name) for name in (part, subjects_name)
                  if (self.root / name).is_file()]
        try:
            events = self._read(part, _EVENT_COLUMNS, _REQUIRED_EVENT_COLUMNS)
            subjects = self._read(subjects_name, _SUBJECT_COLUMNS, _REQUIRED_SUBJECT_COLUMNS)
        except Unreadable as unreadable:
            return unreadable.chunk(inputs)
        return Chunk(self._patients(subjects, subjects_name), self._events(events, part),
                     problems_table({}), inputs=inputs)

    def _read(self, name: str, columns, required) -> pa.Table:
        file = self.files.index(name)
        try:
            table = read_parquet(self.root / name, columns)
        except DatasetError as error:
            raise Unreadable(file, f"shard skipped: {str(error).split(': ', 1)[-1]}") from None
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise Unreadable(file, f"shard skipped: missing column {missing[0]!r}")
        return table

    def _patients(self, subjects: pa.Table, name: str) -> pa.Table:
        columns = {c: subjects[c] for c in subjects.column_names}
        columns |= {
            "patient_key": subjects["subject_id"],
            "postcode": columns.pop("postcode_district", pa.nulls(subjects.num_rows, pa.string())),
            "file": np.full(subjects.num_rows, self.files.index(name), np.int32),
            "record": np.arange(subjects.num_rows),
        }
        columns.pop("year_month_of_birth", None)  # the pipeline derives it from date_of_birth
        return patients_table(columns)

    def _events(self, events: pa.Table, name: str) -> pa.Table:
        columns = {c: events[c] for c in events.column_names if c != "subject_id"}
        return events_table(columns | {
            "patient_key": events["subject_id"],
            "file": np.full(events.num_rows, self.files.index(name), np.int32),
            "record": np.arange(events.num_rows),
        })
