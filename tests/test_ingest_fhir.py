"""FHIR R4 ingest: Synthea-style bundles and bulk NDJSON, and what bad input becomes."""

import datetime as dt
import json

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ingest_support import (
    assert_nowhere,
    farr,
    ingest,
    project_key,
    quarantine,
    subject_ids,
)

from farr.events import nhs_number
from farr.events.io import verify
from farr.ingest.fhir import Collector
from farr.ingest.fhir_examples import (
    bundle,
    patient_resources,
    write_bundles,
    write_ndjson,
)
from farr.ingest.source import parse_times

NHS = nhs_number.generate(np.random.default_rng(7), 12).tolist()


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


def test_bundles_and_ndjson_of_the_same_patients_link(tmp_path, keys):
    write_bundles(tmp_path / "bundles", 6, seed=1, nhs_numbers=NHS[:6], encounters=10)
    write_ndjson(tmp_path / "bulk", 6, seed=1, nhs_numbers=NHS[:6], encounters=10)
    a = ingest("fhir", tmp_path / "bundles", tmp_path / "a", keys)
    b = ingest("fhir", tmp_path / "bulk", tmp_path / "b", keys)
    verify(tmp_path / "a")
    expected = set(project_key(keys).pseudonyms([f"nhs_number|{n}" for n in NHS[:6]])[0].tolist())
    assert subject_ids(tmp_path / "a") == subject_ids(tmp_path / "b") == expected
    assert a["counts"]["records"]["written"] == b["counts"]["records"]["written"]
    assert {"SNOMED", "LOINC", "RXNORM", "MEDS"} <= set(a["vocabularies"])
    assert a["counts"]["not_ingested"].keys() == {"Claim", "ExplanationOfBenefit", "DiagnosticReport"}
    assert a["source"]["subjects_keyed_by"] == {"nhs_number": 6}
    events = pl.read_parquet(tmp_path / "a" / "data" / "*.parquet")
    assert events.filter(pl.col("code") == "LOINC/8480-6")["numeric_value"].is_not_null().all()  # BP component


def test_no_name_address_or_identifier_reaches_the_output(tmp_path, keys):
    paths = write_bundles(tmp_path / "bundles", 4, seed=2, nhs_numbers=NHS[:4], encounters=3)
    people = [json.loads(p.read_text())["entry"][0]["resource"] for p in paths]
    secrets = [value for person in people for value in (
        person["name"][0]["family"], person["name"][0]["given"][0], person["address"][0]["line"][0],
        person["address"][0]["postalCode"], person["telecom"][0]["value"], person["birthDate"],
        person["identifier"][0]["value"], person["identifier"][-1]["value"], person["id"])]
    ingest("fhir", tmp_path / "bundles", tmp_path / "out", keys)
    assert_nowhere(tmp_path / "out", secrets)


def test_patients_without_nhs_numbers_are_keyed_by_their_fhir_id(tmp_path, keys):
    write_bundles(tmp_path / "bundles", 3, seed=3, encounters=2)
    m = ingest("fhir", tmp_path / "bundles", tmp_path / "out", keys)
    assert m["source"]["subjects_keyed_by"] == {"fhir:Patient.id": 3}


def _ndjson_with_problems(directory):
    write_ndjson(directory, 3, seed=4, nhs_numbers=NHS[:3], encounters=4)
    patients = (directory / "Patient.ndjson").read_text().splitlines()
    first = json.loads(patients[0])
    bad_patient = dict(first, id="p-bad", identifier=[{"system": "https://fhir.nhs.uk/Id/nhs-number",
                                                       "value": NHS[3][:9] + str((int(NHS[3][9]) + 1) % 10)}])
    invalid = dict(first, id="p-invalid", birthDate="1970-13-45")  # line 5: fails fhir.resources
    (directory / "Patient.ndjson").write_text("\n".join(patients + [json.dumps(bad_patient), json.dumps(invalid)]) + "\n")
    observation = json.loads((directory / "Observation.ndjson").read_text().splitlines()[0])
    lines = [
        '{"resourceType": "Observation", "id": "trunc',  # line 1: truncated JSON
        json.dumps({"resourceType": "Spaceship", "id": "x"}),  # 2: not a FHIR type
        json.dumps(dict(observation, effectiveDateTime="2011-13-45")),  # 3: invalid date
        json.dumps(dict(observation, effectiveDateTime="2999-01-01T00:00:00Z")),  # 4: future
        json.dumps(dict(observation, subject={"reference": "urn:uuid:nobody"})),  # 5: unknown patient
        json.dumps(dict(observation, effectiveDateTime="1850-01-01")),  # 6: before birth
        json.dumps(dict(observation, code={"coding": [{"system": "http://acme.org", "code": "Z9"}]})),  # 7
        json.dumps(observation),  # 8: fine
    ]
    (directory / "Extra.ndjson").write_text("\n".join(lines) + "\n")
    return bad_patient


def test_bad_ndjson_records_are_quarantined_by_file_and_line(tmp_path, keys):
    bad_patient = _ndjson_with_problems(tmp_path / "bulk")
    out = tmp_path / "out"
    m = ingest("fhir", tmp_path / "bulk", out, keys)
    verify(out)
    q = quarantine(out).filter(pl.col("source_file") == "Extra.ndjson").sort("record")
    by_line = dict(zip(q["record"], q["reason"], strict=False))
    assert by_line[1].startswith("malformed JSON")
    assert by_line[2] == "unknown resource type 'Spaceship'"
    assert by_line[3] == "unparseable date '2011-13-45'"
    assert by_line[4] == "dated in the future"
    assert by_line[5] == "refers to no patient in the source"
    assert by_line[6] == "dated before birth"
    assert 7 not in by_line and 8 not in by_line
    assert m["unmapped_codes"]["most_frequent"] == [{"code": "http://acme.org|Z9", "count": 1}]
    assert m["counts"]["subjects"]["written"] == 3
    assert m["counts"]["subjects_quarantined_by_reason"] == {"invalid NHS number: check digit is "
                                                             f"{bad_patient['identifier'][0]['value'][9]}, expected {NHS[3][9]}": 1}
    assert "uuid:nobody" not in "".join(q["content"].to_list())
    patients = quarantine(out).filter(pl.col("source_file") == "Patient.ndjson").sort("record")
    assert patients["record"].to_list() == [4, 5]  # the bad check digit, then the bad birthDate
    invalid = patients.filter(pl.col("record") == 5)
    assert invalid["reason"][0].startswith("invalid Patient: birthDate")
    assert "1970-13-45" not in invalid["content"][0]


def test_a_truncated_bundle_is_skipped_and_the_rest_land(tmp_path, keys):
    paths = write_bundles(tmp_path / "bundles", 3, seed=5, encounters=3)
    paths[1].write_bytes(paths[1].read_bytes()[:5000])
    out = tmp_path / "out"
    m = ingest("fhir", tmp_path / "bundles", out, keys)
    q = quarantine(out)
    assert q.height == 1 and q["reason"][0].startswith("bundle skipped: malformed JSON")
    assert q["source_file"][0] == f"bundle-{sorted(paths).index(paths[1]) + 1:06d}.json"  # by sorted name
    assert m["counts"]["subjects"]["written"] == 2
    assert {f["name"] for f in m["inputs"]} == {"bundle-000001.json", "bundle-000002.json", "bundle-000003.json"}


def test_an_event_after_death_is_quarantined(tmp_path, keys):
    resources = patient_resources(__import__("random").Random(1), nhs_number=NHS[5], encounters=5)
    last = max(r["period"]["start"] for r in resources if r["resourceType"] == "Encounter")
    died = dt.datetime.fromisoformat(last) - dt.timedelta(days=2)
    resources[0]["deceasedDateTime"] = died.isoformat()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "one.json").write_bytes(orjson.dumps(bundle(resources)))
    m = ingest("fhir", tmp_path / "b", tmp_path / "out", keys)
    assert m["counts"]["records_quarantined_by_reason"]["dated a day or more after death"] > 0


def test_nothing_to_read_fails_in_one_line(tmp_path, keys):
    (tmp_path / "empty").mkdir()
    code, output = farr("ingest", tmp_path / "empty", "--from", "fhir", "--out", tmp_path / "out",
                        "--project", "study", "--key-dir", keys)
    assert code == 2 and "no FHIR bundles" in output and len(output.strip().splitlines()) == 1


# What orjson can hand over: it reads integers beyond 64 bits as floats.
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
resource_types = st.sampled_from(["Patient", "Observation", "Condition", "Encounter", "Immunization", "Claim", "Foo", ""])


@settings(max_examples=150, deadline=None)
@given(body=st.dictionaries(st.sampled_from(["id", "subject", "patient", "code", "gender", "birthDate",
                                             "effectiveDateTime", "period", "component", "valueQuantity"]),
                            json_values, max_size=6), kind=resource_types)
def test_any_resource_is_read_quarantined_or_counted_never_a_crash(body, kind):
    collector = Collector()
    collector.resource({"resourceType": kind, **body}, 0, 0)
    chunk = collector.chunk([])
    outcomes = (chunk.patients.num_rows + chunk.events.num_rows + chunk.problems.num_rows
                + sum(chunk.tally.skipped.values()) + sum(chunk.tally.unmapped.values()))
    assert outcomes >= 1


@settings(max_examples=150, deadline=None)
@given(line=st.binary(max_size=60))
def test_any_ndjson_line_is_read_or_quarantined(line):
    collector = Collector()
    collector.line(line, 0, 1)
    chunk = collector.chunk([])
    assert chunk.problems.num_rows + chunk.patients.num_rows + chunk.events.num_rows + sum(chunk.tally.skipped.values()) >= 1


@settings(max_examples=200, deadline=None)
@given(moment=st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(2200, 1, 1)),
       offset_minutes=st.integers(-14 * 60, 14 * 60))
def test_fhir_datetimes_parse_to_utc(moment, offset_minutes):
    moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    zone = dt.timezone(dt.timedelta(minutes=offset_minutes))
    text = moment.replace(tzinfo=zone).isoformat(timespec="milliseconds")
    parsed = pl.select(parse_times(pl.lit(text))).item()
    assert parsed == moment - dt.timedelta(minutes=offset_minutes)


@given(text=st.text(max_size=30))
def test_any_text_parses_to_a_time_or_null(text):
    assert pl.select(parse_times(pl.lit(text, pl.String))).dtypes == [pl.Datetime("us")]
