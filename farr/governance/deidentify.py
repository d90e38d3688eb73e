"""Direct identifiers: checking NHS numbers, generalising dates of birth and postcodes, masking.

What ingest keeps of each direct identifier:

- NHS number: nothing but the keyed pseudonym (``pseudonymise``); it must pass Modulus 11;
- date of birth: its year and month;
- postcode: the NHS England region of its postcode area. An IMD quintile needs the LSOA of the
  full postcode (ONS postcode directory), which farr does not ship: it is kept only where the
  source gives the quintile itself;
- names, addresses, telecoms and other identifiers: never read; where a bad record is kept in
  quarantine, they are masked (``mask_record``).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import polars as pl

from farr.events import nhs_number
from farr.events.schema import REGIONS

MASK = "<masked>"

# Postcode areas of England by the NHS England region most of their residents live in.
# Welsh, Scottish and Northern Irish areas have no region (null).
_REGION_AREAS = {
    "North East and Yorkshire": "NE SR DH DL TS YO HU LS BD HX HD WF HG S DN CA",
    "North West": "M L PR BL CH WA OL BB WN SK CW FY LA",
    "Midlands": "B NG LE CV DE ST WV NN WS DY WR HR TF LN SY",
    "East of England": "CB NR IP CO PE LU CM SG AL SS",
    "London": "E N SE SW W NW EC WC BR CR EN HA IG RM SM TW UB KT",
    "South East": "OX RG BN GU MK SO PO ME CT TN RH SL HP DA",
    "South West": "BS EX PL BA TR GL TA BH DT SN SP TQ",
}
POSTCODE_AREA_REGION = {area: region for region, areas in _REGION_AREAS.items()
                        for area in areas.split()}
assert set(_REGION_AREAS) == set(REGIONS)

# Keys of a source record that hold direct identifiers (FHIR, OMOP and farr names).
IDENTIFYING_KEYS = frozenset({
    "identifier", "name", "telecom", "address", "photo", "contact", "text", "birthDate",
    "nhs_number", "date_of_birth", "postcode", "postcode_district", "postalCode",
    "person_source_value", "birth_datetime", "day_of_birth", "address_1", "address_2", "zip",
    "patient_key",
})
_LONG_DIGITS = re.compile(r"\d[\d -]{8,}\d")  # an NHS number, phone number or the like


def region_of_postcodes(postcodes: pl.Expr) -> pl.Expr:
    """The NHS England region of each postcode (or outward code), null outside England."""
    area = postcodes.str.strip_chars().str.to_uppercase().str.extract(r"^([A-Z]{1,2})[0-9]", 1)
    return area.replace_strict(POSTCODE_AREA_REGION, default=None, return_dtype=pl.String)


def nhs_number_problems(values: pl.Series) -> tuple[list[str | None], list[str | None]]:
    """(10-digit NHS number or None, why it is invalid or None) for each value; null is neither.

    Plain 10-digit values are checked at once by their Modulus 11 check digit; anything else
    (spaces, hyphens, junk) goes through ``nhs_number.validate``, whose rules are the contract.
    Reasons never contain the number.
    """
    values = values.cast(pl.String)
    plain = values.str.contains(r"^[0-9]{10}$").fill_null(False).to_numpy()
    numbers = np.where(plain, values.str.to_integer(strict=False).fill_null(0).to_numpy(), 0)
    valid = plain & (nhs_number.check_digit(numbers // 10) == numbers % 10)
    text = values.to_list()
    digits = [t if ok else None for t, ok in zip(text, valid, strict=False)]
    reasons: list[str | None] = [None] * len(text)
    for i in np.flatnonzero(~valid & values.is_not_null().to_numpy()):
        try:
            digits[i] = nhs_number.validate(text[i])
        except ValueError as error:  # the message starts with the number itself: drop it
            reasons[i] = "invalid NHS number: " + str(error).rsplit(": ", 1)[-1]
    return digits, reasons


def mask_text(text: str) -> str:
    """A record that could not be parsed, with its content hidden but its shape kept."""
    return re.sub(r"[0-9]", "9", re.sub(r"[^\W\d_]", "x", text))


def mask_record(record: Any) -> Any:
    """``record`` (parsed JSON or a row) with direct identifiers replaced by ``MASK``."""
    if isinstance(record, dict):
        return {key: MASK if key in IDENTIFYING_KEYS and value is not None else mask_record(value)
                for key, value in record.items()}
    if isinstance(record, list):
        return [mask_record(value) for value in record]
    if isinstance(record, str):
        return _LONG_DIGITS.sub(MASK, record)
    return record
