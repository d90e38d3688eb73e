"""Reading OMOP CDM 5.4: CSV or Parquet tables in a directory or a .zip.

Tables are found by name, in any letter case and folder (``PERSON.csv``, ``person.parquet``,
``cdm/person.csv.gz``). PERSON gives the patients; VISIT_OCCURRENCE, CONDITION_OCCURRENCE,
DRUG_EXPOSURE, MEASUREMENT, OBSERVATION and PROCEDURE_OCCURRENCE one event a row (at the start
datetime, else date; measurements and observations with value_as_number), and DEATH a
MEDS_DEATH. Each table is streamed in batches and regrouped by patient (``farr.ingest.spill``).

Codes. A concept id becomes "<VOCABULARY>/<concept_code>" through the CONCEPT table where the
source carries it (vocabulary_id in capitals without punctuation: SNOMED, LOINC, RXNORM,
ICD10CM, DMD for dm+d); the standard concept first, else the source concept. A row whose
concepts are 0 or not in CONCEPT is counted in the manifest as unmapped, and not written.

Identifiers. OMOP has no NHS number: a patient is keyed by person_source_value (system
``omop:person_source_value``), else by person_id (``omop:person_id``). Race becomes an ONS
group where it has one (White, Black, Asian; other races Other); LOCATION's zip is read as a
postcode (a US zip has no NHS region). Bad rows (wrong column count, a person_id or date that
does not parse) go to quarantine by file and line; a table that cannot be read or lacks a
needed column is skipped with one quarantine row.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from farr.events.schema import DEATH_CODE
from farr.governance.deidentify import IDENTIFYING_KEYS, MASK
from farr.ingest.source import (
    EVENT_COLUMNS,
    PATIENT_SCHEMA,
    PROBLEM_SCHEMA,
    Chunk,
    InputFile,
    Prepared,
    Tally,
    Unreadable,
    as_canonical,
    parse_times,
    problems_table,
)
from farr.ingest.spill import Spill, read_part

BATCH_BYTES = 16 << 20
GENDERS = {8507: "M", 8532: "F"}
RACES = {8527: "White", 8516: "Black", 8515: "Asian"}  # any other known race: Other


@dataclass(frozen=True)
class Clinical:
    """The columns of a clinical table that make an event."""

    concept: str | None  # None: every row is a death
    source_concept: str | None
    source_value: str | None
    datetime: str
    date: str
    value: str | None = None

    def columns(self) -> list[str]:
        return [c for c in ("person_id", self.concept, self.source_concept, self.source_value,
                            self.datetime, self.date, self.value) if c]

    def required(self) -> list[str]:
        return [c for c in ("person_id", self.concept, self.date) if c]


CLINICAL = {
    "visit_occurrence": Clinical("visit_concept_id", "visit_source_concept_id", "visit_source_value",
                                 "visit_start_datetime", "visit_start_date"),
    "condition_occurrence": Clinical("condition_concept_id", "condition_source_concept_id",
                                     "condition_source_value", "condition_start_datetime",
                                     "condition_start_date"),
    "drug_exposure": Clinical("drug_concept_id", "drug_source_concept_id", "drug_source_value",
                              "drug_exposure_start_datetime", "drug_exposure_start_date"),
    "measurement": Clinical("measurement_concept_id", "measurement_source_concept_id",
                            "measurement_source_value", "measurement_datetime", "measurement_date",
                            "value_as_number"),
    "observation": Clinical("observation_concept_id", "observation_source_concept_id",
                            "observation_source_value", "observation_datetime", "observation_date",
                            "value_as_number"),
    "procedure_occurrence": Clinical("procedure_concept_id", "procedure_source_concept_id",
                                     "procedure_source_value", "procedure_datetime", "procedure_date"),
    "death": Clinical(None, None, None, "death_datetime", "death_date"),
}
PERSON_COLUMNS = ["person_id", "gender_concept_id", "gender_source_value", "year_of_birth",
                  "month_of_birth", "day_of_birth", "birth_datetime", "race_concept_id",
                  "location_id", "person_source_value"]
_TABLE_FILE = re.compile(r"(?i)(?:^|/)([a-z_]+)\.(csv|csv\.gz|parquet)$")


@dataclass
class Batch:
    """Rows of one table: its file, the rows, and each row's record number (line or row)."""

    file: int
    rows: pl.DataFrame
    records: np.ndarray


def _line_numbers(good_rows: np.ndarray, skipped_lines: list[int]) -> np.ndarray:
    """1-based file lines of the 0-based good data rows, given the data lines skipped as bad
    (the header is line 1)."""
    skipped = np.sort(np.asarray(skipped_lines, dtype=np.int64))
    shift = np.searchsorted(skipped - 2 - np.arange(len(skipped)), good_rows, side="right")
    return good_rows + 2 + shift


@dataclass
class OmopSource:
    root: Path
    format: str = "omop"
    files: list[str] = field(default_factory=list)
    _tables: dict[str, str] = field(default_factory=dict)  # table -> file name
    _spill: Path | None = None

    def __post_init__(self) -> None:
        self._zip = self.root.suffix.lower() == ".zip"
        names = self._names()
        for name in names:
            match = _TABLE_FILE.search(name)
            if match and "__MACOSX" not in name and not Path(name).name.startswith("."):
                self._tables.setdefault(match.group(1).lower(), name)
        if "person" not in self._tables:
            raise FileNotFoundError(f"{self.root}: no OMOP PERSON table (person.csv or person.parquet)")
        self.files = sorted(self._tables.values())

    def _names(self) -> list[str]:
        if self._zip:
            try:
                with zipfile.ZipFile(self.root) as archive:
                    return archive.namelist()
            except zipfile.BadZipFile as error:
                raise ValueError(f"{self.root}: not a readable zip ({error})") from None
        return [p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()]

    # -- reading tables ---------------------------------------------------------------------

    def _open(self, name: str):
        if self._zip:
            return zipfile.ZipFile(self.root).open(name)
        return pa.input_stream(str(self.root / name), compression="detect")

    def _batches(self, table: str, columns: list[str], required: list[str]) -> Iterator[Batch]:
        name = self._tables[table]
        file = self.files.index(name)
        try:
            yield from (self._parquet if name.endswith(".parquet") else self._csv)(name, file, columns, required)
        except (pa.ArrowInvalid, OSError, zipfile.BadZipFile) as error:
            raise Unreadable(file, f"table skipped: unreadable ({error})") from None

    def _check_columns(self, present: list[str], required: list[str], file: int) -> None:
        missing = [c for c in required if c not in present]
        if missing:
            raise Unreadable(file, f"table skipped: missing column {missing[0]!r}")

    def _csv(self, name: str, file: int, columns: list[str], required: list[str]) -> Iterator[Batch]:
        with self._open(name) as stream:
            header = io.TextIOWrapper(stream, encoding="utf-8", newline="").readline()
        present = [c.strip().strip('"').lower() for c in header.rstrip("\r\n").split(",")]
        self._check_columns(present, required, file)
        skipped: list[tuple[int, str, str]] = []

        def bad_row(row) -> str:
            skipped.append((row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}", row.text))
            return "skip"

        options = dict(
            read_options=pcsv.ReadOptions(use_threads=False, block_size=BATCH_BYTES, column_names=present, skip_rows=1),
            parse_options=pcsv.ParseOptions(invalid_row_handler=bad_row),
            convert_options=pcsv.ConvertOptions(column_types={c: pa.string() for c in present},
                                                 strings_can_be_null=True,
                                                 include_columns=[c for c in columns if c in present]),
        )
        with self._open(name) as stream, pcsv.open_csv(stream, **options) as reader:
            done = 0
            for record_batch in reader:
                rows = np.arange(done, done + record_batch.num_rows)
                done += record_batch.num_rows
                yield Batch(file, pl.from_arrow(record_batch), _line_numbers(rows, [s[0] for s in skipped]))
        if skipped:
            yield _malformed_rows(file, skipped)

    def _parquet(self, name: str, file: int, columns: list[str], required: list[str]) -> Iterator[Batch]:
        with self._open(name) as stream, pq.ParquetFile(stream) as parquet:
            present = [c.lower() for c in parquet.schema_arrow.names]
            self._check_columns(present, required, file)
            wanted = [n for n in parquet.schema_arrow.names if n.lower() in columns]
            done = 0
            for record_batch in parquet.iter_batches(batch_size=200_000, columns=wanted):
                rows = pl.from_arrow(record_batch).rename(str.lower)
                yield Batch(file, rows, np.arange(done, done + rows.height))
                done += rows.height

    def _input(self, inputs: list[InputFile]) -> None:
        if self._zip:
            inputs.append(InputFile.of(self.root, self.root.name))
        else:
            inputs += [InputFile.of(self.root / name, name) for name in self.files]

    # -- the source -------------------------------------------------------------------------

    def _rows(self, table: str, columns: list[str], required: list[str], problems: list[pa.Table],
              *, needed: bool = False) -> Iterator[Batch]:
        """The readable batches of ``table``; rows the parser skipped, and a table that cannot
        be read (an error if ``needed``), are added to ``problems``."""
        if table not in self._tables:
            return
        try:
            for batch in self._batches(table, columns, required):
                if "reason" in batch.rows.columns:  # the parser's skipped rows
                    problems.append(as_canonical(batch.rows, PROBLEM_SCHEMA))
                else:
                    yield batch
        except Unreadable as unreadable:
            if needed:
                raise ValueError(f"{self.root}: {self.files[unreadable.file]}: {unreadable.reason}") from None
            problems.append(unreadable.problem())

    def prepare(self, workdir: Path) -> Prepared:
        prepared = Prepared(parts=[])
        self._input(prepared.inputs)
        problems: list[pa.Table] = []
        concepts = self._concepts(problems)
        spill = Spill(workdir / "omop", self._persons(problems))
        for table, spec in CLINICAL.items():
            for batch in self._rows(table, spec.columns(), spec.required(), problems):
                events, bad = _events(batch, spec, concepts, table, prepared.tally)
                spill.add(events)
                problems.append(bad)
        prepared.problems = pa.concat_tables(problems) if problems else problems_table({})
        prepared.parts = spill.close()
        self._spill = workdir / "omop"
        return prepared

    def read(self, part: int) -> Chunk:
        patients, events = read_part(self._spill, part)
        return Chunk(patients, events, problems_table({}))

    def _persons(self, problems: list[pa.Table]) -> pa.Table:
        zips = self._frame("location", {"location_id": pl.Int64, "zip": pl.String}, problems)
        zips = zips.unique("location_id", keep="first").rename({"zip": "postcode"})
        parsed = []
        for batch in self._rows("person", PERSON_COLUMNS, ["person_id"], problems, needed=True):
            person, bad = _persons(batch, zips)
            parsed.append(person)
            problems.append(bad)
        return as_canonical(pl.concat(parsed, how="diagonal_relaxed") if parsed else pl.DataFrame(), PATIENT_SCHEMA)

    def _frame(self, table: str, columns: dict, problems: list[pa.Table]) -> pl.DataFrame:
        """A small table whole, its columns cast to ``columns`` (null where a value does not fit)."""
        frames = [batch.rows.select(_text(c, batch.rows).cast(dtype, strict=False).alias(c) for c, dtype in columns.items())
                  for batch in self._rows(table, list(columns), list(columns)[:1], problems)]
        return pl.concat(frames) if frames else pl.DataFrame(schema=columns)

    def _concepts(self, problems: list[pa.Table]) -> pl.DataFrame:
        """concept_id -> "<VOCABULARY>/<concept_code>"."""
        concepts = self._frame("concept", {"concept_id": pl.Int64, "vocabulary_id": pl.String,
                                           "concept_code": pl.String}, problems)
        prefix = pl.col("vocabulary_id").str.to_uppercase().str.replace_all("[^A-Z0-9]", "")
        return (concepts.select("concept_id", code=pl.format("{}/{}", prefix, pl.col("concept_code")))
                .drop_nulls().unique("concept_id", keep="first"))


def _malformed_rows(file: int, skipped: list[tuple[int, str, str]]) -> Batch:
    """The rows the CSV parser skipped, as a batch of problems (it has a ``reason`` column)."""
    rows = pl.DataFrame({"file": [file] * len(skipped), "record": [s[0] for s in skipped],
                         "reason": [f"malformed CSV row: {s[1]}" for s in skipped],
                         "content": [None] * len(skipped)},
                        schema={"file": pl.Int32, "record": pl.Int64, "reason": pl.String, "content": pl.String})
    return Batch(file, rows, np.asarray([s[0] for s in skipped]))


def _masked_content(rows: pl.DataFrame) -> pl.Expr:
    masked = [pl.when(pl.col(c).is_not_null()).then(pl.lit(MASK)).alias(c) if c in IDENTIFYING_KEYS
              else pl.col(c).cast(pl.String) for c in rows.columns if c not in ("file", "record")]
    return pl.struct(masked).struct.json_encode()


def _split(batch: Batch, frame: pl.DataFrame, reason: pl.Expr) -> tuple[pl.DataFrame, pa.Table]:
    """(rows with no problem, problem rows) of ``frame`` (the batch's rows plus derived columns)."""
    frame = frame.with_columns(file=pl.lit(batch.file, pl.Int32), record=pl.Series(batch.records, dtype=pl.Int64),
                               reason=reason)
    bad = frame.filter(pl.col("reason").is_not_null())
    problems = bad.select("file", "record", "reason", content=_masked_content(batch.rows))
    return frame.filter(pl.col("reason").is_null()), as_canonical(problems, PROBLEM_SCHEMA)


def _time_problem(time: pl.Expr, text: pl.Expr) -> pl.Expr:
    return (pl.when(text.is_null()).then(pl.lit("no date"))
            .when(time.is_null()).then(pl.format("unparseable date '{}'", text)))


def _int(column: str, rows: pl.DataFrame) -> pl.Expr:
    return (pl.col(column).cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
            if column in rows.columns else pl.lit(None, pl.Int64))


def _text(column: str | None, rows: pl.DataFrame) -> pl.Expr:
    return pl.col(column).cast(pl.String) if column and column in rows.columns else pl.lit(None, pl.String)


def _persons(batch: Batch, zips: pl.DataFrame) -> tuple[pl.DataFrame, pa.Table]:
    rows = batch.rows
    year, month, day = (_int(c, rows) for c in ("year_of_birth", "month_of_birth", "day_of_birth"))
    from_parts = pl.date(year, month, day.fill_null(1))
    born_text = _text("birth_datetime", rows)
    gender = _int("gender_concept_id", rows).replace_strict(GENDERS, default=None, return_dtype=pl.String)
    source_gender = _text("gender_source_value", rows).str.to_uppercase()
    race = _int("race_concept_id", rows)
    source_id = _text("person_source_value", rows)
    frame = rows.with_columns(
        patient_key=_int("person_id", rows),
        sex=pl.coalesce(gender, source_gender),
        date_of_birth=pl.coalesce(parse_times(born_text).dt.date(), pl.when(day.is_not_null()).then(from_parts)),
        year_month_of_birth=pl.when(month.is_not_null()).then(from_parts.dt.strftime("%Y-%m")),
        ethnicity=pl.when(race.is_in(list(RACES))).then(race.replace_strict(RACES, default=None, return_dtype=pl.String))
        .when(race > 0).then(pl.lit("Other")),
        local_id=pl.when(source_id.str.strip_chars() != "")
        .then(pl.lit("omop:person_source_value|") + source_id)
        .otherwise(pl.lit("omop:person_id|") + _text("person_id", rows).str.strip_chars()),
        location_id=_int("location_id", rows),
    ).join(zips, on="location_id", how="left", maintain_order="left")
    reason = pl.when(pl.col("patient_key").is_null()).then(pl.format("person_id '{}' is not an integer", _text("person_id", rows)))
    return _split(batch, frame, reason)


def _mapped(concepts: pl.DataFrame, column: str | None, rows: pl.DataFrame, name: str) -> pl.DataFrame:
    ids = pl.DataFrame({name: rows.select(_int(column, rows) if column else pl.lit(None, pl.Int64)).to_series()})
    return ids.join(concepts.rename({"concept_id": name, "code": f"{name}_code"}), on=name, how="left",
                    maintain_order="left")


def _events(batch: Batch, spec: Clinical, concepts: pl.DataFrame, table: str, tally: Tally
            ) -> tuple[pa.Table, pa.Table]:
    rows = batch.rows
    text = pl.coalesce(_text(spec.datetime, rows), _text(spec.date, rows))
    if spec.concept is None:
        code = pl.lit(DEATH_CODE)
        frame = rows
    else:
        frame = pl.concat([rows, _mapped(concepts, spec.concept, rows, "concept"),
                           _mapped(concepts, spec.source_concept, rows, "source_concept")], how="horizontal")
        code = pl.coalesce("concept_code", "source_concept_code")
    frame = frame.with_columns(patient_key=_int("person_id", rows), time=parse_times(text), code=code,
                               numeric_value=_text(spec.value, rows).cast(pl.Float64, strict=False))
    reason = (pl.when(pl.col("patient_key").is_null()).then(pl.format("person_id '{}' is not an integer", _text("person_id", rows)))
              .otherwise(_time_problem(pl.col("time"), text)))
    good, problems = _split(batch, frame, reason)
    unmapped = good.filter(pl.col("code").is_null())
    if unmapped.height:
        key = pl.format("{}|concept {} (source {})", pl.lit(table), pl.col("concept").fill_null(0),
                        _text(spec.source_value, rows).fill_null(""))
        tally.unmapped.update(dict(unmapped.select(key).to_series().value_counts().iter_rows()))
    return as_canonical(good.filter(pl.col("code").is_not_null()), EVENT_COLUMNS), problems
