"""A simulated population cut into per-region sites, with their agreed vocabulary, for the
federated benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from _populations import simulated_once
from farr.federated.federate import agree_vocabulary
from farr.federated.sites import split


def site_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path(work))
    parser.add_argument("--seed", type=int, default=1)


def simulated_sites(args: argparse.Namespace):
    """(pooled dataset, site datasets, agreed tokenizer), simulating the population once per --work."""
    pooled = simulated_once(args.work / "population", args.patients, args.seed)
    sites = split(pooled, "region", args.work / "sites", sites=args.sites, overwrite=True)
    return pooled, sites, agree_vocabulary(sites, min_count=10)
