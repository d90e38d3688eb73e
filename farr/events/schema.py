"""The farr event schema: the one contract every stage reads and writes.

A dataset is a MEDS-compatible directory::

    DIR/
      data/<shard>.parquet        events, long format, sorted by (subject_id, time)
      subjects/<shard>.parquet    one row per subject of the same shard
      metadata/dataset.json       MEDS dataset metadata
      metadata/codes.parquet      MEDS code metadata (code, description, parent_codes)
      metadata/farr.json          farr metadata: schema version, vocabularies, counts, checksums

Each subject lives in exactly one shard, and the subjects file of a shard holds exactly the
subjects of its events file. `farr.json` may define outcomes under `extra.outcomes`: a name ->
{"codes": [...], "recurrent": bool}; the first record of any of the codes marks onset (every
record, for a recurrent outcome). Forecasting and evaluation predict these. An *identifiable* extract (simulator ``--identifiable``) carries
the direct identifiers of ``IDENTIFIER_FIELDS`` in its subjects table; ingest removes them.
"""

from __future__ import annotations

import re

import meds
import pyarrow as pa

SCHEMA_VERSION = "1.0"

DATA_DIR = "data"
SUBJECTS_DIR = "subjects"
METADATA_DIR = "metadata"
MEDS_METADATA_FILE = "metadata/dataset.json"
FARR_METADATA_FILE = "metadata/farr.json"
CODES_FILE = "metadata/codes.parquet"

BIRTH_CODE = meds.birth_code
DEATH_CODE = meds.death_code

# Vocabulary prefix -> what it is. Codes are written "<prefix>/<code>", e.g. "SNOMED/44054006".
VOCABULARIES: dict[str, str] = {
    "SNOMED": "SNOMED CT UK edition (primary care diagnoses, procedures, observations)",
    "ICD10": "ICD-10 (hospital episode diagnoses)",
    "LOINC": "LOINC (laboratory tests and measurements)",
    "BNF": "British National Formulary chemical substance codes (prescriptions)",
    "DMD": "NHS Dictionary of medicines and devices",
    "OPCS4": "OPCS-4 (hospital procedures)",
    "RXNORM": "RxNorm (drugs, from US-sourced data such as Synthea)",
    "CVX": "CVX (vaccines, from US-sourced data)",
    "MEDS": "MEDS canonical codes (MEDS_BIRTH, MEDS_DEATH)",
}
CODE_PATTERN = re.compile(r"^(?:MEDS_[A-Z_]+|[A-Z][A-Z0-9]*/\S+)$")

EVENT_FIELDS = [
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("time", pa.timestamp("us"), nullable=True),  # null only for static facts (MEDS)
    pa.field("code", pa.string(), nullable=False),
    pa.field("numeric_value", pa.float32(), nullable=True),
]
EVENT_SCHEMA = pa.schema(EVENT_FIELDS)

# ONS 2021 census high-level ethnic groups (England and Wales), in this order everywhere.
ETHNICITIES = ("White", "Asian", "Black", "Mixed", "Other")
SEXES = ("F", "M")
# The 7 NHS England regions.
REGIONS = (
    "North East and Yorkshire",
    "North West",
    "Midlands",
    "East of England",
    "London",
    "South East",
    "South West",
)
END_REASONS = ("extract_end", "death", "moved_away")

SUBJECT_FIELDS = [
    pa.field("subject_id", pa.int64(), nullable=False),
    pa.field("sex", pa.string(), nullable=False),
    pa.field("year_month_of_birth", pa.string(), nullable=False),  # "YYYY-MM"
    pa.field("ethnicity", pa.string(), nullable=True),
    pa.field("imd_quintile", pa.int8(), nullable=True),  # 1 = most deprived
    pa.field("region", pa.string(), nullable=True),
    pa.field("practice_id", pa.string(), nullable=True),
    pa.field("site_id", pa.string(), nullable=True),
    pa.field("registration_start", pa.date32(), nullable=True),
    pa.field("registration_end", pa.date32(), nullable=True),
    pa.field("end_reason", pa.string(), nullable=True),
    pa.field("national_opt_out", pa.bool_(), nullable=False),
    pa.field("type1_opt_out", pa.bool_(), nullable=False),
]
SUBJECT_SCHEMA = pa.schema(SUBJECT_FIELDS)

# Direct identifiers: present only in identifiable extracts, never past ingest.
IDENTIFIER_FIELDS = [
    pa.field("nhs_number", pa.string(), nullable=False),
    pa.field("date_of_birth", pa.date32(), nullable=False),
    pa.field("postcode_district", pa.string(), nullable=False),
]
IDENTIFIABLE_SUBJECT_SCHEMA = pa.schema(SUBJECT_FIELDS + IDENTIFIER_FIELDS)
IDENTIFIER_COLUMNS = tuple(f.name for f in IDENTIFIER_FIELDS)

CODE_METADATA_SCHEMA = meds.CodeMetadataSchema.schema()


def vocabulary_of(code: str) -> str:
    """The vocabulary prefix of a code ("SNOMED/44054006" -> "SNOMED"; "MEDS_BIRTH" -> "MEDS")."""
    return "MEDS" if code.startswith("MEDS_") else code.split("/", 1)[0]


def subject_schema(identifiable: bool) -> pa.Schema:
    return IDENTIFIABLE_SUBJECT_SCHEMA if identifiable else SUBJECT_SCHEMA
