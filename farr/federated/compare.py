"""`farr federate compare`: pooled training vs federated vs each site alone, scored on every
site's held-out people with `farr.forecast.evaluate`, and on the under-represented group: the
site with the largest share of ethnic-minority patients.

All models use the same agreed vocabulary, preset and seed, and see the same number of training
examples: the federation runs R rounds of L local steps at each of K sites, so pooled training
and each site alone run R rounds of K·L steps (for a site alone that is more passes over less data).
Pooled training is the "data moved to one place" reference that federation tries to match.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from farr.events.io import scan_subjects
from farr.federated.client import SiteClient, SiteTrainer, set_parameters
from farr.federated.federate import agree_vocabulary, check_sites, quiet_flower, run_rounds
from farr.federated.strategy import FederationConfig, GuardedStrategy
from farr.forecast.evaluate import EvaluationConfig, evaluate
from farr.model.tokenizer import Tokenizer
from farr.model.train import TOKENIZER, build_model, save_model
from farr.reporting import Report

MAJORITY_ETHNICITY = "White"


def minority_share(site: Path) -> float:
    """The share of a site's patients in an ethnic-minority group (an aggregate; no rows leave)."""
    ethnicity = scan_subjects(site).select("ethnicity").collect()["ethnicity"]
    known = ethnicity.drop_nulls()
    return float((known != MAJORITY_ETHNICITY).mean()) if len(known) else 0.0


def train_models(sites: list[Path], pooled: Path, tokenizer: Tokenizer, cfg: FederationConfig, out: Path,
                 *, each_site_alone: bool = True,
                 federated: FederationConfig | None = None) -> dict[str, tuple[Path, GuardedStrategy]]:
    """Train the pooled, federated (with `federated` settings if given) and site-alone models into
    out/models/<name>; returns the directory and the finished strategy (parameters, round log) of each."""
    alone = replace(cfg, local=replace(cfg.local, local_steps=cfg.local.local_steps * len(sites)))
    plans = {"pooled": ([pooled], alone), "federated": (sites, federated or cfg)}
    plans |= {f"alone:{site.name}": ([site], alone) for site in sites} if each_site_alone else {}
    models = {}
    for name, (members, config) in plans.items():
        strategy = run_rounds([SiteClient(SiteTrainer(m, tokenizer, config.local)) for m in members], tokenizer, config)
        model = build_model(tokenizer, config.local.preset)
        set_parameters(model, strategy.current)
        directory = out / "models" / name.replace(":", "-")
        directory.mkdir(parents=True, exist_ok=True)
        save_model(directory, model)
        tokenizer.save(directory / TOKENIZER)
        models[name] = directory, strategy
    return models


def compare(sites: list[str | Path], pooled: str | Path, out: str | Path, cfg: FederationConfig,
            evaluation: EvaluationConfig | None = None, tokenizer: Tokenizer | None = None) -> dict:
    quiet_flower()
    sites, out = check_sites(sites), Path(out)
    evaluation = evaluation or EvaluationConfig(horizons=(5.0,), rollout_people=50, rollout_draws=5,
                                                next_event_people=300, oracle_draws=20)
    tokenizer = tokenizer or agree_vocabulary(sites, min_count=10)
    models = train_models(sites, Path(pooled), tokenizer, cfg, out)
    horizon = evaluation.horizons[0]
    key = f"model_macro_auroc_{horizon:g}y"
    scores = {name: {site.name: evaluate(directory, site, replace(evaluation, notes=[]))["summary"].get(key)
                     for site in sites} for name, (directory, _) in models.items()}
    judges = [SiteTrainer(site, tokenizer, cfg.local) for site in sites]
    nll = {name: {j.name: j.validation_loss(strategy.current) for j in judges} for name, (_, strategy) in models.items()}
    minority = {site.name: minority_share(site) for site in sites}
    result = {"horizon_years": horizon, "metric": f"macro AUROC at {horizon:g} years on each site's held-out people",
              "auroc": scores, "mean_auroc": {n: _mean(s.values()) for n, s in scores.items()},
              "validation_nll": nll, "mean_validation_nll": {n: _mean(s.values()) for n, s in nll.items()},
              "minority_share": minority, "most_minority_site": max(minority, key=minority.get),
              "federated_over_pooled": _ratio(_mean(scores["federated"].values()), _mean(scores["pooled"].values()))}
    (out / "comparison.json").write_text(json.dumps(result, indent=1))
    result["report"] = str(_report(result, out))
    return result


def _mean(values) -> float | None:
    known = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(known)) if known else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _report(result: dict, out: Path) -> Path:
    sites = list(result["minority_share"])
    report = Report("Pooled vs federated vs each site alone")
    report.text(f"Metric: {result['metric']}. Every model has the same vocabulary, size and number of training "
                "examples. The site marked * has the largest share of ethnic-minority patients.")
    star = result["most_minority_site"]
    header = ["model", *[s + (" *" if s == star else "") for s in sites], "mean"]
    report.table(header, [[name, *[_cell(scores[s]) for s in sites], _cell(result["mean_auroc"][name])]
                          for name, scores in result["auroc"].items()])
    report.text("Validation loss (negative log-likelihood per token, lower is better) on each site's tuning split:")
    report.table(header, [[name, *[_cell(losses[s]) for s in sites], _cell(result["mean_validation_nll"][name])]
                          for name, losses in result["validation_nll"].items()])
    report.table(["site", "ethnic-minority share"], [[s, f"{v:.1%}"] for s, v in result["minority_share"].items()])
    ratio = result["federated_over_pooled"]
    report.text("Federated mean AUROC is " + (f"{ratio:.1%} of pooled training's." if ratio else "not available "
                                                 "(too few people at the landmark to score)."))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(result["auroc"])
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        ax.bar(np.arange(len(sites)) + k * width, [result["auroc"][name][s] or np.nan for s in sites], width, label=name)
    ax.set_xticks(np.arange(len(sites)) + 0.4 - width / 2, sites, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("macro AUROC")
    ax.legend(fontsize=7)
    report.figure(fig, "comparison", "Held-out macro AUROC on each site")
    return report.save(out)


def _cell(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"
