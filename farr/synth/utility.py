"""Utility: train on synthetic, test on real (TSTR), against train on real, test on real (TRTR).

The predictor is the project's supervised baseline (L2 logistic regression on log counts of past
tokens, age and sex) at landmark ages pooled over `LANDMARK_AGES`, labelled as in evaluation
(first record within the horizon, complete follow-up). TRTR trains on the real training split,
TSTR on every synthetic person; both are scored on the real held-out split.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from farr.forecast.baselines import history_counts
from farr.forecast.landmark import Outcome, at_age, labels, landmark
from farr.forecast.metrics import binary_metrics
from farr.model.tokenizer import Timelines

LANDMARK_AGES = (40, 50, 60, 70, 80)
HORIZON = 5.0


def _cohort(t: Timelines, people: np.ndarray, outcomes: list[Outcome], vocabulary_size: int):
    """Features, events and usable flags over every landmark age, stacked."""
    parts = [landmark(t, at_age(t, age), outcomes, people) for age in LANDMARK_AGES]
    parts = [m for m in parts if len(m.people)]
    if not parts:
        return None
    x = sp.vstack([history_counts(t, m, vocabulary_size) for m in parts], format="csr")
    event, usable = (np.vstack(z) for z in zip(*(labels(m, outcomes, HORIZON) for m in parts)))
    return x, event, usable


def tstr(real: Timelines, synth: Timelines, outcomes: list[Outcome], vocabulary_size: int,
         min_events: int = 25) -> dict:
    split = real.split
    train_real = _cohort(real, np.flatnonzero(split == 0), outcomes, vocabulary_size)
    test = _cohort(real, np.flatnonzero(split == 2), outcomes, vocabulary_size)
    train_synth = _cohort(synth, np.arange(len(synth)), outcomes, vocabulary_size)
    rows = []
    for j, outcome in enumerate(outcomes):
        scores = {}
        for name, train in (("trtr", train_real), ("tstr", train_synth)):
            scores[name] = _auroc(train, test, j, min_events)
        if scores["trtr"] and scores["tstr"]:
            rows.append({"outcome": outcome.name, **scores, "ratio": scores["tstr"] / scores["trtr"]})
    ratios = [r["ratio"] for r in rows]
    return {"landmark_ages": list(LANDMARK_AGES), "horizon_years": HORIZON, "outcomes": rows,
            "mean_trtr": _mean([r["trtr"] for r in rows]), "mean_tstr": _mean([r["tstr"] for r in rows]),
            "ratio": (_mean([r["tstr"] for r in rows]) / _mean([r["trtr"] for r in rows])) if rows else None,
            "median_ratio": float(np.median(ratios)) if ratios else None}


def _auroc(train, test, j: int, min_events: int) -> float | None:
    if train is None or test is None:
        return None
    x, event, usable = train
    y = event[usable[:, j], j]
    if not 0 < y.sum() < len(y):
        return None
    fit = LogisticRegression(C=0.5, max_iter=500).fit(x[usable[:, j]], y)
    x_test, event_test, usable_test = test
    risk = fit.predict_proba(x_test[usable_test[:, j]])[:, 1]
    return binary_metrics(event_test[usable_test[:, j], j], risk, min_events)["auroc"]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
