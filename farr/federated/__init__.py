"""Federated training across sites, and a ledger of what each site contributed.

Each site is a farr dataset that stays in its own process; sites agree a vocabulary from
counts they may share, train the same TimelineGPT locally, and a Flower server averages their
updates (FedAvg or FedProx, weighted by site size, optionally with differential privacy).
Every federated model carries an append-only, hash-chained `ledger.jsonl` beside its card.
"""
