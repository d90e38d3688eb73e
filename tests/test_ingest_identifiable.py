"""Ingest of the simulator's identifiable extract: pseudonyms, opt-outs, no identifier out, bad input."""

import datetime as dt
import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from ingest_support import (
    assert_nowhere,
    farr,
    ingest,
    manifest,
    project_key,
    quarantine,
    subject_ids,
)

from farr.events.io import verify
from farr.governance.pseudonymise import ProjectKey, PseudonymCollision
from farr.ingest import pipeline
from farr.simulate.simulator import simulate_dataset


@pytest.fixture(scope="module")
def extract(tmp_path_factory):
    """1,000 identifiable people in two shards."""
    out = tmp_path_factory.mktemp("extract") / "extract"
    return simulate_dataset(out, 1000, seed=3, identifiable=True, workers=1, progress=False, chunk_size=500)


@pytest.fixture(scope="module")
def people(extract):
    return pl.read_parquet(extract / "subjects" / "*.parquet")


@pytest.fixture
def keys(tmp_path):
    return tmp_path / "keys"


def test_ingest_writes_a_valid_pseudonymised_dataset(extract, people, keys, tmp_path):
    out = tmp_path / "out"
    m = ingest("farr-identifiable", extract, out, keys)
    verify(out)
    opted_out = people.filter(pl.col("national_opt_out") | pl.col("type1_opt_out"))
    counts = m["counts"]["subjects"]
    assert counts == {"read": 1000, "written": 1000 - opted_out.height,
                      "excluded_opt_out": opted_out.height, "quarantined": 0, "withheld_k_anonymity": 0}
    assert m["opt_outs"]["excluded"]["national"] == people["national_opt_out"].sum()
    assert m["opt_outs"]["upheld"] == ["national", "type1"]
    assert m["source"]["subjects_keyed_by"] == {"nhs_number": 1000 - opted_out.height}
    assert {f["name"] for f in m["inputs"]} == {"data/00000.parquet", "data/00001.parquet",
                                                "subjects/00000.parquet", "subjects/00001.parquet"}
    assert m["key_id"] == project_key(keys).key_id and len(m["key_id"]) == 16
    records = m["counts"]["records"]
    assert records["written"] == records["read"] - records["excluded_opt_out"] + counts["written"] - 1000 + opted_out.height


def test_subject_ids_are_the_keyed_hmac_of_nhs_numbers(extract, people, keys, tmp_path):
    ingest("farr-identifiable", extract, tmp_path / "out", keys)
    kept = people.filter(~pl.col("national_opt_out") & ~pl.col("type1_opt_out"))
    ids, _ = project_key(keys).pseudonyms([f"nhs_number|{n}" for n in kept["nhs_number"]])
    assert subject_ids(tmp_path / "out") == set(ids.tolist())
    assert (ids > 0).all()


def test_no_direct_identifier_reaches_any_output_file(extract, people, keys, tmp_path):
    out = tmp_path / "out"
    code, output = farr("ingest", extract, "--from", "farr-identifiable", "--out", out, "--project", "study",
                        "--key-dir", keys, "--workers", 1)
    assert code == 0
    key_hex = (keys / "study.key").read_text().strip()
    not_first = people.filter(pl.col("date_of_birth").dt.day() != 1)
    assert_nowhere(out, people["nhs_number"].to_list() + [d.isoformat() for d in not_first["date_of_birth"]]
                   + [key_hex])
    assert key_hex not in output
    # Per person, no date of theirs equals their exact date of birth (registration often did).
    mine = project_key(keys).pseudonyms([f"nhs_number|{n}" for n in not_first["nhs_number"]])[0]
    dob = pl.DataFrame({"subject_id": mine, "dob": not_first["date_of_birth"]})
    subjects = pl.read_parquet(out / "subjects" / "*.parquet").join(dob, on="subject_id")
    assert not (subjects["registration_start"] == subjects["dob"]).any()
    events = pl.read_parquet(out / "data" / "*.parquet").join(dob, on="subject_id")
    assert not (events["time"].dt.date() == events["dob"]).any()
    assert set(pl.read_parquet(out / "subjects" / "*.parquet").columns).isdisjoint(
        {"nhs_number", "date_of_birth", "postcode_district"})


def test_same_project_links_extracts_and_other_projects_do_not(extract, keys, tmp_path):
    smaller = simulate_dataset(tmp_path / "smaller", 300, seed=3, identifiable=True, workers=1, progress=False)
    ingest("farr-identifiable", extract, tmp_path / "a1", keys, project="a")
    ingest("farr-identifiable", smaller, tmp_path / "a2", keys, project="a")
    ingest("farr-identifiable", smaller, tmp_path / "b", keys, project="b")
    a1, a2, b = (subject_ids(tmp_path / name) for name in ("a1", "a2", "b"))

    def kept(dataset):
        people = pl.read_parquet(dataset / "subjects" / "*.parquet")
        return set(people.filter(~pl.col("national_opt_out") & ~pl.col("type1_opt_out"))["nhs_number"])

    in_both = sorted(kept(extract) & kept(smaller))
    assert len(in_both) > 250  # the simulator gives the same people the same NHS numbers
    assert a1 & a2 == set(project_key(keys, "a").pseudonyms([f"nhs_number|{n}" for n in in_both])[0].tolist())
    assert not b & a1 and len(b) == len(a2)
    assert manifest(tmp_path / "a1")["key_id"] != manifest(tmp_path / "b")["key_id"]


def test_key_file_is_private_and_outside_the_data(extract, keys, tmp_path):
    ingest("farr-identifiable", extract, tmp_path / "out", keys)
    assert (keys / "study.key").stat().st_mode & 0o777 == 0o600
    code, output = farr("ingest", extract, "--from", "farr-identifiable", "--out", tmp_path / "o2",
                        "--project", "study", "--key-dir", tmp_path / "o2" / "keys")
    assert code == 2 and "inside the data directory" in output
    (keys / "study.key").chmod(0o644)
    code, output = farr("ingest", extract, "--from", "farr-identifiable", "--out", tmp_path / "o3",
                        "--project", "study", "--key-dir", keys)
    assert code == 2 and "chmod 600" in output and len(output.strip().splitlines()) == 1


def test_key_dir_defaults_to_the_environment(extract, tmp_path, monkeypatch):
    monkeypatch.setenv("FARR_KEY_DIR", str(tmp_path / "env-keys"))
    code, _ = farr("ingest", extract, "--from", "farr-identifiable", "--out", tmp_path / "out",
                   "--project", "p1", "--workers", 1)
    assert code == 0 and (tmp_path / "env-keys" / "p1.key").exists()


def test_opt_out_list_excludes_and_exemption_only_by_project_setting(extract, people, keys, tmp_path):
    free = people.filter(~pl.col("national_opt_out") & ~pl.col("type1_opt_out"))
    listed = free["nhs_number"].head(7).to_list()
    opt_outs = tmp_path / "ndoo.dat"
    opt_outs.write_text("".join(f"{n},\n" for n in listed) + "not a number,\n")
    base = ingest("farr-identifiable", extract, tmp_path / "base", keys)
    m = ingest("farr-identifiable", extract, tmp_path / "listed", keys, "--opt-outs", opt_outs)
    assert m["counts"]["subjects"]["excluded_opt_out"] == base["counts"]["subjects"]["excluded_opt_out"] + 7
    assert m["opt_outs"]["opt_out_list"]["nhs_numbers"] == 7 and m["opt_outs"]["opt_out_list"]["invalid_lines"] == 1

    assert "exempt" not in farr("ingest", "--help")[1]
    code, output = farr("project", "exempt", "study", "--type1", "--key-dir", keys)
    assert code == 2 and "--reason" in output
    assert farr("project", "exempt", "study", "--type1", "--reason", "CAG 99/CAG/0001", "--key-dir", keys)[0] == 0
    m = ingest("farr-identifiable", extract, tmp_path / "exempt", keys)
    type1_only = people.filter(pl.col("type1_opt_out") & ~pl.col("national_opt_out")).height
    assert m["counts"]["subjects"]["excluded_opt_out"] == people["national_opt_out"].sum()
    assert m["counts"]["subjects"]["written"] == base["counts"]["subjects"]["written"] + type1_only
    assert m["opt_outs"]["upheld"] == ["national"]
    assert m["opt_outs"]["exemptions"]["type1"]["reason"] == "CAG 99/CAG/0001"
    assert farr("project", "exempt", "study", "--type1", "--revoke", "--key-dir", keys)[0] == 0
    assert ingest("farr-identifiable", extract, tmp_path / "again", keys)["opt_outs"]["upheld"] == ["national", "type1"]


def _spoil(extract, tmp_path):
    """A copy of the extract with one bad thing of each kind in shard 0, and shard 1 truncated."""
    bad = tmp_path / "bad"
    shutil.copytree(extract, bad)
    subjects = pl.read_parquet(bad / "subjects" / "00000.parquet")
    events = pl.read_parquet(bad / "data" / "00000.parquet")
    keep = subjects.filter(~pl.col("national_opt_out") & ~pl.col("type1_opt_out"))
    first, second, third = keep["subject_id"].head(3).to_list()
    wrong_check = keep["nhs_number"][0][:9] + str((int(keep["nhs_number"][0][9]) + 1) % 10)
    subjects = subjects.with_columns(nhs_number=pl.when(pl.col("subject_id") == first).then(pl.lit(wrong_check))
                                     .otherwise("nhs_number"))
    mine = events.filter(pl.col("subject_id") == second)
    died = events.filter(pl.col("code") == "MEDS_DEATH").join(keep.select("subject_id"), on="subject_id").row(0, named=True)
    birth = keep.filter(pl.col("subject_id") == third)["date_of_birth"][0]
    extra = pl.DataFrame({
        "subject_id": [second, third, died["subject_id"], second, second],
        "time": [dt.datetime(2999, 1, 1), dt.datetime.combine(birth, dt.time()) - dt.timedelta(days=40),
                 died["time"] + dt.timedelta(days=3), mine["time"][1], dt.datetime(2010, 1, 1)],
        "code": ["SNOMED/1", "SNOMED/2", "SNOMED/3", mine["code"][1], "not a code"],
        "numeric_value": [None, None, None, mine["numeric_value"][1], None],
    }, schema=events.schema)
    events = pl.concat([events, extra]).sort("subject_id", "time", maintain_order=True)
    events.write_parquet(bad / "data" / "00000.parquet")
    subjects.write_parquet(bad / "subjects" / "00000.parquet")
    data = (bad / "data" / "00001.parquet").read_bytes()
    (bad / "data" / "00001.parquet").write_bytes(data[: len(data) // 2])
    return bad, wrong_check


def test_bad_records_go_to_quarantine_with_reasons_and_good_ones_land(extract, keys, tmp_path):
    bad, wrong = _spoil(extract, tmp_path)
    out = tmp_path / "out"
    m = ingest("farr-identifiable", bad, out, keys)
    verify(out)
    q = quarantine(out)
    reasons = set(q["reason"])
    assert "invalid NHS number: check digit is" in " ".join(reasons)
    for reason in ("dated in the future", "dated before birth", "dated a day or more after death",
                   "exact repeat of an earlier record", "code is not '<VOCABULARY>/<code>' or 'MEDS_<NAME>'"):
        assert reason in reasons
    truncated = q.filter(pl.col("source_file") == "data/00001.parquet")
    assert truncated.height == 1 and "shard skipped: unreadable parquet, truncated or corrupt" in truncated["reason"][0]
    events = q.filter(pl.col("reason") == "dated in the future")
    assert events["source_file"][0] == "data/00000.parquet" and events["record"][0] >= 0
    assert m["counts"]["subjects"]["quarantined"] == 1
    assert m["counts"]["subjects"]["written"] > 400  # shard 0 still lands
    assert_nowhere(out, [wrong])
    assert '"nhs_number":"<masked>"' in q.filter(pl.col("subject_id").is_null())["content"].str.join("")[0]


def test_missing_column_skips_the_shard_with_a_reason(extract, keys, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(extract, bad)
    table = pq.read_table(bad / "subjects" / "00001.parquet")
    pq.write_table(table.drop_columns(["nhs_number"]), bad / "subjects" / "00001.parquet")
    out = tmp_path / "out"
    ingest("farr-identifiable", bad, out, keys)
    row = quarantine(out).filter(pl.col("source_file") == "subjects/00001.parquet").row(0, named=True)
    assert row["reason"] == "shard skipped: missing column 'nhs_number'" and row["record"] is None


def test_a_crash_mid_run_leaves_no_output(extract, keys, tmp_path, monkeypatch):
    def crash(*args):
        raise RuntimeError("power cut")

    monkeypatch.setattr(pipeline.report, "write", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        pipeline.ingest("farr-identifiable", extract, tmp_path / "out", "study", key_dir=keys,
                        options=pipeline.Options(workers=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]


def test_a_pseudonym_collision_fails_loudly_and_writes_nothing(extract, keys, tmp_path, monkeypatch):
    def colliding(self, keys):
        return np.full(len(keys), 42, np.int64), np.arange(len(keys), dtype=np.uint64)

    monkeypatch.setattr(ProjectKey, "pseudonyms", colliding)
    with pytest.raises(PseudonymCollision, match="share subject_id 42"):
        pipeline.ingest("farr-identifiable", extract, tmp_path / "out", "study", key_dir=keys,
                        options=pipeline.Options(workers=1))
    assert not (tmp_path / "out").exists()


def test_a_patient_in_two_shards_is_withheld_from_the_later(extract, keys, tmp_path):
    twice = tmp_path / "twice"
    shutil.copytree(extract, twice)
    opted_in = ~pl.col("national_opt_out") & ~pl.col("type1_opt_out")
    person = pl.read_parquet(twice / "subjects" / "00000.parquet").filter(opted_in).row(0, named=True)
    second = pl.read_parquet(twice / "subjects" / "00001.parquet")
    again = second.filter(opted_in)["subject_id"][0]
    second.with_columns(nhs_number=pl.when(pl.col("subject_id") == again).then(pl.lit(person["nhs_number"]))
                        .otherwise("nhs_number")).write_parquet(twice / "subjects" / "00001.parquet")
    m = ingest("farr-identifiable", twice, tmp_path / "out", keys, "--workers", 2)
    reason = "duplicate patient: same identifier as a patient in another part of the source"
    assert m["counts"]["subjects_quarantined_by_reason"] == {reason: 1}
    assert m["counts"]["records_quarantined_by_reason"][f"patient quarantined: {reason}"] > 0
    verify(tmp_path / "out")


def test_generalise_makes_the_output_k_anonymous(extract, keys, tmp_path):
    m = ingest("farr-identifiable", extract, tmp_path / "out", keys, "--k", 3, "--generalise")
    k = m["k_anonymity"]
    assert not k["before"]["met"] and k["after"]["met"] and k["after"]["smallest_class"] >= 3
    assert [step.get("suppressed") for step in k["generalisation"]][:1] == ["imd_quintile"]
    assert m["counts"]["subjects"]["withheld_k_anonymity"] == k["before"]["records"] - k["after"]["records"]
    assert m["counts"]["subjects"]["written"] == k["after"]["records"]
    html = (tmp_path / "out" / "report" / "report.html").read_text()
    assert "class_sizes.png" in html and "After generalisation" in html
    verify(tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--from", "hl7v2"], "--from 'hl7v2': one of fhir, omop, meds, farr-identifiable"),
    (["--from", "farr-identifiable", "--project", "no spaces"], "project 'no spaces'"),
])
def test_bad_arguments_fail_in_one_line(extract, keys, tmp_path, args, message):
    base = {"--from": "meds", "--project": "study"}
    base.update(dict(zip(args[::2], args[1::2], strict=False)))
    flat = [x for pair in base.items() for x in pair]
    code, output = farr("ingest", extract, "--out", tmp_path / "out", "--key-dir", keys, *flat)
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1


def test_missing_source_fails_in_one_line(keys, tmp_path):
    code, output = farr("ingest", tmp_path / "nowhere", "--from", "omop", "--out", tmp_path / "out",
                        "--project", "study", "--key-dir", keys)
    assert code == 2 and output.startswith("farr: error:") and "nowhere" in output


@pytest.mark.parametrize("command", [["ingest"], ["project"], ["project", "exempt"]])
def test_ingest_commands_have_help(command):
    code, output = farr(*command, "--help")
    assert code == 0 and "Usage" in output
