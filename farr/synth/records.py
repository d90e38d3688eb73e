"""Sampled tokens back to records in the farr schema: codes, times, values and subject rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from farr.events.schema import BIRTH_CODE, EVENT_SCHEMA, SUBJECT_SCHEMA
from farr.model.tokenizer import DAYS_PER_YEAR, DEMOGRAPHICS, Tokenizer
from farr.synth.population import People
from farr.synth.sampler import Sampled

MICROSECONDS_PER_DAY = 86_400 * 10**6


class Decoder:
    """Token id -> code (id `birth` is MEDS_BIRTH), and the value range of a quantile-bin token ("LOINC/x//Q3")."""

    def __init__(self, tokenizer: Tokenizer):
        codes, self.birth = [], len(tokenizer)
        self.low, self.high = np.full(len(tokenizer), np.nan), np.full(len(tokenizer), np.nan)
        for i, token in enumerate(tokenizer.vocabulary):
            code, _, bin_name = token.partition("//Q")
            codes.append(code)
            edges = tokenizer.bin_edges.get(code)
            if bin_name.isdigit() and edges:
                self.low[i], self.high[i] = _bin_range(edges, int(bin_name))
        self.codes = pa.array([*codes, BIRTH_CODE], pa.string())

    def values(self, token: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A value uniform within each token's bin; NaN for tokens without one."""
        low, high = self.low[token], self.high[token]
        return low + rng.uniform(size=len(token)) * (high - low)


def _bin_range(edges: list[float], k: int) -> tuple[float, float]:
    """Bin k (1-based) covers [edges[k-2], edges[k-1]); the open outer bins reach one inner width beyond."""
    width = (edges[-1] - edges[0]) / max(len(edges) - 1, 1) or abs(edges[0]) * 0.1 or 1.0
    low = edges[k - 2] if k >= 2 else edges[0] - width
    high = edges[k - 1] if k - 1 < len(edges) else edges[-1] + width
    return low, high


def events_table(people: People, sampled: Sampled, ids: np.ndarray, decoder: Decoder,
                 rng: np.random.Generator) -> pa.Table:
    """A MEDS_BIRTH row for each person, then their sampled events, sorted by (subject, time)."""
    n = len(people)
    person = np.concatenate([np.arange(n), sampled.person])
    days = np.concatenate([people.birth_day.astype(np.float64),
                           people.birth_day[sampled.person] + sampled.age * DAYS_PER_YEAR])
    token = np.concatenate([np.full(n, decoder.birth), sampled.token])
    values = np.concatenate([np.full(n, np.nan), decoder.values(sampled.token, rng)])
    order = np.argsort(person, kind="stable")  # births first, then each person's events in age order
    time = np.round(days[order] * MICROSECONDS_PER_DAY).astype("int64").astype("datetime64[us]")
    return pa.table({"subject_id": ids[person[order]], "time": time, "code": decoder.codes.take(token[order]),
                     "numeric_value": pa.array(values[order], pa.float32(), from_pandas=True)},
                    schema=EVENT_SCHEMA)


def subjects_table(people: People, sampled: Sampled, ids: np.ndarray) -> pa.Table:
    end_age = np.where(sampled.died, sampled.death_age, people.end_age)
    reason = np.where(sampled.died, "death",
                      np.where(people.end_age >= people.window_end_age - 1 / 365, "extract_end", "moved_away"))
    columns = {c: [t.split("//", 1)[1] for t in people.demographics[:, DEMOGRAPHICS.index(c)]]
               for c in ("sex", "ethnicity", "imd_quintile", "region")}
    known = {c: [None if v == "unknown" else v for v in values] for c, values in columns.items()}
    birth = people.birth_day.astype("datetime64[D]")
    n = len(people)
    return pa.table({
        "subject_id": ids, "sex": known["sex"],
        "year_month_of_birth": np.datetime_as_string(birth, unit="M").tolist(),
        "ethnicity": known["ethnicity"],
        "imd_quintile": pa.array([None if v is None else int(v) for v in known["imd_quintile"]], pa.int8()),
        "region": known["region"], "practice_id": [None] * n, "site_id": [None] * n,
        "registration_start": _date(people.birth_day, people.start_age),
        "registration_end": _date(people.birth_day, end_age),
        "end_reason": reason.tolist(), "national_opt_out": np.zeros(n, bool), "type1_opt_out": np.zeros(n, bool),
    }, schema=SUBJECT_SCHEMA)


def _date(birth_day: np.ndarray, age: np.ndarray) -> pa.Array:
    return pa.array((birth_day + np.floor(age * DAYS_PER_YEAR)).astype("int64").astype("datetime64[D]"), pa.date32())
