"""The secure data environment: roles, projects, jobs, the airlock and the audit trail, on SQLite
and on a real PostgreSQL; attacks and bad input are refused, audited, and change nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from farr.sde import audit
from farr.sde.app import bootstrap_user, create_app
from farr.sde.models import ApiToken, AuditEntry
from farr.simulate.simulator import simulate_dataset
from sde_support import (PASSWORD, fresh_database, login, populate, postgres_server,
                               wait_for)

__all__ = ["postgres_server"]  # the fixture, imported for pytest


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sde-data")
    return {name: simulate_dataset(root / name, 300, seed=seed, workers=1, progress=False)
            for name, seed in (("one", 1), ("two", 2))}


def start(db_url, workspace, datasets):
    bootstrap_user(db_url, workspace, "admin", PASSWORD, "admin")
    client = TestClient(create_app(db_url, workspace, job_threads=1))
    return client, populate(client, datasets)


@pytest.fixture(scope="module")
def sde(tmp_path_factory, datasets):
    """One SQLite-backed service shared by the attack tests, with a finished cohort count."""
    workspace = tmp_path_factory.mktemp("sde")
    client, world = start(None, workspace, datasets)
    h, asthma = world["headers"], world["projects"]["asthma"]
    job = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "cohort_counts", "dataset": "one", "params": {"by": ["region", "sex", "imd_quintile"]}})
    assert job.status_code == 202, job.text
    world["job"] = wait_for(client, job.json()["id"], h["res1"])
    world["files"] = {f["name"]: f["id"] for f in world["job"]["files"]}
    return client, world


def last_entry(client) -> AuditEntry:
    with client.app.state.sessions() as session:
        return audit.entries(session, 1)[0]


def refused(client, response, status: int, words: str) -> None:
    """Refused with a one-line reason naming the problem, and audited as refused."""
    assert response.status_code == status, response.text
    assert words in response.json()["detail"] and "\n" not in response.json()["detail"]
    entry = last_entry(client)
    assert entry.outcome == "refused" and words in json.loads(entry.detail)["reason"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_table_goes_from_job_to_release_through_two_checkers(backend, request, tmp_path,
                                                                datasets):
    db_url = (fresh_database(request.getfixturevalue("postgres_server"))
              if backend == "postgresql" else None)
    client, world = start(db_url, tmp_path, datasets)
    h, asthma = world["headers"], world["projects"]["asthma"]
    job = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "cohort_counts", "dataset": "one", "params": {"by": ["sex"]}})
    job = wait_for(client, job.json()["id"], h["res1"])
    assert job["status"] == "succeeded", job["error"]
    safe = next(f for f in job["files"] if f["name"] == "counts_sdc.csv")
    created = client.post(f"/projects/{asthma}/requests", headers=h["res1"],
                          json={"file_ids": [safe["id"]], "justification": "paper table 1"})
    assert created.status_code == 201, created.text
    number = created.json()["id"]
    assert created.json()["files"][0]["sdc"]["passed"]
    first = client.post(f"/requests/{number}/reviews", headers=h["check1"], json={"decision": "approve"})
    assert first.json()["status"] == "submitted"
    assert client.get(f"/requests/{number}/files/job{job['id']}-counts_sdc.csv",
                      headers=h["res1"]).status_code == 403  # not released yet
    second = client.post(f"/requests/{number}/reviews", headers=h["check2"], json={"decision": "approve"})
    assert second.json()["status"] == "released"
    download = client.get(f"/requests/{number}/files/job{job['id']}-counts_sdc.csv", headers=h["res1"])
    assert hashlib.sha256(download.content).hexdigest() == safe["sha256"]
    manifest = json.loads((tmp_path / "releases" / str(number) / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == safe["sha256"]
    verification = audit.verify(client.app.state.engine)
    assert verification.ok and verification.entries > 10
    with client.app.state.engine.begin() as connection, pytest.raises(Exception, match="append-only"):
        connection.execute(text("UPDATE audit_log SET actor = 'x' WHERE id = 1"))
    client.app.state.worker.pool.shutdown(wait=True)
    client.app.state.engine.dispose()


def test_wrong_role_is_refused(sde):
    client, world = sde
    h = world["headers"]
    refused(client, client.post("/projects", headers=h["res1"], json={
        "name": "mine", "purpose": "x", "datasets": ["one"], "operations": ["train"],
        "start_date": "2020-01-01", "end_date": "2030-01-01"}), 403, "role researcher may not")
    refused(client, client.post(f"/projects/{world['projects']['asthma']}/exemptions",
                                headers=h["res1"], json={"opt_out": "national", "reason": "x"}),
            403, "needs data_controller")
    refused(client, client.post(f"/projects/{world['projects']['asthma']}/jobs", headers=h["check1"],
                                json={"operation": "cohort_counts", "dataset": "one"}), 403,
            "role output_checker")


def test_another_projects_dataset_and_records_are_out_of_reach(sde):
    client, world = sde
    h, asthma, other = world["headers"], world["projects"]["asthma"], world["projects"]["other"]
    refused(client, client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "cohort_counts", "dataset": "two"}), 403, "not approved for dataset 'two'")
    refused(client, client.post(f"/projects/{other}/jobs", headers=h["res1"], json={
        "operation": "cohort_counts", "dataset": "two"}), 403, "not a member of project other")
    refused(client, client.get(f"/jobs/{world['job']['id']}", headers=h["res2"]), 403,
            "not a member of project asthma")
    refused(client, client.post(f"/projects/{other}/requests", headers=h["res2"], json={
        "file_ids": [world["files"]["counts_sdc.csv"]], "justification": "x"}), 404,
        "not an output of a job of project other")
    refused(client, client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "cohort_counts", "dataset": "one", "params": {"by": ["nhs_number"]}}), 400,
        "'by' takes")


@pytest.mark.parametrize("name", ["../../sde.sqlite", "..%2F..%2Fsde.sqlite", "/etc/passwd",
                                  "counts.csv/../../../keys"])
def test_path_traversal_in_file_names_is_refused(sde, name):
    client, world = sde
    response = client.get(f"/jobs/{world['job']['id']}/files/{name}", headers=world["headers"]["res1"])
    # 404 (no such output) or 422 (the client collapsed the dots, leaving no job id)
    assert response.status_code in (404, 422) and b"SQLite format" not in response.content
    assert last_entry(client).outcome == "refused"
    assert response.status_code == 422 or "wrote no file" in response.json()["detail"]


def test_sql_injection_strings_in_every_text_field_change_nothing(sde):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    attack = "x'); DROP TABLE users; --"
    before = client.get("/users", headers=h["admin"]).json()
    assert client.post("/auth/login", json={"username": attack, "password": attack}).status_code == 401
    assert client.post("/users", headers=h["admin"], json={
        "username": attack, "password": attack + "long", "role": "admin"}).status_code == 400
    assert client.post("/users", headers=h["admin"], json={
        "username": "mallory", "password": attack, "role": attack}).status_code == 400
    assert client.post("/projects", headers=h["control"], json={
        "name": attack, "purpose": attack, "datasets": [attack], "operations": [attack],
        "sdc_profile": attack, "start_date": "2020-01-01", "end_date": "2030-01-01"}).status_code == 400
    assert client.post("/datasets", headers=h["control"], json={
        "name": attack, "path": attack}).status_code == 404
    assert client.post(f"/projects/{asthma}/members", headers=h["control"],
                       json={"username": attack}).status_code == 404
    assert client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": attack, "dataset": attack, "params": {attack: attack}}).status_code == 403
    created = client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [world["files"]["counts_sdc.csv"]], "justification": attack})
    assert created.status_code == 201 and created.json()["justification"] == attack  # stored as text
    review = client.post(f"/requests/{created.json()['id']}/reviews", headers=h["check3"],
                         json={"decision": "reject", "comment": attack})
    assert review.json()["reviews"][0]["comment"] == attack
    assert client.get("/users", headers=h["admin"]).json() == before
    assert audit.verify(client.app.state.engine).ok


def test_expired_and_forged_tokens_are_refused(sde):
    client, world = sde
    headers = login(client, "res2")
    token = headers["Authorization"].split()[1]
    with client.app.state.sessions.begin() as session:
        session.execute(update(ApiToken).where(ApiToken.token_hash == hashlib.sha256(
            token.encode()).hexdigest()).values(expires_at=dt.datetime(2000, 1, 1)))
    refused(client, client.get("/projects", headers=headers), 401, "expired")
    refused(client, client.get("/projects", headers={"Authorization": "Bearer forged"}), 401,
            "unknown API token")
    refused(client, client.get("/projects"), 401, "log in first")


def test_failed_logins_are_rate_limited(sde):
    client, _ = sde
    for _ in range(5):
        assert client.post("/auth/login", json={"username": "check3", "password": "wrong"}).status_code == 401
    refused(client, client.post("/auth/login", json={"username": "check3", "password": PASSWORD}),
            429, "too many failed logins")


def test_replayed_approvals_and_self_approval_are_refused(sde):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    mine = client.post(f"/projects/{asthma}/requests", headers=h["check1"], json={
        "file_ids": [world["files"]["counts_sdc.csv"]], "justification": "by a checker"})
    refused(client, client.post(f"/requests/{mine.json()['id']}/reviews", headers=h["check1"],
                                json={"decision": "approve"}), 403, "author of a request cannot")
    theirs = client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [world["files"]["counts_sdc.csv"]], "justification": "table"}).json()["id"]
    assert client.post(f"/requests/{theirs}/reviews", headers=h["check1"],
                       json={"decision": "approve"}).status_code == 201
    refused(client, client.post(f"/requests/{theirs}/reviews", headers=h["check1"],
                                json={"decision": "approve"}), 409, "already reviewed")
    assert client.get(f"/requests/{theirs}", headers=h["res1"]).json()["status"] == "submitted"
    client.post(f"/requests/{theirs}/reviews", headers=h["check2"], json={"decision": "approve"})
    refused(client, client.post(f"/requests/{theirs}/reviews", headers=h["check2"],
                                json={"decision": "approve"}), 409, "is released; reviews are closed")


def test_an_output_with_a_hidden_small_cell_is_refused(sde):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    raw = world["files"]["counts.csv"]  # raw counts by region and sex: small cells
    before = client.get(f"/projects/{asthma}/requests", headers=h["res1"]).json()
    refused(client, client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [raw], "justification": "raw"}), 422, "fails disclosure control")
    assert client.get(f"/projects/{asthma}/requests", headers=h["res1"]).json() == before


def test_only_job_outputs_unchanged_since_the_job_can_be_requested(sde, tmp_path):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    refused(client, client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [99999], "justification": "x"}), 404, "not an output of a job")
    path = client.app.state.workspace / "projects/asthma/jobs" / str(world["job"]["id"]) / "counts_sdc.csv"
    original = path.read_bytes()
    path.write_bytes(original + b"x,1,1\n")
    try:
        refused(client, client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
            "file_ids": [world["files"]["counts_sdc.csv"]], "justification": "x"}), 422,
            "changed or missing since its job wrote it")
    finally:
        path.write_bytes(original)


def test_exemptions_are_granted_only_by_a_data_controller(sde):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    refused(client, client.post(f"/projects/{asthma}/exemptions", headers=h["control"],
                                json={"opt_out": "type1"}), 400, "needs a --reason")
    granted = client.post(f"/projects/{asthma}/exemptions", headers=h["control"],
                          json={"opt_out": "type1", "reason": "CAG approval 21/CAG/0001"})
    assert granted.json()["exemptions"] == {"type1": "CAG approval 21/CAG/0001"}
    settings = client.app.state.workspace / "keys" / "asthma.settings.json"
    assert "type1" in json.loads(settings.read_text())["exemptions"]
    client.post(f"/projects/{asthma}/exemptions", headers=h["control"],
                json={"opt_out": "type1", "revoke": True})


def test_tampering_with_the_audit_log_is_detected(tmp_path):
    from farr.sde.db import connect, migrate, sessions

    engine = connect(f"sqlite:///{tmp_path / 'a.sqlite'}")
    migrate(engine)
    for i in range(50):
        audit.record(sessions(engine), "someone", "job.submit", f"job/{i}")
    assert audit.verify(engine, batch_size=16).ok
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_log_no_update"))  # an attacker with the file
        connection.execute(text("UPDATE audit_log SET actor = 'nobody' WHERE id = 20"))
    result = audit.verify(engine, batch_size=16)
    assert (result.ok, result.first_bad, result.reason) == (
        False, 20, "the entry was changed after it was written")
    with engine.begin() as connection:  # recompute its hash: the next link breaks
        row = connection.execute(select(AuditEntry.__table__).where(AuditEntry.id == 20)).one()
        fixed = audit.entry_hash(*row[:8])
        connection.execute(text("UPDATE audit_log SET hash = :h WHERE id = 20"), {"h": fixed})
    assert audit.verify(engine, batch_size=16).first_bad == 21
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER audit_log_no_delete"))
        connection.execute(text("DELETE FROM audit_log WHERE id = 40"))
    assert audit.verify(engine, batch_size=16).first_bad == 21


def test_entries_deleted_from_the_end_are_found_from_a_kept_head(tmp_path):
    from farr.sde.db import connect, migrate, sessions

    engine = connect(f"sqlite:///{tmp_path / 'a.sqlite'}")
    migrate(engine)
    for i in range(30):
        audit.record(sessions(engine), "someone", "file.view", f"file/{i}")
    head = audit.verify(engine).head
    assert head.startswith("30:") and audit.verify(engine, expect=head).ok
    with engine.begin() as connection:  # an attacker removes the newest entries: the rest still chains
        connection.execute(text("DROP TRIGGER audit_log_no_delete"))
        connection.execute(text("DELETE FROM audit_log WHERE id > 25"))
    assert audit.verify(engine).ok
    result = audit.verify(engine, expect=head)
    assert (result.ok, result.first_bad) == (False, 30) and "deleted from the end" in result.reason
    with pytest.raises(ValueError, match="ID:HASH"):
        audit.verify(engine, expect="thirty")


def test_train_then_forecast_runs_as_jobs_and_row_level_risks_cannot_leave(sde):
    client, world = sde
    h, asthma = world["headers"], world["projects"]["asthma"]
    train = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "train", "dataset": "one", "params": {"max_steps": 10}})
    trained = wait_for(client, train.json()["id"], h["res1"])
    assert trained["status"] == "succeeded", client.get(f"/jobs/{trained['id']}/log", headers=h["res1"]).text
    forecast = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
        "operation": "forecast", "dataset": "one", "params": {"model_job": trained["id"], "at": "50"}})
    done = wait_for(client, forecast.json()["id"], h["res1"])
    assert done["status"] == "succeeded", client.get(f"/jobs/{done['id']}/log", headers=h["res1"]).text
    risks = next(f["id"] for f in done["files"] if f["name"].endswith(".parquet"))
    refused(client, client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [risks], "justification": "x"}), 422, "row-level data")
    weights = next(f["id"] for f in trained["files"] if f["name"].endswith(".pt"))
    refused(client, client.post(f"/projects/{asthma}/requests", headers=h["res1"], json={
        "file_ids": [weights], "justification": "x"}), 422, "cannot be viewed or leave")
    if importlib.util.find_spec("farr.synth"):
        synth = client.post(f"/projects/{asthma}/jobs", headers=h["res1"], json={
            "operation": "synthesise", "dataset": "one",
            "params": {"model_job": trained["id"], "patients": 20}})
        made = wait_for(client, synth.json()["id"], h["res1"])  # 300 people may be too few to
        assert made["status"] == "succeeded" or made["error"].startswith("ValueError: ")  # draw from


def test_cli_creates_users_without_passwords_in_argv_and_verifies_the_audit(tmp_path, monkeypatch):
    from farr.cli import app

    runner = CliRunner()
    monkeypatch.setenv("FARR_SDE_PASSWORD", PASSWORD)
    made = runner.invoke(app, ["sde", "create-user", "boss", "--role", "admin",
                               "--workspace", str(tmp_path)])
    assert made.exit_code == 0, made.output
    assert PASSWORD not in made.output
    checked = runner.invoke(app, ["audit", "verify", "--workspace", str(tmp_path)])
    assert checked.exit_code == 0 and "1 entries" in checked.output
    head = checked.output.split("head ")[1].split()[0]
    again = runner.invoke(app, ["audit", "verify", "--workspace", str(tmp_path), "--expect", head])
    assert again.exit_code == 0, again.output
    forged = runner.invoke(app, ["audit", "verify", "--workspace", str(tmp_path), "--expect", "1:" + "0" * 64])
    assert forged.exit_code == 1 and "rewritten" in forged.output
    monkeypatch.setenv("FARR_SDE_PASSWORD", "short")
    bad = runner.invoke(app, ["sde", "create-user", "x", "--role", "admin", "--workspace", str(tmp_path)])
    assert bad.exit_code != 0 and "at least 12 characters" in bad.output


def test_cohort_counts_uphold_opt_outs_unless_the_project_is_exempt(tmp_path):
    import polars as pl

    from farr.events.io import scan_subjects
    from farr.sde.jobs import cohort_counts
    from farr.sde.models import Project

    data = simulate_dataset(tmp_path / "id", 300, seed=3, identifiable=True, workers=1, progress=False)
    national, type1 = pl.col("national_opt_out"), pl.col("type1_opt_out")
    opted_out, kept = scan_subjects(data).select((national | type1).sum().alias("out"),
                                                 (~national & ~type1).sum().alias("kept")).collect().row(0)
    assert opted_out > 0
    totals = {}
    for name, exemptions in (("none", {}), ("both", {"national": "r", "type1": "r"})):
        out = tmp_path / name
        out.mkdir()
        project = Project(name="p", sdc_profile="minimum10", exemptions=exemptions)
        cohort_counts(data, out, {"by": ["sex"], "codes": []}, project, lambda line: None)
        totals[name] = pl.read_csv(out / "counts.csv")["people"].sum()
    assert totals == {"none": kept, "both": 300}
