"""`farr train-private`: train a TimelineGPT with differentially private SGD (Opacus).

Each step draws people by Poisson sampling (rate q = batch_size / n, as the privacy accountant
assumes), computes each person's gradient (Opacus per-sample gradients), clips it to
`max_grad_norm`, adds Gaussian noise of scale σ·max_grad_norm and updates. σ is the smallest that
keeps the whole run within (ε, δ) under the RDP accountant; the ε actually spent is recorded in
the model card. The model directory has the same layout as `farr train`'s.

What the guarantee covers: the weights. The vocabulary (codes seen at least `min_count` times),
the value-bin edges and the card's training population are released under disclosure control
(minimum counts, suppression, rounding), not differential privacy. The scalar log-rate offset
is frozen at its initial value (Opacus computes per-sample gradients per layer; the layer norms'
biases let the head learn the same shift).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import opacus
import torch
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import DPOptimizer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from farr.model.card import write_card
from farr.model.data import TrainingBatches
from farr.model.train import TOKENIZER, WEIGHTS, build_model, save_model
from farr.model.tokenizer import Tokenizer


def train_private(dataset: str | Path, out: str | Path, *, epsilon: float, delta: float | None = None,
                  preset: str = "tiny", max_steps: int = 500, batch_size: int = 64, max_grad_norm: float = 1.0,
                  learning_rate: float = 2e-3, seed: int = 0, min_count: int = 10, progress: bool = False) -> dict:
    out = Path(out)
    if (out / WEIGHTS).exists():
        raise FileExistsError(f"{out} already holds a model; choose another --out")
    tokenizer = Tokenizer(min_count=min_count).fit(dataset)
    timelines = tokenizer.transform(dataset)
    people = np.flatnonzero(timelines.split == 0)
    delta = 0.1 / max(len(people), 1) if delta is None else delta
    _check_budget(epsilon, delta, len(people), batch_size)
    sample_rate = batch_size / len(people)
    sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                 steps=max_steps, accountant="rdp")
    torch.manual_seed(seed)
    model = build_model(tokenizer, preset)
    model.log_rate_offset.requires_grad_(False)
    private = GradSampleModule(model, loss_reduction="mean")
    optimiser = DPOptimizer(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate),
                            noise_multiplier=sigma, max_grad_norm=max_grad_norm, expected_batch_size=batch_size,
                            loss_reduction="mean")
    accountant = RDPAccountant()
    batches = TrainingBatches(timelines, people, model.cfg.block_size, seed=seed)
    rng = np.random.default_rng(seed)
    started, losses = time.perf_counter(), []
    with Progress(TextColumn("private training"), BarColumn(), MofNCompleteColumn(), disable=not progress) as bar:
        for _ in bar.track(range(max_steps)):
            chosen = people[rng.random(len(people)) < sample_rate]
            if len(chosen):  # an empty Poisson draw is a step that changes nothing (still accounted)
                loss = private(**batches.batch_of(chosen))["loss"]
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.item())
            accountant.step(noise_multiplier=sigma, sample_rate=sample_rate)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / TOKENIZER)
    private.remove_hooks()  # the saved model is the plain TimelineGPT
    save_model(out, model)
    privacy = {"differential_privacy": True, "epsilon": float(accountant.get_epsilon(delta)), "target_epsilon": epsilon,
               "delta": delta, "noise_multiplier": float(sigma), "max_grad_norm": max_grad_norm,
               "sample_rate": sample_rate, "steps": max_steps, "accountant": "rdp", "library": f"opacus {opacus.__version__}",
               "covers": "model weights (vocabulary, value bins and training population: disclosure control only)"}
    training = {"trainer": "farr train-private", "preset": preset, "max_steps": max_steps, "batch_size": batch_size,
                "learning_rate": learning_rate, "seed": seed, "min_count": min_count}
    write_card(out, dataset, timelines, tokenizer, training=training, privacy=privacy)
    return {"privacy": privacy, "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
            "seconds": time.perf_counter() - started}


def _check_budget(epsilon: float, delta: float, people: int, batch_size: int) -> None:
    if people == 0:
        raise ValueError("no people in the training split to train on")
    if not epsilon > 0:
        raise ValueError(f"--epsilon {epsilon}: must be positive")
    if not 0 < delta < 1 / people:
        raise ValueError(f"--delta {delta}: must be positive and below 1/n = {1 / people:.2g} "
                         f"(n = {people} training people), or one person's record could leak outright")
    if not 0 < batch_size < people:
        raise ValueError(f"--batch-size {batch_size}: must be between 1 and the {people} training people")
