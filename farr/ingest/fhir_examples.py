"""Synthea-style FHIR R4 patient bundles and bulk NDJSON, for tests, benchmarks and demos.

No FHIR data ships with farr (Synthea's own output is large and US-only), so this writes
bundles shaped as Synthea writes them: a transaction Bundle per patient, resources referring
to the patient by "urn:uuid:<id>", a Patient with US Core race, identifiers, name, telecom and
address, and per encounter its conditions, observations (with a blood-pressure panel's
components), medication requests, procedures, immunisations, a DiagnosticReport, a Claim and an
ExplanationOfBenefit. Patients may be given NHS numbers and UK postcodes instead.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path

import orjson

SNOMED, LOINC = "http://snomed.info/sct", "http://loinc.org"
RXNORM, CVX = "http://www.nlm.nih.gov/research/umls/rxnorm", "http://hl7.org/fhir/sid/cvx"
ENCOUNTER_TYPES = ["185345009", "162673000", "410620009", "50849002", "183452005"]
CONDITIONS = ["44054006", "38341003", "195662009", "444814009", "10509002", "55822004"]
OBSERVATIONS = [("29463-7", 40, 110, "kg"), ("8302-2", 140, 195, "cm"), ("39156-5", 18, 40, "kg/m2"),
                ("2339-0", 60, 200, "mg/dL"), ("4548-4", 4, 10, "%"), ("8867-4", 50, 110, "/min")]
MEDICATIONS = ["314076", "197361", "860975", "310798", "312961"]
PROCEDURES = ["430193006", "386516004", "171207006", "710824005"]
VACCINES = ["140", "08", "113", "133", "208"]
RACES = [("2106-3", "White"), ("2054-5", "Black or African American"), ("2028-9", "Asian")]


def _concept(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": f"display of {code}"}], "text": code}


def _ref(resource_id: str) -> dict:
    return {"reference": f"urn:uuid:{resource_id}"}


def _entry(resource: dict) -> dict:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def patient_resource(rng: random.Random, patient_id: str, birth: dt.date, *, nhs_number: str | None = None,
                     deceased: dt.datetime | None = None) -> dict:
    identifiers = [{"system": "https://github.com/synthetichealth/synthea", "value": patient_id},
                   {"type": _concept("http://terminology.hl7.org/CodeSystem/v2-0203", "MR"),
                    "system": "http://hospital.smarthealthit.org", "value": patient_id},
                   {"type": _concept("http://terminology.hl7.org/CodeSystem/v2-0203", "SS"),
                    "system": "http://hl7.org/fhir/sid/us-ssn", "value": f"999-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"}]
    if nhs_number:
        identifiers.insert(0, {"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs_number})
    race = rng.choice(RACES)
    patient = {
        "resourceType": "Patient", "id": patient_id,
        "extension": [{"url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
                       "extension": [{"url": "ombCategory", "valueCoding": {
                           "system": "urn:oid:2.16.840.1.113883.6.238", "code": race[0], "display": race[1]}},
                           {"url": "text", "valueString": race[1]}]}],
        "identifier": identifiers,
        "name": [{"use": "official", "family": f"Family{rng.randint(100, 999)}", "given": [f"Given{rng.randint(100, 999)}"]}],
        "telecom": [{"system": "phone", "value": f"555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}", "use": "home"}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": birth.isoformat(),
        "address": [{"line": [f"{rng.randint(1, 999)} Example Street"], "city": "Leeds" if nhs_number else "Boston",
                     "postalCode": f"LS{rng.randint(1, 29)} {rng.randint(1, 9)}AB" if nhs_number else f"0{rng.randint(1000, 2799)}",
                     "country": "GB" if nhs_number else "US"}],
        "maritalStatus": _concept("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M"),
        "multipleBirthBoolean": False,
        "communication": [{"language": _concept("urn:ietf:bcp:47", "en-US")}],
    }
    if deceased:
        patient["deceasedDateTime"] = deceased.isoformat() + "+00:00"
    return patient


def _observation(rng, oid, patient_id, encounter_id, when: str, kind: tuple) -> dict:
    code, low, high, unit = kind
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "category": [_concept("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs")],
            "code": _concept(LOINC, code), "subject": _ref(patient_id), "encounter": _ref(encounter_id),
            "effectiveDateTime": when, "issued": when,
            "valueQuantity": {"value": round(rng.uniform(low, high), 1), "unit": unit,
                              "system": "http://unitsofmeasure.org", "code": unit}}


def _blood_pressure(oid, patient_id, encounter_id, when: str, rng) -> dict:
    components = [{"code": _concept(LOINC, code), "valueQuantity": {"value": rng.randint(low, high), "unit": "mm[Hg]"}}
                  for code, low, high in (("8480-6", 100, 160), ("8462-4", 60, 100))]
    return {"resourceType": "Observation", "id": oid, "status": "final", "code": _concept(LOINC, "85354-9"),
            "subject": _ref(patient_id), "encounter": _ref(encounter_id), "effectiveDateTime": when,
            "component": components}


def _billing(kind: str, rid: str, patient_id: str, encounter_id: str, when: str, items: int) -> dict:
    """A Claim or ExplanationOfBenefit: bulky, and not ingested."""
    return {"resourceType": kind, "id": rid, "status": "active", "use": "claim",
            "type": _concept("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
            "patient": _ref(patient_id), "created": when, "billablePeriod": {"start": when, "end": when},
            "provider": {"display": "Example Practice"}, "priority": _concept("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "NHS"}}],
            "item": [{"sequence": i + 1, "productOrService": _concept(SNOMED, ENCOUNTER_TYPES[i % 5]),
                      "encounter": [_ref(encounter_id)], "net": {"value": 125.5 + i, "currency": "GBP"}}
                     for i in range(items)],
            "total": {"value": 125.5 * items, "currency": "GBP"}}


def _encounter_entries(rng: random.Random, patient_id: str, start: dt.datetime) -> list[dict]:
    encounter_id, when = str(uuid.UUID(int=rng.getrandbits(128))), start.isoformat() + "+00:00"
    new_id = lambda: str(uuid.UUID(int=rng.getrandbits(128)))  # noqa: E731
    resources = [{"resourceType": "Encounter", "id": encounter_id, "status": "finished",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                  "type": [_concept(SNOMED, rng.choice(ENCOUNTER_TYPES))], "subject": _ref(patient_id),
                  "period": {"start": when, "end": (start + dt.timedelta(minutes=30)).isoformat() + "+00:00"}}]
    for condition in rng.sample(CONDITIONS, rng.randint(0, 2)):
        resources.append({"resourceType": "Condition", "id": new_id(), "clinicalStatus": _concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "code": _concept(SNOMED, condition), "subject": _ref(patient_id),
            "encounter": _ref(encounter_id), "onsetDateTime": when, "recordedDate": when})
    resources += [_observation(rng, new_id(), patient_id, encounter_id, when, kind)
                  for kind in rng.sample(OBSERVATIONS, rng.randint(3, 6))]
    resources.append(_blood_pressure(new_id(), patient_id, encounter_id, when, rng))
    for medication in rng.sample(MEDICATIONS, rng.randint(0, 2)):
        resources.append({"resourceType": "MedicationRequest", "id": new_id(), "status": "active", "intent": "order",
                          "medicationCodeableConcept": _concept(RXNORM, medication),
                          "subject": _ref(patient_id), "encounter": _ref(encounter_id), "authoredOn": when})
    if rng.random() < 0.4:
        resources.append({"resourceType": "Procedure", "id": new_id(), "status": "completed",
                          "code": _concept(SNOMED, rng.choice(PROCEDURES)), "subject": _ref(patient_id),
                          "encounter": _ref(encounter_id), "performedPeriod": {"start": when, "end": when}})
    if rng.random() < 0.2:
        resources.append({"resourceType": "Immunization", "id": new_id(), "status": "completed",
                          "vaccineCode": _concept(CVX, rng.choice(VACCINES)), "patient": _ref(patient_id),
                          "encounter": _ref(encounter_id), "occurrenceDateTime": when, "primarySource": True})
    resources.append({"resourceType": "DiagnosticReport", "id": new_id(), "status": "final",
                      "code": _concept(LOINC, "51990-0"), "subject": _ref(patient_id), "effectiveDateTime": when,
                      "issued": when, "result": [_ref(r["id"]) for r in resources if r["resourceType"] == "Observation"]})
    resources += [_billing(kind, new_id(), patient_id, encounter_id, when, rng.randint(2, 8))
                  for kind in ("Claim", "ExplanationOfBenefit")]
    return resources


def patient_resources(rng: random.Random, *, nhs_number: str | None = None, encounters: int = 40) -> list[dict]:
    """One patient's resources, Patient first, encounters in time order."""
    patient_id = str(uuid.UUID(int=rng.getrandbits(128)))
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=rng.randint(0, 90 * 365))
    start = dt.datetime.combine(birth, dt.time(9)) + dt.timedelta(days=rng.randint(30, 2000))
    visits = sorted(start + dt.timedelta(days=rng.randint(0, (dt.datetime(2024, 6, 1) - start).days))
                    for _ in range(encounters)) if start < dt.datetime(2024, 6, 1) else []
    resources = [patient_resource(rng, patient_id, birth, nhs_number=nhs_number)]
    for visit in visits:
        resources += _encounter_entries(rng, patient_id, visit)
    return resources


def bundle(resources: list[dict]) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [_entry(r) for r in resources]}


def write_bundles(directory: str | Path, patients: int, seed: int = 0, *, nhs_numbers: list[str] | None = None,
                  encounters: int = 40) -> list[Path]:
    """``patients`` bundles named as Synthea names them (given_family_id.json)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng, paths = random.Random(seed), []
    for i in range(patients):
        resources = patient_resources(rng, nhs_number=nhs_numbers[i] if nhs_numbers else None, encounters=encounters)
        patient = resources[0]
        path = directory / f"{patient['name'][0]['given'][0]}_{patient['name'][0]['family']}_{patient['id']}.json"
        path.write_bytes(orjson.dumps(bundle(resources)))
        paths.append(path)
    return paths


def write_ndjson(directory: str | Path, patients: int, seed: int = 0, *, nhs_numbers: list[str] | None = None,
                 encounters: int = 10) -> list[Path]:
    """The same patients as bulk NDJSON: one file per resource type."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng, by_type = random.Random(seed), {}
    for i in range(patients):
        for resource in patient_resources(rng, nhs_number=nhs_numbers[i] if nhs_numbers else None, encounters=encounters):
            by_type.setdefault(resource["resourceType"], []).append(orjson.dumps(resource))
    paths = []
    for kind, lines in sorted(by_type.items()):
        paths.append(directory / f"{kind}.ndjson")
        paths[-1].write_bytes(b"\n".join(lines) + b"\n")
    return paths
