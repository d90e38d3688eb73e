import nhs_number as reference
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farr.events.nhs_number import NO_CHECK_DIGIT, check_digit, generate, is_valid, validate

# Scottish CHI numbers, where the reference package also checks that digits 1-6 are a date.
CHI_END = 3_112_999_999


@pytest.mark.parametrize("text", ["943 476 5919", "9434765919", "943-476-5919", " 9434765919\n"])
def test_valid_formats(text):
    assert is_valid(text) and validate(text) == "9434765919"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("943476591", "has 10 digits, not 9"),
        ("94347659190", "has 10 digits, not 11"),
        ("943 476-5919", "grouped 3-3-4"),
        ("9434 765 919", "grouped 3-3-4"),
        ("943476591X", "only digits"),
        ("９４３４７６５９１９", "only digits"),  # full-width digits are not ASCII
        ("9434765918", "check digit is 8, expected 9"),
        ("999 123 4560", "no check digit"),
    ],
)
def test_invalid_numbers_say_why(text, reason):
    assert not is_valid(text)
    with pytest.raises(ValueError, match=reason):
        validate(text)


def test_check_digit_of_known_numbers():
    assert check_digit(np.array([943476591, 999123456, 0])).tolist() == [9, NO_CHECK_DIGIT, 0]


def test_check_digit_rejects_non_nine_digit_input():
    with pytest.raises(ValueError, match="from 0 to 999 999 999"):
        check_digit(np.array([1_000_000_000]))


@given(st.lists(st.integers(0, 999_999_999), min_size=1, max_size=50))
def test_check_digit_matches_reference(first_nine):
    expected = [reference.calculate_checksum(f"{n:09d}") for n in first_nine]
    assert check_digit(np.array(first_nine)).tolist() == expected


@given(st.integers(CHI_END + 1, 9_999_999_999), st.sampled_from(["{}{}{}", "{} {} {}", "{}-{}-{}"]))
def test_is_valid_matches_reference_on_numbers(number, layout):
    digits = f"{number:010d}"
    text = layout.format(digits[:3], digits[3:6], digits[6:])
    assert is_valid(text) == reference.is_valid(text)


@given(st.text(alphabet="0123456789 -\t", max_size=14))
def test_is_valid_matches_reference_on_text(text):
    if is_valid(text) and int(validate(text)) <= CHI_END:
        return  # the reference also wants a date here
    assert is_valid(text) == reference.is_valid(text)


def test_generate_is_valid_unique_issued_and_deterministic():
    numbers = generate(np.random.default_rng(1), 5000)
    assert len(set(numbers)) == 5000
    assert all(reference.is_valid(n) for n in numbers)
    assert all(n[0] in "467" for n in numbers)
    assert np.array_equal(numbers, generate(np.random.default_rng(1), 5000))


def test_generate_may_repeat_when_not_unique():
    numbers = generate(np.random.default_rng(2), 100, unique=False)
    assert len(numbers) == 100 and all(is_valid(n) for n in numbers)
