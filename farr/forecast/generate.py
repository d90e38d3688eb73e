"""Sample whole future timelines from a trained model (competing exponential clocks).

From each history, the next event is drawn as the model defines it: the waiting time is
exponential with the total rate Λ, the event is token j with probability λ_j / Λ ("no event"
is padding, never sampled). Sampling goes on until the horizon, death or `max_events`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome, outcome_lookup
from farr.model.data import NO_EVENT_ID, PAD_ID, landmark_histories, window
from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Timelines

ROWS_PER_BATCH = 4096  # histories × draws sampled together


@dataclass
class Futures:
    """Sampled events: for each, the landmark row, the draw, the token and the age."""

    row: np.ndarray
    draw: np.ndarray
    token: np.ndarray
    age: np.ndarray


@torch.no_grad()
def sample_futures(model: TimelineGPT, timelines: Timelines, mark: Landmark, years: float, draws: int, *,
                   stop_tokens: list[int], seed: int = 0, max_events: int = 512) -> Futures:
    generator = torch.Generator().manual_seed(seed)
    per_batch = max(1, ROWS_PER_BATCH // draws)
    parts = []
    for lo in range(0, len(mark.people), per_batch):
        rows = np.arange(lo, min(lo + per_batch, len(mark.people)))
        tokens, ages, last = landmark_histories(timelines, mark.people[rows], mark.age[rows], model.cfg.block_size,
                                                width=model.cfg.block_size)
        repeat = lambda x: x.repeat_interleave(draws, dim=0)  # noqa: E731
        sample, token, age = _sample(model, repeat(tokens), repeat(ages), repeat(last), years, stop_tokens,
                                     generator, max_events)
        parts.append((rows[sample // draws], sample % draws, token, age))
    return Futures(*(np.concatenate(x) for x in zip(*parts))) if parts else Futures(*(np.zeros(0),) * 4)


def _sample(model, tokens, ages, last, years, stop_tokens, generator, max_events):
    """Sample every row forward; returns (row, token, age) of the sampled events."""
    state = _Context(model, tokens, ages, last)
    until = state.age_at_last() + years
    stop = torch.tensor(stop_tokens, dtype=torch.long)
    found: list[tuple[torch.Tensor, ...]] = []
    for _ in range(max_events):
        if not state.alive.any():
            break
        rate = state.rate.cpu()
        rate[:, NO_EVENT_ID] = 0.0
        wait = torch.empty(len(rate)).exponential_(generator=generator) / rate.sum(dim=1)
        token = torch.multinomial(rate, 1, generator=generator).squeeze(1)
        age = state.age_at_last() + wait
        happened = state.alive & (age <= until[state.rows])
        found.append((state.rows[happened], token[happened], age[happened]))
        state.alive = happened & ~torch.isin(token, stop)
        state.advance(token, age)
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(torch.cat(x).numpy() for x in zip(*found))


class _Context:
    """The sampled rows' token windows, the model's key/value cache and their next-event rates.

    Appending reuses the cache (one token of work per row). A full window is cut the way training
    cuts windows (the prefix, recalled earlier codes, recent events), leaving room for `SLIDE` new
    tokens, and is recomputed. Finished rows ride along until they are half the batch, then the batch is
    compacted."""

    SLIDE = 64  # at most a quarter of the window

    def __init__(self, model, tokens, ages, last):
        self.model, self.block = model, tokens.shape[1]
        self.rows, self.alive = torch.arange(len(last)), torch.ones(len(last), dtype=torch.bool)
        self.tokens, self.ages, self.last = tokens, ages, last
        self.cache, self.rate = self._prefill(tokens, ages, last)

    def _prefill(self, tokens, ages, last):
        cache: list = []
        return cache, self.model.log_rates(tokens, ages, cache, at=last).exp()

    def age_at_last(self) -> torch.Tensor:
        return self.ages[torch.arange(len(self.last)), self.last]

    def advance(self, token: torch.Tensor, age: torch.Tensor) -> None:
        """Append each row's `token` at `age` (finished rows' appends are never read)."""
        if self.alive.sum() < len(self.alive) / 2:
            self._compact()
            token, age = token[self.keep], age[self.keep]
        full = self.last == self.block - 1
        for row in full.nonzero().flatten():
            self._cut(row)
        self.last += 1
        index = torch.arange(len(self.last))
        self.tokens[index, self.last], self.ages[index, self.last] = token, age.to(self.ages.dtype)
        self.rate = self.model.step(token, self.ages[index, self.last], self.last, self.cache).exp()
        if full.any():
            cache, rate = self._prefill(self.tokens[full], self.ages[full], self.last[full])
            for (k, v), (new_k, new_v) in zip(self.cache, cache):
                k[full], v[full] = new_k, new_v
            self.rate[full] = rate

    def _cut(self, row: torch.Tensor) -> None:
        free = min(self.SLIDE, self.block // 4)
        keep = torch.from_numpy(window(self.tokens[row].numpy(), self.block, self.block - free)[0])
        for x, empty in ((self.tokens, PAD_ID), (self.ages, 0.0)):
            x[row] = torch.cat([x[row, keep], x.new_full((self.block - len(keep),), empty)])
        self.last[row] = len(keep) - 1

    def _compact(self) -> None:
        self.keep = self.alive
        self.rows, self.tokens, self.ages, self.last, self.alive = (
            x[self.keep] for x in (self.rows, self.tokens, self.ages, self.last, self.alive))
        self.cache = [(k[self.keep], v[self.keep]) for k, v in self.cache]


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
