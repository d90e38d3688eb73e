"""Excess negative log-likelihood: how far the model's event rates are from the true hazards.

Both are scored on the same events, the ones the record holds exactly as they happen (A&E
attendances, deaths), over each person's registered time: −Σ log λ(event) + ∫ Σ λ.
"""

from __future__ import annotations

import numpy as np
import torch

from farr.forecast.truth import truth_rows
from farr.model.data import born, padded, registration_marked
from farr.model.tokenizer import DAYS_PER_YEAR, Timelines
from farr.simulate.oracle import EXACTLY_RECORDED


def excess_nll(model, timelines: Timelines, people: np.ndarray, outcomes, oracle, truth, cfg) -> dict:
    """Per event: the model's negative log-likelihood minus the true model's. People whose whole
    timeline fits in the model's context are used, so both see everything."""
    exact = [o for o in outcomes if o.name in EXACTLY_RECORDED]
    lengths = np.diff(timelines.offsets)[people] + 1  # and the registration mark
    people = people[(lengths <= model.cfg.block_size) & (timelines.end_age[people] > timelines.start_age[people])]
    people = people[:cfg.next_event_people]
    lookup = np.full(model.cfg.vocab_size, -1)
    for j, o in enumerate(exact):
        lookup[o.tokens] = j
    model_nll, person_of, age_of, name_of = 0.0, [], [], []
    with torch.no_grad():
        for lo in range(0, len(people), 256):
            batch = people[lo:lo + 256]
            tokens, ages = padded([registration_marked(*timelines.of(p), timelines.start_age[p]) for p in batch])
            birth = born(timelines.birth_day[batch])
            rate = model.log_rates(torch.from_numpy(tokens), torch.from_numpy(ages), birth).exp().numpy()
            nll, events = _model_nll(rate, tokens, ages, timelines.start_age[batch], timelines.end_age[batch],
                                     exact, lookup)
            model_nll += nll
            person_of.append(lo + events[0])
            age_of.append(events[1])
            name_of.extend(exact[k].name for k in events[2])
    person_of, age_of = np.concatenate(person_of), np.concatenate(age_of)
    rows = truth_rows(truth, timelines.subject_id[people])
    day = lambda p, age: timelines.birth_day[people][p] + age * DAYS_PER_YEAR  # noqa: E731
    everyone = np.arange(len(people))
    window = (day(everyone, timelines.start_age[people]), day(everyone, timelines.end_age[people]))
    true_nll = oracle.negative_log_likelihood(rows, window, person_of, day(person_of, age_of), name_of)
    n = max(len(person_of), 1)
    return {"people": int(len(people)), "events": int(len(person_of)), "model_nll_per_event": model_nll / n,
            "true_nll_per_event": true_nll / n, "excess_nll_per_event": (model_nll - true_nll) / n}


def _model_nll(rate, tokens, ages, start, end, exact, lookup):
    """The model's −log-likelihood of the exact-recorded events, and those events (row, age, kind)."""
    rows, positions = np.nonzero(tokens)
    valid = np.zeros(tokens.shape, bool)
    valid[rows, positions] = True
    following = np.where(np.roll(valid, -1, axis=1), np.roll(ages, -1, axis=1), end[:, None])
    following[:, -1] = end
    exposure = np.clip(np.minimum(following, end[:, None]) - np.maximum(ages, start[:, None]), 0, None) * valid
    exact_rate = np.stack([rate[..., o.tokens].sum(-1) for o in exact], axis=-1)
    integral = (exact_rate.sum(-1) * exposure).sum()
    kind = lookup[tokens]
    r, i = np.nonzero((kind >= 0) & valid & (ages >= start[:, None]) & (ages <= end[:, None]))
    # the rate in force at an event is the one read at the last token strictly before it
    before = np.array([np.searchsorted(ages[a, :b], ages[a, b], side="left") - 1 for a, b in zip(r, i)], dtype=int)
    log_at_events = np.log(exact_rate[r, np.maximum(before, 0), kind[r, i]])
    return float(integral - log_at_events.sum()), (r, ages[r, i].astype(float), kind[r, i])
