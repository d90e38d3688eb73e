"""The evaluation report: how the model compares with the floor, the supervised baseline and the oracle."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from farr.forecast.metrics import macro
from farr.reporting import Report

PREDICTORS = ("floor", "supervised", "model", "oracle")
COLOURS = {"floor": "#999999", "supervised": "#4f81bd", "model": "#c0504d", "oracle": "#000000"}


def write_evaluation_report(result: dict, out: str | Path, title: str = "farr model evaluation") -> Path:
    cfg, summary = result["config"], result["summary"]
    horizons = list(cfg["horizons"])
    present = [p for p in PREDICTORS if any(r["predictor"] == p for r in result["landmark"])]
    report = Report(title)
    report.text(f"Landmark {_landmark(cfg['at'])}, {result['people']:,} people of the {cfg['split']} split, "
                f"{len(result['outcomes'])} outcomes. New onsets only; one sample per person; people lost to "
                f"follow-up before the horizon left out; cells with fewer than 25 events are NA.")
    report.heading("Landmark discrimination and accuracy (macro over outcomes)")
    rows = [[p, *[summary.get(f"{p}_macro_auroc_{h:g}y") or "NA" for h in horizons],
             *[summary.get(f"{p}_macro_brier_{h:g}y") or "NA" for h in horizons]] for p in present]
    report.table(["predictor", *[f"AUROC {h:g}y" for h in horizons], *[f"Brier {h:g}y" for h in horizons]], rows)
    report.table(["horizon", "headroom captured (AUROC)", "outcomes where model > supervised"],
                 [[f"{h:g}y", summary.get(f"headroom_auroc_{h:g}y") or "NA", summary[f"model_beats_supervised_{h:g}y"]]
                  for h in horizons])
    middle = horizons[len(horizons) // 2]
    report.figure(_auroc_figure(result["landmark"], present, middle), "auroc_by_outcome",
                  f"AUROC by outcome at {middle:g} years (missing: fewer than 25 events)")
    report.heading(f"Per outcome at {middle:g} years")
    report.text("Calibration: observed/expected is the observed risk over the model's mean predicted risk "
                f"(1 is calibrated); its median over outcomes is "
                f"{summary.get(f'model_median_observed_over_expected_{middle:g}y') or 'NA'}.")
    report.table(["outcome", "events", *[f"{p} AUROC" for p in present], "model calibration slope",
                  "model observed/expected"], _outcome_rows(result["landmark"], present, middle))
    report.heading("Time to event")
    report.table(["predictor", "macro Uno's C"],
                 [[p, macro(r["uno_c"] for r in result["survival"] if r["predictor"] == p) or "NA"] for p in present])
    if "excess_nll" in result:
        report.heading("Likelihood against the true hazards")
        report.text("Negative log-likelihood per event of A&E attendances and deaths (recorded exactly as they "
                    "happen), model minus the true model: 0 is the truth, higher is further from it.")
        report.table(["metric", "value"], [[k, v] for k, v in result["excess_nll"].items()])
    report.heading("Next event")
    report.table(["metric", "value"], [[k, v if v is not None else "NA"] for k, v in result["next_event"].items()])
    report.heading("Sampled futures against the analytic rates")
    report.table(["metric", "value"], [[k, v if v is not None else "NA"] for k, v in result["rollouts"].items()])
    for note in cfg.get("notes", []):
        report.text(f"Note: {note}")
    return report.save(out)


def _landmark(at: str) -> str:
    return f"on {at}" if "-" in at else f"at age {at}"


def _auroc_figure(rows: list[dict], present: list[str], horizon: float) -> plt.Figure:
    outcomes = sorted({r["outcome"] for r in rows})
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(outcomes) + 1.2))
    y = np.arange(len(outcomes))
    for p in present:
        values = {r["outcome"]: r["auroc"] for r in rows if r["predictor"] == p and r["horizon"] == horizon}
        x = [values.get(o) if values.get(o) is not None else np.nan for o in outcomes]
        ax.scatter(x, y, label=p, color=COLOURS[p], s=18)
    ax.set_yticks(y, [o.replace("_", " ") for o in outcomes], fontsize=7)
    ax.axvline(0.5, color="#ddd", lw=1)
    ax.set_xlabel("AUROC")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _outcome_rows(rows: list[dict], present: list[str], horizon: float) -> list[list]:
    cells = {(r["predictor"], r["outcome"]): r for r in rows if r["horizon"] == horizon}
    out = []
    for outcome in sorted({o for _, o in cells}):
        model = cells.get(("model", outcome), {})
        aurocs = [cells.get((p, outcome), {}).get("auroc") for p in present]
        out.append([outcome, model.get("events", 0), *[a if a is not None else "NA" for a in aurocs],
                    *[model.get(k) if model.get(k) is not None else "NA"
                      for k in ("calibration_slope", "observed_over_expected")]])
    return out
