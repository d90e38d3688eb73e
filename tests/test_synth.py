"""Synthetic populations: generation, exports, the synth report, the release gate and DP training."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import farr.model.card as card_module
from farr.cli import app
from farr.events.io import DatasetError, DatasetWriter, iter_shards, read_metadata, scan_events, scan_subjects, verify
from farr.ingest.pipeline import ingest
from farr.model.card import read_card
from farr.model.sampling import draw_tokens
from farr.model.tokenizer import DEMOGRAPHICS, split_of
from farr.model.train import TrainConfig, load_model, train
from farr.privacy.dp import train_private
from farr.privacy.reidentification import wilson
from farr.simulate.simulator import simulate_dataset
from farr.synth import synthesize
from farr.synth.population import draw_people
from farr.synth.release import MANIFEST, Thresholds, verify_manifest
from farr.synth.report import synth_report
from farr.synth.synthesize import SHARD_PEOPLE, resolve_device
from farr.synth.threads import single_threaded

PATIENTS = 300


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    return simulate_dataset(tmp_path_factory.mktemp("synth") / "real", 600, seed=11, workers=1, progress=False)


@pytest.fixture(scope="session")
def model(real, tmp_path_factory):
    """A tiny model; its card releases every cell (min_cell 1), as a population this small would not."""
    out = tmp_path_factory.mktemp("synth") / "model"
    with pytest.MonkeyPatch.context() as patch, single_threaded():
        patch.setattr(card_module, "MIN_CELL", 1)
        train(real, out, TrainConfig(preset="tiny", max_steps=30, batch_size=16, eval_every=30,
                                     checkpoint_every=30, warmup_steps=5), progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic(model, tmp_path_factory):
    return synthesize(model, PATIENTS, tmp_path_factory.mktemp("synth") / "meds", seed=3)


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    return tmp_path_factory.mktemp("keys")


def test_synthetic_dataset_is_valid_and_within_each_registration(synthetic, model):
    verify(synthetic)
    subjects = scan_subjects(synthetic).collect()
    assert subjects.height == PATIENTS
    assert (subjects["registration_start"] <= subjects["registration_end"]).all()
    events = scan_events(synthetic).join(scan_subjects(synthetic), on="subject_id").collect()
    clinical = events.filter(pl.col("code") != "MEDS_BIRTH")
    assert clinical.height > PATIENTS  # people have lives, not only births
    assert (clinical["time"].dt.date() >= clinical["registration_start"]).all()
    assert (clinical["time"].dt.date() <= clinical["registration_end"]).all()
    vocabulary = set(load_model(model)[1].vocabulary)
    assert set(clinical["code"].unique()) <= {t.split("//Q")[0] for t in vocabulary}
    died = clinical.filter(pl.col("code") == "MEDS_DEATH")["subject_id"]
    assert subjects.filter(pl.col("subject_id").is_in(died.to_list()))["end_reason"].eq("death").all()
    provenance = read_metadata(synthetic)["extra"]["synthetic"]
    assert provenance["privacy"] == {"differential_privacy": False}
    assert provenance["training_dataset"] == read_card(model)["dataset"]


def test_same_seed_same_bytes(model, synthetic, tmp_path):
    again = synthesize(model, PATIENTS, tmp_path / "again", seed=3)
    assert read_metadata(again)["files"] == read_metadata(synthetic)["files"]
    other = synthesize(model, PATIENTS, tmp_path / "other", seed=4)
    assert read_metadata(other)["files"] != read_metadata(synthetic)["files"]


def test_worker_processes_write_the_same_dataset_as_one(model, tmp_path, monkeypatch):
    monkeypatch.setitem(SHARD_PEOPLE, "cpu", 40)  # three shards of 100 people
    one = synthesize(model, 100, tmp_path / "one", seed=5, workers=1)
    two = synthesize(model, 100, tmp_path / "two", seed=5, workers=2)
    assert read_metadata(one)["shards"] == 3
    assert read_metadata(two)["files"] == read_metadata(one)["files"]


def test_devices_and_workers_are_checked(model, tmp_path):
    with pytest.raises(ValueError, match="choose cpu, cuda or auto"):
        resolve_device("tpu")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            synthesize(model, 5, tmp_path / "gpu", device="cuda")
    with pytest.raises(ValueError, match="--workers -1"):
        synthesize(model, 5, tmp_path / "minus", workers=-1)
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "minus").exists()


def test_demographics_keep_the_cards_one_way_marginals(synthetic, model):
    marginals = read_card(model)["training_population"]["marginals"]
    people = scan_subjects(synthetic).collect()
    for column, prefix in (("sex", "SEX"), ("region", "REGION"), ("ethnicity", "ETHNICITY")):
        drawn = {f"{prefix}//{v if v is not None else 'unknown'}" for v in people[column].to_list()}
        assert drawn <= set(marginals[column]), column


def _card(withheld: int) -> dict:
    def tokens(sex, band):
        return [f"{c.upper()}//{dict(sex=sex, birth_cohort=band).get(c, 'x')}" for c in DEMOGRAPHICS]

    cells = [{"tokens": tokens("F", 1950), "birth_year_band": 1950, "count": 10},
             {"tokens": tokens("M", 2020), "birth_year_band": 2020, "count": 5}]
    marginals = {c: {t: 15 for t in {cell["tokens"][j] for cell in cells}} for j, c in enumerate(DEMOGRAPHICS)}
    marginals["sex"] = {"SEX//F": 10, "SEX//M": 40}
    marginals["birth_year_band"] = {"1950": 20, "2020": 30}
    return {"data_window": {"first_date": "2000-01-01", "last_date": "2024-12-31"},
            "training_population": {"birth_band_years": 5, "span_quantiles_percent": [5, 50, 95],
                                    "withheld_people": withheld, "demographics": cells, "marginals": marginals,
                                    "record": [{"birth_year_band": 1950, "start_age": [0, 40, 70], "end_age": [50, 70, 90]},
                                               {"birth_year_band": 2020, "start_age": [0, 0.1, 2], "end_age": [1, 3, 4]}]}}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 10**6), withheld=st.sampled_from([0, 35]))
def test_drawn_registrations_are_ordered_and_inside_the_window(n, seed, withheld):
    people = draw_people(_card(withheld), n, np.random.default_rng(seed))
    assert len(people) == n
    assert (people.start_age >= 0).all() and (people.start_age < people.end_age).all()
    assert (people.end_age <= np.maximum(people.window_end_age, people.start_age + 1 / 12) + 1e-4).all()
    cohort = people.demographics[:, DEMOGRAPHICS.index("birth_cohort")]
    years = people.birth_day.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    assert (cohort == np.char.add("BIRTH_COHORT//", (years - years % 5).astype(str))).all()


def test_withheld_people_come_from_what_the_marginals_hold_beyond_the_cells():
    people = draw_people(_card(35), 20_000, np.random.default_rng(0))
    men = people.demographics[:, DEMOGRAPHICS.index("sex")] == "SEX//M"
    assert men.mean() == pytest.approx(40 / 50, abs=0.02)  # the sex marginal, not the cells' 1:2


def test_omop_export_reads_back_through_ingest(model, tmp_path, keys):
    out = synthesize(model, 80, tmp_path / "omop", fmt="omop", seed=1)
    files = read_metadata(out)["files"]
    assert {"omop/person.csv", "omop/concept.csv", "omop/observation_period.csv"} <= set(files)
    verify(out)  # the export is checksummed like the rest
    ingest("omop", out / "omop", tmp_path / "back", "synth-test", key_dir=keys)
    back = scan_events(tmp_path / "back").filter(pl.col("code") != "MEDS_BIRTH").collect()
    ours = scan_events(out).filter(pl.col("code") != "MEDS_BIRTH").collect()
    assert scan_subjects(tmp_path / "back").collect().height == 80
    assert back.height == ours.height
    assert sorted(back["code"].unique()) == sorted(ours["code"].unique())


def test_fhir_export_reads_back_through_ingest(model, tmp_path, keys):
    out = synthesize(model, 60, tmp_path / "fhir", fmt="fhir", seed=2)
    patients = (out / "fhir" / "Patient.ndjson").read_text().splitlines()
    assert len(patients) == 60 and json.loads(patients[0])["resourceType"] == "Patient"
    ingest("fhir", out / "fhir", tmp_path / "back", "synth-test", key_dir=keys)
    assert scan_subjects(tmp_path / "back").collect().height == 60


def test_bad_requests_fail_clearly(model, tmp_path):
    with pytest.raises(ValueError, match="format 'csv' is not supported"):
        synthesize(model, 10, tmp_path / "x", fmt="csv")
    bare = tmp_path / "bare"
    shutil.copytree(model, bare)
    (bare / "model_card.json").unlink()
    with pytest.raises(ValueError, match="training population is not recorded"):
        synthesize(bare, 10, tmp_path / "y")
    assert not (tmp_path / "y").exists()
    result = CliRunner().invoke(app, ["synthesize", str(model), "--patients", "5", "--out", str(tmp_path / "z"),
                                      "--format", "parquet"])
    assert result.exit_code == 2 and "not supported" in result.output


# With 600 real people the attack samples are ~120 per role: the Anonymeter-style risks carry
# about ±0.2 of sampling noise, so these tests judge them loosely; the copy and membership checks stay.
SMALL_SAMPLE = Thresholds(max_singling_out_risk=0.5, max_linkability_risk=0.5, max_inference_risk=0.5)


def test_report_passes_the_gate_and_signs_every_file(real, synthetic, model, tmp_path, keys):
    result = synth_report(real, synthetic, tmp_path / "report", model=model, thresholds=SMALL_SAMPLE, keys=keys)
    assert result["gate"]["passed"], result["gate"]
    saved = json.loads((tmp_path / "report" / "synth_report.json").read_text())
    assert {"fidelity", "utility", "privacy", "gate"} <= set(saved)
    assert 0 <= saved["privacy"]["membership"]["model_loss_attack"]["auc"] <= 1
    assert saved["fidelity"]["prevalence"]["codes"] > 10
    manifest = tmp_path / "report" / MANIFEST
    verify_manifest(manifest, synthetic)
    assert any(name.startswith("synthetic/data/") for name in json.loads(manifest.read_text())["files"])
    tampered = tmp_path / "tampered"
    shutil.copytree(synthetic, tampered)
    (tampered / "metadata" / "codes.parquet").write_bytes(b"changed")
    with pytest.raises(ValueError, match="changed since the release manifest"):
        verify_manifest(manifest, tampered)


def _copies_of_training_people(real, out):
    """A 'synthetic' release that is the real training split itself: the gate must stop it."""
    with DatasetWriter(out) as writer:
        shards = []
        for shard, (events, subjects) in enumerate(iter_shards(real)):
            keep = split_of(subjects["subject_id"].to_numpy()) == 0
            ids = subjects["subject_id"].to_numpy()[keep]
            shards.append(writer.write_shard(shard, events.filter(np.isin(events["subject_id"].to_numpy(), ids)),
                                             subjects.filter(keep)))
        writer.commit(shards, created_by="test", dataset_name="copies",
                      extra={"synthetic": {"privacy": {"differential_privacy": False}}})
    return out


def test_a_failed_gate_never_leaves_a_passing_manifest(real, tmp_path, keys):
    out = tmp_path / "report"
    out.mkdir()
    (out / MANIFEST).write_text('{"gate": {"passed": true}}')  # left by an earlier, passing release
    copies = _copies_of_training_people(real, tmp_path / "copies")
    cli = CliRunner().invoke(app, ["synth-report", str(real), str(copies), "--out", str(out)],
                             env={"FARR_KEY_DIR": str(keys)})
    assert cli.exit_code == 1 and "FAILED" in cli.output
    assert not (out / MANIFEST).exists()
    gate = json.loads((out / "synth_report.json").read_text())["gate"]
    failed = {c["check"] for c in gate["checks"] if not c["passed"]}
    assert gate["passed"] is False and {"exact_copies", "membership_auc"} <= failed


def test_report_refuses_mismatched_inputs(real, synthetic, model, tmp_path):
    other = tmp_path / "other-version"
    shutil.copytree(synthetic, other)
    metadata = other / "metadata" / "farr.json"
    metadata.write_text(metadata.read_text().replace('"schema_version": "1.0"', '"schema_version": "2.0"'))
    with pytest.raises(DatasetError, match="schema_version 2.0"):
        synth_report(real, other, tmp_path / "r1")
    with pytest.raises(ValueError, match="not a synthetic release"):
        synth_report(real, real, tmp_path / "r2")
    with pytest.raises(ValueError, match="was not trained on"):
        synth_report(synthetic, synthetic, tmp_path / "r3", model=model)
    with pytest.raises(ValueError, match="not a gate thresholds file"):
        bad = tmp_path / "gate.json"
        bad.write_text('{"max_membership": 1}')
        Thresholds.from_file(bad)


def test_private_training_records_its_budget_in_every_release(real, tmp_path):
    out = tmp_path / "dp"
    with pytest.MonkeyPatch.context() as patch, single_threaded():
        patch.setattr(card_module, "MIN_CELL", 1)
        train_private(real, out, epsilon=8.0, delta=1e-4, max_steps=6, batch_size=32)
    privacy = read_card(out)["privacy"]
    assert privacy["differential_privacy"] and 0 < privacy["epsilon"] <= 8.0 + 1e-6 and privacy["noise_multiplier"] > 0
    synthetic = synthesize(out, 20, tmp_path / "synthetic")
    assert read_metadata(synthetic)["extra"]["synthetic"]["privacy"]["epsilon"] == privacy["epsilon"]
    with pytest.raises(ValueError, match="below 1/n"):
        train_private(real, tmp_path / "dp2", epsilon=1.0, delta=0.5, max_steps=1)


@given(u=st.floats(0, 1, exclude_max=True) | st.sampled_from([0.0, 1 - 2**-24, 1.0]))
def test_sampled_tokens_never_have_zero_rate(u):
    rate = torch.tensor([[0.0, 0.0, 1.0, 0.0, 2.0, 0.0]])
    token = int(draw_tokens(rate, torch.tensor([u]))[0])
    assert rate[0, token] > 0
    assert token == (2 if u < 1 / 3 else 4)


def test_wilson_score_matches_its_definition():
    rate = wilson(0, 100)
    assert 0 < rate.value < 0.03 and rate.error > 0
    assert wilson(50, 100).value == pytest.approx(0.5)
