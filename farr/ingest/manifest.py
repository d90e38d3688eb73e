"""The ingest manifest (``metadata/ingest_manifest.json``): what one run read, wrote and why.

It records the inputs with their checksums; the project and its key id (never the key); which
identifier keyed the patients that passed the checks (before any withholding across parts or
for k-anonymity); the opt-outs upheld and any exemption with its reason; counts
read, written, excluded by opt-out, quarantined by reason and withheld for k-anonymity; the
code vocabularies written and the codes that could not be mapped, most frequent first; and the
k-anonymity of the output. It holds no identifier, and is listed with its checksum in
``metadata/farr.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from farr import __version__
from farr.events.schema import vocabulary_of

if TYPE_CHECKING:
    from farr.ingest.pipeline import IngestRun

MANIFEST_FILE = "metadata/ingest_manifest.json"
UNMAPPED_LISTED = 1000  # the most frequent unmapped codes listed; the rest are counted


def _vocabularies(run: IngestRun) -> dict[str, int]:
    counts = Counter()
    for info in run.shards:
        for code, n in info.code_counts.items():
            counts[vocabulary_of(code)] += n
    return dict(counts.most_common())


def _unmapped(run: IngestRun) -> dict:
    codes = run.tally.unmapped.most_common()
    return {"distinct": len(codes), "records": sum(run.tally.unmapped.values()),
            "most_frequent": [{"code": code, "count": n} for code, n in codes[:UNMAPPED_LISTED]]}


def build(run: IngestRun) -> dict:
    counts = run.counts
    written_subjects = sum(info.subjects for info in run.shards)
    written_events = sum(info.rows for info in run.shards)
    return {
        "farr_version": __version__,
        "started": run.started.isoformat() + "Z",
        "finished": dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z",
        "project": run.project,
        "key_id": run.key_id,
        "source": {"format": run.source_format, "path": str(run.source),
                   "subjects_keyed_by": dict(counts.key_systems.most_common())},
        "inputs": [asdict(f) for f in sorted(run.inputs, key=lambda f: f.name)],
        "opt_outs": run.policy.manifest() | {"excluded": dict(counts.opted_out)},
        "counts": {
            "subjects": {"read": counts.subjects_read, "written": written_subjects,
                         "excluded_opt_out": counts.opted_out["subjects"],
                         "quarantined": sum(counts.quarantined_subjects.values()),
                         "withheld_k_anonymity": run.withheld_k},
            "records": {"read": counts.events_read, "written": written_events,
                        "excluded_opt_out": counts.opted_out["events"],
                        "quarantined": sum(counts.quarantined_records.values())},
            "subjects_quarantined_by_reason": dict(counts.quarantined_subjects.most_common()),
            "records_quarantined_by_reason": dict(counts.quarantined_records.most_common()),
            "quarantine_rows": run.quarantine_rows,
            "not_ingested": dict(run.tally.skipped.most_common()),
        },
        "vocabularies": _vocabularies(run),
        "unmapped_codes": _unmapped(run),
        "k_anonymity": {
            "birth_band_years": run.options.birth_band,
            "generalised": run.options.generalise,
            "before": run.risk_before.summary() if run.risk_before else None,
            "generalisation": run.generalisation,
            "after": run.risk.summary() if run.risk else None,
        },
    }


def write(run: IngestRun, staging: Path) -> Path:
    file = staging / MANIFEST_FILE
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(build(run), indent=2) + "\n")
    return file
