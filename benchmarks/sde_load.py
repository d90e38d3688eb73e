"""SDE API under load: concurrent clients on loopback against `farr serve` in a subprocess.

    .venv/bin/python benchmarks/sde_load.py --clients 200 --requests 10 --think-ms 2000

Each client (its own httpx.AsyncClient and connection) sends `requests` metadata requests
(/me, /projects, /projects/{id}, /projects/{id}/jobs) with a random think time between them,
all clients at once. Target (issue 6): 200 concurrent clients, p99 < 200 ms, no errors.

The offered load is about clients / mean think time: 200 clients with up to 2 s between
requests ask about 200 requests/s. The load generator runs on the same cores as the server
(on a 2-core machine it needs as much processor time as the server), so halving the think
time measures where the two together run out of cores rather than the service alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from farr.sde.app import bootstrap_user
from farr.simulate.simulator import simulate_dataset

PASSWORD = "benchmark password"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup(base: str, dataset: Path, researchers: int) -> tuple[list[str], int]:
    """Researchers' tokens and a project they are members of."""
    with httpx.Client(base_url=base, timeout=60) as client:
        def token(name: str) -> dict:
            response = client.post("/auth/login", json={"username": name, "password": PASSWORD})
            return {"Authorization": f"Bearer {response.json()['token']}"}

        admin = token("admin")
        names = [f"researcher{i}" for i in range(researchers)]
        for name, role in [("control", "data_controller")] + [(n, "researcher") for n in names]:
            client.post("/users", headers=admin, json={"username": name, "password": PASSWORD,
                                                       "role": role}).raise_for_status()
        control = token("control")
        client.post("/datasets", headers=control, json={"name": "one", "path": str(dataset)})
        project = client.post("/projects", headers=control, json={
            "name": "load", "purpose": "load test", "datasets": ["one"],
            "operations": ["cohort_counts"], "start_date": "2020-01-01",
            "end_date": "2099-01-01"}).json()["id"]
        for name in names:
            client.post(f"/projects/{project}/members", headers=control, json={"username": name})
        return [token(name)["Authorization"] for name in names], project


async def one_client(c: httpx.AsyncClient, project: int, requests: int, think: float,
                     latencies: list, errors: list) -> None:
    paths = ["/me", "/projects", f"/projects/{project}", f"/projects/{project}/jobs"]
    for i in range(requests):
        await asyncio.sleep(random.uniform(0, think))
        started = time.perf_counter()
        try:
            response = await c.get(paths[i % len(paths)])
            if response.status_code != 200:
                errors.append(response.status_code)
        except httpx.HTTPError as error:
            errors.append(type(error).__name__)
        latencies.append(time.perf_counter() - started)


async def load(base: str, tokens: list[str], project: int, clients: int, requests: int,
               think: float) -> tuple[np.ndarray, list, float]:
    latencies, errors = [], []
    async with contextlib.AsyncExitStack() as stack:
        # Clients are built before the clock starts: building one (its TLS context) blocks the
        # event loop for milliseconds, which would be charged to other clients' requests.
        pool = [await stack.enter_async_context(httpx.AsyncClient(
            base_url=base, headers={"Authorization": tokens[i % len(tokens)]}, timeout=30))
            for i in range(clients)]
        started = time.perf_counter()
        await asyncio.gather(*(one_client(c, project, requests, think, latencies, errors) for c in pool))
    return np.array(latencies) * 1000, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--think-ms", type=float, default=2000, help="max random pause between requests")
    parser.add_argument("--researchers", type=int, default=10)
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in the workspace)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "ws"
        bootstrap_user(args.db, workspace, "admin", PASSWORD, "admin")
        dataset = simulate_dataset(Path(tmp) / "one", 300, seed=1, workers=1, progress=False)
        port = free_port()
        command = [sys.executable, "-m", "farr.cli", "serve", "--workspace", str(workspace),
                   "--port", str(port)] + (["--db", args.db] if args.db else [])
        server = subprocess.Popen(command, env=os.environ | {"PYTHONUNBUFFERED": "1"})
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            tokens, project = setup(base, dataset, args.researchers)
            cpu_before = sum(psutil.Process(server.pid).cpu_times()[:2])
            latencies, errors, seconds = asyncio.run(load(base, tokens, project, args.clients,
                                                          args.requests, args.think_ms / 1000))
            server_cpu = sum(psutil.Process(server.pid).cpu_times()[:2]) - cpu_before
        finally:
            server.terminate()
            server.wait(timeout=30)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(f"{args.clients} clients x {args.requests} requests ({len(latencies):,} in {seconds:.1f} s, "
          f"{len(latencies) / seconds:,.0f}/s): p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, "
          f"errors {len(errors)} (target: p99 < 200 ms, no errors); server CPU "
          f"{1000 * server_cpu / len(latencies):.1f} ms a request (load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
