"""OMOP CDM 5.4 ingest: the Synthea zip, CSV and Parquet, and bad rows by file and line."""

import zipfile

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st
from ingest_support import SYNTHEA_OMOP, assert_nowhere, farr, ingest, quarantine

from farr.events.io import verify
from farr.ingest.omop import _line_numbers

CONCEPTS = """concept_id,concept_name,domain_id,vocabulary_id,concept_class_id,standard_concept,concept_code
8507,MALE,Gender,Gender,Gender,S,M
201826,Type 2 diabetes,Condition,SNOMED,Clinical Finding,S,44054006
3025315,Body weight,Measurement,LOINC,Clinical Observation,S,29463-7
45000001,Metformin,Drug,dm+d,VMP,S,325278007
"""
PERSONS = """person_id,gender_concept_id,year_of_birth,month_of_birth,day_of_birth,birth_datetime,race_concept_id,person_source_value
1,8507,1970,5,6,1970-05-06 00:00:00,8527,src-a
2,8532,1980,3,,,8516,src-b
3,8532,,,,,0,src-c
x,8507,1990,1,1,,0,src-d
4,8507,1960,2
"""
CONDITIONS = """condition_occurrence_id,person_id,condition_concept_id,condition_start_date,condition_start_datetime,condition_source_value,condition_source_concept_id
1,1,201826,2001-02-03,,44054006,0
2,1,201826,not a date,,44054006,0
3,99,201826,2001-02-03,,44054006,0
4,1,0,2002-02-03,,LOCAL-X,0
5,1,201826
6,2,201826,2005-06-07,,44054006,0
7,1,201826,1969-01-01,,44054006,0
"""
DRUGS = """drug_exposure_id,person_id,drug_concept_id,drug_exposure_start_date,drug_source_concept_id
1,1,45000001,2003-04-05,0
"""
MEASUREMENTS = """measurement_id,person_id,measurement_concept_id,value_as_number
1,1,3025315,70.5
"""
DEATHS = """person_id,death_date
2,2001-01-01
"""


def _write_csv(directory):
    directory.mkdir()
    for name, text in (("CONCEPT", CONCEPTS), ("PERSON", PERSONS), ("CONDITION_OCCURRENCE", CONDITIONS),
                       ("DRUG_EXPOSURE", DRUGS), ("MEASUREMENT", MEASUREMENTS), ("DEATH", DEATHS)):
        (directory / f"{name}.csv").write_text(text)
    return directory


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


@pytest.mark.skipif(not SYNTHEA_OMOP.exists(), reason=f"{SYNTHEA_OMOP} not found (shared/ beside the repo)")
def test_synthea_omop_zip(tmp_path, keys):
    out = tmp_path / "out"
    m = ingest("omop", SYNTHEA_OMOP, out, keys)
    verify(out)
    assert m["counts"]["subjects"]["read"] == m["counts"]["subjects"]["written"] == 28
    assert {"SNOMED", "LOINC", "RXNORM", "MEDS"} <= set(m["vocabularies"])
    assert m["source"]["subjects_keyed_by"] == {"omop:person_source_value": 28}
    events = pl.read_parquet(out / "data" / "*.parquet")
    assert events.filter(pl.col("code") == "MEDS_DEATH").height == 3
    assert events.filter(pl.col("code").str.starts_with("LOINC/"))["numeric_value"].is_not_null().any()
    with zipfile.ZipFile(SYNTHEA_OMOP) as archive:
        persons = pl.read_csv(archive.read("PERSON.csv"))
    assert_nowhere(out, persons["person_source_value"].to_list())
    assert m["inputs"][0]["name"] == SYNTHEA_OMOP.name and len(m["inputs"][0]["sha256"]) == 64


def test_bad_omop_rows_are_quarantined_by_file_and_line(tmp_path, keys):
    out = tmp_path / "out"
    m = ingest("omop", _write_csv(tmp_path / "cdm"), out, keys)
    verify(out)
    q = quarantine(out)
    where = {(f, r): reason for f, r, reason in q.select("source_file", "record", "reason").iter_rows()}
    assert where[("PERSON.csv", 5)] == "person_id 'x' is not an integer"
    assert where[("PERSON.csv", 6)] == "malformed CSV row: expected 8 columns, found 4"
    assert where[("CONDITION_OCCURRENCE.csv", 3)] == "unparseable date 'not a date'"
    assert where[("CONDITION_OCCURRENCE.csv", 4)] == "refers to no patient in the source"
    assert where[("CONDITION_OCCURRENCE.csv", 6)] == "malformed CSV row: expected 7 columns, found 3"
    assert where[("CONDITION_OCCURRENCE.csv", 7)] == "dated a day or more after death"
    assert where[("CONDITION_OCCURRENCE.csv", 8)] == "dated before birth"
    assert where[("MEASUREMENT.csv", None)] == "table skipped: missing column 'measurement_date'"
    assert m["counts"]["subjects_quarantined_by_reason"] == {"no date of birth, or none to the month": 1}
    assert m["unmapped_codes"]["most_frequent"] == [
        {"code": "condition_occurrence|concept 0 (source LOCAL-X)", "count": 1}]
    events = pl.read_parquet(out / "data" / "*.parquet")
    assert {"SNOMED/44054006", "DMD/325278007", "MEDS_DEATH", "MEDS_BIRTH"} == set(events["code"])
    subjects = pl.read_parquet(out / "subjects" / "*.parquet").sort("year_month_of_birth")
    assert subjects["year_month_of_birth"].to_list() == ["1970-05", "1980-03"]  # month known, no day
    assert subjects["ethnicity"].to_list() == ["White", "Black"]
    assert_nowhere(out, ["src-a", "src-b", "1970-05-06"])


def test_omop_parquet_and_a_truncated_table(tmp_path, keys):
    cdm = _write_csv(tmp_path / "csv")
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for csv in cdm.iterdir():
        frame = pl.read_csv(csv, infer_schema=False, truncate_ragged_lines=True)  # short rows: nulls
        frame.write_parquet(parquet / f"{csv.stem.lower()}.parquet")
    data = (parquet / "drug_exposure.parquet").read_bytes()
    (parquet / "drug_exposure.parquet").write_bytes(data[:-40])
    m = ingest("omop", parquet, tmp_path / "out", keys)
    q = quarantine(tmp_path / "out")
    skipped = q.filter(pl.col("source_file") == "drug_exposure.parquet")
    assert skipped.height == 1 and skipped["reason"][0].startswith("table skipped: unreadable")
    assert m["counts"]["subjects"]["written"] == 3  # person 4's short row is whole in Parquet


def test_no_person_table_fails_in_one_line(tmp_path, keys):
    (tmp_path / "cdm").mkdir()
    (tmp_path / "cdm" / "CONCEPT.csv").write_text(CONCEPTS)
    code, output = farr("ingest", tmp_path / "cdm", "--from", "omop", "--out", tmp_path / "out",
                        "--project", "study", "--key-dir", keys)
    assert code == 2 and "no OMOP PERSON table" in output and len(output.strip().splitlines()) == 1


@given(lines=st.lists(st.booleans(), max_size=60))
def test_csv_line_numbers_skip_the_bad_lines(lines):
    """Good data rows keep their own 1-based file line however many bad lines came before."""
    numbered = list(enumerate(lines, start=2))  # line 1 is the header
    good = [n for n, ok in numbered if ok]
    bad = [n for n, ok in numbered if not ok]
    assert _line_numbers(np.arange(len(good)), bad).tolist() == good
