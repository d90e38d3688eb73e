"""Audit-log verification: a hash-chained log of N entries checked end to end.

    .venv/bin/python benchmarks/audit_verify.py --entries 1000000 [--workers N] [--db postgresql://...]

Writes the chain first (not timed; bulk inserts of realistic entries), then times
``farr.sde.audit.verify`` (every hash recomputed, every link and id checked), and checks that a
changed entry is found. Target (issue 6): 1,000,000 entries in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _measure import measured
from sqlalchemy import insert, text

from farr.sde import audit
from farr.sde.db import connect, migrate
from farr.sde.models import AuditEntry

ACTIONS = ("login", "job.submit", "file.view", "request.create", "request.review")


def write_chain(engine, entries: int, batch: int = 100_000) -> None:
    prev = audit.GENESIS
    with engine.begin() as connection:
        for start in range(1, entries + 1, batch):
            rows = []
            for i in range(start, min(start + batch, entries + 1)):
                row = dict(id_=i, at=f"2026-11-25T12:{i // 60_000 % 60:02d}:00.{i % 1_000_000:06d}",
                           actor=f"user{i % 97}", action=ACTIONS[i % 5], target=f"job/{i}",
                           outcome="ok", detail=json.dumps({"sha256": f"{i:064x}"}), prev_hash=prev)
                prev = audit.entry_hash(**row)
                row["id"] = row.pop("id_")
                rows.append(row | {"hash": prev})
            connection.execute(insert(AuditEntry), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(args.db or f"sqlite:///{Path(tmp) / 'audit.sqlite'}")
        migrate(engine)
        started = time.perf_counter()
        write_chain(engine, args.entries)
        print(f"wrote {args.entries:,} entries in {time.perf_counter() - started:.1f} s (not timed)")
        for workers in (1, args.workers):
            cpu = time.process_time()
            with measured() as m:
                result = audit.verify(engine, workers=workers)
            cpu = time.process_time() - cpu
            assert result.ok and result.entries == args.entries, result
            rate = args.entries / m["seconds"]
            print(f"{workers} worker(s): verified {result.entries:,} entries in {m['seconds']:.2f} s "
                  f"wall ({rate:,.0f}/s, peak {m['peak_gb']:.2f} GB"
                  + (f", {cpu:.2f} s CPU" if workers == 1 else "")
                  + f"); 1,000,000 would take {1e6 / rate:.1f} s (target < 10 s)")
        middle = args.entries // 2
        with engine.begin() as connection:
            connection.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            connection.execute(text("UPDATE audit_log SET outcome = 'refused' WHERE id = :i"),
                               {"i": middle})
        tampered = audit.verify(engine)
        assert tampered.first_bad == middle, tampered
        print(f"tampering with entry {middle:,} detected: {tampered.reason}")


if __name__ == "__main__":
    main()
