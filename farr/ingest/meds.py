"""Reading any MEDS dataset, one data file at a time, through ``farr.events.meds_reader``.

MEDS keeps each subject in one shard, so each file is one part. ``read_meds`` reads a whole
dataset, so each part hands it a view: a directory whose ``data/`` links to that one file.
A file that cannot be read is skipped with a quarantine row; the others still land.

MEDS has no NHS numbers: subjects are keyed by their MEDS subject_id under the system
``meds:<dataset_name>`` (from ``metadata/dataset.json``), so two MEDS datasets never link.
Sex and year-month of birth come from the GENDER//F|M and MEDS_BIRTH codes; a subject without
them cannot be written to the farr schema and goes to quarantine.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from farr.events.io import DatasetError, parquet_files
from farr.events.meds_reader import read_meds
from farr.events.schema import DATA_DIR, MEDS_METADATA_FILE
from farr.ingest.source import Chunk, InputFile, Prepared, Unreadable, events_table, patients_table, problems_table


def _dataset_name(root: Path) -> str:
    try:
        return json.loads((root / MEDS_METADATA_FILE).read_text()).get("dataset_name") or root.name
    except (FileNotFoundError, json.JSONDecodeError):
        return root.name


@dataclass
class MedsSource:
    root: Path
    format: str = "meds"
    files: list[str] = field(default_factory=list)
    system: str = ""

    def __post_init__(self) -> None:
        data = self.root / DATA_DIR
        self.files = [f.relative_to(self.root).as_posix() for f in parquet_files(data, "**/*.parquet")]
        self.system = f"meds:{_dataset_name(self.root)}"

    def prepare(self, workdir: Path) -> Prepared:
        return Prepared(parts=list(range(len(self.files))))

    def read(self, part: int) -> Chunk:
        name = self.files[part]
        inputs = [InputFile.of(self.root / name, name)]
        try:
            events, subjects = self._read_one(name)
        except Unreadable as unreadable:
            return unreadable.chunk(inputs)
        keys = subjects["subject_id"]
        patients = patients_table({
            "patient_key": keys,
            "local_id": pc.binary_join_element_wise(self.system, pc.cast(keys, pa.string()), "|"),
            "sex": subjects["sex"], "year_month_of_birth": subjects["year_month_of_birth"],
            "file": np.full(len(keys), part, np.int32), "record": np.arange(len(keys)),
        })
        chunk_events = events_table({
            "patient_key": events["subject_id"], "time": events["time"], "code": events["code"],
            "numeric_value": events["numeric_value"],
            "file": np.full(events.num_rows, part, np.int32), "record": np.arange(events.num_rows),
        })
        return Chunk(patients, chunk_events, problems_table({}), inputs=inputs)

    def _read_one(self, name: str) -> tuple[pa.Table, pa.Table]:
        with tempfile.TemporaryDirectory(prefix="farr-meds-") as view:
            link = Path(view) / DATA_DIR / Path(name).name
            link.parent.mkdir()
            link.symlink_to((self.root / name).absolute())
            try:
                return read_meds(view)
            except DatasetError as error:
                reason = str(error).split(": ", 1)[-1]
                raise Unreadable(self.files.index(name), f"file skipped: {reason}") from None
