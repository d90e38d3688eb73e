"""How the simulated world is coded in the record: real vocabularies, as an NHS extract holds them.

SNOMED CT for primary care, ICD-10 for hospital episodes, LOINC for measurements, BNF chemical
substance codes for prescriptions.
"""

from __future__ import annotations

from dataclasses import dataclass

from farr.events.schema import BIRTH_CODE, DEATH_CODE


@dataclass(frozen=True)
class Recording:
    """How a disease reaches the record."""

    snomed: str
    icd10: str
    description: str
    recorded: float  # probability it is ever coded
    delay_years: float  # mean time from onset to the code (undiagnosed period)
    hospital: float = 0.0  # share diagnosed in an emergency admission (coded ICD-10 at onset)
    drug: str | None = None  # BNF code of the repeat prescription that follows the diagnosis


DIAGNOSES: dict[str, Recording] = {
    "type2_diabetes": Recording("44054006", "E11", "Type 2 diabetes mellitus", 0.92, 1.0,
                                drug="0601022B0"),
    "hypertension": Recording("38341003", "I10", "Hypertensive disorder", 0.70, 2.0, drug="0206020A0"),
    "chronic_kidney_disease": Recording("709044004", "N18", "Chronic kidney disease", 0.60, 1.0),
    "atrial_fibrillation": Recording("49436004", "I48", "Atrial fibrillation", 0.80, 0.5,
                                     drug="0208020Z0"),
    "heart_failure": Recording("84114007", "I50", "Heart failure", 0.85, 0.3, hospital=0.5,
                               drug="0204000H0"),
    "myocardial_infarction": Recording("22298006", "I21", "Myocardial infarction", 0.97, 0.0,
                                       hospital=1.0, drug="0209000A0"),
    "stroke": Recording("230690007", "I63", "Cerebrovascular accident", 0.95, 0.0, hospital=1.0,
                        drug="0209000C0"),
    "copd": Recording("13645005", "J44", "Chronic obstructive lung disease", 0.70, 2.0,
                      drug="0301020Q0"),
    "asthma": Recording("195967001", "J45", "Asthma", 0.85, 0.5, drug="0301011R0"),
    "depression": Recording("35489007", "F32", "Depressive disorder", 0.60, 0.3, drug="0403030Q0"),
    "dementia": Recording("52448006", "F03", "Dementia", 0.65, 1.5, drug="0411000D0"),
    "breast_cancer": Recording("254837009", "C50", "Malignant neoplasm of breast", 0.98, 0.15,
                               hospital=0.3),
    "lung_cancer": Recording("363358000", "C34", "Malignant tumour of lung", 0.98, 0.15, hospital=0.5),
    "colorectal_cancer": Recording("363406005", "C18", "Malignant tumour of colon", 0.98, 0.15,
                                   hospital=0.4),
    "prostate_cancer": Recording("399068003", "C61", "Malignant tumour of prostate", 0.98, 0.15,
                                 hospital=0.1),
    "covid19": Recording("840539006", "U07.1", "COVID-19", 0.45, 0.01, hospital=0.03),
    "obesity": Recording("414916001", "E66", "Obesity", 0.60, 1.0),
    "osteoarthritis": Recording("396275006", "M19", "Osteoarthritis", 0.60, 1.0),
    "anxiety": Recording("197480006", "F41", "Anxiety disorder", 0.50, 0.3),
    "hypercholesterolaemia": Recording("13644009", "E78.0", "Hypercholesterolaemia", 0.60, 1.5,
                                       drug="0212000B0"),
}

DRUGS = {
    "0601022B0": "Metformin hydrochloride",
    "0206020A0": "Amlodipine",
    "0208020Z0": "Apixaban",
    "0204000H0": "Bisoprolol fumarate",
    "0209000A0": "Aspirin (antiplatelet)",
    "0209000C0": "Clopidogrel",
    "0301020Q0": "Tiotropium",
    "0301011R0": "Salbutamol",
    "0403030Q0": "Sertraline hydrochloride",
    "0411000D0": "Donepezil hydrochloride",
    "0212000B0": "Atorvastatin",
}
PRESCRIPTION_INTERVAL_YEARS = 0.5  # six-monthly repeat issues

# Recurrent processes -> the primary-care / hospital code of each event.
ENCOUNTERS = {
    "gp_consultation": ("SNOMED/11429006", "Consultation"),
    "unplanned_admission": ("SNOMED/183452005", "Emergency hospital admission"),
    "ae_attendance": ("SNOMED/4525004", "Emergency department patient visit"),
}
# Primary diagnoses of emergency admissions not caused by a simulated disease onset, with weights.
ADMISSION_DIAGNOSES = {
    "J18.9": ("Pneumonia, unspecified", 12), "N39.0": ("Urinary tract infection", 9),
    "R07.4": ("Chest pain, unspecified", 8), "R10.4": ("Other abdominal pain", 8),
    "J22": ("Unspecified acute lower respiratory infection", 6), "S72.0": ("Fracture of neck of femur", 4),
    "K92.2": ("Gastrointestinal haemorrhage", 3), "L03.1": ("Cellulitis of limb", 4),
    "R55": ("Syncope and collapse", 5), "A09": ("Gastroenteritis and colitis", 5),
}

# Measurements: LOINC code, description.
MEASUREMENTS = {
    "hba1c": ("LOINC/4548-4", "Haemoglobin A1c (mmol/mol)"),
    "systolic_bp": ("LOINC/8480-6", "Systolic blood pressure (mmHg)"),
    "bmi": ("LOINC/39156-5", "Body mass index (kg/m2)"),
    "egfr": ("LOINC/33914-3", "eGFR (mL/min/1.73m2)"),
    "cholesterol": ("LOINC/2093-3", "Total cholesterol (mmol/L)"),
}

VACCINES = (
    ("SNOMED/1324681000000101", "Administration of first dose of SARS-CoV-2 vaccine"),
    ("SNOMED/1324691000000104", "Administration of second dose of SARS-CoV-2 vaccine"),
    ("SNOMED/1362591000000103", "Administration of booster dose of SARS-CoV-2 vaccine"),
)


def codebook() -> dict[str, str]:
    """Every code the simulator can write, with its description, in a fixed order."""
    book = {BIRTH_CODE: "Birth", DEATH_CODE: "Death"}
    for rec in DIAGNOSES.values():
        book[f"SNOMED/{rec.snomed}"] = rec.description
        book[f"ICD10/{rec.icd10}"] = rec.description
    book.update({f"BNF/{code}": name for code, name in DRUGS.items()})
    book.update(dict(ENCOUNTERS.values()))
    book.update({f"ICD10/{code}": name for code, (name, _) in ADMISSION_DIAGNOSES.items()})
    book.update(dict(MEASUREMENTS.values()))
    book.update(dict(VACCINES))
    return book
