"""The contribution ledger: an append-only, hash-chained `ledger.jsonl` beside the model card.

Each training entry names the model version (SHA-256 of its weights and tokenizer), every site's
dataset by the SHA-256 of its metadata/farr.json, and what the site gave: patients, events,
rounds it took part in, rounds it dropped out of and updates that were rejected. Valuations are
appended as entries of their own. Each entry holds the hash of the one before, so an edit or a
removed line anywhere breaks the chain, and `verify` says where.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from farr.events.io import sha256_file
from farr.model.train import TOKENIZER, WEIGHTS

LEDGER = "ledger.jsonl"
GENESIS = "0" * 64


def model_version(model_dir: str | Path) -> str:
    """The SHA-256 of the model's weights and tokenizer together."""
    model_dir = Path(model_dir)
    for name in (WEIGHTS, TOKENIZER):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(f"{model_dir / name}: missing; {model_dir} is not a farr model")
    return hashlib.sha256((sha256_file(model_dir / WEIGHTS) + sha256_file(model_dir / TOKENIZER)).encode()).hexdigest()


def read(model_dir: str | Path) -> list[dict]:
    """The ledger's entries, after checking the chain."""
    entries = _entries(model_dir)
    verify(entries, Path(model_dir) / LEDGER)
    return entries


def _entries(model_dir: str | Path) -> list[dict]:
    file = Path(model_dir) / LEDGER
    if not file.exists():
        return []
    entries = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}:{number}: not a ledger entry ({error})") from None
    return entries


def verify(entries: list[dict], where: Path) -> None:
    previous = GENESIS
    for number, entry in enumerate(entries, 1):
        if entry.get("previous_sha256") != previous:
            raise ValueError(f"{where}:{number}: the hash chain is broken (an entry before it was changed or removed)")
        if _digest(entry) != entry.get("entry_sha256"):
            raise ValueError(f"{where}:{number}: the entry was changed after it was written")
        previous = entry["entry_sha256"]


def _digest(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "entry_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _append(model_dir: str | Path, entry: dict) -> dict:
    entries = read(model_dir)
    entry = {"index": len(entries), "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "model_version": model_version(model_dir)} | entry
    entry["previous_sha256"] = entries[-1]["entry_sha256"] if entries else GENESIS
    entry["entry_sha256"] = _digest(entry)
    with open(Path(model_dir) / LEDGER, "a") as file:
        file.write(json.dumps(entry, sort_keys=True) + "\n")
    return entry


def append(model_dir: str | Path, records: dict[str, dict], rounds: list[dict], training: dict) -> dict:
    """Record one federated training run: what each site contributed and what went wrong."""
    sites = [{"site": name, "manifest_sha256": r.get("manifest_sha256"), "patients": r.get("patients", 0),
              "events": r.get("events", 0), "rounds_participated": sorted(r["rounds"]),
              "dropouts": sorted(r["dropouts"]), "rejected_updates": r["rejected"]}
             for name, r in sorted(records.items())]
    return _append(model_dir, {"kind": "training", "training": training, "sites": sites,
                               "rounds_aggregated": sum(r["aggregated"] for r in rounds),
                               "rounds_skipped": [r["round"] for r in rounds if not r["aggregated"]]})


def append_valuation(model_dir: str | Path, valuation: dict) -> dict:
    return _append(model_dir, {"kind": "valuation", "valuation": valuation})


def latest(model_dir: str | Path, kind: str) -> dict:
    found = [e for e in read(model_dir) if e["kind"] == kind]
    if not found:
        raise ValueError(f"{Path(model_dir) / LEDGER}: no {kind} entry; "
                         + ("train it with farr federate" if kind == "training" else "run farr ledger value first"))
    return found[-1]


def describe(model_dir: str | Path) -> str:
    """The ledger as Markdown, for `farr ledger show`."""
    entries = read(model_dir)
    if not entries:
        return f"{Path(model_dir) / LEDGER}: no entries"
    lines = [f"ledger of {model_dir}: {len(entries)} entries, hash chain intact"]
    for e in entries:
        lines.append(f"\n[{e['index']}] {e['kind']} at {e['created']}, model {e['model_version'][:16]}…")
        if e["kind"] == "training":
            t = e["training"]
            lines.append(f"  {t['strategy']}, {t['rounds']} rounds, {e['rounds_aggregated']} aggregated"
                         + (" securely (SecAgg+)" if t.get("secure_aggregation") else "")
                         + (f", skipped {e['rounds_skipped']}" if e["rounds_skipped"] else ""))
            for s in e["sites"]:
                lines.append(f"  - {s['site']}: dataset {(s['manifest_sha256'] or 'unknown')[:16]}…, "
                             f"{s['patients']} patients, {s['events']} events, rounds {s['rounds_participated']}, "
                             f"dropped out {s['dropouts'] or 'never'}, rejected {len(s['rejected_updates'])}")
                lines.extend(f"      rejected in round {r['round']}: {r['reason']}" for r in s["rejected_updates"])
        else:
            v = e["valuation"]
            lines.append(f"  metric {v['metric']}, {v['coalitions_trained']} coalitions trained in {v['seconds']} s")
            lines.extend(f"  - {s['site']}: Shapley {s['shapley']:.4g} ± {s['shapley_standard_error']:.2g}, "
                         f"leave-one-out {s['leave_one_out']:.4g}" for s in v["sites"])
    return "\n".join(lines)
