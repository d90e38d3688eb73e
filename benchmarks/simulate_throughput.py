"""Simulator throughput end to end to Parquet, and peak memory of the whole process tree.

    .venv/bin/python benchmarks/simulate_throughput.py --patients 1000000
    .venv/bin/python benchmarks/simulate_throughput.py --patients 10000000   # national scale

Targets (issue 2): >= 20,000 patients/s on 2 cores; 10 million in < 15 minutes under 4 GB.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _measure import measured

from farr.events.io import read_metadata
from farr.simulate.simulator import simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "population"
        with measured() as m:
            simulate_dataset(out, args.patients, args.seed, workers=args.workers, progress=False)
        meta = read_metadata(out)
        size = sum(f.stat().st_size for f in out.rglob("*.parquet")) / 1e9
    rate = args.patients / m["seconds"]
    print(f"patients            {args.patients:>14,}")
    print(f"events              {meta['rows']:>14,}  ({meta['rows'] / args.patients:.0f} per patient)")
    print(f"wall time           {m['seconds']:>14.1f} s")
    print(f"throughput          {rate:>14,.0f} patients/s   (target >= 20,000)")
    print(f"                    {meta['rows'] / m['seconds']:>14,.0f} events/s")
    print(f"peak memory (tree)  {m['peak_gb']:>14.2f} GB     (target < 4)")
    print(f"parquet on disk     {size:>14.2f} GB")
    print(f"10 million at this rate: {10_000_000 / rate / 60:.1f} min (target < 15)")


if __name__ == "__main__":
    main()
