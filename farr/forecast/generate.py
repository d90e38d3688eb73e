"""Sample whole future timelines after a landmark, with the model's sampler (`farr.model.sampling`).

Each history continues from its landmark until the horizon, death or `max_events`; "no event"
is padding and never sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome, outcome_columns
from farr.model.data import NO_EVENT_ID, batches_by_length, landmark_histories
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
    exposed: np.ndarray | None = None  # (people, draws, outcomes, horizons), where asked for


def sample_futures(model: TimelineGPT, timelines: Timelines, mark: Landmark, years: float, draws: int, *,
                   stop_tokens: list[int], seed: int = 0, max_events: int = 512,
                   watch: tuple[list[Outcome], list[float]] | None = None) -> Futures:
    """`draws` futures of each person, `years` long. With `watch` = (outcomes, horizons), also
    each future's rate of each outcome integrated to each horizon (`sampling.sample_events`)."""
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(1, ROWS_PER_BATCH // draws)
    groups = None if watch is None else torch.from_numpy(outcome_columns(watch[0], model.cfg.vocab_size))
    exposed = None if watch is None else np.zeros((len(mark.people), draws, len(watch[0]), len(watch[1])), np.float32)
    parts = []
    # Unsorted, one long history made every row of its batch attend over the whole block: twice the time.
    for rows in batches_by_length(timelines, mark.people, mark.age, model.cfg.block_size, per_batch):
        tokens, ages, birth, last = landmark_histories(timelines, mark.people[rows], mark.age[rows],
                                                       model.cfg.block_size)
        start = np.repeat(mark.age[rows], draws).astype(np.float32)
        ends = None if watch is None else torch.from_numpy(start[:, None] + np.asarray(watch[1], np.float32))
        sampled = sample_events(model, tokens, ages, birth, last, torch.from_numpy(start + np.float32(years)),
                                stop=stop_tokens, never=[NO_EVENT_ID], generator=generator, max_events=max_events,
                                copies=draws, watch=None if watch is None else (groups, ends))
        parts.append((rows[sampled.row // draws], sampled.row % draws, sampled.token, sampled.age))
        if exposed is not None:
            exposed[rows] = sampled.exposed.reshape(len(rows), *exposed.shape[1:])
    events = [np.concatenate(x) for x in zip(*parts)] if parts else [np.zeros(0)] * 4
    return Futures(*events, exposed)


def death_tokens(outcomes: list[Outcome]) -> list[int]:
    return [i for o in outcomes if o.name == "death" for i in o.tokens.tolist()]


def expected_first_occurrences(model: TimelineGPT, timelines: Timelines, outcomes: list[Outcome], mark: Landmark,
                               horizons: list[float], draws: int, seed: int) -> np.ndarray:
    """(people, outcomes, horizons) probability of each outcome's first event within each horizon,
    as the mean over `draws` sampled futures of its rate integrated along them."""
    return first_occurrence_risk(sample_futures(model, timelines, mark, max(horizons), draws,
                                                stop_tokens=death_tokens(outcomes), seed=seed,
                                                watch=(outcomes, list(horizons))))


def first_occurrence_risk(futures: Futures) -> np.ndarray:
    """(people, outcomes, horizons) from futures sampled with `watch`: the mean over each person's
    draws of each outcome's rate integrated to its first event, capped at 1 (a probability,
    though one path's integral can pass 1)."""
    return np.minimum(futures.exposed.mean(axis=1), 1.0)
