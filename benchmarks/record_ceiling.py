"""How much of the oracle's headroom can be reached from the record at all?

    .venv/bin/python benchmarks/record_ceiling.py --work out/benchmark-model

The oracle knows what no record shows: each person's hidden frailty and the diseases they
truly have but that are not coded yet. So "90% of the headroom between floor and oracle" may be
out of reach for any predictor of the record. This fits a strong supervised learner per outcome
(gradient-boosted trees on counts, recent counts, and years since the first and the last record
of every code) on a large independent development population at the landmark (age 60, 5 years),
and scores it on the model benchmark's test population beside the numbers in its
evaluation.json. Run model_benchmark.py first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from _populations import simulated_once
from farr.events.io import read_outcomes
from farr.forecast.landmark import Landmark, at_age, labels, landmark, outcomes_for
from farr.model.tokenizer import Timelines, Tokenizer

LANDMARK, HORIZON, RECENT_YEARS, MIN_EVENTS = 60.0, 5.0, 2.0, 25


def record_features(timelines: Timelines, mark: Landmark, vocabulary: int) -> np.ndarray:
    """Per person and code: count, count in the last two years, years since the first and the last
    record (999 for never); and years registered."""
    row, index = timelines.rows_of(mark.people)
    ago = mark.age[row] - timelines.ages[index].astype(float)
    before = ago > 0
    row, code, ago = row[before], timelines.tokens[index][before], ago[before]
    shape = (len(mark.people), vocabulary)
    count, recent = np.zeros(shape), np.zeros(shape)
    first, last = np.full(shape, -1.0), np.full(shape, 999.0)
    np.add.at(count, (row, code), 1.0)
    np.add.at(recent, (row, code), (ago <= RECENT_YEARS).astype(float))
    np.maximum.at(first, (row, code), ago)
    np.minimum.at(last, (row, code), ago)
    registered = mark.age - timelines.start_age[mark.people]
    return np.hstack([count, recent, first, last, registered[:, None]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("out/benchmark-model"))
    parser.add_argument("--dev-patients", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    tokenizer = Tokenizer.load(args.work / "model" / "tokenizer.json")
    development, test_dataset = args.work / "development-population", args.work / "test-population"
    simulated_once(development, args.dev_patients, args.seed)
    started = time.perf_counter()
    outcomes = outcomes_for(tokenizer, read_outcomes(test_dataset))
    marks = {}
    for name, dataset in (("development", development), ("test", test_dataset)):
        timelines = tokenizer.transform(dataset)
        mark = landmark(timelines, at_age(timelines, LANDMARK), outcomes)
        marks[name] = (record_features(timelines, mark, len(tokenizer)), *labels(mark, outcomes, HORIZON))
    (x, event, usable), (x_test, event_test, usable_test) = marks["development"], marks["test"]
    auroc = {}
    for j, outcome in enumerate(outcomes):
        y_test = event_test[usable_test[:, j], j]
        if y_test.sum() < MIN_EVENTS or (~y_test).sum() < MIN_EVENTS:
            continue
        fit = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, early_stopping=True,
                                             random_state=0).fit(x[usable[:, j]], event[usable[:, j], j])
        auroc[outcome.name] = roc_auc_score(y_test, fit.predict_proba(x_test[usable_test[:, j]])[:, 1])
    evaluation = json.loads((args.work / "evaluation" / "evaluation.json").read_text())
    found = {(r["predictor"], r["outcome"]): r["auroc"] for r in evaluation["landmark"]
             if r["horizon"] == HORIZON and r["auroc"] is not None}
    shared = [o for o in auroc if all((p, o) in found for p in ("floor", "model", "oracle"))]
    macro = {p: float(np.mean([found[(p, o)] for o in shared])) for p in ("floor", "supervised", "model", "oracle")}
    macro["boosted trees on the record"] = float(np.mean([auroc[o] for o in shared]))
    print(f"{len(x):,} development and {len(x_test):,} test people at age {LANDMARK:g}; "
          f"{len(shared)} outcomes; {time.perf_counter() - started:.0f} s")
    for name, value in macro.items():
        headroom = (value - macro["floor"]) / (macro["oracle"] - macro["floor"])
        print(f"{name:>28}: macro AUROC {value:.4f}, headroom captured {headroom:.2f}")


if __name__ == "__main__":
    main()
