"""Landmarks: who is at risk at an age (or date), what they had before it, and what happened after.

Everything here reads token timelines, so the model, the baselines and the evaluation see
exactly the same histories and outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date

import numpy as np

from farr.model.tokenizer import DAYS_PER_YEAR, Timelines, Tokenizer

MAX_UNKNOWN_SHARE = 0.5  # above this, the dataset does not speak the model's vocabulary


@dataclass(frozen=True)
class Outcome:
    name: str
    tokens: np.ndarray  # vocabulary ids whose record marks the outcome
    recurrent: bool  # every record counts (admissions); otherwise only a first record (onset)


def outcomes_for(tokenizer: Tokenizer, definitions: dict[str, dict]) -> list[Outcome]:
    """The dataset's outcome definitions in the model's vocabulary (outcomes it never saw are left out)."""
    found = [Outcome(name, np.array(tokenizer.ids_of(d["codes"]), dtype=np.int64), bool(d["recurrent"]))
             for name, d in sorted(definitions.items())]
    return [o for o in found if o.tokens.size]


@dataclass
class Landmark:
    """People registered and alive at their landmark age, with their outcome histories."""

    people: np.ndarray  # rows of the timelines
    age: np.ndarray  # landmark age of each person
    had_before: np.ndarray  # (n, outcomes) bool: a record before the landmark
    first_after: np.ndarray  # (n, outcomes) years from the landmark to the next record (inf: none)
    follow_up: np.ndarray  # (n,) years from the landmark to the end of registration
    died_after: np.ndarray  # (n,) years from the landmark to a recorded death (inf: none)

    def subset(self, rows: np.ndarray) -> Landmark:
        return Landmark(*(getattr(self, f.name)[rows] for f in fields(self)))


def at_age(timelines: Timelines, age: float | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(age, dtype=float), (len(timelines),)).astype(float)


def at_date(timelines: Timelines, day: int) -> np.ndarray:
    """Each person's age on a date (days since 1970-01-01)."""
    return (day - timelines.birth_day) / DAYS_PER_YEAR


def landmark_ages(timelines: Timelines, at: str) -> np.ndarray:
    """Each person's landmark age from "--at": an age in years ("60") or a date ("2024-01-01")."""
    try:
        return at_age(timelines, float(at))
    except ValueError:
        pass
    try:
        day = (date.fromisoformat(at) - date(1970, 1, 1)).days
    except ValueError:
        raise ValueError(f"--at {at!r} is neither an age in years nor a date (YYYY-MM-DD)") from None
    return at_date(timelines, day)


def timelines_for(tokenizer, dataset) -> Timelines:
    """The dataset in the model's vocabulary; refuses a dataset that mostly does not speak it."""
    timelines = tokenizer.transform(dataset)
    unknown = sum(timelines.unknown.values())
    events = len(timelines.tokens) - 4 * len(timelines)
    if events and unknown / events > MAX_UNKNOWN_SHARE:
        top = ", ".join(code for code, _ in timelines.unknown.most_common(3))
        raise ValueError(f"{dataset}: {unknown / events:.0%} of events have codes the model's vocabulary "
                         f"does not know (e.g. {top}); was the model trained on this kind of data?")
    return timelines


def landmark_day(timelines: Timelines, mark: Landmark) -> np.ndarray:
    """The date of each person's landmark, in (fractional) days since 1970-01-01."""
    return timelines.birth_day[mark.people] + mark.age * DAYS_PER_YEAR


def registered(timelines: Timelines, age: np.ndarray, people: np.ndarray | None = None) -> np.ndarray:
    """Those of `people` (default: everyone), in order, registered at `age[person]` and not yet dead."""
    people = np.arange(len(timelines)) if people is None else people
    a = age[people]
    return people[(timelines.start_age[people] <= a) & (a < timelines.end_age[people])]


def landmark(timelines: Timelines, age: np.ndarray, outcomes: list[Outcome],
             people: np.ndarray | None = None) -> Landmark:
    """Those of `people` (default: everyone) registered at `age[person]` and not yet dead."""
    t = timelines
    people = registered(t, age, people)
    a = age[people]
    owner, index = t.rows_of(people)
    tokens, ages = t.tokens[index], t.ages[index].astype(float)
    which = outcome_lookup(outcomes, int(t.tokens.max(initial=0)) + 1)[tokens]
    owner, ages, which = owner[which >= 0], ages[which >= 0], which[which >= 0]
    had = np.zeros((len(people), len(outcomes)), bool)
    before = ages < a[owner]
    had[owner[before], which[before]] = True
    first_after = np.full((len(people), len(outcomes)), np.inf)
    np.minimum.at(first_after, (owner[~before], which[~before]), ages[~before] - a[owner[~before]])
    names = [o.name for o in outcomes]
    death = first_after[:, names.index("death")] if "death" in names else np.full(len(people), np.inf)
    return Landmark(people, a, had, first_after, t.end_age[people] - a, death)


def outcome_lookup(outcomes: list[Outcome], vocabulary_size: int) -> np.ndarray:
    """Outcome index of each token id (-1: none)."""
    lookup = np.full(max(vocabulary_size, 1 + max((int(o.tokens.max()) for o in outcomes), default=0)), -1)
    for j, outcome in enumerate(outcomes):
        lookup[outcome.tokens] = j
    return lookup


def outcome_columns(outcomes: list[Outcome], vocabulary_size: int) -> np.ndarray:
    """(vocabulary_size, outcomes) 0/1: which tokens mark each outcome (rates @ it: each outcome's rate)."""
    columns = np.zeros((vocabulary_size, len(outcomes)), np.float32)
    for j, outcome in enumerate(outcomes):
        columns[outcome.tokens, j] = 1.0
    return columns


def labels(mark: Landmark, outcomes: list[Outcome], horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """(event within horizon, usable) per person and outcome.

    Usable: at risk of a new onset (or any event, if recurrent), and followed to the horizon or
    to death (a competing event: no outcome after it). Whether follow-up was complete must not
    depend on the outcome itself: keeping people censored early only when they had the event
    would inflate the observed risk."""
    recurrent = np.array([o.recurrent for o in outcomes])
    event = mark.first_after <= horizon
    return event, (recurrent | ~mark.had_before) & followed(mark, horizon)[:, None]


def followed(mark: Landmark, horizons: float | np.ndarray) -> np.ndarray:
    """(n,) or, for an array of horizons, (n, horizons): whether each person's record reaches the
    horizon, or their death comes first (no event can follow it)."""
    return np.greater_equal.outer(mark.follow_up, horizons) | np.less_equal.outer(mark.died_after, horizons)
