"""Sample whole future timelines after a landmark, with the model's sampler (`farr.model.sampling`).

Each history continues from its landmark until the horizon, death or `max_events`; "no event"
is padding and never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome, outcome_lookup
from farr.model.data import NO_EVENT_ID, landmark_histories
from farr.model.gpt import TimelineGPT
from farr.model.sampling import sample_events
from farr.model.tokenizer import Timelines

ROWS_PER_BATCH = 1024  # histories × draws sampled together: 4096 took 3× the memory (16 GB) and was no faster


@dataclass
class Futures:
    """Sampled events: for each, the landmark row, the draw, the token and the age."""

    row: np.ndarray
    draw: np.ndarray
    token: np.ndarray
    age: np.ndarray


def sample_futures(model: TimelineGPT, timelines: Timelines, mark: Landmark, years: float, draws: int, *,
                   stop_tokens: list[int], seed: int = 0, max_events: int = 512) -> Futures:
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(1, ROWS_PER_BATCH // draws)
    parts = []
    for lo in range(0, len(mark.people), per_batch):
        rows = np.arange(lo, min(lo + per_batch, len(mark.people)))
        tokens, ages, last = landmark_histories(timelines, mark.people[rows], mark.age[rows], model.cfg.block_size)
        until = torch.from_numpy(np.repeat(mark.age[rows] + years, draws).astype(np.float32))
        sampled = sample_events(model, tokens, ages, last, until, stop=stop_tokens, never=[NO_EVENT_ID],
                                generator=generator, max_events=max_events, copies=draws)
        parts.append((rows[sampled.row // draws], sampled.row % draws, sampled.token, sampled.age))
    return Futures(*(np.concatenate(x) for x in zip(*parts))) if parts else Futures(*(np.zeros(0),) * 4)


def death_tokens(outcomes: list[Outcome]) -> list[int]:
    return [i for o in outcomes if o.name == "death" for i in o.tokens.tolist()]


def sampled_first_occurrences(model: TimelineGPT, timelines: Timelines, outcomes: list[Outcome], mark: Landmark,
                              years: float, draws: int, seed: int) -> np.ndarray:
    """(people, draws, outcomes) years from the landmark to each outcome's first sampled event."""
    futures = sample_futures(model, timelines, mark, years, draws, stop_tokens=death_tokens(outcomes), seed=seed)
    first = np.full((len(mark.people), draws, len(outcomes)), np.inf)
    which = outcome_lookup(outcomes, model.cfg.vocab_size)[futures.token]
    hit = which >= 0
    np.minimum.at(first, (futures.row[hit], futures.draw[hit], which[hit]),
                  futures.age[hit] - mark.age[futures.row[hit]])
    return first
