"""The national data opt-out and the type 1 (GP) opt-out: upheld unless a project is exempt.

A patient is excluded from ingest (nothing of them is written, not even to quarantine) if:

- national data opt-out: the source flags them (``national_opt_out``), or their NHS number is on
  the project's opt-out list (``--opt-outs FILE``: one NHS number a line, as the "Check for
  National Data Opt-outs" service handles them; trailing commas are allowed). The list is read
  for each run, not stored: recipients may only hold a time-limited copy of opt-out status;
- type 1 opt-out: the source flags them (``type1_opt_out``); it is recorded at the GP practice.

An exemption is a project setting, never a command-line switch: ``farr project exempt P
--type1 --reason "..."`` writes it to ``<key dir>/<P>.settings.json`` beside the project key,
with its reason and date, and every ingest of the project records it in its manifest.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from farr.events.io import sha256_file
from farr.governance.deidentify import nhs_number_problems
from farr.governance.pseudonymise import check_project_name

OPT_OUTS = {"national": "national_opt_out", "type1": "type1_opt_out"}  # name -> source flag


@dataclass(frozen=True)
class Exemption:
    opt_out: str
    reason: str
    granted: str  # ISO date


def settings_file(key_dir: Path, project: str) -> Path:
    return key_dir / f"{check_project_name(project)}.settings.json"


def read_exemptions(key_dir: Path, project: str) -> dict[str, Exemption]:
    file = settings_file(key_dir, project)
    if not file.exists():
        return {}
    try:
        entries = json.loads(file.read_text()).get("exemptions", {})
        return {name: Exemption(**entry) for name, entry in entries.items()}
    except (json.JSONDecodeError, TypeError, AttributeError) as error:
        raise ValueError(f"{file}: not a farr project settings file ({error})") from None


def set_exemption(key_dir: Path, project: str, opt_out: str, reason: str | None, *,
                  revoke: bool = False) -> Path:
    """Grant (with a reason) or revoke a project's exemption from one opt-out."""
    if opt_out not in OPT_OUTS:
        raise ValueError(f"unknown opt-out {opt_out!r}; one of {', '.join(OPT_OUTS)}")
    exemptions = read_exemptions(key_dir, project)
    if revoke:
        exemptions.pop(opt_out, None)
    elif not (reason and reason.strip()):
        raise ValueError("an exemption needs a --reason (the approval it rests on)")
    else:
        exemptions[opt_out] = Exemption(opt_out, reason.strip(), dt.date.today().isoformat())
    file = settings_file(key_dir, project)
    file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    file.write_text(json.dumps({"exemptions": {k: asdict(v) for k, v in exemptions.items()}},
                               indent=2, sort_keys=True) + "\n")
    return file


def read_opt_out_list(file: Path) -> tuple[frozenset[str], int]:
    """The valid NHS numbers listed in ``file`` and how many lines were not one."""
    try:
        lines = [line.strip().rstrip(",").strip() for line in file.read_text().splitlines()]
    except (FileNotFoundError, UnicodeDecodeError) as error:
        raise ValueError(f"{file}: cannot read the opt-out list ({error})") from None
    digits, _ = nhs_number_problems(pl.Series([line for line in lines if line], dtype=pl.String))
    valid = [d for d in digits if d is not None]
    return frozenset(valid), len(digits) - len(valid)


@dataclass(frozen=True)
class OptOutPolicy:
    exemptions: dict[str, Exemption] = field(default_factory=dict)
    listed: frozenset[str] = frozenset()  # NHS numbers with a national data opt-out
    list_file: dict | None = None  # what the manifest says of the list

    @classmethod
    def load(cls, key_dir: Path, project: str, list_file: Path | None) -> OptOutPolicy:
        exemptions = read_exemptions(key_dir, project)
        if list_file is None:
            return cls(exemptions)
        listed, invalid = read_opt_out_list(list_file)
        about = {"file": str(list_file), "sha256": sha256_file(list_file),
                 "nhs_numbers": len(listed), "invalid_lines": invalid}
        return cls(exemptions, listed, about)

    def opted_out(self, nhs_numbers: list[str | None], flags: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
        """For each opt-out, who holds it (source flag or list) and is not exempt."""
        listed = np.fromiter((n in self.listed for n in nhs_numbers), bool, len(nhs_numbers))
        held = {"national": flags["national"] | listed, "type1": flags["type1"]}
        return {name: mask & (name not in self.exemptions) for name, mask in held.items()}

    def manifest(self) -> dict:
        return {
            "upheld": [name for name in OPT_OUTS if name not in self.exemptions],
            "exemptions": {name: asdict(e) for name, e in self.exemptions.items()},
            "opt_out_list": self.list_file,
        }
