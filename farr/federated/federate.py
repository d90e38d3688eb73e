"""`farr federate`: agree a vocabulary, train across sites with Flower, save the model, its card
and a ledger entry.

Two ways to run the same strategy: in one process (Flower's own `Server` with an in-process
client proxy per site; quick, for tests and benchmarks) or as one operating-system process per
site talking to a Flower server on loopback (`processes=True`), as real sites would. With secure
aggregation, both run Flower's SecAgg+ workflow over `farr.federated.secure`'s grid instead.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from flwr.common import DisconnectRes
from flwr.server import Server, ServerConfig, start_server
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from farr.federated import ledger
from farr.federated.client import LocalConfig, SiteClient, SiteTrainer, get_parameters, set_parameters
from farr.federated.secure import in_process_grid, loopback_grid, run_secure_rounds
from farr.federated.site_process import start, stop
from farr.federated.strategy import FederationConfig, GuardedStrategy, build_strategy
from farr.federated.vocabulary import agree, shared_counts, vocabulary_sha256
from farr.model.card import CARD, write_card
from farr.model.tokenizer import Tokenizer
from farr.model.train import TOKENIZER, build_model, save_model


def quiet_flower() -> None:
    """Flower logs every step at INFO; keep its warnings and errors only."""
    logging.getLogger("flwr").setLevel(logging.WARNING)


def site_processes(sites: list[Path]) -> ProcessPoolExecutor:
    """Fresh (spawned, not forked: polars' threads do not survive a fork) processes for site work."""
    return ProcessPoolExecutor(max_workers=min(len(sites), os.cpu_count() or 1),
                               mp_context=multiprocessing.get_context("spawn"))


def agree_vocabulary(sites: list[Path], min_count: int) -> Tokenizer:
    """Each site computes what it releases in its own process; only those counts come back."""
    with site_processes(sites) as pool:
        return agree(list(pool.map(shared_counts, sites, [min_count] * len(sites))))


def check_sites(sites: list[str | Path]) -> list[Path]:
    sites = [Path(s) for s in sites]
    if len(sites) < 1:
        raise ValueError("--sites: name at least one site dataset")
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise ValueError(f"--sites: two sites share the directory name {max(names, key=names.count)!r}")
    missing = [s for s in sites if not s.is_dir()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: no such site dataset")
    return sites


def federate(sites: list[str | Path], out: str | Path, cfg: FederationConfig, *, processes: bool = False,
             tokenizer: Tokenizer | None = None) -> dict:
    """Train one model across `sites` into `out`; returns the round log and per-site records."""
    quiet_flower()
    sites, out = check_sites(sites), Path(out)
    if (out / "model.pt").exists():
        raise FileExistsError(f"{out} already holds a model; choose a new --out")
    tokenizer = tokenizer or agree_vocabulary(sites, min_count=10)
    strategy = (_on_loopback if processes else _in_process)(sites, tokenizer, cfg)
    if not any(r["aggregated"] for r in strategy.rounds):
        problems = {name: r["rejected"][-1]["reason"] if r["rejected"] else "dropped out"
                    for name, r in strategy.records.items()}
        raise ValueError(f"no round could be aggregated, so no model was written: {problems}")
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(tokenizer, cfg.local.preset)
    set_parameters(model, strategy.current)
    save_model(out, model)
    tokenizer.save(out / TOKENIZER)
    training = {"federated": True, "strategy": cfg.strategy, "rounds": cfg.rounds, "sites": len(sites),
                "secure_aggregation": cfg.secure_aggregation,
                "local": asdict(cfg.local)} | {"fedprox": {"proximal_mu": cfg.proximal_mu},
                                               "fedavgm": {"server_momentum": cfg.server_momentum}}.get(cfg.strategy, {})
    _write_federated_card(out, sites, tokenizer, training, cfg.privacy())
    entry = ledger.append(out, strategy.records, strategy.rounds, training)
    (out / "federation_log.json").write_text(json.dumps({"rounds": strategy.rounds, "sites": strategy.records}, indent=1))
    return {"rounds": strategy.rounds, "sites": strategy.records, "ledger": entry}


def initial_parameters(tokenizer: Tokenizer, local: LocalConfig) -> list[np.ndarray]:
    torch.manual_seed(local.seed)
    return get_parameters(build_model(tokenizer, local.preset))


# -- in one process ---------------------------------------------------------------------------
class InProcessSite(ClientProxy):
    """A Flower client proxy that calls a site's client directly instead of over the network."""

    def __init__(self, cid: str, client: SiteClient):
        super().__init__(cid)
        self.client = client.to_client()

    def get_properties(self, ins, timeout, group_id):
        return self.client.get_properties(ins)

    def get_parameters(self, ins, timeout, group_id):
        return self.client.get_parameters(ins)

    def fit(self, ins, timeout, group_id):
        return self.client.fit(ins)

    def evaluate(self, ins, timeout, group_id):
        return self.client.evaluate(ins)

    def reconnect(self, ins, timeout, group_id):
        return DisconnectRes(reason="")


def _in_process(sites: list[Path], tokenizer: Tokenizer, cfg: FederationConfig) -> GuardedStrategy:
    return run_rounds([SiteClient(SiteTrainer(site, tokenizer, cfg.local)) for site in sites], tokenizer, cfg)


def run_rounds(clients: list[SiteClient], tokenizer: Tokenizer, cfg: FederationConfig) -> GuardedStrategy:
    """Flower's server loop (or its SecAgg+ workflow) over in-process site clients."""
    strategy = build_strategy(cfg, initial_parameters(tokenizer, cfg.local), vocabulary_sha256(tokenizer), len(clients))
    if cfg.secure_aggregation:
        return run_secure_rounds(in_process_grid(clients, cfg.clipped_at_sites), strategy, cfg)
    manager = SimpleClientManager()
    for i, client in enumerate(clients):
        manager.register(InProcessSite(str(i), client))
    Server(client_manager=manager, strategy=strategy).fit(cfg.rounds, timeout=cfg.round_timeout_s)
    return strategy


# -- one process per site, on loopback ----------------------------------------------------------
def _on_loopback(sites: list[Path], tokenizer: Tokenizer, cfg: FederationConfig) -> GuardedStrategy:
    strategy = build_strategy(cfg, initial_parameters(tokenizer, cfg.local), vocabulary_sha256(tokenizer), len(sites))
    with tempfile.TemporaryDirectory() as work:
        tokenizer.save(Path(work) / TOKENIZER)
        command = ["--tokenizer", str(Path(work) / TOKENIZER), "--local", json.dumps(asdict(cfg.local))]
        if cfg.secure_aggregation:
            with loopback_grid(sites, command + (["--clipped"] if cfg.clipped_at_sites else []),
                               cfg.connect_timeout_s) as grid:
                return run_secure_rounds(grid, strategy, cfg)
        address = f"127.0.0.1:{_free_port()}"
        workers = [start([*command, "--site", str(site), "--server", address]) for site in sites]
        try:
            start_server(server_address=address, strategy=strategy,
                         config=ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.round_timeout_s))
        finally:
            for worker in workers:
                stop(worker)
    return strategy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the card ------------------------------------------------------------------------------------
def site_card(site: Path, tokenizer: Tokenizer, training: dict, privacy: dict) -> dict:
    """A site's own disclosure-controlled card, written where its data is; only the card leaves."""
    with tempfile.TemporaryDirectory() as work:
        return json.loads(write_card(work, site, tokenizer.transform(site), tokenizer, training, privacy).read_text())


def _write_federated_card(out: Path, sites: list[Path], tokenizer: Tokenizer, training: dict, privacy: dict) -> None:
    with site_processes(sites) as pool:
        cards = list(pool.map(site_card, sites, [tokenizer] * len(sites), [training] * len(sites),
                              [privacy] * len(sites)))
    partial = out / (CARD + ".partial")
    partial.write_text(json.dumps(merge_cards(cards), indent=1))
    partial.replace(out / CARD)


def merge_cards(cards: list[dict]) -> dict:
    """One card for the federated model: every site's dataset, the widest data window (and the
    shortest follow-up), and the sites' released population cells and marginals added up."""
    base = max(cards, key=lambda c: c["dataset"]["subjects"])
    populations = [c["training_population"] for c in cards]
    marginals: dict[str, dict[str, int]] = {}
    for p in populations:
        for column, counts in p["marginals"].items():
            for value, count in counts.items():
                marginals.setdefault(column, {})[value] = marginals.get(column, {}).get(value, 0) + count
    windows = [c["data_window"] for c in cards]
    return base | {
        "dataset": {"federated": True, "sites": [c["dataset"] for c in cards],
                    "subjects": sum(c["dataset"]["subjects"] for c in cards),
                    "events": sum(c["dataset"]["events"] for c in cards)},
        "data_window": {"first_date": min(w["first_date"] for w in windows),
                        "last_date": max(w["last_date"] for w in windows),
                        "follow_up_years": min(w["follow_up_years"] for w in windows)},
        "training_population": base["training_population"] | {
            "people": sum(p["people"] for p in populations),
            "withheld_people": sum(p["withheld_people"] for p in populations),
            "demographics": [cell for p in populations for cell in p["demographics"]],
            "marginals": marginals},
    }
