import datetime as dt
import json
import os
import pickle
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from farr.events import nhs_number
from farr.events.io import (
    DatasetError,
    DatasetWriter,
    SchemaError,
    iter_shards,
    read_metadata,
    scan_events,
    scan_subjects,
    verify,
    write_shard,
)
from farr.events.meds_reader import MEDS_SUBJECT_SCHEMA, read_meds
from farr.events.schema import EVENT_SCHEMA, subject_schema


def make_shard(subject_ids=(1, 2), *, identifiable=False):
    """Events (a static fact, birth, one measurement per subject) and subjects of one shard."""
    n = len(subject_ids)
    births = [dt.datetime(1980 + i, 1 + i % 12, 1) for i in range(n)]
    events = pa.table(
        {
            "subject_id": np.repeat(subject_ids, 3),
            "time": [t for birth in births for t in (None, birth, birth + dt.timedelta(days=9000))],
            "code": ["ETHNICITY/White", "MEDS_BIRTH", "LOINC/4548-4"] * n,
            "numeric_value": [None, None, 41.5] * n,
        },
        schema=EVENT_SCHEMA,
    )
    subjects = {
        "subject_id": list(subject_ids),
        "sex": ["F", "M"] * (n // 2) + ["F"] * (n % 2),
        "year_month_of_birth": [f"{b.year}-{b.month:02d}" for b in births],
        "ethnicity": ["White"] * n,
        "imd_quintile": [3] * n,
        "region": ["London"] * n,
        "practice_id": ["P1"] * n,
        "site_id": [None] * n,
        "registration_start": [dt.date(2000, 1, 1)] * n,
        "registration_end": [None] * n,
        "end_reason": ["extract_end"] * n,
        "national_opt_out": [False] * n,
        "type1_opt_out": [False] * n,
    }
    if identifiable:
        subjects |= {
            "nhs_number": nhs_number.generate(np.random.default_rng(0), n).tolist(),
            "date_of_birth": [b.date() for b in births],
            "postcode_district": ["LS1"] * n,
        }
    return events, pa.table(subjects, schema=subject_schema(identifiable))


def write_dataset(out, shards=((1, 2), (3,)), *, identifiable=False, **writer_options):
    with DatasetWriter(out, identifiable=identifiable, **writer_options) as writer:
        infos = [
            writer.write_shard(i, *make_shard(ids, identifiable=identifiable))
            for i, ids in enumerate(shards)
        ]
        writer.commit(
            infos,
            created_by="test",
            dataset_name="tiny",
            code_descriptions={"MEDS_BIRTH": "Birth"},
            extra={"seed": 1},
        )
    return out


def siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


@pytest.mark.parametrize("identifiable", [False, True])
def test_round_trip(tmp_path, identifiable):
    out = write_dataset(tmp_path / "out", identifiable=identifiable)
    shards = list(iter_shards(out))
    assert [s.num_rows for _, s in shards] == [2, 1]
    events, subjects = shards[0]
    expected_events, expected_subjects = make_shard(identifiable=identifiable)
    assert events.equals(expected_events) and subjects.equals(expected_subjects)

    metadata = read_metadata(out)
    assert metadata["identifiable"] is identifiable
    assert (metadata["rows"], metadata["subjects"], metadata["shards"]) == (9, 3, 2)
    assert metadata["vocabularies"] == {"ETHNICITY": 3, "LOINC": 3, "MEDS": 3}
    assert metadata["extra"] == {"seed": 1}
    assert metadata["files"]["data/00001.parquet"]["rows"] == 3
    assert scan_events(out).collect().height == 9
    assert scan_subjects(out).collect()["subject_id"].to_list() == [1, 2, 3]
    verify(out)

    codes = pq.read_table(out / "metadata/codes.parquet").to_pydict()
    assert codes["code"] == ["ETHNICITY/White", "LOINC/4548-4", "MEDS_BIRTH"]
    assert codes["description"] == [None, None, "Birth"]
    dataset = json.loads((out / "metadata/dataset.json").read_text())
    assert dataset["dataset_name"] == "tiny" and dataset["etl_name"] == "farr"
    assert siblings(out) == []


def test_same_tables_give_same_bytes(tmp_path):
    first, second = write_dataset(tmp_path / "a"), write_dataset(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 7
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_shard_info_survives_pickling_from_a_worker(tmp_path):
    info = write_shard(tmp_path, 0, *make_shard(), identifiable=False)
    assert pickle.loads(pickle.dumps(info)) == info


def test_exact_casts_are_accepted(tmp_path):
    events, subjects = make_shard()
    events = events.set_column(0, "subject_id", events["subject_id"].cast(pa.int32()))
    events = events.set_column(3, "numeric_value", events["numeric_value"].cast(pa.float64()))
    info = write_shard(tmp_path, 0, events, subjects, identifiable=False)
    assert pq.read_schema(tmp_path / info.events_file).equals(EVENT_SCHEMA)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("time", pa.array([0] * 6, pa.int64()),
         "data/00000.parquet: column 'time' has type int64, expected timestamp[us]"),
        ("numeric_value", pa.array([0.1] * 6, pa.float64()),
         "data/00000.parquet: column 'numeric_value' has type double, expected float"),
        ("code", None, "data/00000.parquet: missing column 'code'"),
        ("code", pa.array([None] * 6, pa.string()),
         "data/00000.parquet: column 'code' has 6 null values"),
    ],
)
def test_schema_errors_name_file_and_column(tmp_path, column, values, message):
    events, subjects = make_shard()
    index = events.column_names.index(column)
    if values is None:
        events = events.remove_column(index)
    else:
        events = events.set_column(index, column, values)
    with pytest.raises(SchemaError, match=re.escape(message)):
        write_shard(tmp_path, 0, events, subjects, identifiable=False)


def test_identifiable_shard_needs_identifiers(tmp_path):
    events, subjects = make_shard()
    with pytest.raises(SchemaError, match="subjects/00000.parquet: missing column 'nhs_number'"):
        write_shard(tmp_path, 0, events, subjects, identifiable=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e, s: (e.take([1, 0, 2, 3, 4, 5]), s), "not sorted .* at row 1"),
        (lambda e, s: (e.take([3, 4, 5, 0, 1, 2]), s), r"not sorted .* at row 3 \(subject_id 1\)"),
        (lambda e, s: (e, s.slice(0, 1)), "subject_id 2 has events but no subject row"),
        (lambda e, s: (e.slice(0, 3), s), "subject_id 2 has a subject row but no events"),
        (lambda e, s: (e, pa.concat_tables([s, s])), "subject_id 1 appears more than once"),
        (lambda e, s: (e.set_column(2, "code", pa.array(["snomed 123"] * 6)), s),
         "code 'snomed 123' is not"),
    ],
)
def test_shard_contract_is_checked(tmp_path, change, message):
    events, subjects = change(*make_shard())
    with pytest.raises(DatasetError, match=message):
        write_shard(tmp_path, 0, events, subjects, identifiable=False)
    assert not (tmp_path / "data").exists()


def test_non_empty_out_dir_is_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="out exists and is not empty; pass --overwrite"):
        DatasetWriter(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and siblings(out) == []


def test_overwrite_replaces_out_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    write_dataset(out, overwrite=True)
    assert not (out / "old.txt").exists() and siblings(out) == []
    verify(out)


def test_exception_inside_with_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), DatasetWriter(out) as writer:
        writer.write_shard(0, *make_shard())
        raise RuntimeError("worker died")
    assert not out.exists() and siblings(out) == []


def test_commit_rejects_unlisted_shard_files(tmp_path):
    with DatasetWriter(tmp_path / "out") as writer:
        info = writer.write_shard(0, *make_shard())
        writer.write_shard(1, *make_shard((3,)))
        with pytest.raises(DatasetError, match="data/00001.parquet was written but not committed"):
            writer.commit([info], created_by="test", dataset_name="tiny")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_parent_is_a_clear_error(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="is not writable; cannot create out there"):
            DatasetWriter(tmp_path / "out")
    finally:
        tmp_path.chmod(0o700)


def test_truncated_parquet_names_file(tmp_path):
    out = write_dataset(tmp_path / "out")
    file = out / "data/00001.parquet"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(DatasetError, match=f"{file}: unreadable parquet, truncated or corrupt"):
        list(iter_shards(out))


def test_verify_detects_modified_and_missing_files(tmp_path):
    out = write_dataset(tmp_path / "out")
    subjects = out / "subjects/00000.parquet"
    subjects.write_bytes(subjects.read_bytes() + b"\0")
    with pytest.raises(DatasetError, match=f"{subjects}: sha256 differs"):
        verify(out)
    subjects.unlink()
    with pytest.raises(DatasetError, match=f"{subjects}: listed in metadata/farr.json but missing"):
        verify(out)


def test_read_metadata_of_a_non_dataset(tmp_path):
    with pytest.raises(DatasetError, match="farr.json: missing; .* is not a farr dataset"):
        read_metadata(tmp_path)
    (tmp_path / "metadata").mkdir()
    (tmp_path / "metadata/farr.json").write_text("{")
    with pytest.raises(DatasetError, match="farr.json: unreadable JSON"):
        read_metadata(tmp_path)


def write_meds_file(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def test_read_meds_of_another_tool(tmp_path):
    birth = dt.datetime(1990, 5, 17)
    write_meds_file(tmp_path / "data/train/0.parquet", pa.table({
        "subject_id": pa.array([7, 7, 7, 8], pa.int32()),
        "time": [None, birth, birth + dt.timedelta(days=1), None],
        "code": ["GENDER//F", "MEDS_BIRTH", "LAB//50912//mg/dL", "GENDER//M"],
        "numeric_value": pa.array([None, None, 1.25, None], pa.float64()),
        "text_value": [None, None, "1.25", None],
    }))
    write_meds_file(tmp_path / "data/held_out/0.parquet", pa.table({
        "subject_id": pa.array([9], pa.int64()),
        "time": pa.array([birth], pa.timestamp("ms")),
        "code": ["DIAGNOSIS//ICD//10//I10"],
    }))
    events, subjects = read_meds(tmp_path)
    assert events.schema.equals(EVENT_SCHEMA)
    assert events["subject_id"].to_pylist() == [9, 7, 7, 7, 8]  # held_out sorts before train
    assert events["numeric_value"].to_pylist() == [None, None, None, 1.25, None]
    assert subjects.schema.equals(MEDS_SUBJECT_SCHEMA)
    assert subjects.select(["subject_id", "sex", "year_month_of_birth"]).to_pylist() == [
        {"subject_id": 7, "sex": "F", "year_month_of_birth": "1990-05"},
        {"subject_id": 8, "sex": "M", "year_month_of_birth": None},
        {"subject_id": 9, "sex": None, "year_month_of_birth": None},
    ]
    assert subjects["region"].null_count == 3


def test_read_meds_errors_name_file_and_column(tmp_path):
    file = tmp_path / "data/0.parquet"
    write_meds_file(file, pa.table({"subject_id": [1], "code": ["X"]}))
    with pytest.raises(SchemaError, match=f"{file}: missing column 'time'"):
        read_meds(tmp_path)
    write_meds_file(file, pa.table({"subject_id": [1.5], "time": [None], "code": ["X"]}))
    with pytest.raises(SchemaError, match=f"{file}: column 'subject_id' has type double"):
        read_meds(tmp_path)
