"""What each site's data is worth to the model: leave-one-site-out and Monte-Carlo Shapley values.

The utility of a coalition of sites is the validation score of a model federated over just those
sites (same strategy, rounds and local steps as the ledgered run), on the validation data of every
site: `nll` (minus the model's loss per token on each site's tuning split, the default and fast) or
`auroc` (macro landmark AUROC from `farr.forecast.evaluate`, slower). Shapley values are estimated
by permutation sampling with truncation (Ghorbani & Zou 2019, TMC-Shapley): once a permutation's
coalition scores within `tolerance` × (the whole federation's gain over an untrained model) of the
whole federation, later sites in it add nothing. Every
coalition is trained once and cached, so with few sites the estimate becomes the exact value.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from farr.federated.client import LocalConfig, SiteClient, SiteTrainer, set_parameters
from farr.federated.federate import check_sites, initial_parameters, quiet_flower, run_rounds
from farr.federated.strategy import FederationConfig
from farr.model.tokenizer import Tokenizer
from farr.model.train import TOKENIZER, build_model, save_model

METRICS = ("nll", "auroc")


@dataclass
class ValuationConfig:
    metric: str = "nll"
    permutations: int = 20
    tolerance: float = 0.01  # truncate once within this fraction of the whole federation's gain over no training
    seed: int = 0
    evaluation_horizon: float = 5.0  # years, for the auroc metric

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"--metric {self.metric!r}: choose one of {', '.join(METRICS)}")
        if self.permutations < 1:
            raise ValueError(f"--permutations must be at least 1, got {self.permutations}")


class Utility:
    """Trains (once) and scores federations of any subset of the sites."""

    def __init__(self, sites: list[Path], tokenizer: Tokenizer, federation: FederationConfig, cfg: ValuationConfig):
        self.trainers = [SiteTrainer(site, tokenizer, federation.local) for site in check_sites(sites)]
        self.sites, self.tokenizer, self.federation, self.cfg = sites, tokenizer, federation, cfg
        self.cache: dict[frozenset[int], float] = {}
        self.weights = np.array([t.patients for t in self.trainers], float)

    def __call__(self, coalition: frozenset[int]) -> float:
        if coalition not in self.cache:
            self.cache[coalition] = self._score(self._train(coalition))
        return self.cache[coalition]

    def _train(self, coalition: frozenset[int]) -> list[np.ndarray]:
        if not coalition:
            return initial_parameters(self.tokenizer, self.federation.local)
        members = [self.trainers[i] for i in sorted(coalition)]
        for trainer in members:
            trainer.reset()
        return run_rounds([SiteClient(t) for t in members], self.tokenizer, self.federation).current

    def _score(self, parameters: list[np.ndarray]) -> float:
        if self.cfg.metric == "nll":
            losses = [t.validation_loss(parameters) for t in self.trainers]
            return -float(np.average(losses, weights=self.weights))
        from farr.forecast.evaluate import EvaluationConfig, evaluate

        with tempfile.TemporaryDirectory() as model_dir:
            model = build_model(self.tokenizer, self.federation.local.preset)
            set_parameters(model, parameters)
            save_model(Path(model_dir), model)
            self.tokenizer.save(Path(model_dir) / TOKENIZER)
            config = EvaluationConfig(split="tuning", horizons=(self.cfg.evaluation_horizon,), rollout_people=20,
                                      rollout_draws=2, next_event_people=50, oracle_draws=5)
            key = f"model_macro_auroc_{self.cfg.evaluation_horizon:g}y"
            scores = [evaluate(model_dir, site, config)["summary"].get(key) for site in self.sites]
        scores = np.array([np.nan if s is None else s for s in scores], float)
        return float(np.nansum(scores * self.weights) / self.weights[~np.isnan(scores)].sum())


def leave_one_out(utility: Utility, n: int) -> list[float]:
    everyone = frozenset(range(n))
    return [utility(everyone) - utility(everyone - {i}) for i in range(n)]


def monte_carlo_shapley(utility: Utility, n: int, cfg: ValuationConfig) -> tuple[list[float], list[float]]:
    """(Shapley estimates, their standard errors) from truncated permutation sampling."""
    rng = np.random.default_rng(cfg.seed)
    full, empty = utility(frozenset(range(n))), utility(frozenset())
    marginals = np.zeros((cfg.permutations, n))
    for k in range(cfg.permutations):
        coalition, previous = frozenset(), empty
        for i in rng.permutation(n):
            if abs(full - previous) <= cfg.tolerance * abs(full - empty):
                break  # truncated: the rest of this permutation adds (about) nothing
            coalition = coalition | {int(i)}
            current = utility(coalition)
            marginals[k, i], previous = current - previous, current
    error = marginals.std(axis=0, ddof=1) / np.sqrt(cfg.permutations) if cfg.permutations > 1 else np.full(n, np.nan)
    return marginals.mean(axis=0).tolist(), error.tolist()


def value_sites(sites: list[str | Path], tokenizer: Tokenizer, federation: FederationConfig,
                cfg: ValuationConfig) -> dict:
    quiet_flower()
    started = time.perf_counter()
    sites = check_sites(sites)
    utility = Utility(sites, tokenizer, federation, cfg)
    n = len(sites)
    loo = leave_one_out(utility, n)
    shapley, error = monte_carlo_shapley(utility, n, cfg)
    return {"metric": cfg.metric, "config": asdict(cfg), "federation": {"strategy": federation.strategy,
            "rounds": federation.rounds, "local": asdict(federation.local)},
            "utility_all_sites": utility(frozenset(range(n))), "utility_no_sites": utility(frozenset()),
            "sites": [{"site": t.name, "manifest_sha256": t.manifest_sha256, "patients": t.patients,
                       "leave_one_out": loo[i], "shapley": shapley[i], "shapley_standard_error": error[i]}
                      for i, t in enumerate(utility.trainers)],
            "coalitions_trained": len(utility.cache), "seconds": round(time.perf_counter() - started, 1)}


def federation_from_ledger(training: dict) -> FederationConfig:
    """The configuration a ledgered training run used, to retrain coalitions the same way."""
    return FederationConfig(rounds=training["rounds"], strategy=training["strategy"],
                            proximal_mu=training.get("proximal_mu", 0.01), local=LocalConfig(**training["local"]))
