"""The audit trail: an append-only, hash-chained log of every login, query, job, file view,
request and decision.

Entry i stores ``prev_hash`` (entry i-1's hash) and ``hash = SHA-256(id, fields, prev_hash)``.
Changing any field breaks that entry's hash; recomputing it breaks the next entry's link;
deleting or reordering entries breaks the consecutive ids and the links. Deleting the newest
entries leaves a shorter chain that holds, so verification reports the head (last id and
hash): an auditor who kept an earlier head passes it back (`expect`) and a chain that no longer
contains it fails. Because each entry
carries its predecessor's hash, verification checks every entry independently, in batches:
hashes in one pass over the batch and the links as one vectorised comparison.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.pool import NullPool
from sqlalchemy.orm import Session, sessionmaker

from farr.sde.models import AuditEntry, utcnow

GENESIS = "0" * 64
FIELDS = ("id", "at", "actor", "action", "target", "outcome", "detail", "prev_hash", "hash")
_append_lock = threading.Lock()  # one writer at a time in this process; Postgres also locks


def entry_hash(id_: int, at: str, actor: str, action: str, target: str, outcome: str,
               detail: str, prev_hash: str) -> str:
    message = "\x1f".join((str(id_), at, actor, action, target, outcome, detail, prev_hash))
    return hashlib.sha256(message.encode()).hexdigest()


def record(sessions: sessionmaker, actor: str, action: str, target: str = "",
           outcome: str = "ok", **detail) -> None:
    """Append one entry in its own transaction, so a refused action is recorded even though
    the action itself rolls back."""
    with _append_lock, sessions() as session, session.begin():
        if session.bind.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(727716)"))
        last = session.execute(select(AuditEntry.id, AuditEntry.hash)
                               .order_by(AuditEntry.id.desc()).limit(1)).first()
        id_, prev = (last.id + 1, last.hash) if last else (1, GENESIS)
        fields = dict(id_=id_, at=utcnow().isoformat(timespec="microseconds"), actor=actor,
                      action=action, target=str(target), outcome=outcome,
                      detail=json.dumps(detail, sort_keys=True, default=str), prev_hash=prev)
        session.add(AuditEntry(id=id_, **{k: v for k, v in fields.items() if k != "id_"},
                               hash=entry_hash(**fields)))


@dataclass(frozen=True)
class Verification:
    entries: int
    first_bad: int | None  # id of the first entry that fails, None when the chain holds
    reason: str
    head: str = ""  # "id:hash" of the last entry, for the next verification to expect

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify(engine: Engine, batch_size: int = 100_000, workers: int | None = None,
           expect: str | None = None) -> Verification:
    """Check every hash and every link of the chain: batches of ids in worker processes, each
    batch anchored on the hash of the entry before it; the first bad entry in id order wins.
    `expect`: a head ("id:hash") from an earlier verification, which the chain must still hold."""
    with engine.connect() as connection:
        last = connection.execute(text("SELECT max(id) FROM audit_log")).scalar() or 0
        head = _hash_of(connection, last)
        missing = _missing_head(connection, expect) if expect else None
    starts = list(range(1, last + 1, batch_size))
    url = engine.url.render_as_string(hide_password=False)
    jobs = [(url, first, min(first + batch_size, last + 1)) for first in starts]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_verify_range, jobs))
    else:
        results = [_verify_range(job, engine) for job in jobs]
    entries = 0
    for (count, bad), (_, first, _) in zip(results, jobs):
        if bad is not None:
            return Verification(entries + bad[0] - first + 1, bad[0], bad[1])
        entries += count
    if missing:
        return Verification(entries, *missing)
    return Verification(entries, None, "the chain holds", f"{last}:{head or GENESIS}")


def _hash_of(connection, id_: int) -> str | None:
    """The stored hash of entry `id_` (None: no such entry)."""
    return connection.execute(text("SELECT hash FROM audit_log WHERE id = :i"), {"i": id_}).scalar()


def _missing_head(connection, expect: str) -> tuple[int, str] | None:
    """(id, reason) when the chain no longer holds an expected head, else None."""
    id_, _, hash_ = expect.partition(":")
    if not (id_.isdigit() and len(hash_) == 64):
        raise ValueError(f"expected head {expect!r}: give it as ID:HASH, as verify printed it")
    stored = _hash_of(connection, int(id_))
    if stored == hash_:
        return None
    return int(id_), ("the expected head is gone: entries were deleted from the end" if stored is None
                      else "the expected head was replaced: the chain was rewritten")


def _verify_range(job: tuple[str, int, int], engine: Engine | None = None
                  ) -> tuple[int, tuple[int, str] | None]:
    """(rows checked, (id, reason) of the first bad entry or None) for ids in [first, end)."""
    url, first, end = job
    engine = engine or create_engine(url, poolclass=NullPool)
    columns = ", ".join(FIELDS)
    with engine.connect() as connection:
        anchor = _hash_of(connection, first - 1) if first > 1 else GENESIS
        rows = connection.exec_driver_sql(
            f"SELECT {columns} FROM audit_log WHERE id >= {int(first)} AND id < {int(end)} "
            "ORDER BY id").fetchall()
    if anchor is None:
        return 0, (first - 1, "an entry is missing or out of order")
    bad = _check_batch(rows, first, anchor) if rows else (0, "an entry is missing or out of order")
    if bad is not None:
        return len(rows), (first + bad[0] if not rows else rows[bad[0]][0], bad[1])
    if rows[-1][0] != end - 1:
        return len(rows), (rows[-1][0] + 1, "an entry is missing or out of order")
    return len(rows), None


def _check_batch(rows, first_id: int, prev: str) -> tuple[int, str] | None:
    """(index, reason) of the first bad row of the batch, or None."""
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    stored = np.array([row[8] for row in rows], dtype=object)
    links = np.array([prev] + [row[8] for row in rows[:-1]], dtype=object)
    computed = np.array([entry_hash(*row[:8]) for row in rows], dtype=object)
    problems = {
        "an entry is missing or out of order": ids != np.arange(first_id, first_id + len(rows)),
        "the entry's link does not match the previous entry's hash":
            np.array([row[7] for row in rows], dtype=object) != links,
        "the entry was changed after it was written": computed != stored,
    }
    firsts = {reason: int(np.argmax(bad)) for reason, bad in problems.items() if bad.any()}
    if not firsts:
        return None
    reason = min(firsts, key=firsts.get)
    return firsts[reason], reason


def entries(session: Session, limit: int = 100) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))
