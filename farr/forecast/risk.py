"""Risks from a trained model at a landmark: analytic from its rates, or by sampling futures.

Analytic: the model's rate λ_k of each outcome's tokens read at the landmark and on each
anniversary after it (a "no event" query token per year, so ageing and calendar time, such as
a pandemic, move the rate) gives the cumulative hazard Λ_k(h) = Σ_i λ_k,i · (share of year i
inside h), and P(k within h) = 1 − exp(−Λ_k(h)). With no anniversaries this is Delphi's reading:
the landmark rate held for the horizon. Monte Carlo: whole future timelines are sampled from
the model (`generate.py`) and the risk is the mean over them of the outcome's rate integrated
along each up to its first event within h, so later events can change what follows (and an
outcome that comes just after another event, as a diagnosis after the admission that finds it,
is counted, where the analytic reading misses it).
"""

from __future__ import annotations

import logging
import math
from functools import cache

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome, outcome_columns
from farr.model.data import batches_by_length, landmark_histories
from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Timelines

# People per forward pass. On a CPU the activations of a small batch stay in cache: 64 took 25% (bf16)
# to 35% (float32) less time than 512 on a 2-core EPYC (20,000 people). A GPU wants large batches.
BATCH = {"cpu": 64, "cuda": 512}
log = logging.getLogger(__name__)


def years_read(horizons: list[float]) -> int:
    """Anniversaries to read rates at so that every year of the longest horizon has its own rate."""
    return max(0, math.ceil(max(horizons)) - 1)


@torch.no_grad()
def outcome_rates(model: TimelineGPT, timelines: Timelines, mark: Landmark, outcomes: list[Outcome],
                  years_after: int = 0, bf16: bool = False) -> np.ndarray:
    """(n, outcomes, 1 + years_after) rates per year of each outcome, read at each person's
    landmark and on the `years_after` anniversaries after it.

    People go in batches of similar history length, so little compute goes on padding. `bf16`
    runs the matrix products in bfloat16 (about twice as fast on CPUs with AVX-512 BF16; the
    model reads its log-rates in float32, and rates move by about 0.3%) where the device has them
    natively, else float32."""
    device = next(model.parameters()).device
    bf16 = bf16 and native_bf16(device)
    batch = BATCH.get(device.type, BATCH["cuda"])
    block = model.cfg.block_size
    columns = torch.from_numpy(outcome_columns(outcomes, model.cfg.vocab_size)).to(device)
    queries = torch.arange(1 + years_after, device=device)
    out = np.empty((len(mark.people), len(outcomes), 1 + years_after), np.float32)
    for rows in batches_by_length(timelines, mark.people, mark.age, block, batch):
        tokens, ages, birth, query = landmark_histories(timelines, mark.people[rows], mark.age[rows], block,
                                                        years_after=years_after)
        at = query.to(device)[:, None] + queries
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            log_rate = model.log_rates(tokens.to(device), ages.to(device), birth.to(device), at=at)
        out[rows] = (log_rate.float().exp() @ columns).transpose(1, 2).cpu().numpy()
    return out


@cache  # warn once per process
def native_bf16(device: torch.device) -> bool:
    """Whether `device` multiplies bfloat16 natively. A CPU without it (AVX2 only) emulates them,
    about five times slower than float32, so asking for bf16 there gets float32 and a warning."""
    native = (torch.cuda.is_bf16_supported() if device.type == "cuda"
              else torch.ops.mkldnn._is_mkldnn_bf16_supported())  # oneDNN's own check of the CPU
    if not native:
        log.warning("--bf16: this %s has no native bfloat16 products (they would be emulated, several "
                    "times slower); running float32", device.type)
    return native


def model_risk(model: TimelineGPT, timelines: Timelines, mark: Landmark, outcomes: list[Outcome],
               horizons: list[float], *, anniversaries: bool = True, bf16: bool = False) -> np.ndarray:
    """(n, outcomes, horizons) analytic risks, from rates on every anniversary up to the longest
    horizon (or, without `anniversaries`, from the landmark rate alone)."""
    years = years_read(horizons) if anniversaries else 0
    return analytic_risk(outcome_rates(model, timelines, mark, outcomes, years, bf16=bf16), horizons)


def analytic_risk(rates: np.ndarray, horizons: list[float]) -> np.ndarray:
    """(n, outcomes, horizons) probabilities 1 − exp(−Λ(h)) from `rates` (n, outcomes, years):
    year i's rate covers (i, i + 1]; the last one also covers the years after it."""
    years = rates.shape[-1]
    start = np.arange(years, dtype=float)
    length = np.clip(np.asarray(horizons, dtype=float)[:, None] - start, 0.0, None)  # (horizons, years)
    length[:, :-1] = np.minimum(length[:, :-1], 1.0)
    return 1.0 - np.exp(-(rates @ length.T))


def not_at_risk(mark: Landmark, outcomes: list[Outcome]) -> np.ndarray:
    """(n, outcomes) True where a new onset is impossible: the outcome is already recorded."""
    recurrent = np.array([o.recurrent for o in outcomes])
    return mark.had_before & ~recurrent
