"""The server's strategy: Flower's FedAvg, FedAvgM (server momentum) or FedProx (each weighted
by site size), optionally inside Flower's central differential-privacy wrapper, inside a guard
that checks every update first.

The guard rejects a malformed or non-finite update (and records it; under secure aggregation
the site checks its own and sends the reason instead), records sites that drop
out of a round, stops with a clear error when a site trains with another vocabulary, and keeps
the per-round log (sites, bytes each way) that the ledger and the report are written from.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from flwr.common import Parameters, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import (DifferentialPrivacyClientSideFixedClipping,
                                  DifferentialPrivacyServerSideFixedClipping, FedAvg, FedAvgM, FedProx, Strategy)

from farr.federated.client import LocalConfig

STRATEGIES = ("fedavg", "fedavgm", "fedprox")


@dataclass
class FederationConfig:
    rounds: int = 3
    strategy: str = "fedavg"
    proximal_mu: float = 0.01
    server_momentum: float = 0.5  # fedavgm: the server keeps this share of last round's step
    dp_noise_multiplier: float | None = None  # None: no differential privacy
    dp_clipping_norm: float = 1.0
    secure_aggregation: bool = False  # Flower SecAgg+: the server sees only the sum of the sites' models
    connect_timeout_s: float = 120.0
    round_timeout_s: float | None = 3600.0  # a site silent this long in a round drops out of it (None: wait)
    local: LocalConfig = field(default_factory=LocalConfig)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"--strategy {self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {self.rounds}")
        if self.round_timeout_s is not None and self.round_timeout_s <= 0:
            raise ValueError(f"--round-timeout must be positive seconds, got {self.round_timeout_s:g}")

    @property
    def total_steps(self) -> int:
        return self.rounds * self.local.local_steps

    @property
    def clipped_at_sites(self) -> bool:
        """Under secure aggregation the server never holds one site's update, so the sites clip their own."""
        return self.secure_aggregation and self.dp_noise_multiplier is not None

    def privacy(self) -> dict:
        secure = {"secure_aggregation": "Flower SecAgg+ (the server learns only the weighted sum of the sites' "
                  "models)" if self.secure_aggregation else False}
        if self.dp_noise_multiplier is None:
            return secure | {"differential_privacy": False}
        where = "each site clips its own update (fixedclipping_mod)" if self.clipped_at_sites else \
            "the server clips each site's update"
        return secure | {"differential_privacy": True, "mechanism": f"central DP on site updates: {where} to L2 norm "
                         "C; Gaussian noise of std noise_multiplier*C/sites on the average (Flower "
                         f"DifferentialPrivacy{'Client' if self.clipped_at_sites else 'Server'}SideFixedClipping)",
                         "noise_multiplier": self.dp_noise_multiplier, "clipping_norm": self.dp_clipping_norm,
                         "rounds": self.rounds}


def build_strategy(cfg: FederationConfig, initial: list[np.ndarray], vocabulary_sha256: str, sites: int) -> GuardedStrategy:
    common = dict(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=1, min_evaluate_clients=1,
                  min_available_clients=1, accept_failures=True,
                  fit_metrics_aggregation_fn=lambda metrics: {},  # per-site metrics go to the ledger instead
                  on_fit_config_fn=lambda r: {"server_round": r, "total_steps": cfg.total_steps,
                                              "vocabulary_sha256": vocabulary_sha256})
    inner: Strategy = {
        "fedavg": lambda: FedAvg(**common),
        "fedavgm": lambda: FedAvgM(server_momentum=cfg.server_momentum, initial_parameters=ndarrays_to_parameters(initial),
                                   **common),
        "fedprox": lambda: FedProx(proximal_mu=cfg.proximal_mu, **common)}[cfg.strategy]()
    if cfg.dp_noise_multiplier is not None:
        clipping = (DifferentialPrivacyClientSideFixedClipping if cfg.clipped_at_sites
                    else DifferentialPrivacyServerSideFixedClipping)
        inner = clipping(inner, cfg.dp_noise_multiplier, cfg.dp_clipping_norm, sites)
    return GuardedStrategy(inner, initial, vocabulary_sha256, sites, cfg.connect_timeout_s)


def update_problem(update: list[np.ndarray], current: list[np.ndarray]) -> str | None:
    """Why an update cannot be averaged into the model, or None if it can."""
    if len(update) != len(current):
        return f"malformed update: {len(update)} arrays, the model has {len(current)}"
    for i, (u, c) in enumerate(zip(update, current)):
        if u.shape != c.shape:
            return f"malformed update: array {i} has shape {u.shape}, the model's is {c.shape}"
        if not np.isfinite(u).all():
            return f"non-finite update: array {i} holds NaN or infinite values"
    return None


class GuardedStrategy(Strategy):
    def __init__(self, inner: Strategy, initial: list[np.ndarray], vocabulary_sha256: str, sites: int,
                 connect_timeout_s: float):
        super().__init__()
        self.inner, self.current = inner, initial
        self.vocabulary_sha256, self.sites, self.connect_timeout_s = vocabulary_sha256, sites, connect_timeout_s
        self.records: dict[str, dict] = {}
        self.site_of: dict[str, str] = {}  # Flower node id -> site name, learnt from its updates
        self.rounds: list[dict] = []
        self._sampled: list[str] = []
        self._started = 0.0

    def __repr__(self) -> str:
        return f"GuardedStrategy({self.inner!r})"

    def initialize_parameters(self, client_manager):
        client_manager.num_available()  # a Flower Grid's client manager registers its nodes when asked
        if not client_manager.wait_for(self.sites, timeout=self.connect_timeout_s):
            raise TimeoutError(f"only {client_manager.num_available()} of {self.sites} sites connected "
                               f"within {self.connect_timeout_s:g} s")
        return ndarrays_to_parameters(self.current)

    def configure_fit(self, server_round, parameters, client_manager):
        instructions = self.inner.configure_fit(server_round, parameters, client_manager)
        self._sampled = [proxy.cid for proxy, _ in instructions]
        self._started = time.perf_counter()
        return instructions

    def aggregate_fit(self, server_round, results, failures):
        accepted, rejected = [], []
        for proxy, res in results:
            name = self._identify(proxy.cid, res.metrics)
            reason = res.metrics.get("withheld") or update_problem(parameters_to_ndarrays(res.parameters), self.current)
            if reason:
                self.records[name]["rejected"].append({"round": server_round, "reason": reason})
                rejected.append(name)
            else:
                self.records[name]["rounds"].append(server_round)
                accepted.append((proxy, res))
        returned = {proxy.cid for proxy, _ in results}
        dropped = [self._dropout(cid, server_round) for cid in self._sampled if cid not in returned]
        parameters, metrics = self.inner.aggregate_fit(server_round, accepted, []) if accepted else (None, {})
        if parameters is not None:  # in the model's dtypes (SecAgg+ returns float64)
            self.current = [a.astype(c.dtype) for a, c in zip(parameters_to_ndarrays(parameters), self.current)]
        sent = ndarrays_to_parameters(self.current)  # serialised once: the round's result and its traffic
        self._log(server_round, parameters is not None, [self.site_of[p.cid] for p, _ in accepted], dropped,
                  rejected, mb_to_sites=len(self._sampled) * _megabytes(sent),
                  mb_from_sites=sum(_megabytes(res.parameters) for _, res in results))
        return (sent if parameters is not None else None), metrics

    def halted(self, server_round: int, failed: list[str]) -> None:
        """Log a round that never reached aggregation (secure aggregation stopped), and who failed in it."""
        self._log(server_round, False, [], [self._dropout(cid, server_round) for cid in failed], [])
        self.rounds.sort(key=lambda entry: entry["round"])

    def _log(self, server_round: int, aggregated: bool, sites: list[str], dropouts: list[str], rejected: list[str],
             *, mb_to_sites: float = 0.0, mb_from_sites: float = 0.0) -> None:
        self.rounds.append({"round": server_round, "aggregated": aggregated, "sites": sites, "dropouts": dropouts,
                            "rejected": rejected, "seconds": round(time.perf_counter() - self._started, 2),
                            "mb_to_sites": round(mb_to_sites, 3), "mb_from_sites": round(mb_from_sites, 3)})

    def _identify(self, cid: str, metrics: dict) -> str:
        name = str(metrics.get("site", f"node-{cid}"))
        if metrics.get("vocabulary_sha256") != self.vocabulary_sha256:
            raise ValueError(f"site {name}: trains with a different vocabulary "
                             f"({str(metrics.get('vocabulary_sha256'))[:12]}, agreed {self.vocabulary_sha256[:12]}); "
                             "re-run the vocabulary agreement with every site")
        self.site_of[cid] = name
        self._record(name).update({k: metrics[k] for k in ("manifest_sha256", "patients", "events") if k in metrics})
        return name

    def _dropout(self, cid: str, server_round: int) -> str:
        name = self.site_of.get(cid, f"node-{cid}")
        self._record(name)["dropouts"].append(server_round)
        return name

    def _record(self, name: str) -> dict:
        return self.records.setdefault(name, {"rounds": [], "dropouts": [], "rejected": []})

    def configure_evaluate(self, server_round, parameters, client_manager):
        return []

    def aggregate_evaluate(self, server_round, results, failures):
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


def _megabytes(parameters: Parameters) -> float:
    return sum(len(t) for t in parameters.tensors) / 1e6
