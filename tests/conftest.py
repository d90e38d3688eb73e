import pytest

from farr.model.train import TrainConfig, train
from farr.simulate.simulator import simulate_dataset


@pytest.fixture(scope="session")
def population(tmp_path_factory):
    """A 20,000-person identifiable simulated dataset, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("sim") / "population"
    return simulate_dataset(out, 20_000, seed=5, identifiable=True, workers=1, progress=False, chunk_size=8_000)


@pytest.fixture(scope="session")
def trained(population, tmp_path_factory):
    """A tiny model trained for 60 steps on the shared population: (directory, summary, config)."""
    out = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(preset="tiny", max_steps=60, batch_size=16, eval_every=20, checkpoint_every=20, warmup_steps=5)
    summary = train(population, out, cfg, progress=False)
    return out, summary, cfg
