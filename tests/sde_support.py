"""Fixtures for the SDE tests: a throwaway PostgreSQL server, a tiny dataset, a client."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PASSWORD = "correct horse battery"
USERS = {"admin": "admin", "control": "data_controller", "res1": "researcher",
         "res2": "researcher", "check1": "output_checker", "check2": "output_checker",
         "check3": "output_checker"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else (
        Path(shutil.which("pg_ctl")).parent if shutil.which("pg_ctl") else None)


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server in a temporary directory on a free port: (host, port)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="farr-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "farr",
                                "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
    subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l",
                                str(root / "log"), "-o",
                                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -F",
                                "start"]), check=True, capture_output=True)
    yield "127.0.0.1", port
    subprocess.run(as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                "stop"]), capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def fresh_database(server) -> str:
    import psycopg

    host, port = server
    name = f"farr_{int(time.time() * 1e6)}"
    with psycopg.connect(f"host={host} port={port} user=farr dbname=postgres",
                         autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return f"postgresql://farr@{host}:{port}/{name}"


def wait_for(client, job_id: int, headers, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} still {job['status']}")


def login(client, username: str) -> dict:
    response = client.post("/auth/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def populate(client, datasets: dict[str, Path]) -> dict:
    """Users of every role, the datasets, and two projects: 'asthma' (res1, check1-3, both
    operations, dataset one) and 'other' (res2, dataset two)."""
    headers = {"admin": login(client, "admin")}
    for name, role in USERS.items():
        if name != "admin":
            created = client.post("/users", headers=headers["admin"],
                                  json={"username": name, "password": PASSWORD, "role": role})
            assert created.status_code == 201, created.text
            headers[name] = login(client, name)
    control = headers["control"]
    for name, path in datasets.items():
        assert client.post("/datasets", headers=control,
                           json={"name": name, "path": str(path)}).status_code == 201
    projects = {}
    for name, dataset, members in (("asthma", "one", ("res1", "check1", "check2", "check3")),
                                   ("other", "two", ("res2",))):
        project = client.post("/projects", headers=control, json={
            "name": name, "purpose": "Asthma outcomes by region", "datasets": [dataset],
            "operations": ["cohort_counts", "train", "forecast", "synthesise"],
            "sdc_profile": "minimum10", "start_date": "2020-01-01", "end_date": "2099-12-31"})
        assert project.status_code == 201, project.text
        projects[name] = project.json()["id"]
        for member in members:
            assert client.post(f"/projects/{projects[name]}/members", headers=control,
                               json={"username": member}).status_code == 201
    return {"headers": headers, "projects": projects}
