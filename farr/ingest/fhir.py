"""Reading FHIR R4 as Synthea writes it: patient bundles (``*.json``) and bulk NDJSON (``*.ndjson``).

Parsing. JSON is parsed with orjson. ``fhir.resources`` (pydantic models of FHIR R4B, the same as
R4 for the resources read here) validates each Patient, where the identifiers and demographics
that pseudonymisation rests on live, and tells FHIR resource types from unknown ones. Clinical
resources are read straight from the parsed JSON, each field checked as it is taken (a time that
does not parse, a code that is not a coding, no patient reference: quarantine). Validating them
too with ``fhir.resources`` was measured at ~0.17 ms a resource, ~45 ms for a Synthea-style bundle
of ~360 clinical resources: about 1,300 bundles a minute a core, short of the 2,000 a minute on
2 cores wanted once the rest of ingest is counted. Synthea bundles are mostly Claim and
ExplanationOfBenefit resources, which are counted by type and not read further. A resourceType
that FHIR R4B does not define goes to quarantine.

What becomes of each resource:

- Patient: NHS number (identifier system https://fhir.nhs.uk/Id/nhs-number) or, failing that,
  ``Patient.id`` under the system ``fhir:Patient.id``; gender, birthDate, deceasedDateTime
  (MEDS_DEATH), the postcode of the first address, and ethnicity from the UK Core ethnic
  category or the US Core race extension, as ONS 2021 groups;
- Encounter (type, at period.start), Condition (code, onset or recorded date), Observation
  (code and valueQuantity, and each component likewise), MedicationRequest (medication, at
  authoredOn), Procedure (code, performed) and Immunization (vaccineCode, occurrence): one event
  each, coded by the first coding whose system farr knows (``SYSTEMS``). Codings of other
  systems are counted as unmapped ("<system>|<code>") in the manifest.

Files. Bundles hold every resource of one patient, so groups of bundle files are parts as they
stand. NDJSON holds one resource type per file (``Patient.ndjson``, ``Condition.ndjson``):
patients are read from the ``Patient*`` files first, then the other files are regrouped by
patient (``farr.ingest.spill``). Synthea names bundle files after the patient, so outputs name
bundles by number (``bundle-000001.json``, in sorted order) and the manifest gives the SHA-256
of each; ``record`` is the entry's index in the bundle, or the NDJSON line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import orjson
import polars as pl
import pyarrow as pa
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

from farr.events.schema import DEATH_CODE
from farr.governance.deidentify import mask_record, mask_text
from farr.ingest.source import (
    EVENT_COLUMNS,
    PATIENT_SCHEMA,
    PROBLEM_SCHEMA,
    Chunk,
    InputFile,
    Prepared,
    Tally,
    as_canonical,
    parse_times,
    problems_table,
)
from farr.ingest.spill import Spill, read_part

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
PATIENT_ID_SYSTEM = "fhir:Patient.id"
BUNDLES_PER_PART = 500

# Code system URI -> farr vocabulary prefix.
SYSTEMS = {
    "http://snomed.info/sct": "SNOMED",
    "http://loinc.org": "LOINC",
    "http://www.nlm.nih.gov/research/umls/rxnorm": "RXNORM",
    "http://hl7.org/fhir/sid/cvx": "CVX",
    "http://hl7.org/fhir/sid/icd-10": "ICD10",
    "http://hl7.org/fhir/sid/icd-10-cm": "ICD10CM",
    "https://dmd.nhs.uk": "DMD",
    "http://www.datadictionary.nhs.uk/data_dictionary/attributes/o/opcs/opcs_classification_version_4_de.asp": "OPCS4",
}
SEXES = {"female": "F", "male": "M"}

_UK_ETHNIC_CATEGORY = "https://fhir.hl7.org.uk/StructureDefinition/Extension-UKCore-EthnicCategory"
_US_RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
# NHS ethnic category (Data Dictionary letters) and US Core OMB race -> ONS 2021 group.
_ETHNIC_GROUPS = {
    **dict.fromkeys("ABCT", "White"), **dict.fromkeys("DEFG", "Mixed"),
    **dict.fromkeys("HJKLR", "Asian"), **dict.fromkeys("MNP", "Black"), "S": "Other",
    "2106-3": "White", "2054-5": "Black", "2028-9": "Asian", "1002-5": "Other",
    "2076-8": "Other", "2131-1": "Other",
}


@dataclass(frozen=True)
class Mapping:
    """Where an ingested resource keeps its patient, time, code and value."""

    patient: str
    times: tuple[str, ...]  # dotted paths; the first present is the time
    code: str  # a CodeableConcept, or a list of them (the first is used)
    value: str | None = None


INGESTED = {
    "Encounter": Mapping("subject", ("period.start",), "type"),
    "Condition": Mapping("subject", ("onsetDateTime", "onsetPeriod.start", "recordedDate"), "code"),
    "Observation": Mapping("subject", ("effectiveDateTime", "effectivePeriod.start", "effectiveInstant",
                                       "issued"), "code", "valueQuantity.value"),
    "MedicationRequest": Mapping("subject", ("authoredOn",), "medicationCodeableConcept"),
    "Procedure": Mapping("subject", ("performedDateTime", "performedPeriod.start"), "code"),
    "Immunization": Mapping("patient", ("occurrenceDateTime",), "vaccineCode"),
}


def _get(resource: dict, path: str):
    value = resource
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


def _reference(value) -> str | None:
    """The patient id a Reference points to ("urn:uuid:<id>" or "Patient/<id>")."""
    reference = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(reference, str):
        return None
    return reference.removeprefix("urn:uuid:").removeprefix("Patient/")


@cache
def _is_resource_type(name: str) -> bool:
    try:
        return issubclass(get_fhir_model_class(name), Resource)
    except ValueError:
        return False


def _first_problem(error: ValidationError) -> str:
    detail = error.errors()[0]
    where = ".".join(str(step) for step in detail["loc"])
    return f"{where}: {detail['msg']}" if where else detail["msg"]


def _ethnicity(patient: dict) -> str | None:
    for extension in patient.get("extension") or []:
        url = extension.get("url")
        if url == _UK_ETHNIC_CATEGORY:
            codings = (extension.get("valueCodeableConcept") or {}).get("coding") or []
        elif url == _US_RACE:
            codings = [e.get("valueCoding") or {} for e in extension.get("extension") or []
                       if e.get("url") == "ombCategory"]
        else:
            continue
        for coding in codings:
            if coding.get("code") in _ETHNIC_GROUPS:
                return _ETHNIC_GROUPS[coding["code"]]
    return None


def _birth(text: str | None) -> tuple[str | None, str | None]:
    """(full date text, year-month text) of a birthDate; a year alone gives neither."""
    if not isinstance(text, str) or len(text) < 7:
        return None, None
    return (text if len(text) >= 10 else None), text[:7]


@dataclass
class Collector:
    """Patients, events and problems of one part, gathered resource by resource."""

    patients: list[dict] = field(default_factory=list)
    events: dict[str, list] = field(default_factory=lambda: {c: [] for c in EVENT_COLUMNS.names})
    problems: dict[str, list] = field(default_factory=lambda: {c: [] for c in ("file", "record", "reason", "content")})
    tally: Tally = field(default_factory=Tally)

    def problem(self, file: int, record: int | None, reason: str, content: str | None) -> None:
        for name, value in zip(self.problems, (file, record, reason, content), strict=False):
            self.problems[name].append(value)

    def event(self, key, time, code, value, file: int, record: int) -> None:
        for name, item in zip(EVENT_COLUMNS.names, (key, time, code, value, file, record), strict=False):
            self.events[name].append(item)

    def line(self, text: bytes, file: int, record: int) -> None:
        """One NDJSON line."""
        try:
            resource = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            self.problem(file, record, f"malformed JSON: {error}", mask_text(text.decode(errors="replace")[:500]))
            return
        self.resource(resource, file, record)

    def resource(self, resource, file: int, record: int) -> None:
        kind = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(kind, str):
            self.problem(file, record, "not a FHIR resource (no resourceType)", _masked_json(resource))
        elif kind in INGESTED:
            self._clinical(resource, file, record)
        elif kind == "Patient":
            self._valid_patient(resource, file, record)
        elif _is_resource_type(kind):
            self.tally.skipped[kind] += 1
        else:
            self.problem(file, record, f"unknown resource type {kind!r}", _masked_json(resource))

    def _valid_patient(self, patient: dict, file: int, record: int) -> None:
        try:
            get_fhir_model_class("Patient").model_validate(patient)
        except ValidationError as error:
            self.problem(file, record, f"invalid Patient: {_first_problem(error)}", _masked_json(patient))
            return
        self._patient(patient, file, record)

    def _patient(self, patient: dict, file: int, record: int) -> None:
        nhs = next((i.get("value") for i in patient.get("identifier") or []
                    if i.get("system") == NHS_NUMBER_SYSTEM), None)
        date_of_birth, year_month = _birth(patient.get("birthDate"))
        address = (patient.get("address") or [{}])[0]
        self.patients.append({
            "file": file, "record": record, "patient_key": patient.get("id"), "nhs_number": nhs,
            "local_id": f"{PATIENT_ID_SYSTEM}|{patient['id']}" if patient.get("id") else None,
            "sex": SEXES.get(patient.get("gender"), patient.get("gender")),
            "date_of_birth": date_of_birth, "year_month_of_birth": year_month,
            "ethnicity": _ethnicity(patient), "postcode": address.get("postalCode"),
        })
        if patient.get("deceasedDateTime"):
            self.event(patient.get("id"), patient["deceasedDateTime"], DEATH_CODE, None, file, record)

    def _clinical(self, resource: dict, file: int, record: int) -> None:
        mapping = INGESTED[resource["resourceType"]]
        key = _reference(resource.get(mapping.patient))
        time = next((t for t in (_get(resource, p) for p in mapping.times) if t), None)
        time = time if time is None or isinstance(time, str) else str(time)  # quarantined unparsed
        concept = _get(resource, mapping.code)
        self._coded(key, time, concept[0] if isinstance(concept, list) and concept else concept,
                    _get(resource, mapping.value) if mapping.value else None, file, record)
        components = resource.get("component")
        for component in components if isinstance(components, list) else []:
            if isinstance(component, dict):
                self._coded(key, time, component.get("code"), _get(component, "valueQuantity.value"), file, record)

    def _coded(self, key, time, concept, value, file: int, record: int) -> None:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        codings = [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        for coding in codings:
            code = coding.get("code")
            if coding.get("system") in SYSTEMS and isinstance(code, str) and code:
                self.event(key, time, f"{SYSTEMS[coding['system']]}/{code}", number, file, record)
                return
        for coding in codings[:1]:
            self.tally.unmapped[f"{coding.get('system')}|{coding.get('code')}"] += 1
        if not codings:
            self.tally.unmapped["(no coding)"] += 1

    def chunk(self, inputs: list[InputFile]) -> Chunk:
        """The gathered records as tables; times that do not parse become problems."""
        schema = {"patient_key": pl.String, "time": pl.String, "code": pl.String, "numeric_value": pl.Float64,
                  "file": pl.Int32, "record": pl.Int64}
        events, bad_times = _timed(pl.DataFrame(self.events, schema=schema, strict=False))
        problems = pl.concat([pl.DataFrame(self.problems, schema={"file": pl.Int32, "record": pl.Int64,
                                                                  "reason": pl.String, "content": pl.String}),
                              bad_times])
        return Chunk(_patients(self.patients), events, as_canonical(problems, PROBLEM_SCHEMA), self.tally, inputs)


def _masked_json(resource) -> str:
    return orjson.dumps(mask_record(resource)).decode()


def _timed(events: pl.DataFrame) -> tuple[pa.Table, pl.DataFrame]:
    """Events with parsed times, and the problems of those with no or a bad time."""
    events = events.with_columns(parsed=parse_times(pl.col("time")))
    bad = events.filter(pl.col("parsed").is_null())
    problems = bad.select(
        pl.col("file").cast(pl.Int32), pl.col("record").cast(pl.Int64),
        reason=pl.when(pl.col("time").is_null()).then(pl.lit("no date"))
        .otherwise(pl.format("unparseable date '{}'", pl.col("time"))),
        content=pl.struct("code").struct.json_encode())
    good = events.filter(pl.col("parsed").is_not_null()).with_columns(time=pl.col("parsed"))
    return as_canonical(good.with_columns(pl.col("numeric_value").cast(pl.Float64)), EVENT_COLUMNS), problems


def _patients(rows: list[dict]) -> pa.Table:
    frame = pl.DataFrame(rows, schema={"file": pl.Int32, "record": pl.Int64, "patient_key": pl.String,
                                       "nhs_number": pl.String, "local_id": pl.String, "sex": pl.String,
                                       "date_of_birth": pl.String, "year_month_of_birth": pl.String,
                                       "ethnicity": pl.String, "postcode": pl.String})
    frame = frame.with_columns(date_of_birth=pl.col("date_of_birth").str.to_date("%Y-%m-%d", strict=False))
    return as_canonical(frame, PATIENT_SCHEMA)


def _lines(path: Path, name: str, inputs: list[InputFile]) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of each non-blank line; adds the file's checksum to ``inputs``."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            digest.update(line)
            size += len(line)
            if line.strip():
                yield number, line
    inputs.append(InputFile(name, size, digest.hexdigest()))


def _batches(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch = []
    for item in lines:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class FhirSource:
    root: Path
    format: str = "fhir"
    files: list[str] = field(default_factory=list)
    lines_per_batch: int = 20_000
    _bundles: list[Path] = field(default_factory=list)
    _ndjson: list[Path] = field(default_factory=list)
    _spill: Path | None = None

    def __post_init__(self) -> None:
        paths = [self.root] if self.root.is_file() else sorted(
            p for p in self.root.rglob("*") if p.is_file() and p.suffix in (".json", ".ndjson"))
        self._bundles = [p for p in paths if p.suffix == ".json"]
        self._ndjson = [p for p in paths if p.suffix == ".ndjson"]
        if not paths:
            raise FileNotFoundError(f"{self.root}: no FHIR bundles (*.json) or bulk NDJSON (*.ndjson)")
        self.files = [f"bundle-{i:06d}.json" for i in range(1, len(self._bundles) + 1)]
        self.files += [p.name if p == self.root else p.relative_to(self.root).as_posix() for p in self._ndjson]

    def prepare(self, workdir: Path) -> Prepared:
        bundles = list(range(len(self._bundles)))
        parts = [("bundles", bundles[i:i + BUNDLES_PER_PART]) for i in range(0, len(bundles), BUNDLES_PER_PART)]
        if not self._ndjson:
            return Prepared(parts)
        prepared = self._spill_ndjson(workdir / "fhir")
        prepared.parts = parts + [("ndjson", part) for part in prepared.parts]
        return prepared

    def read(self, part: tuple[str, object]) -> Chunk:
        kind, which = part
        if kind == "bundles":
            return self._read_bundles(which)
        patients, events = read_part(self._spill, which)
        return Chunk(patients, events, problems_table({}))

    def _read_bundles(self, indices: list[int]) -> Chunk:
        collector, inputs = Collector(), []
        for file in indices:
            data = self._bundles[file].read_bytes()
            inputs.append(InputFile(self.files[file], len(data), hashlib.sha256(data).hexdigest()))
            try:
                bundle = orjson.loads(data)
            except orjson.JSONDecodeError as error:
                collector.problem(file, None, f"bundle skipped: malformed JSON: {error}", None)
                continue
            if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
                collector.problem(file, None, "bundle skipped: not a FHIR Bundle", None)
                continue
            for record, entry in enumerate(bundle.get("entry") or []):
                collector.resource(entry.get("resource") if isinstance(entry, dict) else entry, file, record)
        return collector.chunk(inputs)

    def _spill_ndjson(self, workdir: Path) -> Prepared:
        """Patients from the Patient* files, then every other file's records by patient."""
        prepared = Prepared(parts=[])
        files = list(enumerate(self._ndjson, len(self._bundles)))
        patients = Collector()
        for file, path in files:
            if path.name.startswith("Patient"):
                for number, line in _lines(path, self.files[file], prepared.inputs):
                    patients.line(line, file, number)
        chunk = patients.chunk([])
        spill = Spill(workdir, chunk.patients)
        problems = []
        for file, path in files:
            if not path.name.startswith("Patient"):
                for batch in _batches(_lines(path, self.files[file], prepared.inputs), self.lines_per_batch):
                    part = self._batch(batch, file)
                    spill.add(part.events)
                    problems.append(part.problems)
                    prepared.tally.add(part.tally)
        spill.add(chunk.events)
        prepared.tally.add(chunk.tally)
        prepared.problems = pa.concat_tables([chunk.problems, *problems])
        prepared.parts = spill.close()
        self._spill = workdir
        return prepared

    @staticmethod
    def _batch(lines: list[tuple[int, bytes]], file: int) -> Chunk:
        collector = Collector()
        for number, line in lines:
            collector.line(line, file, number)
        for stray in collector.patients:  # patients were read in the first pass
            collector.problem(stray["file"], stray["record"],
                              "Patient outside the Patient*.ndjson files: not read", None)
        collector.patients = []
        return collector.chunk([])
