"""The quarantine: records ingest would not write, each with where it came from and why.

It is one Parquet file inside the output dataset, ``quarantine/quarantine.parquet``, written
with the rest of the dataset (staging, then one rename) and listed with its checksum in
``metadata/farr.json``. It never holds a direct identifier: patients are masked (``<masked>``
for NHS number, source id and postcode, year-month for date of birth), records name their
patient by pseudonym only, and text that could not be parsed keeps its shape but not its
letters and digits. Columns:

- ``source_file``: the source file, as the manifest names it;
- ``record``: 1-based line (CSV, NDJSON), 0-based row (Parquet) or bundle entry; null for a
  whole file;
- ``reason``: why, in words;
- ``subject_id``: the pseudonym of the patient, where there is one;
- ``content``: the record as JSON, identifiers masked.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

QUARANTINE_FILE = "quarantine/quarantine.parquet"
QUARANTINE_SCHEMA = pa.schema([
    pa.field("source_file", pa.string()),
    pa.field("record", pa.int64()),
    pa.field("reason", pa.string()),
    pa.field("subject_id", pa.int64()),
    pa.field("content", pa.string()),
])


def named(rows: pl.DataFrame, files: list[str]) -> pa.Table:
    """Quarantine rows with their file index (``file``) replaced by the file's name."""
    source_file = pl.col("file").replace_strict(dict(enumerate(files)), default=None,
                                                return_dtype=pl.String)
    table = rows.select(source_file.alias("source_file"), "record", "reason", "subject_id", "content")
    return table.to_arrow().cast(QUARANTINE_SCHEMA)


def write_part(rows: pl.DataFrame, files: list[str], path: Path) -> int:
    """Write one part's quarantine rows to ``path``; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(named(rows, files), path, compression="zstd")
    return rows.height


def merge_parts(parts: list[Path], out: Path) -> int:
    """The parts, in order, as one file (one part in memory at a time); returns the rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with pq.ParquetWriter(out, QUARANTINE_SCHEMA, compression="zstd") as writer:
        for part in parts:
            table = pq.read_table(part)
            writer.write_table(table)
            rows += table.num_rows
    return rows
