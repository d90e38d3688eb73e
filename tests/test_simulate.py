"""`farr simulate`: an England-like population in the farr schema, reproducible to the byte."""

import hashlib

import numpy as np
import polars as pl
import pytest
from nhs_number import is_valid

from farr.events.io import iter_shards, read_metadata, scan_events, scan_subjects, verify
from farr.events.schema import CODE_PATTERN, ETHNICITIES, REGIONS, VOCABULARIES, vocabulary_of
from farr.simulate import england as eng
from farr.simulate.codes import DIAGNOSES, DRUGS, MEASUREMENTS
from farr.simulate.simulator import read_truth, simulate_dataset


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_for_any_worker_count(tmp_path):
    one = simulate_dataset(tmp_path / "a", 3_000, seed=9, workers=1, progress=False, chunk_size=1_000)
    two = simulate_dataset(tmp_path / "b", 3_000, seed=9, workers=2, progress=False, chunk_size=1_000)
    other = simulate_dataset(tmp_path / "c", 3_000, seed=10, workers=1, progress=False, chunk_size=1_000)
    assert _digests(one) == _digests(two)
    assert _digests(one)["data/00000.parquet"] != _digests(other)["data/00000.parquet"]


def test_identifiers_do_not_change_the_events(tmp_path, population):
    plain = simulate_dataset(tmp_path / "plain", 20_000, seed=5, workers=1, progress=False, chunk_size=8_000)
    plain_files, identifiable_files = _digests(plain), _digests(population)
    assert all(plain_files[f] == identifiable_files[f] for f in plain_files if f.startswith(("data/", "truth/")))
    columns = scan_subjects(plain).collect_schema().names()
    assert not {"nhs_number", "date_of_birth", "postcode_district"} & set(columns)
    assert scan_subjects(plain).select(pl.col("national_opt_out").any()).collect().item() is False


def test_dataset_is_valid_and_described(population):
    verify(population)
    meta = read_metadata(population)
    assert meta["subjects"] == 20_000 and meta["identifiable"] is True
    for events, subjects in iter_shards(population):
        assert set(events["subject_id"].to_pylist()) == set(subjects["subject_id"].to_pylist())
    assert 60 <= meta["rows"] / meta["subjects"] <= 160
    codes = scan_events(population).select(pl.col("code").unique()).collect()["code"].to_list()
    assert all(CODE_PATTERN.match(c) and vocabulary_of(c) in VOCABULARIES for c in codes)
    vocabularies = {vocabulary_of(c) for c in codes}
    assert {"SNOMED", "ICD10", "LOINC", "BNF", "MEDS"} <= vocabularies


def test_identifiers_are_valid_and_opt_outs_realistic(population):
    subjects = scan_subjects(population).collect()
    numbers = subjects["nhs_number"].to_list()
    assert len(set(numbers)) == len(numbers)
    assert all(is_valid(n) for n in numbers[:2_000])
    dob = subjects["date_of_birth"].dt.strftime("%Y-%m")
    assert (dob == subjects["year_month_of_birth"]).all()
    assert subjects["postcode_district"].str.contains(r"^[A-Z]{1,2}\d{1,2}$").all()
    opted_out = (subjects["national_opt_out"] | subjects["type1_opt_out"]).mean()
    assert 0.05 <= opted_out <= 0.075
    assert 0.045 <= subjects["national_opt_out"].mean() <= 0.065


def test_demographics_follow_england(population):
    subjects = scan_subjects(population).collect()
    ethnicity = subjects["ethnicity"].value_counts(normalize=True)
    for group, census in zip(ETHNICITIES, eng.ETHNICITY_CENSUS_2021):
        share = ethnicity.filter(pl.col("ethnicity") == group)["proportion"].item()
        assert abs(share - census) < 0.035, group
    regions = subjects["region"].value_counts(normalize=True)
    for region, millions in zip(REGIONS, eng.REGION_MILLIONS):
        share = regions.filter(pl.col("region") == region)["proportion"].item()
        assert abs(share - millions / sum(eng.REGION_MILLIONS)) < 0.02, region
    assert subjects["imd_quintile"].is_between(1, 5).all()
    assert set(subjects["site_id"].unique()) <= {f"ICB{i:02d}" for i in range(1, 43)}
    assert subjects["practice_id"].str.contains(r"^[A-Z]\d{5}$").all()
    # each practice belongs to one site
    assert subjects.group_by("practice_id").agg(pl.col("site_id").n_unique())["site_id"].max() == 1
    assert set(subjects["end_reason"].unique()) == {"extract_end", "death", "moved_away"}
    assert (subjects["registration_start"] <= subjects["registration_end"]).all()


def test_events_lie_in_registration_except_birth_and_transferred_diagnoses(population):
    diagnosis_codes = [f"SNOMED/{r.snomed}" for r in DIAGNOSES.values()]
    events = scan_events(population).join(scan_subjects(population), on="subject_id")
    outside = events.filter(
        ~pl.col("code").is_in(["MEDS_BIRTH", *diagnosis_codes])
        & ((pl.col("time").dt.date() < pl.col("registration_start"))
           | (pl.col("time").dt.date() > pl.col("registration_end")))).select(pl.len()).collect().item()
    assert outside == 0
    deaths = events.filter(pl.col("code") == "MEDS_DEATH").collect()
    assert (deaths["end_reason"] == "death").all()
    assert (deaths["time"].dt.date() == deaths["registration_end"]).all()


def test_record_reflects_the_true_state(population):
    events = scan_events(population)
    t2d = events.filter(pl.col("code") == f"SNOMED/{DIAGNOSES['type2_diabetes'].snomed}") \
        .group_by("subject_id").agg(pl.col("time").min().alias("diagnosed"))
    hba1c = events.filter(pl.col("code") == MEASUREMENTS["hba1c"][0]).join(t2d, on="subject_id", how="left")
    mean_value = pl.col("numeric_value").mean()
    after = hba1c.filter(pl.col("time") >= pl.col("diagnosed")).select(mean_value).collect().item()
    never = hba1c.filter(pl.col("diagnosed").is_null()).select(mean_value).collect().item()
    assert after > never + 10
    metformin = f"BNF/{DIAGNOSES['type2_diabetes'].drug}"
    assert DRUGS[DIAGNOSES["type2_diabetes"].drug].startswith("Metformin")
    first_issue = events.filter(pl.col("code") == metformin).group_by("subject_id").agg(pl.col("time").min())
    assert first_issue.join(t2d, on="subject_id", how="anti").select(pl.len()).collect().item() == 0


def test_no_calendar_month_gets_a_wave_of_events(population):
    """Nothing in the simulator is seasonal, so each month holds about its share of the events
    after each person's registration day (for most that day is the extract's start, and gathers
    what joining a practice records)."""
    events = scan_events(population).join(scan_subjects(population), on="subject_id")
    registered = events.filter(pl.col("time").dt.date() > pl.col("registration_start"))
    months = registered.group_by(pl.col("time").dt.month()).len().collect()["len"].to_numpy()
    assert months.max() / months.mean() < 1.1  # six-monthly repeats from the extract's start day gave 1.5


def test_hazards_carry_real_inequalities(population):
    model, truth = read_truth(population)
    truth = pl.from_arrow(truth)
    diabetes = truth["onset_type2_diabetes"].is_not_null()
    deprived, affluent = truth["imd_quintile"] == 1, truth["imd_quintile"] == 5
    assert diabetes.filter(deprived).mean() > diabetes.filter(affluent).mean()
    asian, white = truth["ethnicity"] == ETHNICITIES.index("Asian"), truth["ethnicity"] == 0
    rate = lambda mask: diabetes.filter(mask).sum() / truth["exit_age"].filter(mask).sum()  # noqa: E731
    assert rate(asian) > 1.5 * rate(white)
    mi = truth["onset_myocardial_infarction"].is_not_null()
    assert mi.filter(truth["male"]).mean() > 1.5 * mi.filter(~truth["male"]).mean()
    assert model.names[model.death] == "death"


@pytest.mark.parametrize("patients", [0, -5])
def test_bad_patient_counts_are_refused_before_writing(tmp_path, patients):
    with pytest.raises(ValueError, match="--patients must be at least 1"):
        simulate_dataset(tmp_path / "out", patients, seed=1, progress=False)
    assert not any(tmp_path.iterdir())


def test_oracle_reads_its_truth_from_the_dataset(population):
    from farr.simulate.oracle import Oracle

    oracle, truth = Oracle.from_dataset(population)
    risks = oracle.risk(truth.slice(0, 200), 60.0, [5.0], draws=20)
    assert risks.probability.shape == (200, len(oracle.outcomes), 1)
    assert np.nanmax(risks.probability) <= 1.0


def test_no_date_in_the_subjects_table_is_a_date_of_birth(population):
    subjects = scan_subjects(population).collect()
    for column in ("registration_start", "registration_end"):
        assert (subjects[column] != subjects["date_of_birth"]).all(), column
