"""The output airlock: nothing leaves without automated checks and two output checkers.

Automated checks on each requested file (only files jobs wrote can be requested):
- its bytes still match the SHA-256 recorded when the job wrote it;
- its type is one that can leave (tables, text, figures; never model weights or data files);
- row-level refusal: a table with a subject key column or 5,000 rows or more;
- statistical disclosure control of tables with the project's profile: every whole-number
  column but farr's grouping variables is a count, and a column total may be published, so one small cell, or one hidden
  cell a total gives away, refuses the file.
Then two distinct output checkers who are not the author approve; the files are copied to
``<workspace>/releases/<request>/`` with a manifest of their checksums.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl

from farr.events.io import sha256_file
from farr.events.schema import IDENTIFIER_COLUMNS
from farr.privacy.sdc import apply_sdc

MAX_ROWS, MAX_BYTES = 5_000, 16 * 2**20
SUBJECT_KEYS = {"subject_id", "patient_id", "person_id", "pseudonym", *IDENTIFIER_COLUMNS}
GROUPING_COLUMNS = {"sex", "ethnicity", "imd_quintile", "imd", "region", "birth_decade", "year",
                    "age", "age_band", "horizon", "horizon_years", "landmark_age"}
TABLES = {".csv", ".parquet"}
RELEASABLE = TABLES | {".json", ".md", ".html", ".txt", ".png", ".svg"}
REQUIRED_APPROVALS = 2


class AirlockRefused(ValueError):
    """An automated check refused a file (HTTP 422)."""


def read_table(path: Path) -> pl.DataFrame:
    try:
        return pl.read_csv(path) if path.suffix == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # malformed tables are refused, never trusted
        raise AirlockRefused(f"{path.name}: not a readable table ({type(exc).__name__})") from None


def count_columns(table: pl.DataFrame) -> list[str]:
    """Integer columns, and float columns holding only whole numbers (counts in disguise),
    except farr's grouping variables (recognised by name: a false count refuses, never leaks)."""
    found = []
    for name, dtype in table.schema.items():
        if name.lower() in GROUPING_COLUMNS:
            continue
        if dtype.is_integer():
            found.append(name)
        elif dtype.is_float():
            values = table[name].drop_nulls().drop_nans()
            if values.len() and (values == values.round(0)).all():
                found.append(name)
    return found


def check_viewable(path: Path) -> pl.DataFrame | None:
    """Refuse row-level files (subject keys, >= 5,000 rows, data formats); the table if any."""
    if path.suffix.lower() not in RELEASABLE:
        raise AirlockRefused(f"{path.name}: files of type {path.suffix or '(none)'} cannot be "
                             f"viewed or leave (allowed: {', '.join(sorted(RELEASABLE))})")
    if path.suffix not in TABLES:
        return None
    table = read_table(path)
    keys = sorted(c for c in table.columns if c.lower() in SUBJECT_KEYS)
    if keys:
        raise AirlockRefused(f"{path.name}: row-level data (subject key column {keys[0]!r})")
    if table.height >= MAX_ROWS:
        raise AirlockRefused(f"{path.name}: row-level data ({table.height} rows; the limit is "
                             f"{MAX_ROWS - 1})")
    return table


def check_file(path: Path, recorded_sha256: str, profile: str) -> dict:
    """The automated checks of one file; AirlockRefused names the file and the reason."""
    name = path.name
    if not path.is_file() or sha256_file(path) != recorded_sha256:
        raise AirlockRefused(f"{name}: changed or missing since its job wrote it")
    if path.stat().st_size > MAX_BYTES:
        raise AirlockRefused(f"{name}: larger than {MAX_BYTES // 2**20} MiB")
    checked = {"sha256": recorded_sha256, "kind": "table" if path.suffix in TABLES else "other"}
    table = check_viewable(path)
    if table is None:
        return checked
    counts = count_columns(table)
    checked["rows"] = table.height
    if not counts:
        return checked | {"sdc": {"profile": profile, "passed": True, "note": "no count columns"}}
    result = apply_sdc(table, counts, profile)
    checked["sdc"] = result.summary()
    if not result.passed:
        cells = "; ".join(f"row {f.row + 1} column {f.column!r}: {f.rule}"
                          for f in result.findings[:5])
        raise AirlockRefused(f"{name}: fails disclosure control ({profile}): {cells}"
                             + (" ..." if len(result.findings) > 5 else ""))
    return checked


def release(files: list[tuple[str, Path, str]], destination: Path) -> Path:
    """Copy (name, source, sha256) files out, checking each copy; write the manifest."""
    destination.mkdir(parents=True, exist_ok=False)
    manifest = []
    for name, source, digest in files:
        target = destination / name
        shutil.copyfile(source, target)
        if sha256_file(target) != digest:
            shutil.rmtree(destination)
            raise AirlockRefused(f"{name}: changed while being released")
        manifest.append({"file": name, "sha256": digest, "bytes": target.stat().st_size})
    (destination / "manifest.json").write_text(json.dumps({"files": manifest}, indent=1) + "\n")
    return destination
