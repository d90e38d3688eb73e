"""Exports of a synthetic population that other tools read: OMOP CDM 5.4 CSV and FHIR R4 NDJSON.

Both are written shard by shard (appended), inside the dataset's staging directory. Events go
to a table (OMOP) or resource type (FHIR) by vocabulary: SNOMED and ICD-10 are conditions, LOINC
measurements/observations (with their values), BNF, dm+d and RxNorm drugs, OPCS-4 procedures,
CVX immunisations. OMOP concepts are local (ids from 2,000,000,001, as the CDM reserves above two
billion), listed in CONCEPT with vocabulary_id and concept_code, so `farr ingest --from omop`
maps them back; person_source_value is the synthetic subject id. FHIR Patients carry gender,
birth year-month, death and the UK Core ethnic category; region and IMD have no FHIR home here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa

from farr.events.schema import BIRTH_CODE, DEATH_CODE

OMOP_DOMAINS = {"SNOMED": "condition_occurrence", "ICD10": "condition_occurrence", "LOINC": "measurement",
                "BNF": "drug_exposure", "DMD": "drug_exposure", "RXNORM": "drug_exposure", "CVX": "drug_exposure",
                "OPCS4": "procedure_occurrence"}
OMOP_COLUMNS = {  # table -> (concept, date, datetime, source value) column names
    "condition_occurrence": ("condition_concept_id", "condition_start_date", "condition_start_datetime",
                             "condition_source_value"),
    "measurement": ("measurement_concept_id", "measurement_date", "measurement_datetime", "measurement_source_value"),
    "drug_exposure": ("drug_concept_id", "drug_exposure_start_date", "drug_exposure_start_datetime",
                      "drug_source_value"),
    "procedure_occurrence": ("procedure_concept_id", "procedure_date", "procedure_datetime",
                             "procedure_source_value"),
    "observation": ("observation_concept_id", "observation_date", "observation_datetime", "observation_source_value"),
}
EHR = 32817  # type concept "EHR"
GENDERS = {"M": 8507, "F": 8532}
RACES = {"White": 8527, "Black": 8516, "Asian": 8515}
LOCAL_CONCEPTS = 2_000_000_001


def _plain(events: pa.Table) -> pl.DataFrame:
    """Events without births, with vocabulary and code split."""
    frame = pl.from_arrow(events).filter(pl.col("code") != BIRTH_CODE)
    return frame.with_columns(pl.col("code").str.split_exact("/", 1).struct.rename_fields(["vocabulary", "concept_code"])
                              .alias("parts")).unnest("parts")


class OmopExporter:
    def __init__(self, staging: Path):
        self.root = staging / "omop"
        self.root.mkdir()
        self.concepts: dict[str, int] = {}
        self.written: set[str] = set()
        self.next_id = {table: 1 for table in OMOP_COLUMNS}

    def write(self, events: pa.Table, subjects: pa.Table) -> None:
        people = pl.from_arrow(subjects)
        self._append("person", people.select(
            pl.col("subject_id").alias("person_id"),
            pl.col("sex").replace_strict(GENDERS, default=0).alias("gender_concept_id"),
            pl.col("year_month_of_birth").str.slice(0, 4).cast(pl.Int32).alias("year_of_birth"),
            pl.col("year_month_of_birth").str.slice(5, 2).cast(pl.Int32).alias("month_of_birth"),
            pl.lit(None, pl.Int32).alias("day_of_birth"),
            pl.lit(None, pl.String).alias("birth_datetime"),
            pl.col("ethnicity").replace_strict(RACES, default=0).alias("race_concept_id"),
            pl.lit(0).alias("ethnicity_concept_id"),
            pl.col("subject_id").cast(pl.String).alias("person_source_value"),
            pl.col("sex").alias("gender_source_value"),
            pl.col("ethnicity").alias("race_source_value")))
        self._append("observation_period", people.select(
            pl.col("subject_id").alias("person_id"),
            pl.col("registration_start").alias("observation_period_start_date"),
            pl.col("registration_end").alias("observation_period_end_date"),
            pl.lit(EHR).alias("period_type_concept_id")).with_row_index("observation_period_id", 1))
        frame = _plain(events)
        deaths = frame.filter(pl.col("code") == DEATH_CODE)
        self._append("death", deaths.select(pl.col("subject_id").alias("person_id"), pl.col("time").dt.date()
                                            .alias("death_date"), pl.col("time").alias("death_datetime"),
                                            pl.lit(EHR).alias("death_type_concept_id")))
        frame = frame.filter(pl.col("code") != DEATH_CODE)
        for code in frame["code"].unique(maintain_order=True):
            self.concepts.setdefault(code, LOCAL_CONCEPTS + len(self.concepts))
        frame = frame.with_columns(pl.col("code").replace_strict(self.concepts, return_dtype=pl.Int64).alias("concept_id"),
                                   pl.col("vocabulary").replace_strict(OMOP_DOMAINS, default="observation").alias("table"))
        for table, rows in frame.partition_by("table", as_dict=True, maintain_order=True).items():
            self._clinical(table[0], rows)

    def _clinical(self, table: str, rows: pl.DataFrame) -> None:
        concept, date, datetime, source = OMOP_COLUMNS[table]
        columns = [pl.col("subject_id").alias("person_id"), pl.col("concept_id").alias(concept),
                   pl.col("time").dt.date().alias(date), pl.col("time").alias(datetime),
                   pl.lit(EHR).alias(table.split("_")[0] + "_type_concept_id"),
                   pl.col("code").alias(source), pl.col("concept_id").alias(concept.replace("_concept", "_source_concept"))]
        if table == "drug_exposure":
            columns.append(pl.col("time").dt.date().alias("drug_exposure_end_date"))
        if table in ("measurement", "observation"):
            columns.append(pl.col("numeric_value").alias("value_as_number"))
        first = self.next_id[table]
        self.next_id[table] += len(rows)
        self._append(table, rows.select(columns).with_row_index(f"{table}_id", first))

    def _append(self, table: str, frame: pl.DataFrame) -> None:
        with open(self.root / f"{table}.csv", "ab") as file:
            frame.write_csv(file, include_header=table not in self.written, datetime_format="%Y-%m-%dT%H:%M:%S")
        self.written.add(table)

    def close(self) -> list[str]:
        codes = list(self.concepts)
        vocabulary, concept_code = zip(*(c.split("/", 1) for c in codes)) if codes else ((), ())
        self._append("concept", pl.DataFrame({
            "concept_id": list(self.concepts.values()), "concept_name": codes,
            "domain_id": [OMOP_DOMAINS.get(v, "observation").split("_")[0].title() for v in vocabulary],
            "vocabulary_id": list(vocabulary), "concept_class_id": ["Clinical Finding"] * len(codes),
            "standard_concept": ["S"] * len(codes), "concept_code": list(concept_code),
            "valid_start_date": ["1970-01-01"] * len(codes), "valid_end_date": ["2099-12-31"] * len(codes),
            "invalid_reason": [None] * len(codes)}, schema_overrides={"invalid_reason": pl.String}))
        return sorted(f"omop/{p.name}" for p in self.root.iterdir())


FHIR_SYSTEMS = {"SNOMED": "http://snomed.info/sct", "LOINC": "http://loinc.org",
                "ICD10": "http://hl7.org/fhir/sid/icd-10", "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
                "CVX": "http://hl7.org/fhir/sid/cvx", "DMD": "https://dmd.nhs.uk",
                "BNF": "https://www.nhsbsa.nhs.uk/bnf",
                "OPCS4": "http://www.datadictionary.nhs.uk/data_dictionary/attributes/o/opcs/"
                         "opcs_classification_version_4_de.asp"}
FHIR_TYPES = {"SNOMED": "Condition", "ICD10": "Condition", "LOINC": "Observation", "BNF": "MedicationRequest",
              "DMD": "MedicationRequest", "RXNORM": "MedicationRequest", "OPCS4": "Procedure", "CVX": "Immunization"}
ETHNIC_CATEGORY = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
ETHNIC_LETTERS = {"White": "A", "Mixed": "D", "Asian": "H", "Black": "M", "Other": "S"}


def _resource(kind: str, number: int, subject: int, system: str, code: str, time: str, value) -> dict:
    coded = {"coding": [{"system": system, "code": code}]}
    reference = {"reference": f"Patient/{subject}"}
    base = {"resourceType": kind, "id": f"{kind.lower()}-{number}"}
    if kind == "Condition":
        return base | {"subject": reference, "code": coded, "onsetDateTime": time}
    if kind == "Observation":
        quantity = {} if value is None or value != value else {"valueQuantity": {"value": value}}
        return base | {"status": "final", "subject": reference, "code": coded, "effectiveDateTime": time} | quantity
    if kind == "MedicationRequest":
        return base | {"status": "completed", "intent": "order", "subject": reference,
                       "medicationCodeableConcept": coded, "authoredOn": time}
    if kind == "Procedure":
        return base | {"status": "completed", "subject": reference, "code": coded, "performedDateTime": time}
    return base | {"status": "completed", "patient": reference, "vaccineCode": coded, "occurrenceDateTime": time}


class FhirExporter:
    def __init__(self, staging: Path):
        self.root = staging / "fhir"
        self.root.mkdir()
        self.count = 0

    def write(self, events: pa.Table, subjects: pa.Table) -> None:
        frame = _plain(events)
        deaths = dict(frame.filter(pl.col("code") == DEATH_CODE).select("subject_id", "time").iter_rows())
        with open(self.root / "Patient.ndjson", "ab") as file:
            for row in subjects.select(["subject_id", "sex", "year_month_of_birth", "ethnicity"]).to_pylist():
                file.write(orjson.dumps(_patient(row, deaths.get(row["subject_id"]))) + b"\n")
        frame = frame.filter(pl.col("code") != DEATH_CODE).with_columns(
            pl.col("vocabulary").replace_strict(FHIR_TYPES, default="Observation").alias("kind"),
            pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("when"))
        for (kind,), rows in frame.partition_by("kind", as_dict=True, maintain_order=True).items():
            with open(self.root / f"{kind}.ndjson", "ab") as file:
                for subject, vocabulary, code, when, value in rows.select(
                        "subject_id", "vocabulary", "concept_code", "when", "numeric_value").iter_rows():
                    self.count += 1
                    system = FHIR_SYSTEMS.get(vocabulary, f"urn:farr:{vocabulary}")
                    file.write(orjson.dumps(_resource(kind, self.count, subject, system, code, when, value)) + b"\n")

    def close(self) -> list[str]:
        return sorted(f"fhir/{p.name}" for p in self.root.iterdir())


def _patient(row: dict, death: dt.datetime | None) -> dict:
    patient = {"resourceType": "Patient", "id": str(row["subject_id"]),
               "gender": {"F": "female", "M": "male"}.get(row["sex"], "unknown"),
               "birthDate": row["year_month_of_birth"]}
    if death is not None:
        patient["deceasedDateTime"] = death.strftime("%Y-%m-%dT%H:%M:%SZ")
    letter = ETHNIC_LETTERS.get(row["ethnicity"])
    if letter:
        patient["extension"] = [{"url": ETHNIC_CATEGORY, "valueCodeableConcept": {"coding": [{
            "system": "https://fhir.hl7.org.uk/CodeSystem/UKCore-EthnicCategory", "code": letter}]}}]
    return patient


EXPORTERS = {"omop": OmopExporter, "fhir": FhirExporter}
