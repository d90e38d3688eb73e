"""Realism: a simulated population measured as an analyst would, against published England figures.

    .venv/bin/python benchmarks/simulate_realism.py --patients 500000

Target (issue 2): incidence and prevalence of diabetes, hypertension, MI, stroke and the cancers
within a factor of 1.5 of the published figures cited in farr/simulate/reference.py.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from farr.reporting import markdown_table
from farr.simulate.hazards import build_model
from farr.simulate.realism import COMPARISON_HEADER, comparison_rows, life_expectancy, measure
from farr.simulate.simulator import simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = simulate_dataset(Path(tmp) / "population", args.patients, args.seed, progress=False)
        comparisons = measure(out) + life_expectancy(build_model())
    rows = [[str(v) for v in row] for row in comparison_rows(comparisons)]
    print(markdown_table(COMPARISON_HEADER, rows))
    passed = sum(c.within_tolerance for c in comparisons)
    print(f"\n{passed} of {len(comparisons)} figures within a factor of 1.5 ({args.patients:,} patients)")


if __name__ == "__main__":
    main()
