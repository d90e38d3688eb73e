"""Simulated populations for the benchmarks, simulated once per path and reused by later runs."""

from __future__ import annotations

from pathlib import Path

from farr.simulate.simulator import simulate_dataset

TEST_SEED_OFFSET = 1000  # an independent test population: another seed than the training one


def simulated_once(path: Path, patients: int, seed: int) -> Path:
    if not path.exists():
        simulate_dataset(path, patients, seed, progress=False)
    return path


def independent_test_population(work: Path, patients: int, seed: int) -> Path | None:
    """`work`/test-population, of another seed than the training population's; None for 0 patients."""
    return simulated_once(work / "test-population", patients, seed + TEST_SEED_OFFSET) if patients else None
