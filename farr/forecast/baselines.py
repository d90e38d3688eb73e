"""What the model must beat: an age-sex incidence floor and a supervised model per outcome.

Both are fitted on the training split's landmark cohort and scored on the evaluation cohort
(which may come from another dataset: its own timelines), with the same labels as the model.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from farr.forecast.landmark import Landmark, Outcome, labels
from farr.model.tokenizer import Timelines, Tokenizer

AGE_BAND = 5.0


def _sex(tokenizer: Tokenizer, timelines: Timelines, mark: Landmark) -> np.ndarray:
    """1 for men, from the first (sex) token of each timeline."""
    return (timelines.tokens[timelines.offsets[mark.people]] == tokenizer.vocabulary.index("SEX//M")).astype(int)


def incidence_floor(tokenizer, train_timelines, train: Landmark, test_timelines, test: Landmark,
                    outcomes: list[Outcome], horizons: list[float]) -> np.ndarray:
    """(n_test, outcomes, horizons): observed risk among training people of the same sex and age band."""
    def group(timelines, mark):
        return _sex(tokenizer, timelines, mark) * 1000 + (mark.age // AGE_BAND).astype(int)

    train_group, test_group = group(train_timelines, train), group(test_timelines, test)
    out = np.full((len(test.people), len(outcomes), len(horizons)), np.nan)
    for h, horizon in enumerate(horizons):
        event, usable = labels(train, outcomes, horizon)
        for g in np.unique(test_group):
            mine = train_group == g
            counts = (event & usable & mine[:, None]).sum(axis=0)
            at_risk = (usable & mine[:, None]).sum(axis=0)
            out[test_group == g, :, h] = np.where(at_risk > 0, counts / np.maximum(at_risk, 1), np.nan)
    return out


def history_counts(timelines: Timelines, mark: Landmark, vocabulary_size: int) -> sp.csr_matrix:
    """log(1 + count) of every token before each person's landmark, plus age and sex columns."""
    row, index = timelines.rows_of(mark.people)
    before = timelines.ages[index] < mark.age[row]
    counts = sp.csr_matrix((np.ones(before.sum()), (row[before], timelines.tokens[index][before])),
                           shape=(len(mark.people), vocabulary_size))
    counts.data = np.log1p(counts.data)
    age = sp.csr_matrix(((mark.age - 60.0) / 10.0).reshape(-1, 1))
    return sp.hstack([counts, age], format="csr")


def supervised_baseline(tokenizer, train_timelines, train: Landmark, test_timelines, test: Landmark,
                        outcomes: list[Outcome], horizons: list[float]) -> np.ndarray:
    """(n_test, outcomes, horizons): L2 logistic regression on past-code counts, one per cell."""
    x_train = history_counts(train_timelines, train, len(tokenizer))
    x_test = history_counts(test_timelines, test, len(tokenizer))
    out = np.full((len(test.people), len(outcomes), len(horizons)), np.nan)
    for h, horizon in enumerate(horizons):
        event, usable = labels(train, outcomes, horizon)
        for j in range(len(outcomes)):
            y = event[usable[:, j], j]
            if 0 < y.sum() < len(y):
                fit = LogisticRegression(C=0.5, max_iter=500).fit(x_train[usable[:, j]], y)
                out[:, j, h] = fit.predict_proba(x_test)[:, 1]
    return out
