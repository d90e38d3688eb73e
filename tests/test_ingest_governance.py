"""Governance rules of ingest: NHS number checks, keys and pseudonyms, masking, k-anonymity."""

import os

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farr.events import nhs_number
from farr.events.schema import REGIONS
from farr.governance.deidentify import (
    MASK,
    mask_record,
    nhs_number_problems,
    region_of_postcodes,
)
from farr.governance.kanonymity import assess, generalise, quasi_identifiers
from farr.governance.pseudonymise import (
    ProjectKey,
    PseudonymCollision,
    first_repeats,
    load_or_create_key,
)
from farr.simulate.england import REGION_POSTCODE_AREAS

digit_strings = st.text(alphabet="0123456789 -", min_size=8, max_size=14)


@settings(max_examples=500)
@given(values=st.lists(digit_strings | st.text(max_size=12), max_size=20))
def test_modulus_11_check_agrees_with_the_reference_validator(values):
    digits, reasons = nhs_number_problems(pl.Series(values, dtype=pl.String))
    for value, number, reason in zip(values, digits, reasons, strict=False):
        assert (number is not None) == nhs_number.is_valid(value)
        assert (reason is None) == nhs_number.is_valid(value)
        if reason is not None and len(value.strip()) >= 8:  # the reason never repeats the number
            assert value.strip() not in reason


@given(seed=st.integers(0, 2**32 - 1))
def test_every_generated_nhs_number_passes_and_a_wrong_check_digit_fails(seed):
    numbers = nhs_number.generate(np.random.default_rng(seed), 20).tolist()
    wrong = [n[:9] + str((int(n[9]) + 1) % 10) for n in numbers]
    digits, reasons = nhs_number_problems(pl.Series(numbers + wrong + [None]))
    assert digits == numbers + [None] * 21
    assert all(r.startswith("invalid NHS number: check digit is") for r in reasons[20:40]) and reasons[40] is None


def test_key_is_created_once_private_and_never_shown(tmp_path):
    key = load_or_create_key("p", tmp_path / "keys", data_dirs=[tmp_path / "out"])
    again = load_or_create_key("p", tmp_path / "keys", data_dirs=[tmp_path / "out"])
    assert key.secret == again.secret and len(key.secret) == 32
    assert os.stat(tmp_path / "keys" / "p.key").st_mode & 0o777 == 0o600
    assert key.secret.hex() not in repr(key) and key.key_id != key.secret.hex()[:16]
    other = load_or_create_key("q", tmp_path / "keys", data_dirs=[])
    assert key.pseudonyms(["nhs_number|9434765919"])[0] != other.pseudonyms(["nhs_number|9434765919"])[0]
    with pytest.raises(ValueError, match="inside the data directory"):
        load_or_create_key("p", tmp_path / "out" / "keys", data_dirs=[tmp_path / "out"])


@given(keys=st.lists(st.text(max_size=20), max_size=50))
def test_pseudonyms_are_positive_63_bit_and_deterministic(keys):
    project = ProjectKey("p", b"k" * 32)
    ids, _ = project.pseudonyms(keys)
    assert (ids >= 0).all() and ids.dtype == np.int64
    assert np.array_equal(ids, project.pseudonyms(keys)[0])


def test_repeats_are_found_and_collisions_fail_loudly():
    ids = np.array([5, 7, 5, 9, 7], np.int64)
    checks = np.array([1, 2, 1, 3, 2], np.uint64)
    assert first_repeats(ids, checks).tolist() == [False, False, True, False, True]
    with pytest.raises(PseudonymCollision, match="share subject_id 5"):
        first_repeats(ids, np.array([1, 2, 4, 3, 2], np.uint64))


@given(record=st.recursive(st.text(alphabet="0123456789 ab", max_size=16) | st.integers(),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(["name", "note", "identifier", "birthDate", "x"]), inner, max_size=3),
                           max_leaves=10))
def test_masking_leaves_no_long_digit_run_and_no_identifying_key(record):
    masked = mask_record(record)

    def walk(value):
        if isinstance(value, dict):
            for key, inner in value.items():
                assert key not in {"name", "identifier", "birthDate"} or inner in (MASK, None)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)
        elif isinstance(value, str):
            assert not any(len(run) >= 10 for run in value.replace(" ", "").replace("-", "").split(MASK)
                           if run.isdigit())

    walk(masked)


def test_postcode_regions_agree_with_the_simulators_areas():
    for region, areas in zip(REGIONS, REGION_POSTCODE_AREAS, strict=False):
        found = pl.select(region_of_postcodes(pl.lit(pl.Series([f"{a}1 2AB" for a in areas])))).to_series()
        assert set(found) == {region}
    assert pl.select(region_of_postcodes(pl.lit(pl.Series(["CF10 1AA", "EH1", "10001", None])))).to_series().null_count() == 4


def test_k_anonymity_counts_classes_and_generalisation_reaches_k():
    subjects = pl.DataFrame({
        "subject_id": range(9),
        "year_month_of_birth": ["1970-01", "1971-05", "1972-03", "1973-01", "1974-02", "1990-01", "1990-02",
                                "2001-01", "1970-09"],
        "sex": ["F", "F", "F", "F", "F", "M", "M", "F", "F"],
        "ethnicity": ["White"] * 5 + ["Asian", "Asian", "White", "White"],
        "region": ["London"] * 9,
        "imd_quintile": pl.Series([1, 1, 2, 2, 3, 3, 3, 5, 4], dtype=pl.Int8),
    })
    qi = quasi_identifiers(subjects, 5)
    risk = assess(qi, 2)
    assert risk.records == 9 and risk.smallest_class == 1 and risk.unique == 3  # subjects 4, 7, 8
    assert risk.below_k == [(1, 3, 3)] and not risk.met
    generalised, steps, withheld = generalise(qi, 2)
    assert assess(generalised, 2).met
    assert steps == [{"suppressed": "imd_quintile", "records": 3}, {"suppressed": "region", "records": 1},
                     {"suppressed": "ethnicity", "records": 1}, {"withheld": "records", "records": 1}]
    assert withheld.tolist() == [7]  # 4 and 8 differ only in IMD; 7 is alone whatever is blanked
