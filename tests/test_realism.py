"""Realism against published England figures, at a size CI can afford (the benchmark runs 500,000)."""

import pytest

from farr.simulate.hazards import build_model
from farr.simulate.realism import life_expectancy, measure
from farr.simulate.simulator import simulate_dataset


@pytest.mark.slow
def test_simulated_england_is_within_a_factor_of_1_5_of_published_figures(tmp_path):
    out = simulate_dataset(tmp_path / "population", 100_000, seed=2, progress=False)
    comparisons = measure(out) + life_expectancy(build_model(), lives=20_000)
    failing = [(c.figure.outcome, c.figure.measure, round(c.ratio, 2)) for c in comparisons if not c.within_tolerance]
    assert not failing
