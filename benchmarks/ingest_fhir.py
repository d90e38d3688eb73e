"""FHIR ingest throughput: Synthea-style patient bundles to pseudonymised Parquet.

    .venv/bin/python benchmarks/ingest_fhir.py --bundles 2000 --workers 2

Generates the bundles first (not timed; farr.ingest.fhir_examples: about 40 encounters and
~1,000 resources, ~0.5 MB, a patient). Target (issue 3): >= 2,000 bundles per minute.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _measure import measured

from farr.ingest import Options, ingest
from farr.ingest.fhir_examples import write_bundles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=2000)
    parser.add_argument("--encounters", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_bundles(Path(tmp) / "bundles", args.bundles, seed=1, encounters=args.encounters)
        size = sum(p.stat().st_size for p in paths) / 1e6
        with measured() as m:
            run = ingest("fhir", Path(tmp) / "bundles", Path(tmp) / "out", "benchmark",
                         key_dir=Path(tmp) / "keys", options=Options(workers=args.workers))
    resources = run.counts.events_read + sum(run.tally.skipped.values())
    print(f"bundles             {args.bundles:>12,}   ({size / args.bundles:.2f} MB each)")
    print(f"events written      {sum(i.rows for i in run.shards):>12,}")
    print(f"wall time           {m['seconds']:>12.1f} s   ({args.workers} workers)")
    print(f"throughput          {args.bundles / m['seconds'] * 60:>12,.0f} bundles/min   (target >= 2,000)")
    print(f"                    {resources / m['seconds']:>12,.0f} records/s")
    print(f"peak memory (tree)  {m['peak_gb']:>12.2f} GB")


if __name__ == "__main__":
    main()
