"""Ingest throughput: the simulator's identifiable Parquet to pseudonymised Parquet, and peak memory
of the whole process tree.

    .venv/bin/farr simulate --identifiable -n 1000000 --out /tmp/x --no-report
    .venv/bin/python benchmarks/ingest_throughput.py --extract /tmp/x --workers 2

Without --extract it simulates --patients people first (not timed). Targets (issue 3):
>= 1 million events/s on 2 cores; a 1M-patient extract under 4 GB.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _measure import measured

from farr.events.io import read_metadata
from farr.ingest import Options, ingest
from farr.simulate.simulator import simulate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extract", type=Path, help="an identifiable extract (default: simulate one)")
    parser.add_argument("--patients", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract = args.extract or simulate_dataset(Path(tmp) / "extract", args.patients, 1,
                                                   identifiable=True, progress=False)
        events_in = read_metadata(extract)["rows"]
        with measured() as m:
            run = ingest("farr-identifiable", extract, Path(tmp) / "out", "benchmark",
                         key_dir=Path(tmp) / "keys", options=Options(workers=args.workers))
        events_out = sum(info.rows for info in run.shards)
    print(f"patients read       {run.counts.subjects_read:>14,}")
    print(f"events read         {events_in:>14,}")
    print(f"events written      {events_out:>14,}")
    print(f"wall time           {m['seconds']:>14.1f} s   ({args.workers} workers)")
    print(f"throughput          {events_in / m['seconds']:>14,.0f} events/s   (target >= 1,000,000)")
    print(f"peak memory (tree)  {m['peak_gb']:>14.2f} GB         (target < 4)")


if __name__ == "__main__":
    main()
