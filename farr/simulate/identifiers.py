"""Direct identifiers and opt-outs of an identifiable extract (simulator `--identifiable`).

They are drawn from their own random stream, so the same seed gives the same people and
events with or without them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from farr.events.nhs_number import NO_CHECK_DIGIT, check_digit
from farr.simulate import england as eng
from farr.simulate.population import Population

_BLOCK = 100_000_000  # first nine digits 400 000 000-499 999 999, else 600 000 000-699 999 999
_DISTRICTS_PER_AREA = 20


def nhs_numbers(subject_ids: np.ndarray, seed: int) -> pa.Array:
    """Valid, distinct NHS numbers: a permutation of subject ids, keyed by the dataset seed,
    onto issued ranges. The same seed gives every chunk the same permutation.

    A prefix from the 4xx block without a check digit moves to the 6xx block, where the
    weighted sum differs by 20 (mod 11: 9), so it always has one: distinct ids, distinct numbers.
    """
    rng = np.random.default_rng([seed, 0x4E4853])
    multiplier = int(rng.integers(1, _BLOCK // 10)) * 10 + 3  # odd, not a multiple of 5: coprime
    shift = int(rng.integers(0, _BLOCK))
    prefix = 400_000_000 + (subject_ids.astype(np.int64) * multiplier + shift) % _BLOCK
    prefix = np.where(check_digit(prefix) == NO_CHECK_DIGIT, prefix + 200_000_000, prefix)
    return pa.array(np.char.mod("%010d", prefix * 10 + check_digit(prefix)).tolist(), pa.string())


def postcode_districts(region: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """A postcode district (outward code, e.g. "LS6") in the person's region."""
    names = [f"{area}{d}" for areas in eng.REGION_POSTCODE_AREAS for area in areas
             for d in range(1, _DISTRICTS_PER_AREA + 1)]
    per_region = len(eng.REGION_POSTCODE_AREAS[0]) * _DISTRICTS_PER_AREA
    index = region * per_region + rng.integers(0, per_region, len(region))
    return pa.array(names).take(pa.array(index))


def opt_outs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """National data opt-out and type 1 (GP) opt-out flags, overlapping as they do in England."""
    national = rng.random(n) < eng.NATIONAL_OPT_OUT
    type1 = rng.random(n) < np.where(national, eng.TYPE1_GIVEN_NATIONAL, eng.TYPE1_GIVEN_NO_NATIONAL)
    return national, type1


def identifier_columns(pop: Population, subject_ids: np.ndarray, birth_date: pa.Array, seed: int,
                       rng: np.random.Generator) -> dict[str, pa.Array]:
    return {
        "nhs_number": nhs_numbers(subject_ids, seed),
        "date_of_birth": birth_date,
        "postcode_district": postcode_districts(pop.region, rng),
    }
