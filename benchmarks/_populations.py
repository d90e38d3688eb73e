"""Simulated populations (and briefly trained models) for the benchmarks, made once per path and
reused by later runs."""

from __future__ import annotations

from pathlib import Path

from farr.model.train import TrainConfig, train
from farr.simulate.simulator import simulate_dataset

TEST_SEED_OFFSET = 1000  # an independent test population: another seed than the training one


def simulated_once(path: Path, patients: int, seed: int) -> Path:
    if not path.exists():
        simulate_dataset(path, patients, seed, progress=False)
    return path


def independent_test_population(work: Path, patients: int, seed: int) -> Path | None:
    """`work`/test-population, of another seed than the training population's; None for 0 patients."""
    return simulated_once(work / "test-population", patients, seed + TEST_SEED_OFFSET) if patients else None


def trained_once(dataset: Path, model: Path, preset: str, steps: int) -> Path:
    """`model`: a `preset` model trained `steps` steps on `dataset` (the GPU trains when there is one)."""
    if not (model / "model.pt").exists():
        train(dataset, model, TrainConfig(preset=preset, max_steps=steps, eval_every=steps, checkpoint_every=steps),
              progress=False)
    return model
