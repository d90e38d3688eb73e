"""Metrics for risk predictions, each defined once and used for the model, the oracle and baselines."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
from sksurv.util import Surv

MIN_EVENTS = 25  # fewer events (or non-events) in a cell: the metric is NA


def binary_metrics(event: np.ndarray, risk: np.ndarray, min_events: int = MIN_EVENTS) -> dict:
    """AUROC, Brier score, calibration slope, calibration-in-the-large (observed minus mean risk)
    and the observed/expected ratio; None where the cell is too small."""
    keep = ~np.isnan(risk)
    event, risk = event[keep].astype(bool), risk[keep]
    cell = {"n": int(len(event)), "events": int(event.sum())}
    if cell["events"] < min_events or len(event) - cell["events"] < min_events:
        return cell | {"auroc": None, "brier": None, "calibration_slope": None, "calibration_in_the_large": None,
                       "observed_over_expected": None}
    slope, intercept = calibration(event, risk)
    return cell | {"auroc": float(roc_auc_score(event, risk)), "brier": float(brier_score_loss(event, risk)),
                   "calibration_slope": slope, "calibration_in_the_large": float(event.mean() - risk.mean()),
                   "observed_over_expected": float(event.mean() / max(risk.mean(), 1e-12))}


def calibration(event: np.ndarray, risk: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of the logistic recalibration model logit P(event) = a + b·logit(risk)."""
    p = np.clip(risk, 1e-6, 1 - 1e-6)
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    fit = LogisticRegression(C=1e6, max_iter=1000).fit(logit, event)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def survival_metrics(train_time, train_event, time, event, risk, tau: float, times: list[float]) -> dict:
    """Uno's IPCW concordance up to `tau` and the cumulative/dynamic AUC at `times`.

    The censoring distribution is estimated on the training people (`train_*`)."""
    keep = ~np.isnan(risk)
    none = {"uno_c": None, "time_dependent_auc": {str(t): None for t in times}}
    if event[keep].sum() < MIN_EVENTS or train_event.sum() < MIN_EVENTS:
        return none
    train, test = Surv.from_arrays(train_event, train_time), Surv.from_arrays(event, time)
    horizon = min(tau, float(time[keep][event[keep]].max()) - 1e-6)
    usable = [t for t in times if t <= horizon and (time[keep][event[keep]] <= t).sum() >= MIN_EVENTS]
    try:
        c = concordance_index_ipcw(train, test[keep], risk[keep], tau=horizon)[0]
        values = cumulative_dynamic_auc(train, test[keep], risk[keep], usable)[0] if usable else []
    except ValueError:  # the censoring distribution cannot weight these people (e.g. all censored)
        return none
    return {"uno_c": float(c), "time_dependent_auc": dict.fromkeys(map(str, times))
            | {str(t): float(v) for t, v in zip(usable, values)}}


def top_k_accuracy(log_rate: np.ndarray, target: np.ndarray, ks=(1, 5, 10)) -> dict:
    """Share of events whose token is among the k highest next-event rates."""
    rank = (log_rate > log_rate[np.arange(len(target)), target][:, None]).sum(axis=1)
    return {f"top{k}": float((rank < k).mean()) for k in ks}


def headroom(model: float | None, floor: float | None, oracle: float | None) -> float | None:
    """Fraction of the gap between the floor and the oracle that the model closes."""
    if None in (model, floor, oracle) or oracle == floor:
        return None
    return (model - floor) / (oracle - floor)


def macro(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None
