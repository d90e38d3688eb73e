"""Whole registered lives from a TimelineGPT, with the model's sampler (`farr.model.sampling`).

Each person's context is their demographic tokens and a "no event" query at their registration
start; from there events are drawn until registration ends or death. A synthetic record never
holds the "no event" query or UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farr.events.schema import DEATH_CODE
from farr.model.data import NO_EVENT_ID, PREFIX, born
from farr.model.gpt import TimelineGPT
from farr.model.sampling import sample_events
from farr.model.tokenizer import UNKNOWN

MAX_EVENTS = 4096  # per person: a runaway rate cannot loop for ever


@dataclass
class Sampled:
    """Sampled events of a batch of people, sorted by person then age."""

    person: np.ndarray  # row of the batch
    token: np.ndarray
    age: np.ndarray
    died: np.ndarray  # (n,) bool
    death_age: np.ndarray  # (n,) age at death (nan: alive at registration end)


def never_sampled(vocabulary: list[str]) -> list[int]:
    """Tokens a synthetic record may not hold: the "no event" query and UNKNOWN."""
    return [NO_EVENT_ID, vocabulary.index(UNKNOWN)]


def sample_lives(model: TimelineGPT, vocabulary: list[str], prefix: np.ndarray, birth_day: np.ndarray,
                 start_age: np.ndarray, end_age: np.ndarray, generator: torch.Generator) -> Sampled:
    """Sample each person's events from `start_age` to `end_age` (or death); `birth_day`: days
    since 1970-01-01, for the model's calendar time."""
    n = len(start_age)
    tokens = torch.cat([torch.as_tensor(prefix, dtype=torch.long), torch.full((n, 1), NO_EVENT_ID)], dim=1)
    ages = torch.zeros(n, PREFIX + 1)
    ages[:, PREFIX] = torch.as_tensor(start_age, dtype=torch.float32)
    death = [vocabulary.index(DEATH_CODE)] if DEATH_CODE in vocabulary else []
    until = torch.as_tensor(end_age, dtype=torch.float32)
    sampled = sample_events(model, tokens, ages, born(birth_day), torch.full((n,), PREFIX), until, stop=death,
                            never=never_sampled(vocabulary), generator=generator, max_events=MAX_EVENTS)
    order = np.argsort(sampled.row, kind="stable")  # steps are in age order within a person
    person, token, age = sampled.row[order], sampled.token[order], sampled.age[order].astype(np.float64)
    died, death_age = np.zeros(n, bool), np.full(n, np.nan)
    dying = np.isin(token, death)
    died[person[dying]], death_age[person[dying]] = True, age[dying]
    return Sampled(person, token, age, died, death_age)
