"""Write and read farr datasets (the layout of ``farr.events.schema``).

Writing is two-phase so that a crash never leaves a half-written dataset: workers call
``write_shard`` into the staging directory of a ``DatasetWriter``, then ``commit`` writes the
metadata and renames staging into place. Everything written is deterministic: the same tables
give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import meds
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import farr
from farr.events.schema import (
    CODE_METADATA_SCHEMA,
    CODE_PATTERN,
    CODES_FILE,
    DATA_DIR,
    EVENT_SCHEMA,
    FARR_METADATA_FILE,
    MEDS_METADATA_FILE,
    SCHEMA_VERSION,
    SUBJECTS_DIR,
    subject_schema,
    vocabulary_of,
)

# Null (static) times sort before every real time, as in MEDS.
_STATIC_TIME = np.iinfo(np.int64).min


class DatasetError(ValueError):
    """A dataset file is missing, unreadable, or breaks the layout contract."""


class SchemaError(DatasetError):
    """A table's columns do not match the farr schema."""


# ---------------------------------------------------------------------------------------------
# Schemas


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):  # e.g. polars Categorical
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


# A column is only ever cast within its kind: int64 microseconds are not silently a timestamp.
_KINDS = (
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_timestamp,
    pa.types.is_date,
    pa.types.is_boolean,
    _is_text,
)


def _kind(t: pa.DataType) -> Callable[[pa.DataType], bool] | None:
    return next((is_kind for is_kind in _KINDS if is_kind(t)), None)


def _exact_cast(column: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray | None:
    """``column`` as ``target`` if both are of one kind and no value changes, else None."""
    if _kind(column.type) is None or _kind(column.type) is not _kind(target):
        return None
    try:
        cast = column.cast(target, safe=True)  # raises on integer overflow, lost sub-units of time
    except pa.ArrowInvalid:
        return None
    # Safe casts still round floats (float64 -> float32), so compare the values.
    if pa.types.is_floating(target) and not np.array_equal(
        column.to_numpy(), cast.to_numpy(), equal_nan=True
    ):
        return None
    return cast


def _conform_column(table: pa.Table, field: pa.Field, where: str | Path) -> pa.ChunkedArray:
    if field.name not in table.column_names:
        raise SchemaError(f"{where}: missing column {field.name!r}")
    column = table[field.name]
    if not field.nullable and column.null_count:
        raise SchemaError(f"{where}: column {field.name!r} has {column.null_count} null values")
    if column.type == field.type:
        return column
    cast = _exact_cast(column, field.type)
    if cast is None:
        raise SchemaError(
            f"{where}: column {field.name!r} has type {column.type}, expected {field.type}"
        )
    return cast


def conform(table: pa.Table, schema: pa.Schema, where: str | Path) -> pa.Table:
    """``table`` with exactly the columns of ``schema``, in its order and types.

    A column of another type is cast only if it is of the same kind and no value changes
    (int32 ids, timestamp[ms], large_string); anything else raises a SchemaError naming
    ``where`` and the column.
    """
    extra = [name for name in table.column_names if name not in schema.names]
    if extra:
        raise SchemaError(f"{where}: unexpected column {extra[0]!r}")
    columns = [_conform_column(table, field, where) for field in schema]
    return pa.Table.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------------------------------------
# Writing


@dataclass(frozen=True)
class ShardInfo:
    """What ``write_shard`` wrote; small and picklable, to return from worker processes."""

    shard: int
    identifiable: bool
    events_file: str  # relative to the dataset root, e.g. "data/00003.parquet"
    subjects_file: str
    rows: int
    subjects: int
    events_sha256: str
    subjects_sha256: str
    code_counts: dict[str, int]


def shard_file(directory: str, shard: int) -> str:
    return f"{directory}/{shard:05d}.parquet"


def _check_order(subject_ids: np.ndarray, events: pa.Table, where: str) -> None:
    times = pc.fill_null(events["time"].cast(pa.int64()), _STATIC_TIME).to_numpy()
    same = subject_ids[1:] == subject_ids[:-1]
    disorder = (subject_ids[1:] < subject_ids[:-1]) | (same & (times[1:] < times[:-1]))
    if disorder.any():
        row = int(np.argmax(disorder)) + 1
        raise DatasetError(
            f"{where}: events not sorted by (subject_id, time) at row {row} "
            f"(subject_id {subject_ids[row]})"
        )


def _check_subjects(event_subject_ids: np.ndarray, subjects: pa.Table, where: str) -> None:
    """The subjects table holds each subject of the (sorted) events exactly once, and no other."""
    ids, counts = np.unique(subjects["subject_id"].to_numpy(), return_counts=True)
    if (counts > 1).any():
        raise DatasetError(f"{where}: subject_id {ids[counts > 1][0]} appears more than once")
    starts = np.r_[True, event_subject_ids[1:] != event_subject_ids[:-1]]
    with_events = event_subject_ids[starts]
    missing = np.setdiff1d(with_events, ids, assume_unique=True)
    if missing.size:
        raise DatasetError(f"{where}: subject_id {missing[0]} has events but no subject row")
    idle = np.setdiff1d(ids, with_events, assume_unique=True)
    if idle.size:
        raise DatasetError(f"{where}: subject_id {idle[0]} has a subject row but no events")


def _code_counts(codes: pa.ChunkedArray, where: str) -> dict[str, int]:
    counts = pc.value_counts(codes)
    values = counts.field("values")
    malformed = pc.invert(pc.match_substring_regex(values, CODE_PATTERN.pattern))
    if pc.any(malformed).as_py():
        raise DatasetError(
            f"{where}: code {values.filter(malformed)[0].as_py()!r} is not "
            f"'<VOCABULARY>/<code>' or 'MEDS_<NAME>'"
        )
    return dict(zip(values.to_pylist(), counts.field("counts").to_pylist()))


def sha256_file(file: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    with open(file, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_parquet(table: pa.Table, root: Path, name: str) -> str:
    """Write ``root/name`` and return its sha256."""
    path = root / name
    path.parent.mkdir(exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return sha256_file(path)


def write_shard(
    staging: Path, shard: int, events: pa.Table, subjects: pa.Table, *, identifiable: bool
) -> ShardInfo:
    """Validate one shard and write its events and subjects files under ``staging``.

    Events must be sorted by (subject_id, time), null (static) times first, and the subjects
    table must hold exactly the subjects of the events. Safe to call from worker processes.
    """
    events_file, subjects_file = shard_file(DATA_DIR, shard), shard_file(SUBJECTS_DIR, shard)
    events = conform(events, EVENT_SCHEMA, events_file)
    subjects = conform(subjects, subject_schema(identifiable), subjects_file)
    subject_ids = events["subject_id"].to_numpy()
    _check_order(subject_ids, events, events_file)
    _check_subjects(subject_ids, subjects, subjects_file)
    code_counts = _code_counts(events["code"], events_file)
    return ShardInfo(
        shard=shard,
        identifiable=identifiable,
        events_file=events_file,
        subjects_file=subjects_file,
        rows=events.num_rows,
        subjects=subjects.num_rows,
        events_sha256=_write_parquet(events, Path(staging), events_file),
        subjects_sha256=_write_parquet(subjects, Path(staging), subjects_file),
        code_counts=code_counts,
    )


def _refuse_to_clobber(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if not overwrite and out_dir.is_dir() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; pass --overwrite to replace it")


def _sibling(out_dir: Path, role: str) -> Path:
    """A hidden, unique path beside ``out_dir``: renames within one directory are atomic."""
    return out_dir.with_name(f".{out_dir.name}.{role}-{secrets.token_hex(4)}")


def _write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(value, sort_keys=True, indent=2) + "\n")


def _codes_table(code_counts: Counter, descriptions: dict[str, str]) -> pa.Table:
    codes = sorted(code_counts)
    columns = {
        "code": codes,
        "description": [descriptions.get(code) for code in codes],
        "parent_codes": [None] * len(codes),
    }
    return pa.table(columns, schema=CODE_METADATA_SCHEMA)


def _shard_file_entries(shards: list[ShardInfo]) -> dict[str, dict]:
    entries = {}
    for info in shards:
        entries[info.events_file] = {"rows": info.rows, "sha256": info.events_sha256}
        entries[info.subjects_file] = {"rows": info.subjects, "sha256": info.subjects_sha256}
    return entries


def _vocabulary_counts(code_counts: Counter) -> dict[str, int]:
    counts = Counter()
    for code, count in code_counts.items():
        counts[vocabulary_of(code)] += count
    return dict(counts)


class DatasetWriter:
    """Writes a dataset into a hidden staging directory and moves it into place on commit.

    Use as a context manager: leaving the block without ``commit`` (by an exception or
    otherwise) deletes the staging directory and leaves ``out_dir`` as it was.
    """

    def __init__(self, out_dir: str | Path, *, overwrite: bool = False, identifiable: bool = False):
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        self.identifiable = identifiable
        _refuse_to_clobber(self.out_dir, overwrite)
        self.staging = _sibling(self.out_dir, "tmp")
        try:
            self.out_dir.parent.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir()
        except OSError as error:
            raise PermissionError(
                f"{self.out_dir.parent} is not writable ({error.strerror}); "
                f"cannot create {self.out_dir.name} there"
            ) from None
        self._committed = False

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self._committed:
            shutil.rmtree(self.staging, ignore_errors=True)

    def write_shard(self, shard: int, events: pa.Table, subjects: pa.Table) -> ShardInfo:
        """``write_shard`` into this writer's staging directory, in this process."""
        return write_shard(self.staging, shard, events, subjects, identifiable=self.identifiable)

    def commit(
        self,
        shards: list[ShardInfo],
        *,
        created_by: str,
        dataset_name: str,
        dataset_version: str = "1.0",
        code_descriptions: dict[str, str] | None = None,
        extra: dict | None = None,
        extra_files: Iterable[str] = (),
    ) -> None:
        """Write the metadata of the written ``shards`` and move the dataset into ``out_dir``.

        ``extra_files`` (paths relative to the dataset root, already written into ``staging``)
        are listed in farr.json with their checksums, so ``verify`` checks them too.
        """
        shards = sorted(shards, key=lambda info: info.shard)
        self._check_shards(shards)
        code_counts = Counter()
        for info in shards:
            code_counts.update(info.code_counts)
        codes = _codes_table(code_counts, code_descriptions or {})
        files = _shard_file_entries(shards) | {
            CODES_FILE: {
                "rows": codes.num_rows,
                "sha256": _write_parquet(codes, self.staging, CODES_FILE),
            }
        }
        files |= {name: {"sha256": sha256_file(self.staging / name)} for name in extra_files}
        meds_metadata = meds.DatasetMetadataSchema(
            dataset_name=dataset_name,
            dataset_version=dataset_version,
            etl_name="farr",
            etl_version=farr.__version__,
            meds_version=meds.__version__,
        )
        _write_json(self.staging / MEDS_METADATA_FILE, meds_metadata.to_dict())
        _write_json(
            self.staging / FARR_METADATA_FILE,
            {
                "schema_version": SCHEMA_VERSION,
                "created_by": created_by,
                "identifiable": self.identifiable,
                "shards": len(shards),
                "rows": sum(info.rows for info in shards),
                "subjects": sum(info.subjects for info in shards),
                "vocabularies": _vocabulary_counts(code_counts),
                "files": files,
                "extra": extra or {},
            },
        )
        self._move_into_place()
        self._committed = True

    def _check_shards(self, shards: list[ShardInfo]) -> None:
        where = self.out_dir
        if not shards:
            raise DatasetError(f"{where}: no shards to commit")
        numbers = [info.shard for info in shards]
        if len(set(numbers)) != len(numbers):
            raise DatasetError(f"{where}: a shard number is committed twice ({numbers})")
        if any(info.identifiable != self.identifiable for info in shards):
            raise DatasetError(f"{where}: shards disagree with identifiable={self.identifiable}")
        listed = {name for info in shards for name in (info.events_file, info.subjects_file)}
        written = {
            path.relative_to(self.staging).as_posix()
            for directory in (DATA_DIR, SUBJECTS_DIR)
            for path in (self.staging / directory).glob("*.parquet")
        }
        if written - listed:
            raise DatasetError(f"{where}: {min(written - listed)} was written but not committed")

    def _move_into_place(self) -> None:
        # Checked again: out_dir may have filled up since the writer was made.
        _refuse_to_clobber(self.out_dir, self.overwrite)
        old = self.out_dir.rename(_sibling(self.out_dir, "old")) if self.out_dir.exists() else None
        self.staging.rename(self.out_dir)
        if old is not None:
            shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# Reading

_REQUIRED_METADATA = ("schema_version", "identifiable", "files")


def read_metadata(path: str | Path) -> dict:
    """The farr metadata (``metadata/farr.json``) of the dataset at ``path``."""
    file = Path(path) / FARR_METADATA_FILE
    try:
        metadata = json.loads(file.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{file}: missing; {path} is not a farr dataset") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{file}: unreadable JSON ({error})") from None
    missing = [key for key in _REQUIRED_METADATA if key not in metadata]
    if missing:
        raise DatasetError(f"{file}: missing key {missing[0]!r}")
    if str(metadata["schema_version"]).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise DatasetError(
            f"{file}: schema_version {metadata['schema_version']}, this farr reads {SCHEMA_VERSION}"
        )
    return metadata


def read_outcomes(path: str | Path) -> dict[str, dict]:
    """The dataset's outcome definitions (name -> {"codes", "recurrent"}); empty if it has none."""
    return read_metadata(path).get("extra", {}).get("outcomes", {})


def read_parquet(file: Path, columns: Iterable[str] | None = None) -> pa.Table:
    """Those of ``columns`` that ``file`` has (all when None); DatasetError if unreadable."""
    try:
        with pq.ParquetFile(file) as parquet:
            present = parquet.schema_arrow.names
            wanted = None if columns is None else [name for name in columns if name in present]
            return parquet.read(columns=wanted)
    except FileNotFoundError:
        raise DatasetError(f"{file}: missing") from None
    except (pa.ArrowInvalid, OSError) as error:
        raise DatasetError(f"{file}: unreadable parquet, truncated or corrupt ({error})") from None


def parquet_files(directory: Path, pattern: str = "*.parquet") -> list[Path]:
    files = sorted(directory.glob(pattern))
    if not files:
        raise DatasetError(f"{directory}: no parquet files")
    return files


def iter_shards(path: str | Path) -> Iterator[tuple[pa.Table, pa.Table]]:
    """(events, subjects) of each shard in order, checked against the schemas."""
    root = Path(path)
    schema = subject_schema(read_metadata(root)["identifiable"])
    for events_file in parquet_files(root / DATA_DIR):
        subjects_file = root / SUBJECTS_DIR / events_file.name
        yield (
            conform(read_parquet(events_file), EVENT_SCHEMA, events_file),
            conform(read_parquet(subjects_file), schema, subjects_file),
        )


def scan_events(path: str | Path) -> pl.LazyFrame:
    """All events of the dataset, for polars queries across shards."""
    return pl.scan_parquet(parquet_files(Path(path) / DATA_DIR))


def scan_subjects(path: str | Path) -> pl.LazyFrame:
    """All subjects of the dataset, for polars queries across shards."""
    return pl.scan_parquet(parquet_files(Path(path) / SUBJECTS_DIR))


def verify(path: str | Path) -> None:
    """Raise a DatasetError naming the first file listed in farr.json that is missing or changed."""
    root = Path(path)
    for name, entry in sorted(read_metadata(root)["files"].items()):
        file = root / name
        if not file.is_file():
            raise DatasetError(f"{file}: listed in {FARR_METADATA_FILE} but missing")
        if sha256_file(file) != entry["sha256"]:
            raise DatasetError(
                f"{file}: sha256 differs from {FARR_METADATA_FILE}; modified or corrupt"
            )
