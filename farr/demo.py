"""`farr demo`: the flow end to end on embedded defaults, sized to finish in minutes on a laptop."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from farr.forecast.evaluate import EvaluationConfig, evaluate, save
from farr.forecast.report import write_evaluation_report
from farr.model.train import CHECKPOINT, TrainConfig, train
from farr.reporting import Report
from farr.simulate.report import write_report
from farr.simulate.simulator import simulate_dataset


@dataclass
class DemoConfig:
    patients: int = 20_000
    seed: int = 0
    train_steps: int = 1500
    train_minutes: float = 5.0
    landmark: str = "2015-01-01"
    progress: bool = True


def run_demo(out: str | Path, cfg: DemoConfig | None = None, say=print) -> Path:
    cfg = cfg or DemoConfig()
    out = Path(out)
    dataset, model, evaluation = out / "population", out / "model", out / "evaluation"
    simulate_dataset(dataset, cfg.patients, cfg.seed, overwrite=True, progress=cfg.progress)
    population_report = write_report(dataset)
    say(f"simulated {cfg.patients:,} people: {population_report}")
    if (model / CHECKPOINT).exists():
        shutil.rmtree(model)  # the demo's own model from an earlier run
    summary = train(dataset, model, TrainConfig(preset="small", max_steps=cfg.train_steps,
                                                minutes=cfg.train_minutes, seed=cfg.seed), progress=cfg.progress)
    say(f"trained to step {summary['step']}: validation loss {summary['val_loss']:.3f}")
    # A date landmark takes everyone registered then, so a small demo still has events to score.
    result = evaluate(model, dataset, EvaluationConfig(at=cfg.landmark, horizons=(1.0, 5.0), oracle_draws=50,
                                                       rollout_people=100, rollout_draws=10))
    save(result, evaluation)
    evaluation_report = write_evaluation_report(result, evaluation)
    say(f"evaluated: {evaluation_report}")
    return _index(out, population_report, evaluation_report, result)


def _index(out: Path, population_report: Path, evaluation_report: Path, result: dict) -> Path:
    report = Report("farr demo")
    report.text("Simulated an England-like population with known hazards, trained a small timeline "
                "transformer on it for a few minutes, and measured its forecasts against the truth. A demo "
                "model is undertrained: benchmarks/model_benchmark.py trains on 100,000 people for 30 minutes.")
    report.table(["artefact", "report"], [["simulated population", str(population_report.relative_to(out))],
                                          ["model evaluation", str(evaluation_report.relative_to(out))]])
    s = result["summary"]
    report.table([f"5-year risk from {result['config']['at']}", "macro AUROC"],
                 [[p, s.get(f"{p}_macro_auroc_5y") or "NA"] for p in ("floor", "supervised", "model", "oracle")])
    return report.save(out)
