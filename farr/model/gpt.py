"""A causal transformer of patient timelines, in one file (after nanoGPT and Delphi).

Each token is a recorded event with the person's age at it. Age, and calendar time (birth + age,
so that period effects such as a pandemic are learnt at their dates), enter through continuous
sinusoidal encodings instead of positions. The head reads its outputs as log-rates λ_j of every
event type competing to happen next, so one forward pass gives both what comes next
(λ_j / Λ) and when (exponential waiting time with rate Λ = Σ λ_j). The loss is the exact
competing-risks log-likelihood of the observed timeline:

    −log λ_next + Λ·Δt        at each event, and   Λ·Δt   over the time after the last one,

where Δt counts only time under observation (registered). Events at the same age as the next
one contribute which-event (cross-entropy) terms only: their timing is already counted once.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -100  # target of positions with no next event to predict
MIN_YEARS = 1 / 365.25  # floor on waiting times: the record's resolution is a day


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # The calendar encoding's shortest period, in years. With a month's (as age has), a model tied
    # rates to the phase of the date: on simulated data with no such swing, a 20-minute model's
    # rates moved by 22% (median outcome) within a year either side of a landmark, 13% with a
    # year's, and a backtest a year earlier cannot see that error (benchmarks/calendar_swing.py).
    calendar_period: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, dict] = {
    "tiny": dict(block_size=128, n_layer=2, n_head=2, n_embd=32),  # tests: seconds on a CPU
    "small": dict(block_size=256, n_layer=4, n_head=4, n_embd=128),  # laptop CPU
    "medium": dict(block_size=512, n_layer=8, n_head=8, n_embd=256, dropout=0.1),  # one GPU
    "large": dict(block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.1),  # many GPUs
}


class TimeEncoding(nn.Module):
    """Sinusoids of a time in years (an age, a calendar year) at periods from `shortest` (years)
    to 1000 years, then a linear map."""

    def __init__(self, n_embd: int, shortest: float = 1 / 12):
        super().__init__()
        half = n_embd // 2
        self.register_buffer("frequencies", torch.exp(torch.linspace(math.log(2 * math.pi / 1000),
                                                                     math.log(2 * math.pi / shortest), half)))
        self.project = nn.Linear(2 * half, n_embd, bias=False)

    def forward(self, years: torch.Tensor) -> torch.Tensor:
        angle = years.unsqueeze(-1) * self.frequencies
        return self.project(torch.cat([angle.sin(), angle.cos()], dim=-1))


class SelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.out = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, cache: list | None = None, at: torch.Tensor | None = None,
                visible: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention over x (B, T, C), or, with `visible` (B, T, T) bool, each position over
        those it may see; appends this layer's keys and values to `cache`. With `at` (B, Q), only
        the outputs at those positions, (B, Q, C)."""
        q, k, v = self._heads(x)
        if cache is not None:
            cache.append((k, v))
        if at is None:
            mask = None if visible is None else visible[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                               dropout_p=self.dropout if self.training else 0.0)
            return self.out(y.transpose(1, 2).reshape(x.shape))
        b, h, t, d = q.shape
        q = q.gather(2, at[:, None, :, None].expand(b, h, at.shape[1], d))
        rows = (torch.arange(t, device=x.device) <= at[:, :, None] if visible is None
                else visible.gather(1, at[:, :, None].expand(b, at.shape[1], t)))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=rows[:, None])
        return self.out(y.transpose(1, 2).reshape(b, at.shape[1], -1))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], position: torch.Tensor):
        """One new token per row (B, 1, C) at `position` (B,), attending to the cached ones before it."""
        q, k, v = self._heads(x)
        keys, values = cache
        rows = torch.arange(len(position), device=x.device)
        keys[rows, :, position], values[rows, :, position] = k[:, :, 0], v[:, :, 0]
        visible = torch.arange(keys.shape[2], device=x.device) <= position[:, None]
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible[:, None, None, :])
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def _heads(self, x: torch.Tensor):
        b, t, c = x.shape
        return (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.qkv(x).split(c, dim=2))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attention = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, cache: list | None = None, at: torch.Tensor | None = None,
                visible: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or (B, Q, C) at the positions `at` (B, Q) only."""
        attended = self.attention(self.norm1(x), cache, at, visible)
        if at is not None:
            x = x.gather(1, at[:, :, None].expand(*at.shape, x.shape[-1]))
        x = x + attended
        return x + self.mlp(self.norm2(x))

    def step(self, x: torch.Tensor, cache, position: torch.Tensor) -> torch.Tensor:
        x = x + self.attention.step(self.norm1(x), cache, position)
        return x + self.mlp(self.norm2(x))


class TimelineGPT(nn.Module):
    def __init__(self, cfg: GPTConfig, predictable: torch.Tensor):
        """`predictable`: bool (vocab_size,), the tokens that can happen next (not padding,
        demographics or unknown)."""
        super().__init__()
        self.cfg = cfg
        self.token = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.age = TimeEncoding(cfg.n_embd)
        self.calendar = TimeEncoding(cfg.n_embd, cfg.calendar_period)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.token.weight = self.head.weight  # tied, as in GPT-2
        # Start near a plausible total rate (~10 events a year) rather than one per token a year.
        self.log_rate_offset = nn.Parameter(torch.tensor(math.log(10.0 / cfg.vocab_size)))
        self.register_buffer("mask", torch.where(predictable, 0.0, float("-inf")))
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def embed(self, tokens: torch.Tensor, ages: torch.Tensor, born: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens and ages, and (B,) birth dates in years since 1970 -> (B, T, C)."""
        return self.token(tokens) + self.age(ages) + self.calendar(born[:, None] + ages)

    def log_rates(self, tokens: torch.Tensor, ages: torch.Tensor, born: torch.Tensor, cache: list | None = None,
                  at: torch.Tensor | None = None, visible: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) tokens and ages in years, (B,) birth dates in years since 1970 -> (B, T, V)
        log-rates per year of the next event.

        With `cache` (an empty list), also keeps every layer's keys and values for `step`. With
        `at` (B,) or (B, Q), only the rates at those positions, (B, V) or (B, Q, V): the last
        block and the head then run there alone. With `visible` (B, T, T) bool, each position
        attends to those it may see rather than to all before it (`data.with_earlier_queries`)."""
        x = self.drop(self.embed(tokens, ages, born)).to(self.block_dtype)
        *early, last = self.blocks
        for block in early:
            x = block(x, cache, visible=visible)
        x = last(x, cache, None if at is None else at.view(len(at), -1), visible)
        log_rate = self._read_rates(x)
        return log_rate.view(*at.shape, -1) if at is not None else log_rate

    def step(self, token: torch.Tensor, age: torch.Tensor, born: torch.Tensor, position: torch.Tensor,
             cache: list) -> torch.Tensor:
        """Log-rates (B, V) after appending one token per row at `position`, reusing `cache`."""
        x = self.embed(token[:, None], age[:, None], born).to(self.block_dtype)
        for block, layer_cache in zip(self.blocks, cache):
            x = block.step(x, layer_cache, position)
        return self._read_rates(x)[:, 0]

    @property
    def block_dtype(self) -> torch.dtype:
        """What the blocks hold and compute in: float32, or bfloat16 in a `bfloat16_blocks` copy."""
        return self.blocks[0].norm1.weight.dtype

    def bfloat16_blocks(self) -> TimelineGPT:
        """A copy for inference whose blocks hold and compute in bfloat16, so no activation is cast on
        every matrix product as under autocast; the time encodings and the head stay float32."""
        fast = copy.deepcopy(self)
        fast.blocks.to(torch.bfloat16)
        return fast.eval()

    def _read_rates(self, x: torch.Tensor) -> torch.Tensor:
        """The head's log-rates, in float32 even from bfloat16 blocks: a rate is exp(log-rate), and
        bfloat16's 8-bit mantissa holds a log-rate near −8 only to ±0.03, a 3% error in the rate."""
        return self.head(self.norm(x.float())) + self.log_rate_offset + self.mask

    def forward(self, tokens, ages, born, targets, exposure):
        """Mean negative log-likelihood per event, split into its which-event and when parts.

        `targets` (B, T): the next token, or IGNORE; `exposure` (B, T): observed years until
        the next event (a day for an event on the same day, 0 for unobserved time)."""
        log_rate = self.log_rates(tokens, ages, born)
        log_total = torch.logsumexp(log_rate, dim=-1)
        is_event = targets != IGNORE
        which = F.cross_entropy(log_rate[is_event], targets[is_event], reduction="sum")
        timed = is_event & (exposure > 0)
        waiting = exposure.clamp(min=MIN_YEARS)
        when = (-log_total[timed]).sum() + (log_total.exp() * torch.where(exposure > 0, waiting, 0.0)).sum()
        events = is_event.sum().clamp(min=1)
        return {"loss": (which + when) / events, "which": which / events, "when": when / events}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters()) - self.token.weight.numel()

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward and backward), as in the PaLM appendix."""
        c = self.cfg
        return 6 * self.parameter_count() + 12 * c.n_layer * c.n_embd * c.block_size
