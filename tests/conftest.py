import pytest

from farr.simulate.simulator import simulate_dataset


@pytest.fixture(scope="session")
def population(tmp_path_factory):
    """A 20,000-person identifiable simulated dataset, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("sim") / "population"
    return simulate_dataset(out, 20_000, seed=5, identifiable=True, workers=1, progress=False, chunk_size=8_000)
