"""Sampling timelines forward from a TimelineGPT (competing exponential clocks).

From each row's context the next event is drawn as the model defines it: the waiting time is
exponential with the total rate Λ = Σ λ_j, the event is token j with probability λ_j / Λ. A row
goes on until its age limit, a stop token (death) or `max_events`. Forecasting continues people's
histories from a landmark; synthesis starts from demographic tokens alone.

Each step appends one token a row through the model's key/value cache, which grows with the
longest row (attention costs what is used, not the whole block). A full window is cut the way
training cuts windows (prefix, recalled earlier codes, recent events) and recomputed. Finished
rows ride along until they are half the batch, then the batch is compacted. Sampling runs where
the model is (CPU or GPU); `generator` must be on the same device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from farr.model.data import PAD_ID, window
from farr.model.gpt import TimelineGPT

FREE_AFTER_CUT = 64  # new tokens a cut window makes room for (at most a quarter of the block)


@dataclass
class Sampled:
    """Sampled events: each one's row (of the contexts given), token and age, in sampling order."""

    row: np.ndarray
    token: np.ndarray
    age: np.ndarray
    exposed: np.ndarray | None = None  # (rows, groups, ends) see `sample_events`'s `watch`


@torch.no_grad()
def sample_events(model: TimelineGPT, tokens: torch.Tensor, ages: torch.Tensor, born: torch.Tensor,
                  last: torch.Tensor, until: torch.Tensor, *, stop: list[int], never: list[int],
                  generator: torch.Generator, max_events: int, copies: int = 1,
                  watch: tuple[torch.Tensor, torch.Tensor] | None = None) -> Sampled:
    """Sample forward from left-aligned contexts `tokens`, `ages` (n, w) of people born at `born`
    (n,) years since 1970, whose last real token is at `last` (n,), until each row's age `until`
    (n × copies,), a `stop` token or `max_events` events. Each context is sampled `copies` times
    (rows i·copies to i·copies + copies − 1), and encoded once. Tokens in `never` are not sampled.

    `watch` = (groups (V, G) 0/1, ends (n × copies, E) ages): also returns each row's `exposed`
    (rows, G, E), the rate of each group's tokens integrated along the sampled path up to each
    end, stopped at the group's first sampled event. Its mean over paths is the probability of
    that first event by the end (the compensator of a counting process has the same expectation
    as the count), with far less noise than the 0/1 of whether it was sampled."""
    device = model.mask.device
    state = _Context(model, tokens.to(device), ages.to(device), born.to(device), last.to(device), copies)
    stop_tokens, never_tokens, until = (torch.tensor(stop, dtype=torch.long, device=device),
                                        torch.tensor(never, dtype=torch.long, device=device), until.to(device))
    exposure = _Exposure(*(x.to(device) for x in watch)) if watch is not None else None
    found: list[tuple[torch.Tensor, ...]] = []
    for _ in range(max_events):
        if not state.alive.any():
            break
        now = state.age_at_last()
        token, age = _draw(state.rate, never_tokens, now, generator)
        happened = state.alive & (age <= until[state.rows])
        if exposure is not None:
            exposure.add(state.rows[state.alive], state.rate[state.alive], now[state.alive], age[state.alive])
            exposure.seen(state.rows[happened], token[happened])
        found.append((state.rows[happened], token[happened], age[happened]))
        state.alive = happened & ~torch.isin(token, stop_tokens)
        state.advance(token, age)
    exposed = exposure.total.cpu().numpy() if exposure is not None else None
    if not found:
        return Sampled(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), exposed)
    return Sampled(*(torch.cat(x).cpu().numpy() for x in zip(*found)), exposed)


class _Exposure:
    """Rates of token groups integrated along sampled paths, each group until its first event."""

    def __init__(self, groups: torch.Tensor, ends: torch.Tensor):
        self.groups, self.ends = groups.float(), ends
        self.total = torch.zeros(len(ends), groups.shape[1], ends.shape[1], device=ends.device)
        self.open = torch.ones(len(ends), groups.shape[1], device=ends.device)

    def add(self, rows: torch.Tensor, rate: torch.Tensor, now: torch.Tensor, next_age: torch.Tensor) -> None:
        """The wait from `now` to `next_age` of `rows`, at their current `rate` (rows, V)."""
        waited = (torch.minimum(next_age[:, None], self.ends[rows]) - now[:, None]).clamp(min=0.0)
        self.total[rows] += ((rate.float() @ self.groups) * self.open[rows])[:, :, None] * waited[:, None, :]

    def seen(self, rows: torch.Tensor, token: torch.Tensor) -> None:
        self.open[rows] *= 1.0 - self.groups[token]


def _draw(rate: torch.Tensor, never: torch.Tensor, now: torch.Tensor, generator: torch.Generator):
    """The next event of every row: token j with probability λ_j / Λ, after an Exp(Λ) wait."""
    rate = rate.clone()
    rate[:, never] = 0.0
    wait = torch.empty(len(rate), device=rate.device).exponential_(generator=generator) / rate.sum(dim=1)
    return draw_tokens(rate, torch.rand(len(rate), generator=generator, device=rate.device)), now + wait


def draw_tokens(rate: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Token j with probability rate_j / Σ rate (rows), from uniforms u in [0, 1); never a zero-rate token."""
    cumulative = rate.cumsum(dim=1)
    # right: the first token whose cumulative rate exceeds u·total, so u = 0 cannot land on a zero rate
    token = torch.searchsorted(cumulative, u[:, None] * cumulative[:, -1:], right=True).squeeze(1)
    token = token.clamp(max=rate.shape[1] - 1)
    rounded = rate.gather(1, token[:, None]).squeeze(1) == 0  # u·total rounded up to the total
    token[rounded] = rate[rounded].argmax(dim=1)
    return token


class _Context:
    """The rows' token windows (each `block` wide), the model's key/value cache and next-event rates."""

    def __init__(self, model: TimelineGPT, tokens: torch.Tensor, ages: torch.Tensor, born: torch.Tensor,
                 last: torch.Tensor, copies: int = 1):
        n, self.model, self.block, self.device = len(last), model, model.cfg.block_size, last.device
        self.tokens = torch.full((n, self.block), PAD_ID, dtype=torch.long, device=self.device)
        self.ages = torch.zeros((n, self.block), device=self.device)
        width = min(tokens.shape[1], self.block)
        self.tokens[:, :width], self.ages[:, :width] = tokens[:, :width], ages[:, :width]
        self.rows, self.born = torch.arange(n, device=self.device), born.float()
        self.alive, self.last = torch.ones(n, dtype=torch.bool, device=self.device), last.clone()
        self.cache = [(torch.zeros(0), torch.zeros(0))] * model.cfg.n_layer
        self.rate = torch.empty(n, model.cfg.vocab_size, device=self.device)
        self._prefill(torch.ones(n, dtype=torch.bool, device=self.device))
        if copies > 1:  # each context encoded once, then its rows copied
            self._take(torch.arange(n, device=self.device).repeat_interleave(copies))
            self.rows = torch.arange(n * copies, device=self.device)

    def age_at_last(self) -> torch.Tensor:
        return self.ages[self._index(), self.last]

    def _index(self) -> torch.Tensor:
        return torch.arange(len(self.last), device=self.device)

    def advance(self, token: torch.Tensor, age: torch.Tensor) -> None:
        """Append each row's `token` at `age` (finished rows' appends are never read)."""
        if self.alive.sum() < len(self.alive) / 2:
            keep = self.alive
            self._take(keep)
            token, age = token[keep], age[keep]
            if not keep.any():
                return
        full = self.last == self.block - 1
        for row in full.nonzero().flatten():
            self._cut(row)
        self.last += 1
        self._fit_cache(int(self.last.max()) + 1)
        index = self._index()
        self.tokens[index, self.last], self.ages[index, self.last] = token, age.to(self.ages.dtype)
        self.rate = self.model.step(token, self.ages[index, self.last], self.born, self.last, self.cache).exp()
        if full.any():
            self._prefill(full)

    def _prefill(self, rows: torch.Tensor) -> None:
        """Recompute the cache and rates of `rows` (bool) from their windows."""
        width = int(self.last[rows].max()) + 1
        self._fit_cache(width)
        fresh: list = []
        log_rate = self.model.log_rates(self.tokens[rows, :width], self.ages[rows, :width], self.born[rows], fresh,
                                        at=self.last[rows])
        for (k, v), (new_k, new_v) in zip(self.cache, fresh):
            k[rows, :, :width], v[rows, :, :width] = new_k, new_v
        self.rate[rows] = log_rate.exp()

    def _fit_cache(self, width: int) -> None:
        """Widen the cache (doubling, up to the block) so that it holds `width` positions."""
        held = self.cache[0][0].shape[2] if self.cache[0][0].dim() == 4 else 0
        if width <= held:
            return
        c = self.model.cfg
        grown = min(self.block, max(width, 2 * held, 16))
        shape = (len(self.last), c.n_head, grown - held, c.n_embd // c.n_head)
        more = lambda: torch.zeros(shape, device=self.device, dtype=self.model.block_dtype)  # noqa: E731
        self.cache = [tuple(torch.cat([x, more()], dim=2) if held else more() for x in kv) for kv in self.cache]

    def _cut(self, row: torch.Tensor) -> None:
        free = min(FREE_AFTER_CUT, self.block // 4)
        keep = torch.from_numpy(window(self.tokens[row].cpu().numpy(), self.block, self.block - free)[0]).to(self.device)
        for x, empty in ((self.tokens, PAD_ID), (self.ages, 0.0)):
            x[row] = torch.cat([x[row, keep], x.new_full((self.block - len(keep),), empty)])
        self.last[row] = len(keep) - 1

    def _take(self, index: torch.Tensor) -> None:
        """Keep the rows `index` selects (a mask, or positions that may repeat)."""
        self.rows, self.tokens, self.ages, self.born, self.last, self.alive, self.rate = (
            x[index] for x in (self.rows, self.tokens, self.ages, self.born, self.last, self.alive, self.rate))
        self.cache = [(k[index], v[index]) for k, v in self.cache]
