"""Helpers shared by the ingest tests."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from farr.cli import app
from farr.governance.pseudonymise import ProjectKey

REPO = Path(__file__).resolve().parents[1]
SYNTHEA_OMOP = REPO.parent / "shared" / "data" / "Synthea27Nj_5.4.zip"

runner = CliRunner()


def farr(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def ingest(source_format: str, src: Path, out: Path, key_dir: Path, *extra, project: str = "study") -> dict:
    """Run ``farr ingest`` and return the manifest; fails the test if the command fails."""
    code, output = farr("ingest", src, "--from", source_format, "--out", out, "--project", project,
                        "--key-dir", key_dir, "--workers", 1, *extra)
    assert code == 0, output
    return manifest(out)


def manifest(out: Path) -> dict:
    return json.loads((out / "metadata" / "ingest_manifest.json").read_text())


def quarantine(out: Path) -> pl.DataFrame:
    return pl.read_parquet(out / "quarantine" / "quarantine.parquet")


def subject_ids(out: Path) -> set[int]:
    return set(pl.read_parquet(out / "subjects" / "*.parquet")["subject_id"].to_list())


def project_key(key_dir: Path, project: str = "study") -> ProjectKey:
    return ProjectKey(project, bytes.fromhex((key_dir / f"{project}.key").read_text()))


def _parquet_text(file: Path) -> str:
    table = pq.read_table(file)
    return "\n".join(str(value) for column in table.columns for value in column.to_pylist()
                     if pa.types.is_string(column.type) or pa.types.is_large_string(column.type))


def output_text(out: Path) -> str:
    """Every file of a dataset as text: raw bytes, and the text cells of Parquet decoded
    (dates and times are checked per subject: other people's dates share their digits)."""
    parts = []
    for file in sorted(p for p in out.rglob("*") if p.is_file()):
        parts.append(file.read_bytes().decode("latin-1"))
        if file.suffix == ".parquet":
            parts.append(_parquet_text(file))
    return "\n".join(parts)


def assert_nowhere(out: Path, secrets: list[str]) -> None:
    text = output_text(out)
    found = [s for s in secrets if s in text]
    assert not found, f"{len(found)} identifiers found in {out}, e.g. {found[0]!r}"
