"""Per-project keys and keyed pseudonyms: subject ids that link within a project and nowhere else.

A subject's pseudonym is HMAC-SHA256(project key, "<system>|<identifier>"): the NHS number
(system ``nhs_number``) where the source has one, else the source's own patient identifier under
its own system name (``fhir:Patient.id``, ``omop:person_source_value``, ...). A plain or salted
hash of an NHS number is brute-forced in minutes (about 10^9 valid numbers), so the key is
secret, random, per project, and kept outside the data in a key directory:

    <key dir>/<project>.key     32 random bytes as hex, mode 0600, created on first use

The key is never printed or logged; a dataset records its *key id* (the first 16 hex digits of
the key's SHA-256) so a reader can tell whether two datasets share a key without seeing it.
The first 8 bytes of the digest, shifted to 63 bits, are the int64 ``subject_id``; the next 8
are a check value: two patients with one subject_id but different check values are a collision.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEY_DIR_ENV = "FARR_KEY_DIR"
DEFAULT_KEY_DIR = Path("~/.farr/keys")
NHS_NUMBER_SYSTEM = "nhs_number"
_PROJECT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY_BYTES = 32


class PseudonymCollision(RuntimeError):
    """Two different patients were given one subject_id; nothing may be written."""


def key_dir(explicit: str | Path | None = None) -> Path:
    """The key directory: ``explicit``, else $FARR_KEY_DIR, else ~/.farr/keys."""
    chosen = explicit or os.environ.get(KEY_DIR_ENV) or DEFAULT_KEY_DIR
    return Path(chosen).expanduser().absolute()


def check_project_name(project: str) -> str:
    if not _PROJECT_NAME.fullmatch(project):
        raise ValueError(f"project {project!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return project


@dataclass(frozen=True)
class ProjectKey:
    project: str
    secret: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        """Names the key without revealing it: the first 16 hex digits of its SHA-256."""
        return hashlib.sha256(self.secret).hexdigest()[:16]

    def digests(self, keys: list[str]) -> np.ndarray:
        """(n, 4) big-endian uint64 words of HMAC-SHA256 of each ``"<system>|<identifier>"``."""
        joined = b"".join(hmac.digest(self.secret, k.encode(), "sha256") for k in keys)
        return np.frombuffer(joined, dtype=">u8").reshape(len(keys), 4).astype(np.uint64)

    def pseudonyms(self, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(subject_id, check) of each key: a positive 63-bit int64 id and a 64-bit check."""
        words = self.digests(keys)
        return (words[:, 0] >> np.uint64(1)).astype(np.int64), words[:, 1]


def _inside(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def load_or_create_key(project: str, directory: Path, *, data_dirs: list[Path]) -> ProjectKey:
    """The project's key from ``directory``, created (mode 0600) on first use.

    Refuses a key directory inside any of ``data_dirs`` (the source and the output): a key
    written beside the data it protects protects nothing.
    """
    check_project_name(project)
    directory = directory.resolve()
    for data in data_dirs:
        if _inside(directory, Path(data).resolve()):
            raise ValueError(f"key directory {directory} is inside the data directory {data}; "
                             f"keep keys elsewhere (--key-dir or ${KEY_DIR_ENV})")
    file = directory / f"{project}.key"
    if not file.exists():
        _create_key_file(file)
    return ProjectKey(project, _read_key_file(file))


def _create_key_file(file: Path) -> None:
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run created it first: use that one
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_bytes(_KEY_BYTES).hex() + "\n")


def _read_key_file(file: Path) -> bytes:
    mode = stat.S_IMODE(file.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(f"{file}: key file is readable by others (mode {mode:o}); "
                              f"run chmod 600 {file}")
    try:
        secret = bytes.fromhex(file.read_text().strip())
    except ValueError:
        raise ValueError(f"{file}: not a farr key file (expected {_KEY_BYTES * 2} hex digits)") from None
    if len(secret) != _KEY_BYTES:
        raise ValueError(f"{file}: not a farr key file (expected {_KEY_BYTES * 2} hex digits)")
    return secret


def first_repeats(ids: np.ndarray, checks: np.ndarray) -> np.ndarray:
    """Where (id, check) pairs repeat an earlier pair, and raise if any id has two checks.

    Returns a mask of the later copies of a repeated patient. Different check values under
    one subject_id mean two different identifiers hashed to one id: a collision.
    """
    order = np.lexsort((np.arange(len(ids)), checks, ids))
    sorted_ids, sorted_checks = ids[order], checks[order]
    same_id = sorted_ids[1:] == sorted_ids[:-1]
    clash = same_id & (sorted_checks[1:] != sorted_checks[:-1])
    if clash.any():
        raise PseudonymCollision(
            f"two different patients share subject_id {sorted_ids[1:][clash][0]}: a 63-bit "
            "pseudonym collision; nothing was written. Report it: the id width must grow")
    repeat = np.zeros(len(ids), bool)
    repeat[order[1:][same_id]] = True
    return repeat
