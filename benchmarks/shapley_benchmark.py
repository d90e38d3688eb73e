"""Contribution valuation of 5 sites: leave-one-site-out and truncated Monte-Carlo Shapley, timed.

    .venv/bin/python benchmarks/shapley_benchmark.py --patients 10000 --sites 5 --permutations 20

Target (issue 7): Shapley valuation over 5 sites in under 30 minutes on CPU (tiny models,
truncation). Every coalition is a federated training run (tiny preset) scored on every site's
validation data; the run prints the seconds per coalition and the worst case (all 2^5 - 1 = 31
non-empty coalitions trained) so a reduced-scale run extrapolates honestly.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from _measure import measured
from _sites import simulated_sites, site_arguments
from farr.federated.client import LocalConfig
from farr.federated.strategy import FederationConfig
from farr.federated.valuation import ValuationConfig, value_sites


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    site_arguments(parser, "out/benchmark-shapley")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--permutations", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.01)
    args = parser.parse_args()
    torch.set_num_threads(2)
    _, sites, tokenizer = simulated_sites(args)
    federation = FederationConfig(rounds=args.rounds, local=LocalConfig(local_steps=args.local_steps, seed=args.seed))
    cfg = ValuationConfig(permutations=args.permutations, tolerance=args.tolerance, seed=args.seed)
    cpu = time.process_time()
    with measured() as cost:
        result = value_sites(sites, tokenizer, federation, cfg)
    cpu = time.process_time() - cpu
    per_coalition = cost["seconds"] / result["coalitions_trained"]
    worst = per_coalition * (2 ** len(sites) - 1)
    print(json.dumps(result["sites"], indent=1))
    print(f"{len(sites)} sites, {args.patients} patients, {args.permutations} permutations, tolerance {args.tolerance}: "
          f"{result['coalitions_trained']} coalitions in {cost['seconds']:.0f} s ({per_coalition:.1f} s each, "
          f"{cpu:.0f} s of processor time, peak {cost['peak_gb']:.2f} GB); worst case (all 31 coalitions) {worst / 60:.1f} min (target < 30 min)")


if __name__ == "__main__":
    main()
