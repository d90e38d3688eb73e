"""Risks from a trained model at a landmark: analytic from its rates, or by sampling futures.

Analytic: the model's rate λ_k of each outcome's tokens at the landmark, held for the horizon,
gives P(k within h) = 1 − exp(−λ_k·h) (as Delphi reads its rates). Monte Carlo: whole future
timelines are sampled from the model (`generate.py`) and the risk is the share of them in
which the outcome occurs within h, so later events can change what follows.
"""

from __future__ import annotations

import numpy as np
import torch

from farr.forecast.landmark import Landmark, Outcome
from farr.model.data import history_lengths, landmark_histories
from farr.model.gpt import TimelineGPT
from farr.model.tokenizer import Timelines

BATCH = 512


@torch.no_grad()
def landmark_rates(model: TimelineGPT, timelines: Timelines, mark: Landmark, batch: int = BATCH,
                   bf16: bool = False) -> np.ndarray:
    """(n, vocabulary) rates per year of each next event, read at each person's landmark.

    People go in batches of similar history length, so little compute goes on padding. `bf16`
    runs the matrix products in bfloat16 (about twice as fast on CPUs with AVX-512 BF16; rates
    then differ by about 1%)."""
    device = next(model.parameters()).device
    block = model.cfg.block_size
    order = np.argsort(history_lengths(timelines, mark.people, mark.age, block), kind="stable")
    out = np.empty((len(mark.people), model.cfg.vocab_size), np.float32)
    for lo in range(0, len(order), batch):
        rows = order[lo:lo + batch]
        tokens, ages, query = landmark_histories(timelines, mark.people[rows], mark.age[rows], block)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            log_rate = model.log_rates(tokens.to(device), ages.to(device), at=query.to(device))
        out[rows] = log_rate.float().exp().cpu().numpy()
    return out


def analytic_risk(rates: np.ndarray, outcomes: list[Outcome], horizons: list[float]) -> np.ndarray:
    """(n, outcomes, horizons) probabilities 1 − exp(−λ_k·h)."""
    outcome_rate = np.stack([rates[:, o.tokens].sum(axis=1) for o in outcomes], axis=1)
    return 1.0 - np.exp(-outcome_rate[:, :, None] * np.asarray(horizons, dtype=float))


def rollout_risk(first: np.ndarray, horizons: list[float]) -> np.ndarray:
    """(n, outcomes, horizons) share of sampled futures with the outcome within each horizon,
    from `first` (n, draws, outcomes): years to its first occurrence in each sampled future."""
    return np.stack([(first <= h).mean(axis=1) for h in horizons], axis=-1)


def not_at_risk(mark: Landmark, outcomes: list[Outcome]) -> np.ndarray:
    """(n, outcomes) True where a new onset is impossible: the outcome is already recorded."""
    recurrent = np.array([o.recurrent for o in outcomes])
    return mark.had_before & ~recurrent
