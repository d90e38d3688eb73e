"""Batches of timelines for training, and histories cut at a landmark for prediction.

Training sequences get "no event" tokens at random ages while the person is registered (as in
Delphi), so the model learns rates through quiet years and can be asked for predictions at any
age: a landmark query is a "no event" token placed at that age.

Every sequence also gets a "no event" token where registration starts. Codes dated before it
(history recorded on joining a practice) are untimed, so only their order is learned. Without
the mark the model could not tell the last of them from the others, and the rates read there,
which carried the time from registration to the first registered event, came out about eight
times too high for new diagnoses. Synthesis starts from the same token at the registration age.

A history longer than the context window is not simply cut: after the demographic prefix the
window recalls the first occurrence of each earlier code (a diagnosis made twenty years ago still
counts), then holds the most recent events. Training and prediction build windows the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from farr.model.gpt import IGNORE, MIN_YEARS
from farr.model.tokenizer import DAYS_PER_YEAR, DEMOGRAPHICS, NO_EVENT, PAD, SPECIAL, Timelines

PREFIX = len(DEMOGRAPHICS)  # every timeline starts with its demographic tokens
PAD_ID, NO_EVENT_ID = SPECIAL.index(PAD), SPECIAL.index(NO_EVENT)
RECALL_SHARE = 4  # up to a quarter of a full window recalls codes from before it
# Landmark batches are padded to a multiple of this width. oneDNN builds and keeps kernels per
# shape: a width per token count grew a forecast's memory by 4.9 GB over 40,000 people (bf16 on
# a CPU), this one by 0.9 GB, in the same time.
WIDTH_STEP = 16


def born(birth_day: np.ndarray) -> torch.Tensor:
    """Birth dates in days since 1970-01-01 as the model's calendar input (with each token's age):
    years since 1970."""
    return torch.from_numpy((np.asarray(birth_day) / DAYS_PER_YEAR).astype(np.float32))


def predictable(vocabulary: list[str]) -> torch.Tensor:
    """Tokens that can be the next event: everything but padding and demographic tokens."""
    demographic = tuple(f"{c.upper()}//" for c in DEMOGRAPHICS)
    return torch.tensor([t != PAD and not t.startswith(demographic) for t in vocabulary])


class TrainingBatches:
    """Random windows of random people, with "no event" tokens, targets and observed exposure.

    Every event is equally likely to be a target, as in the likelihood of the whole data. A timeline
    that fits the block is trained whole; a longer one is drawn more often and trains a window of
    it, so each of its events comes up as often. (Drawing people alike instead weighted each
    person's events by one over their number: the model learned the rates of sparse timelines, and
    forecast busy ones too low.) People are drawn from length buckets, and a batch is as long as
    its longest sequence, holding more people when they are short: little compute goes on padding.
    With `calendar_jitter` (years), each window's calendar time, not its ages, moves by a uniform
    offset within ±that, so the model cannot tie rates to the phase of one date (a period effect
    is then learnt blurred by as much); without, batches are as recorded."""

    BUCKETS = 8

    def __init__(self, timelines: Timelines, people: np.ndarray, block_size: int, seed: int,
                 no_event_per_year: float = 0.2, calendar_jitter: float = 0.0):
        if len(people) == 0:
            raise ValueError("no people to train on: the dataset (or its split) is empty")
        self.t, self.block = timelines, block_size
        self.rate, self.jitter = no_event_per_year, calendar_jitter
        self.rng = np.random.default_rng(seed)
        length = np.diff(timelines.offsets)[people] + no_event_per_year * (timelines.end_age - timelines.start_age)[people]
        order = np.argsort(length, kind="stable")
        parts = min(self.BUCKETS, len(people))
        self.buckets = np.array_split(people[order], parts)
        lengths = np.array_split(length[order], parts)
        self.longest = [min(block_size, float(part[-1]) + 8) for part in lengths]
        self.draws = [self._draws_per_pass(part) for part in lengths]

    def _draws_per_pass(self, length: np.ndarray) -> np.ndarray:
        """How often each timeline must be drawn for each of its events to be a target once: a
        window of a long one has `stop` uniform on PREFIX..length + span − 1 (see `_sequence`)."""
        span = _window_targets(self.block)
        return np.where(length > self.block, (length + span - PREFIX) / span, 1.0)

    def __call__(self, batch_size: int) -> dict[str, torch.Tensor]:
        n = [int(min(8 * batch_size, max(batch_size, batch_size * self.block // longest))) for longest in self.longest]
        need = np.array([draws.sum() / size for draws, size in zip(self.draws, n)])
        b = self.rng.choice(len(self.buckets), p=need / need.sum())
        return self.batch_of(self.rng.choice(self.buckets[b], n[b], p=self.draws[b] / self.draws[b].sum()))

    def batch_of(self, people: np.ndarray) -> dict[str, torch.Tensor]:
        batch = _stack([self._sequence(p) for p in people], self.block)
        birth = born(self.t.birth_day[people])
        if self.jitter:  # calendar time moves with the birth date; the ages stay as recorded
            birth += torch.from_numpy(self.rng.uniform(-self.jitter, self.jitter, len(people)).astype(np.float32))
        return {**batch, "born": birth}

    def _sequence(self, p: int):
        t = self.t
        start, end = float(t.start_age[p]), float(t.end_age[p])
        tokens, ages = _with_quiet_years(*t.of(p), start, end, self.rate, self.rng)
        targets, exposure = _targets(tokens, ages, start, end)
        if len(tokens) > self.block:
            # The window's targets are the `span` events before `stop`: each event is one in an
            # equal share of draws, those near either end included (windows there train fewer).
            # Everything earlier is context only, the prefix and any recalled codes among it. A
            # window past the end holds only its targets: filled up to the block, it showed the
            # last events of every long timeline (a death above all) after a full window, which
            # other events get in one draw in `span`, and the model learnt a full window as a sign
            # that the record was about to end (forecasts, read after one, had 1.7 times the
            # deaths of the same people's records at ages 65-84).
            span = _window_targets(self.block)
            stop = self.rng.integers(PREFIX, len(tokens) + span)
            first = max(PREFIX, stop - span)
            context = np.arange(len(tokens)) < first
            targets[context], exposure[context] = IGNORE, 0.0
            keep = window(tokens, min(stop, len(tokens)), self.block, first=first)[0]
            tokens, ages, targets, exposure = tokens[keep], ages[keep], targets[keep], exposure[keep]
        return tokens, ages, targets, exposure


def _window_targets(room: int) -> int:
    """How many recent events a full window holds after its prefix and recalled codes."""
    return room - PREFIX - room // RECALL_SHARE


def window(tokens: np.ndarray, stop: int, room: int, first: int | None = None) -> tuple[np.ndarray, int]:
    """Indices of a window of one timeline's tokens before `stop`, at most `room` long, and how
    many of them lead it as context only (the prefix and the recalled codes).

    When the history does not fit, the window holds the prefix, then the first occurrence of each
    earlier code, then recent events: from `first` on (a training window's first target), or as
    many as fit. If too many codes came before, those seen least often, then earliest, are recalled:
    a code that recurs is likely among the recent events anyway, and a window cut again (as sampling
    cuts it) keeps what it recalled. What is recalled depends on the history before the recent part
    alone: recalling only codes the recent part lacked told a training window's early targets which
    old codes were about to recur (by their absence)."""
    if stop <= room:
        return np.arange(stop), PREFIX
    budget = room // RECALL_SHARE
    recent = np.arange(stop - _window_targets(room) if first is None else first, stop)
    codes, earliest, seen = np.unique(tokens[PREFIX:recent[0]], return_index=True, return_counts=True)
    event = codes != NO_EVENT_ID
    earliest, seen = earliest[event], seen[event]
    recalled = np.sort(earliest[np.lexsort((earliest, seen))[:budget]]) + PREFIX
    return np.r_[0:PREFIX, recalled, recent], PREFIX + len(recalled)


def _with_quiet_years(tokens, ages, start, end, rate, rng):
    """Mark the registration start, and insert "no event" tokens at uniform random ages in the
    registered period."""
    tokens, ages = registration_marked(tokens, ages, start)
    n = rng.poisson(rate * max(end - start, 0.0))
    quiet = np.sort(rng.uniform(start, end, n)).astype(np.float32)
    at = np.searchsorted(ages[PREFIX:], quiet, side="right") + PREFIX
    return np.insert(tokens, at, NO_EVENT_ID), np.insert(ages, at, quiet)


def registration_marked(tokens: np.ndarray, ages: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray]:
    """One timeline with a "no event" token at its registration start `start`, before the events
    recorded at that age (they are observed) and after those dated before it."""
    at = PREFIX + np.searchsorted(ages[PREFIX:], np.float32(start), side="left")
    return np.insert(tokens, at, NO_EVENT_ID), np.insert(ages, at, np.float32(start))


def _targets(tokens, ages, start, end):
    """Next token of each position, and the years of observed time until it (or to the end).

    An event on the same day as the one before it came within that day (a day is the record's
    resolution), so it is timed as a one-day wait. Left untimed, the bursts of events a visit
    codes together were missing from the rates' scale: rates came out too low by about the
    share of tied events (and far more for codes that open a burst)."""
    targets = np.append(tokens[1:], IGNORE).astype(np.int64)
    targets[:PREFIX - 1] = IGNORE  # demographic tokens are not events
    following = np.append(ages[1:], end)
    exposure = np.clip(np.minimum(following, end) - np.maximum(ages, start), 0.0, None)
    tied = (following == ages) & (ages >= start) & (ages <= end) & (targets != IGNORE)
    exposure[tied] = MIN_YEARS
    targets[(targets == NO_EVENT_ID) & (exposure == 0)] = IGNORE  # the registration mark did not happen
    return targets, exposure.astype(np.float32)


def _stack(rows, block: int) -> dict[str, torch.Tensor]:
    """Pad to the longest row (at most `block`)."""
    n, block = len(rows), min(block, max(len(r[0]) for r in rows))
    tokens = np.full((n, block), PAD_ID, np.int64)
    ages = np.zeros((n, block), np.float32)
    targets = np.full((n, block), IGNORE, np.int64)
    exposure = np.zeros((n, block), np.float32)
    for i, (tok, age, tgt, exp) in enumerate(rows):
        k = len(tok)
        tokens[i, :k], ages[i, :k], targets[i, :k], exposure[i, :k] = tok, age, tgt, exp
    return {"tokens": torch.from_numpy(tokens), "ages": torch.from_numpy(ages),
            "targets": torch.from_numpy(targets), "exposure": torch.from_numpy(exposure)}


def history_lengths(timelines: Timelines, people: np.ndarray, at_age: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Tokens in each person's history before `at_age` as `landmark_histories` builds it before
    any windowing (demographics, events and the registration mark), counted `chunk` people at a
    time so that memory stays bounded."""
    lengths = np.zeros(len(people), np.int64)
    for lo in range(0, len(people), chunk):
        part = slice(lo, lo + chunk)
        owner, _, _, kept = _tokens_before(timelines, people[part], at_age[part])
        lengths[part] = np.bincount(owner[kept], minlength=len(people[part]))
    return lengths + (timelines.start_age[people] < at_age)


def _tokens_before(timelines: Timelines, people: np.ndarray, at_age: np.ndarray):
    """For every token of these people: its person's position in `people`, its index into the
    timelines and its position in the person's timeline, and whether it is in the history before
    `at_age` (the demographic prefix and the events dated before it)."""
    owner, index = timelines.rows_of(people)
    position = index - timelines.offsets[people][owner]
    kept = (position < PREFIX) | (timelines.ages[index] < np.asarray(at_age, np.float64)[owner])
    return owner, index, position, kept


def batches_by_length(timelines: Timelines, people: np.ndarray, at_age: np.ndarray, block: int, size: int):
    """Positions in `people` in batches of `size` with landmark histories of similar length: a batch
    is padded (and a sampler's key/value cache widened) to its longest history, so little compute
    goes on padding."""
    return batches_by_size(np.minimum(history_lengths(timelines, people, at_age) + 1, block), size)  # + the query


def batches_by_size(lengths: np.ndarray, size: int):
    """Positions in `lengths` in batches of `size`, shortest first."""
    order = np.argsort(lengths, kind="stable")
    return (order[lo:lo + size] for lo in range(0, len(order), size))


def landmark_histories(timelines: Timelines, people: np.ndarray, at_age: np.ndarray, block: int,
                       years_after: int = 0):
    """Each person's history before `at_age`, ending in a "no event" query token at that age and
    `years_after` more on the anniversaries after it (quiet years, for rates further ahead).

    Returns (tokens, ages) as (n, longest) tensors, left-aligned, the birth dates (n,) and the
    landmark query positions (n,); the anniversaries follow them.
    """
    at_age = np.asarray(at_age)
    queries = np.arange(1 + years_after)
    history, history_ages, length = _marked_histories(timelines, people, at_age)
    room = block - len(queries)
    for i in np.flatnonzero(length > room):  # too long: the prefix, recalled codes and recent events
        index = window(history[i], length[i], room)[0]
        length[i] = len(index)
        history[i, :len(index)], history_ages[i, :len(index)] = history[i, index], history_ages[i, index]
    tokens = np.full((len(people), int(length.max(initial=0)) + len(queries)), PAD_ID, np.int64)
    ages = np.zeros(tokens.shape, np.float32)
    rows, columns = np.nonzero(np.arange(history.shape[1]) < length[:, None])
    tokens[rows, columns], ages[rows, columns] = history[rows, columns], history_ages[rows, columns]
    rows, columns = np.arange(len(people))[:, None], length[:, None] + queries
    tokens[rows, columns], ages[rows, columns] = NO_EVENT_ID, at_age.astype(np.float32)[:, None] + queries
    return torch.from_numpy(tokens), torch.from_numpy(ages), born(timelines.birth_day[people]), torch.from_numpy(length)


def with_earlier_queries(tokens: torch.Tensor, ages: torch.Tensor, length: torch.Tensor, queries: int,
                         owner: np.ndarray, cut: np.ndarray, age: np.ndarray, count: np.ndarray):
    """Landmark histories (`landmark_histories`' tokens, ages and lengths, with `queries` query
    tokens after each history) with earlier landmarks' query chains appended. Chain c, of history
    `owner[c]` (chains sorted by owner), is `count[c]` "no event" tokens at `age[c]` and its
    anniversaries; it sees only the history's first `cut[c]` tokens (the person's history before
    `age[c]`, a prefix of the later one, unwindowed) and itself, and nothing sees it. The model
    has no positions, so a chain reads the rates its own landmark history would.

    Returns (tokens, ages, at, visible, slot): tokens and ages (n, W), W the longest row rounded up
    to a multiple of `WIDTH_STEP` (padding after every query, seen by none); `at` (n, Q) the
    positions of every query (the landmark's, then each chain's; 0 where a history has fewer),
    `visible` (n, W, W) bool (None without chains: plain causal attention), and `slot` (chains,)
    where each chain's queries start in `at`."""
    length, n, chains = length.numpy(), len(length), len(owner)
    extra = np.bincount(owner, weights=count, minlength=n).astype(np.int64)
    before = np.cumsum(count) - count
    slot = queries + before - before[np.searchsorted(owner, owner)]  # after the queries and earlier chains
    start = length[owner] + slot
    chain = np.repeat(np.arange(chains), count)
    step = np.arange(count.sum()) - np.repeat(before, count)
    row, column = owner[chain], start[chain] + step
    width = -(-int((length + queries + extra).max(initial=0)) // WIDTH_STEP) * WIDTH_STEP
    all_tokens, all_ages = np.full((n, width), PAD_ID, np.int64), np.zeros((n, width), np.float32)
    all_tokens[:, :tokens.shape[1]], all_ages[:, :ages.shape[1]] = tokens.numpy(), ages.numpy()
    all_tokens[row, column], all_ages[row, column] = NO_EVENT_ID, age[chain].astype(np.float32) + step
    at = np.zeros((n, queries + int(extra.max(initial=0))), np.int64)
    at[:, :queries] = length[:, None] + np.arange(queries)
    at[row, slot[chain] + step] = column
    if not chains:
        return torch.from_numpy(all_tokens), torch.from_numpy(all_ages), torch.from_numpy(at), None, slot
    visible = np.broadcast_to(np.tri(width, dtype=bool), (n, width, width)).copy()
    seen = np.arange(width)
    visible[row, column] = (seen < cut[chain][:, None]) | ((seen >= start[chain][:, None]) & (seen <= column[:, None]))
    return (torch.from_numpy(all_tokens), torch.from_numpy(all_ages), torch.from_numpy(at), torch.from_numpy(visible),
            slot)


def _marked_histories(timelines: Timelines, people: np.ndarray, at_age: np.ndarray):
    """(tokens, ages) (n, longest) of each person's history before `at_age`, with the registration
    mark where registration started before then (as `registration_marked` places it), and each
    history's length."""
    t, n = timelines, len(people)
    owner, index, position, kept = _tokens_before(t, people, at_age)
    start = t.start_age[people].astype(np.float32)
    event = position >= PREFIX
    after_mark = event & (t.ages[index] >= start[owner])
    marked = start < at_age
    length = np.bincount(owner[kept], minlength=n) + marked
    tokens = np.full((n, int(length.max(initial=0))), PAD_ID, np.int64)
    ages = np.zeros(tokens.shape, np.float32)
    rows, columns, index = owner[kept], (position + after_mark)[kept], index[kept]
    tokens[rows, columns], ages[rows, columns] = t.tokens[index], t.ages[index]
    mark = np.flatnonzero(marked)
    column = PREFIX + np.bincount(owner[kept & event & ~after_mark], minlength=n)[mark]
    tokens[mark, column], ages[mark, column] = NO_EVENT_ID, start[mark]
    return tokens, ages, length


def padded(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, ages) of each person as (n, longest) arrays, left-aligned and padded."""
    width = max(len(tok) for tok, _ in rows)
    tokens = np.full((len(rows), width), PAD_ID, np.int64)
    ages = np.zeros((len(rows), width), np.float32)
    for i, (tok, age) in enumerate(rows):
        tokens[i, :len(tok)], ages[i, :len(tok)] = tok, age
    return tokens, ages
