"""`farr evaluate`: how well a trained model predicts, against a floor, a supervised baseline and,
on simulated data, the oracle that knows the true hazards.

Landmark metrics follow the protocol in the research notes: one sample per person at the
landmark age, new onsets only, people lost to follow-up before the horizon left out, at least
25 events per cell (else NA), macro-averaged over outcomes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from farr.events.io import read_outcomes
from farr.forecast import metrics as m
from farr.forecast.baselines import incidence_floor, supervised_baseline
from farr.forecast.generate import expected_first_occurrences
from farr.forecast.landmark import Landmark, labels, landmark, landmark_ages, outcomes_for, timelines_for
from farr.forecast.likelihood import excess_nll
from farr.forecast.risk import model_risk, not_at_risk
from farr.forecast.truth import oracle_risk, simulated_truth
from farr.model.data import NO_EVENT_ID, TrainingBatches
from farr.model.tokenizer import SPLIT_PERCENT, Timelines
from farr.model.train import load_model


@dataclass
class EvaluationConfig:
    at: str = "60"  # landmark: an age in years, or a date (YYYY-MM-DD) for everyone registered then
    horizons: tuple[float, ...] = (1.0, 5.0, 10.0)
    split: str = "held_out"  # of the development dataset, unless a test dataset is given
    oracle_draws: int = 100
    rollout_people: int = 300
    rollout_draws: int = 20
    next_event_people: int = 2000
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.split not in SPLIT_PERCENT:
            raise ValueError(f"--split {self.split!r}: choose one of {', '.join(SPLIT_PERCENT)}")


def evaluate(model_dir: str | Path, dataset: str | Path, cfg: EvaluationConfig | None = None,
             test_dataset: str | Path | None = None) -> dict:
    """Evaluate on `dataset`'s `cfg.split`, or on everyone in `test_dataset` (external validation);
    the baselines are fitted on `dataset`'s training split either way."""
    cfg = cfg or EvaluationConfig()
    model, tokenizer = load_model(model_dir)
    development = timelines_for(tokenizer, dataset)
    external, test_dataset = test_dataset is not None, test_dataset or dataset
    timelines = timelines_for(tokenizer, test_dataset) if external else development
    outcomes = outcomes_for(tokenizer, read_outcomes(test_dataset))
    if not outcomes:
        raise ValueError(f"{test_dataset}: defines no outcomes the model knows (metadata/farr.json extra.outcomes)")
    chosen = np.arange(len(timelines)) if external else np.flatnonzero(
        timelines.split == list(SPLIT_PERCENT).index(cfg.split))
    test = landmark(timelines, landmark_ages(timelines, cfg.at), outcomes, chosen)
    train = landmark(development, landmark_ages(development, cfg.at), outcomes, np.flatnonzero(development.split == 0))
    horizons = list(cfg.horizons)
    fitted = (tokenizer, development, train, timelines, test, outcomes, horizons)
    risks = {"model": model_risk(model, timelines, test, outcomes, horizons),
             "floor": incidence_floor(*fitted), "supervised": supervised_baseline(*fitted)}
    truth = _truth(test_dataset, cfg)
    if truth is not None:
        risks["oracle"] = oracle_risk(*truth, timelines, test, outcomes, horizons, draws=cfg.oracle_draws,
                                      seed=cfg.seed)
    blocked = not_at_risk(test, outcomes)
    risks = {name: np.where(blocked[:, :, None], np.nan, r) for name, r in risks.items()}
    result = {"config": asdict(cfg), "test_dataset": str(test_dataset), "people": int(len(test.people)),
              "outcomes": [o.name for o in outcomes],
              "landmark": _landmark_metrics(test, outcomes, horizons, risks),
              "survival": _survival_metrics(train, test, outcomes, horizons, risks),
              "rollouts": _rollout_check(model, timelines, test, outcomes, horizons, risks["model"], cfg),
              "next_event": next_event_metrics(model, timelines, chosen, outcomes, cfg)}
    if truth is not None:
        result["excess_nll"] = excess_nll(model, timelines, chosen, outcomes, *truth, cfg)
    result["summary"] = _summary(result, horizons)
    return result


def _truth(dataset, cfg: EvaluationConfig):
    """(oracle, truth table) of a simulated dataset; None (with a note) for any other."""
    truth = simulated_truth(dataset)
    if truth is None:
        cfg.notes.append("no ground truth in the dataset: oracle metrics omitted")
    return truth


def _landmark_metrics(test: Landmark, outcomes, horizons, risks: dict) -> list[dict]:
    rows = []
    for h, horizon in enumerate(horizons):
        event, usable = labels(test, outcomes, horizon)
        for j, outcome in enumerate(outcomes):
            keep = usable[:, j]
            for name, risk in risks.items():
                rows.append({"predictor": name, "outcome": outcome.name, "horizon": horizon}
                            | m.binary_metrics(event[keep, j], risk[keep, j, h]))
    return rows


def _survival_metrics(train: Landmark, test: Landmark, outcomes, horizons, risks: dict) -> list[dict]:
    """Uno's C up to the longest horizon, and time-dependent AUC, ranking by each risk at it."""
    tau = max(horizons)
    rows = []
    for j, outcome in enumerate(outcomes):
        train_time, train_event = _survival(train, j)
        time, event = _survival(test, j)
        at_risk = outcome.recurrent | ~test.had_before[:, j]
        for name, risk in risks.items():
            score = np.where(at_risk, risk[:, j, -1], np.nan)
            rows.append({"predictor": name, "outcome": outcome.name}
                        | m.survival_metrics(train_time, train_event, time, event, score, tau, horizons))
    return rows


def _survival(mark: Landmark, j: int) -> tuple[np.ndarray, np.ndarray]:
    """Years to outcome j or to the end of follow-up, and whether it was the outcome."""
    time = np.minimum(mark.first_after[:, j], mark.follow_up)
    return np.maximum(time, 1e-6), mark.first_after[:, j] <= mark.follow_up


def _rollout_check(model, timelines, test: Landmark, outcomes, horizons, analytic, cfg) -> dict:
    """Risks by sampling futures, on a subsample, beside the analytic ones for the same people."""
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(test.people), min(cfg.rollout_people, len(test.people)), replace=False))
    sub = test.subset(pick)
    sampled = expected_first_occurrences(model, timelines, outcomes, sub, horizons, cfg.rollout_draws, cfg.seed)
    blocked = not_at_risk(sub, outcomes)[:, :, None]
    table = _landmark_metrics(sub, outcomes, horizons, {"rollout": np.where(blocked, np.nan, sampled),
                                                         "analytic": analytic[pick]})
    summary = {f"{name}_macro_auroc_{h:g}y": _macro(table, name, h, "auroc")
               for name in ("rollout", "analytic") for h in horizons}
    return {"people": int(len(pick)), "draws": cfg.rollout_draws} | summary


def next_event_metrics(model, timelines: Timelines, people: np.ndarray, outcomes, cfg) -> dict:
    """Top-k accuracy of the next event, and Foresight-style hit@10 for new diagnoses within 365 days."""
    rng = np.random.default_rng(cfg.seed)
    sample = rng.choice(people, min(cfg.next_event_people, len(people)), replace=False)
    batches = TrainingBatches(timelines, sample, model.cfg.block_size, seed=cfg.seed, no_event_per_year=0.0)
    diagnoses = np.concatenate([o.tokens for o in outcomes if not o.recurrent and o.name != "death"])
    accuracy, hits = [], []
    with torch.no_grad():
        for lo in range(0, len(sample), 64):
            batch = batches.batch_of(sample[lo:lo + 64])
            log_rate = model.log_rates(batch["tokens"], batch["ages"], batch["born"]).numpy()
            log_rate[..., NO_EVENT_ID] = -np.inf
            is_event = batch["targets"].numpy() >= 0
            accuracy.append((log_rate[is_event], batch["targets"].numpy()[is_event]))
            hits.extend(_hits_at_10(log_rate, batch, diagnoses))
    log_rate, target = (np.concatenate(x) for x in zip(*accuracy))
    return m.top_k_accuracy(log_rate, target) | {
        "hit@10_new_diagnosis_365d": float(np.mean(hits)) if hits else None, "hit@10_positions": len(hits)}


def _hits_at_10(log_rate: np.ndarray, batch: dict, diagnoses: np.ndarray) -> list[bool]:
    """At each position whose next event is a diagnosis new to the person: does any of the 10
    highest-rate diagnoses they do not yet have appear within 365 days?"""
    tokens, ages = batch["tokens"].numpy(), batch["ages"].numpy()
    is_diagnosis = np.isin(tokens, diagnoses)
    hits = []
    for i in range(len(tokens)):
        seen = set()
        for t in range(len(tokens[i]) - 1):
            seen.add(int(tokens[i, t]))
            nxt = int(tokens[i, t + 1])
            if not is_diagnosis[i, t + 1] or nxt in seen:
                continue
            candidates = [d for d in diagnoses[np.argsort(-log_rate[i, t, diagnoses])] if d not in seen][:10]
            window = (ages[i] > ages[i, t]) & (ages[i] <= ages[i, t] + 1.0)
            hits.append(bool(np.isin(tokens[i][window], candidates).any()))
    return hits


def _macro(rows: list[dict], predictor: str, horizon: float, metric: str) -> float | None:
    """A predictor's metric at a horizon, averaged over the outcomes that have it."""
    return m.macro(r[metric] for r in rows if r["predictor"] == predictor and r["horizon"] == horizon)


def _summary(result: dict, horizons: list[float]) -> dict:
    rows = result["landmark"]
    names = sorted({r["predictor"] for r in rows})
    summary = {}
    for h in horizons:
        for name in names:
            for metric in ("auroc", "brier"):
                summary[f"{name}_macro_{metric}_{h:g}y"] = _macro(rows, name, h, metric)
        summary[f"headroom_auroc_{h:g}y"] = m.headroom(summary.get(f"model_macro_auroc_{h:g}y"),
                                                       summary.get(f"floor_macro_auroc_{h:g}y"),
                                                       summary.get(f"oracle_macro_auroc_{h:g}y"))
        summary[f"model_beats_supervised_{h:g}y"] = _wins(rows, h)
        ratios = [r["observed_over_expected"] for r in rows if r["predictor"] == "model" and r["horizon"] == h
                  and r.get("observed_over_expected") is not None]
        summary[f"model_median_observed_over_expected_{h:g}y"] = float(np.median(ratios)) if ratios else None
    return summary


def _wins(rows: list[dict], horizon: float) -> str:
    """"won/compared": outcomes where the model's AUROC beats the supervised baseline's."""
    by = {(r["predictor"], r["outcome"]): r["auroc"] for r in rows if r["horizon"] == horizon}
    pairs = [(by[("model", o)], by[("supervised", o)]) for (p, o) in by if p == "model"
             and by.get(("supervised", o)) is not None and by[("model", o)] is not None]
    return f"{sum(a > b for a, b in pairs)}/{len(pairs)}"


def save(result: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=1, default=float))
    return out / "evaluation.json"
