"""NHS numbers: the Modulus 11 check digit (NHS Data Dictionary), validation and generation.

The check digit of the first nine digits d1..d9 is 11 - (10*d1 + 9*d2 + ... + 2*d9) mod 11,
with 11 read as 0; where it would be 10 the nine digits have no valid NHS number.
"""

from __future__ import annotations

import re

import numpy as np

_WEIGHTS = np.arange(10, 1, -1)  # 10..2, for digits 1..9
_PLACES = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # place value of digits 1..9
NO_CHECK_DIGIT = 10

# 10 digits, or grouped 3-3-4 by spaces or by hyphens (not mixed).
_FORMAT = re.compile(r"[0-9]{10}|[0-9]{3}([ -])[0-9]{3}\1[0-9]{4}")

# Generated numbers start with first nine digits in the ranges England, Wales and the Isle of
# Man issue: 400 000 000-499 999 999 and 600 000 000-799 999 999. Numbers from 9 (test/synthetic
# patients) and the Scottish, Northern Irish and reserved ranges are never generated.
_ISSUED_RANGES = ((400_000_000, 100_000_000), (600_000_000, 200_000_000))  # (start, size)
_ISSUED_SIZE = sum(size for _, size in _ISSUED_RANGES)
# About 10 in 11 first-nine-digit prefixes have a check digit.
_MAX_UNIQUE = _ISSUED_SIZE * 10 // 11


def check_digit(first_nine: np.ndarray) -> np.ndarray:
    """The check digit of each 9-digit number, or NO_CHECK_DIGIT (10) where there is none."""
    first_nine = np.asarray(first_nine, dtype=np.int64)
    if np.any((first_nine < 0) | (first_nine > 999_999_999)):
        raise ValueError("first_nine must hold numbers from 0 to 999 999 999")
    digits = (first_nine[..., None] // _PLACES) % 10
    return (11 - (digits @ _WEIGHTS) % 11) % 11


def validate(s: str) -> str:
    """The 10 digits of NHS number ``s``, or ValueError saying why it is not one.

    Accepts '9434765919', '943 476 5919' and '943-476-5919', with surrounding white space.
    """
    text = s.strip()
    if _FORMAT.fullmatch(text) is None:
        digits = re.sub("[ -]", "", text)
        if not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"{s!r}: an NHS number has only digits, spaces and hyphens")
        if len(digits) != 10:
            raise ValueError(f"{s!r}: an NHS number has 10 digits, not {len(digits)}")
        raise ValueError(f"{s!r}: an NHS number is grouped 3-3-4 by spaces or by hyphens")
    digits = re.sub("[ -]", "", text)
    expected = int(check_digit(np.int64(digits[:9])))
    if expected == NO_CHECK_DIGIT:
        raise ValueError(f"{s!r}: not an NHS number, its first nine digits have no check digit")
    if int(digits[9]) != expected:
        raise ValueError(f"{s!r}: check digit is {digits[9]}, expected {expected}")
    return digits


def is_valid(s: str) -> bool:
    """Whether ``s`` is an NHS number with a correct check digit (formats as ``validate``)."""
    try:
        validate(s)
    except ValueError:
        return False
    return True


def _draw_first_nine(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` first-nine-digit prefixes, uniform over the issued ranges."""
    offsets = rng.integers(0, _ISSUED_SIZE, size=n, dtype=np.int64)
    (first_start, first_size), (second_start, _) = _ISSUED_RANGES
    in_first = offsets < first_size
    return np.where(in_first, first_start + offsets, second_start + offsets - first_size)


def _first_occurrences(values: np.ndarray) -> np.ndarray:
    _, index = np.unique(values, return_index=True)
    return values[np.sort(index)]


def generate(rng: np.random.Generator, n: int, *, unique: bool = True) -> np.ndarray:
    """``n`` valid NHS numbers as 10-digit strings, drawn from the issued ranges above.

    Prefixes with no check digit (and repeats, if ``unique``) are drawn again, so the result
    depends only on the state of ``rng``.
    """
    if unique and n > _MAX_UNIQUE:
        raise ValueError(f"cannot draw {n} unique NHS numbers: the range holds about {_MAX_UNIQUE}")
    first_nine = np.empty(0, dtype=np.int64)
    while first_nine.size < n:
        # Draw a little more than is missing: about 1 in 11 is dropped.
        draw = _draw_first_nine(rng, (n - first_nine.size) * 12 // 10 + 16)
        first_nine = np.concatenate([first_nine, draw[check_digit(draw) != NO_CHECK_DIGIT]])
        if unique:
            first_nine = _first_occurrences(first_nine)
    first_nine = first_nine[:n]
    return (first_nine * 10 + check_digit(first_nine)).astype("U10")
