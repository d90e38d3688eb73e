"""One site: its data, loaded in its own process, and local training of the shared model.

The local step is `farr train`'s: the model's own loss on a TrainingBatches batch, AdamW,
gradient clipping and the same learning-rate schedule (counted in global steps), plus FedProx's
proximal term μ/2‖w − wᵗ‖² when the server asks for it. Only parameters and counts leave the site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.client import NumPyClient

from farr.federated.sites import manifest_sha256
from farr.federated.vocabulary import vocabulary_sha256
from farr.model.data import TrainingBatches
from farr.model.tokenizer import DEMOGRAPHICS, Tokenizer
from farr.model.train import TrainConfig, build_model, descend, learning_rate, make_optimiser

VALIDATION_SEED = 12345


@dataclass
class LocalConfig:
    preset: str = "tiny"
    local_steps: int = 20
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    validation_batches: int = 4
    seed: int = 0


def get_parameters(model: torch.nn.Module) -> list[np.ndarray]:
    """At least 1-d: Flower's SecAgg+ mis-sums 0-d arrays."""
    return [np.atleast_1d(p.detach().cpu().numpy()).copy() for p in model.parameters()]


def set_parameters(model: torch.nn.Module, parameters: list[np.ndarray]) -> None:
    with torch.no_grad():
        for p, value in zip(model.parameters(), parameters, strict=True):
            p.copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)).reshape(p.shape))


class SiteTrainer:
    """A site's model, optimiser and batches; its data never leaves this object."""

    def __init__(self, site: str | Path, tokenizer: Tokenizer, cfg: LocalConfig):
        self.site, self.cfg, self.tokenizer = Path(site), cfg, tokenizer
        self.name = self.site.name
        self.manifest_sha256 = manifest_sha256(site)
        self.vocabulary_sha256 = vocabulary_sha256(tokenizer)
        timelines = tokenizer.transform(site)
        split = timelines.split
        people = np.flatnonzero(split == 0)
        self.timelines, self.people = timelines, people
        self.patients = int(len(people))
        self.events = int(len(timelines.rows_of(people)[1]) - len(people) * len(DEMOGRAPHICS))
        self.reset()
        tuning = np.flatnonzero(split == 1)
        checks = TrainingBatches(timelines, tuning if len(tuning) else people, self.model.cfg.block_size,
                                 seed=VALIDATION_SEED)
        self.validation = [checks(cfg.batch_size) for _ in range(cfg.validation_batches)]

    def reset(self, seed: int | None = None) -> None:
        """A fresh model, optimiser and sampler (for another training run on the same loaded data)."""
        seed = self.cfg.seed if seed is None else seed
        torch.manual_seed(seed)
        self.model = build_model(self.tokenizer, self.cfg.preset)
        self.batches = TrainingBatches(self.timelines, self.people, self.model.cfg.block_size, seed=seed)
        self.optimiser = make_optimiser(self.model, self.cfg.learning_rate, self.cfg.weight_decay)

    def identity(self) -> dict:
        """What the site says about itself with every update (no patient-level data)."""
        return {"site": self.name, "manifest_sha256": self.manifest_sha256,
                "vocabulary_sha256": self.vocabulary_sha256, "patients": self.patients, "events": self.events}

    def fit(self, parameters: list[np.ndarray], server_round: int, total_steps: int,
            proximal_mu: float = 0.0) -> tuple[list[np.ndarray], dict]:
        set_parameters(self.model, parameters)
        anchor = [p.detach().clone() for p in self.model.parameters()]
        schedule = TrainConfig(preset=self.cfg.preset, max_steps=total_steps, learning_rate=self.cfg.learning_rate,
                               warmup_steps=max(1, total_steps // 20))
        self.model.train()
        losses = []
        for i in range(self.cfg.local_steps):
            for group in self.optimiser.param_groups:
                group["lr"] = learning_rate(schedule, (server_round - 1) * self.cfg.local_steps + i)
            loss = self.model(**self.batches(self.cfg.batch_size))["loss"]
            losses.append(loss.item())
            if proximal_mu > 0:
                loss = loss + proximal_mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), anchor))
            descend(self.model, self.optimiser, loss, self.cfg.grad_clip)
        return get_parameters(self.model), self.identity() | {"train_loss": float(np.mean(losses))}

    @torch.no_grad()
    def validation_loss(self, parameters: list[np.ndarray]) -> float:
        set_parameters(self.model, parameters)
        self.model.eval()
        loss = float(np.mean([float(self.model(**b)["loss"]) for b in self.validation]))
        self.model.train()
        return loss


class SiteClient(NumPyClient):
    """The Flower face of a site: the server's config in, parameters and counts out."""

    def __init__(self, trainer: SiteTrainer):
        self.trainer = trainer

    def get_properties(self, config):
        return self.trainer.identity()

    def get_parameters(self, config):
        return get_parameters(self.trainer.model)

    def fit(self, parameters, config):
        if config.get("vocabulary_sha256") != self.trainer.vocabulary_sha256:
            return [], 0, self.trainer.identity()  # no training: the server stops with a clear error
        updated, metrics = self.trainer.fit(parameters, int(config["server_round"]), int(config["total_steps"]),
                                            float(config.get("proximal_mu", 0.0)))
        return updated, self.trainer.patients, metrics

    def evaluate(self, parameters, config):
        return self.trainer.validation_loss(parameters), self.trainer.patients, {"site": self.trainer.name}
