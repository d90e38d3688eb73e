"""Regrouping a source kept table by table (OMOP, FHIR bulk NDJSON) into parts of whole patients.

The patients are read first and cut into parts of ``PART_PATIENTS`` in their order; then each
table is streamed once, its records appended to their patient's part file. Memory holds one
batch of records and the patients' keys, never a whole table. Records whose patient is not
known go to part 0, where the rules quarantine them.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from farr.ingest.source import EVENT_COLUMNS, events_table

PART_PATIENTS = 50_000
PATIENTS_FILE = "patients.parquet"


def _events_schema(key_type: pa.DataType) -> pa.Schema:
    return EVENT_COLUMNS.set(0, pa.field("patient_key", key_type))


class Spill:
    """Part files under ``directory``: ``patients.parquet`` (a row group per part) and
    ``events-<part>.parquet``."""

    def __init__(self, directory: Path, patients: pa.Table, per_part: int = PART_PATIENTS):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.per_part = per_part
        self.keys = patients["patient_key"]
        self.parts = max(1, math.ceil(patients.num_rows / per_part))
        self.schema = _events_schema(self.keys.type)
        pq.write_table(patients, directory / PATIENTS_FILE, row_group_size=per_part)
        self._writers: dict[int, pq.ParquetWriter] = {}

    def add(self, events: pa.Table) -> None:
        """Append records (``EVENT_COLUMNS``) to the parts of their patients."""
        events = events.cast(self.schema)
        index = pc.index_in(events["patient_key"], value_set=self.keys)
        part = pc.fill_null(pc.divide(index, self.per_part), 0)
        for number in pc.unique(part).to_pylist():
            self._writer(number).write_table(events.filter(pc.equal(part, number)))

    def _writer(self, part: int) -> pq.ParquetWriter:
        if part not in self._writers:
            self._writers[part] = pq.ParquetWriter(self.directory / f"events-{part:05d}.parquet",
                                                   self.schema)
        return self._writers[part]

    def close(self) -> list[int]:
        """Finish writing; returns the part numbers."""
        for writer in self._writers.values():
            writer.close()
        return list(range(self.parts))


def read_part(directory: Path, part: int) -> tuple[pa.Table, pa.Table]:
    """(patients, records) of one part written by a ``Spill``."""
    patients = pq.ParquetFile(directory / PATIENTS_FILE)
    if patients.metadata.num_rows == 0:
        patient_rows = patients.read()
    else:
        patient_rows = patients.read_row_group(part)
    file = directory / f"events-{part:05d}.parquet"
    key_type = patient_rows.schema.field("patient_key").type
    events = pq.read_table(file) if file.exists() else events_table({"patient_key": pa.array([], key_type)})
    return patient_rows, events
