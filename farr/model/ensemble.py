"""Several timeline models read as one: at every step the mean of their rates.

Models trained apart (another seed, another sample) err apart; a group's rate is a sum over many
people, so what one model gets wrong for a group another need not: the mean of their rates errs less
than either (on the population benchmark, before the backtests' corrections; after them, about as
little as the better member or a little less: docs/population.md). Averaging rates, not log-rates, keeps the
ensemble a competing-risks model of the same kind: each event's rate is a mean of members' rates,
the total rate the mean of their totals, so analytic risks and sampled futures read it as they read
one model.

The ensemble answers `TimelineGPT`'s inference calls (`log_rates`, `step`, `bfloat16_blocks`,
`cfg`, `mask`, `block_dtype`). Its key/value cache holds every member's heads side by side: its
`cfg` counts members × heads and members × width (the width of one head is unchanged), so the
sampler sizes and trims that cache as it does one model's, and each member reads its own heads.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Tokenizer
from farr.model.train import load_model

SHARED = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "calendar_period")


class TimelineEnsemble(nn.Module):
    def __init__(self, members: list[TimelineGPT]):
        super().__init__()
        first = members[0].cfg
        for member in members[1:]:
            differ = [k for k in SHARED if getattr(member.cfg, k) != getattr(first, k)]
            if differ:
                raise ValueError(f"an ensemble's models must share their shape; these differ: {', '.join(differ)}")
        self.members = nn.ModuleList(members)
        self.heads = first.n_head
        self.cfg = replace(first, n_head=first.n_head * len(members), n_embd=first.n_embd * len(members))
        self.register_buffer("mask", members[0].mask.clone())

    def log_rates(self, tokens: torch.Tensor, ages: torch.Tensor, born: torch.Tensor, cache: list | None = None,
                  at: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """`TimelineGPT.log_rates` of the mean rate; `cache` gets each layer's heads of every member."""
        caches = [None if cache is None else [] for _ in self.members]
        log_rate = self._mean([m.log_rates(tokens, ages, born, c, at, visible) for m, c in zip(self.members, caches)])
        if cache is not None:
            cache.extend(tuple(torch.cat(part, dim=1) for part in zip(*layer)) for layer in zip(*caches))
        return log_rate

    def step(self, token: torch.Tensor, age: torch.Tensor, born: torch.Tensor, position: torch.Tensor,
             cache: list) -> torch.Tensor:
        """`TimelineGPT.step` of the mean rate; each member writes and reads its own heads of `cache`."""
        return self._mean([member.step(token, age, born, position, self._heads_of(i, cache))
                           for i, member in enumerate(self.members)])

    def _heads_of(self, member: int, cache: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views (not copies) of one member's heads, so its writes land in the shared cache."""
        heads = slice(member * self.heads, (member + 1) * self.heads)
        return [(k[:, heads], v[:, heads]) for k, v in cache]

    def _mean(self, log_rates: list[torch.Tensor]) -> torch.Tensor:
        return torch.logsumexp(torch.stack(log_rates), dim=0) - math.log(len(log_rates))

    @property
    def block_dtype(self) -> torch.dtype:
        return self.members[0].block_dtype

    def bfloat16_blocks(self) -> TimelineEnsemble:
        return TimelineEnsemble([m.bfloat16_blocks() for m in self.members]).eval()


def load_ensemble(directories: list[str | Path]) -> tuple[TimelineGPT | TimelineEnsemble, Tokenizer]:
    """`load_model` of one directory; of several, their `TimelineEnsemble`, if their tokenizers are the same."""
    (model, tokenizer), *others = (load_model(d) for d in directories)
    for (_, other), directory in zip(others, directories[1:]):
        if other != tokenizer:
            raise ValueError(f"{directory}: its tokenizer differs from {directories[0]}'s; an ensemble's models must "
                             "share one")
    return (model, tokenizer) if not others else (TimelineEnsemble([model, *(m for m, _ in others)]).eval(), tokenizer)
