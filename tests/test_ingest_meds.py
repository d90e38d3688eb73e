"""MEDS ingest: any MEDS dataset, file by file, keyed by dataset and subject_id."""

import datetime as dt
import json

import polars as pl
import pytest
from ingest_support import ingest, project_key, quarantine, subject_ids

from farr.events.io import verify


def _meds(root, name="mimic-demo"):
    (root / "metadata").mkdir(parents=True)
    (root / "metadata" / "dataset.json").write_text(json.dumps({"dataset_name": name}))
    shards = {
        "train/0.parquet": [(1, None, "GENDER//F", None), (1, dt.datetime(1960, 3, 9, 4), "MEDS_BIRTH", None),
                            (1, dt.datetime(2010, 1, 1), "LAB//50912", 1.2), (2, None, "GENDER//M", None),
                            (2, dt.datetime(1971, 7, 1), "MEDS_BIRTH", None), (2, dt.datetime(2011, 1, 1), "ICD10/I21", None)],
        "held_out/0.parquet": [(3, dt.datetime(1980, 1, 1), "MEDS_BIRTH", None), (3, dt.datetime(2012, 1, 1), "ICD10/E11", None)],
    }
    for name, rows in shards.items():
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.String,
                                           "numeric_value": pl.Float64}, orient="row")
        frame.with_columns(text_value=pl.lit(None, pl.String)).write_parquet(root / "data" / name)
    return root


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


def test_meds_dataset_is_ingested_file_by_file(tmp_path, keys):
    out = tmp_path / "out"
    m = ingest("meds", _meds(tmp_path / "meds"), out, keys)
    verify(out)
    assert m["source"]["subjects_keyed_by"] == {"meds:mimic-demo": 2}
    assert m["counts"]["subjects_quarantined_by_reason"] == {"sex not recorded": 1}  # subject 3
    assert subject_ids(out) == set(project_key(keys).pseudonyms(["meds:mimic-demo|1", "meds:mimic-demo|2"])[0].tolist())
    events = pl.read_parquet(out / "data" / "*.parquet")
    births = events.filter(pl.col("code") == "MEDS_BIRTH")["time"].sort().to_list()
    assert births == [dt.datetime(1960, 3, 1), dt.datetime(1971, 7, 1)]  # the exact time is not kept
    assert {"GENDER//F", "LAB//50912", "ICD10/I21"} <= set(events["code"])


def test_another_meds_dataset_does_not_link(tmp_path, keys):
    ingest("meds", _meds(tmp_path / "a", "one"), tmp_path / "out-a", keys)
    ingest("meds", _meds(tmp_path / "b", "two"), tmp_path / "out-b", keys)
    assert not subject_ids(tmp_path / "out-a") & subject_ids(tmp_path / "out-b")


def test_a_truncated_meds_file_is_skipped_and_the_rest_land(tmp_path, keys):
    root = _meds(tmp_path / "meds")
    data = (root / "data" / "held_out" / "0.parquet").read_bytes()
    (root / "data" / "held_out" / "0.parquet").write_bytes(data[:100])
    m = ingest("meds", root, tmp_path / "out", keys)
    row = quarantine(tmp_path / "out").row(0, named=True)
    assert row["source_file"] == "data/held_out/0.parquet" and "truncated or corrupt" in row["reason"]
    assert m["counts"]["subjects"]["written"] == 2
