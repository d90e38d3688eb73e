"""The release gate and the signed release manifest.

The gate compares the synth report's privacy figures with configurable thresholds; a figure that
could not be measured fails its check (a release cannot be shown safe by a missing number). Only
a passing gate writes `release_manifest.json`: the SHA-256 of every file of the synthetic dataset
and of the report, the thresholds and results, and the (ε, δ) the model spent, signed with an
Ed25519 key kept in the farr key directory (`~/.farr/keys` or $FARR_KEY_DIR), outside the data.
A failed gate removes any manifest left in the output directory by an earlier run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from farr.events.io import sha256_file
from farr.governance.pseudonymise import key_dir

MANIFEST = "release_manifest.json"
SIGNING_KEY = "release-signing.ed25519.pem"


@dataclass(frozen=True)
class Thresholds:
    max_membership_auc: float = 0.6
    max_exact_copies: int = 0
    copy_min_events: int = 5
    max_near_copy_excess: float = 0.05  # near-copy rate beyond the holdout's own
    max_singling_out_risk: float = 0.1
    max_linkability_risk: float = 0.1
    max_inference_risk: float = 0.1

    @classmethod
    def from_file(cls, file: str | Path) -> Thresholds:
        try:
            values = json.loads(Path(file).read_text())
            return cls(**values)
        except (OSError, json.JSONDecodeError, TypeError) as error:
            known = ", ".join(f.name for f in fields(cls))
            raise ValueError(f"{file}: not a gate thresholds file ({error}); keys: {known}") from None


def gate(privacy: dict, thresholds: Thresholds) -> dict:
    """Each check: the measured value, its limit and whether it passed."""
    attacks = [a["auc"] for a in privacy["membership"].values() if a and a.get("auc") is not None]
    measured = {
        "membership_auc": (max(attacks) if attacks else None, thresholds.max_membership_auc),
        "exact_copies": (privacy["exact_copies"]["copies"], thresholds.max_exact_copies),
        "near_copy_excess": (privacy["distance_to_closest_record"]["near_copy_excess"],
                             thresholds.max_near_copy_excess),
        "singling_out_risk": (privacy["singling_out"]["risk"], thresholds.max_singling_out_risk),
        "linkability_risk": (privacy["linkability"]["risk"], thresholds.max_linkability_risk),
        "inference_risk": (max(r["risk"] for r in privacy["inference"]) if privacy["inference"] else None,
                           thresholds.max_inference_risk),
    }
    checks = [{"check": name, "value": value, "limit": limit, "passed": value is not None and value <= limit}
              for name, (value, limit) in measured.items()]
    return {"passed": all(c["passed"] for c in checks), "thresholds": asdict(thresholds), "checks": checks}


def _signing_key(directory: Path) -> Ed25519PrivateKey:
    file = directory / SIGNING_KEY
    if not file.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption())
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    return serialization.load_pem_private_key(file.read_bytes(), password=None)


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _checksums(root: Path, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {f"{prefix}/{p.relative_to(root).as_posix()}": sha256_file(p)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def write_manifest(out: Path, synth: Path, result: dict, keys: Path | None = None) -> Path | None:
    """Sign and write the manifest if the gate passed; otherwise remove any old one and return None."""
    file = out / MANIFEST
    if not result["gate"]["passed"]:
        file.unlink(missing_ok=True)
        return None
    key = _signing_key(key_dir(keys))
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    body = {"kind": "farr synthetic release", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "gate": result["gate"], "privacy": result["release"]["privacy"],
            "files": _checksums(synth, "synthetic") | _checksums(out, "report", skip=(MANIFEST,)),
            "public_key_ed25519": public}
    signed = body | {"signature_ed25519": key.sign(_canonical(body)).hex()}
    partial = file.with_suffix(".partial")
    partial.write_text(json.dumps(signed, indent=1))
    partial.replace(file)
    return file


def verify_manifest(file: str | Path, synth: str | Path) -> None:
    """Raise ValueError if the signature or any file's checksum does not match."""
    file = Path(file)
    manifest = json.loads(file.read_text())
    body = {k: v for k, v in manifest.items() if k != "signature_ed25519"}
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(body["public_key_ed25519"])).verify(
            bytes.fromhex(manifest["signature_ed25519"]), _canonical(body))
    except (InvalidSignature, KeyError, ValueError):
        raise ValueError(f"{file}: the signature does not match its contents") from None
    roots = {"synthetic": Path(synth), "report": file.parent}
    for name, digest in body["files"].items():
        prefix, _, relative = name.partition("/")
        path = roots[prefix] / relative
        if not path.is_file() or sha256_file(path) != digest:
            raise ValueError(f"{path}: missing or changed since the release manifest was signed")
