"""`farr train`: fit a tokenizer and a TimelineGPT on a dataset's training split.

Checkpoints (model, optimiser, step and every random state) are written atomically, so a run
stopped at any point resumes from the last checkpoint and continues exactly as it would have.
Under `torchrun` it trains with DistributedDataParallel, one process per device (gloo on CPU,
NCCL on GPUs); there, a resumed run continues from the checkpoint with fresh per-rank sampling.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from farr.model.card import write_card
from farr.model.data import TrainingBatches, predictable
from farr.model.gpt import PRESETS, GPTConfig, TimelineGPT
from farr.model.tokenizer import Timelines, Tokenizer

CHECKPOINT, WEIGHTS, TOKENIZER, LOG = "checkpoint.pt", "model.pt", "tokenizer.json", "train_log.jsonl"


@dataclass
class TrainConfig:
    preset: str = "small"
    max_steps: int = 2000
    batch_size: int = 32
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_batches: int = 10
    checkpoint_every: int = 200
    minutes: float | None = None  # stop (and checkpoint) after this much training time
    cpu_minutes: float | None = None  # or this much processor time: a fair budget on a shared machine
    seed: int = 0
    min_count: int = 10
    # Years each training window's calendar time may move (`TrainingBatches`). 1000 makes the calendar
    # encoding noise (the date still shows through each history: birth-cohort band and age, how far
    # back it reaches): the model's error then holds more still between windows, and on the simulator the
    # population view's backtests corrected it better (three models each way; docs/population.md). Off by
    # default: synthetic records and planning futures need period effects at their dates.
    calendar_jitter: float = 0.0

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown config {self.preset!r}; choose one of {', '.join(PRESETS)}")


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def learning_rate(cfg: TrainConfig, step: int, spent: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to the minimum by the last step or, under a time budget,
    by the end of the budget (`spent`: its fraction used), whichever comes first."""
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = min(1.0, max(spent, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)))
    return cfg.min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_learning_rate)


def build_model(tokenizer: Tokenizer, preset: str) -> TimelineGPT:
    cfg = GPTConfig(vocab_size=len(tokenizer), **PRESETS[preset])
    return TimelineGPT(cfg, predictable(tokenizer.vocabulary))


def train(dataset: str | Path, out: str | Path, cfg: TrainConfig, *, resume: bool = False,
          progress: bool = True) -> dict:
    out = Path(out)
    rank, world = _distributed()
    device = _device()
    if resume:
        state = _load_checkpoint(out / CHECKPOINT)
        cfg = replace(TrainConfig(**state["train_config"]), max_steps=cfg.max_steps, minutes=cfg.minutes,
                      cpu_minutes=cfg.cpu_minutes)
        tokenizer = Tokenizer.load(out / TOKENIZER)
    else:
        _refuse_existing(out)
        tokenizer = Tokenizer(min_count=cfg.min_count).fit(dataset)
    timelines = tokenizer.transform(dataset)
    split = timelines.split
    torch.manual_seed(cfg.seed)
    model = build_model(tokenizer, cfg.preset).to(device)
    optimiser = make_optimiser(model, cfg.learning_rate, cfg.weight_decay, device)
    batches = TrainingBatches(timelines, np.flatnonzero(split == 0)[rank::world], model.cfg.block_size,
                              seed=cfg.seed + rank, calendar_jitter=cfg.calendar_jitter)
    if resume:
        step = _restore(state, model, optimiser, batches)
        if world > 1:  # the checkpoint holds rank 0's sampler: give each rank its own stream again
            batches.rng = np.random.default_rng([cfg.seed, rank, step])
    else:
        step = 0
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            tokenizer.save(out / TOKENIZER)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    validation = _validation_batches(timelines, split, model.cfg.block_size, cfg)
    run = _Run(cfg, out, model, ddp, optimiser, batches, validation, rank, world, device)
    summary = _loop(run, step, progress)
    if rank == 0:
        write_card(out, dataset, timelines, tokenizer, training=asdict(cfg) | {"steps": summary.get("step", step)})
    return summary


@dataclass
class _Run:
    """What one training run works with, in this process."""

    cfg: TrainConfig
    out: Path
    model: TimelineGPT
    ddp: torch.nn.Module  # the model, wrapped for DistributedDataParallel when there are several processes
    optimiser: torch.optim.Optimizer
    batches: TrainingBatches
    validation: list[dict]
    rank: int
    world: int
    device: torch.device

    def optimise(self, step: int, spent: float) -> tuple[float, int]:
        """One optimisation step; returns the batch loss and its (non-padding) tokens."""
        batch = {k: v.to(self.device) for k, v in self.batches(self.cfg.batch_size).items()}
        for group in self.optimiser.param_groups:
            group["lr"] = learning_rate(self.cfg, step, spent)
        loss = self.ddp(**batch)["loss"]
        descend(self.model, self.optimiser, loss, self.cfg.grad_clip)
        return loss.item(), int((batch["tokens"] != 0).sum()) * self.world

    def log(self, summary: dict) -> None:
        if self.rank == 0:
            with open(self.out / LOG, "a") as log:
                log.write(json.dumps(summary) + "\n")

    def checkpoint(self, step: int) -> None:
        if self.rank == 0:
            _save_checkpoint(self.out, self.model, self.optimiser, self.batches, self.cfg, step)


def _loop(run: _Run, step: int, progress: bool) -> dict:
    cfg = run.cfg
    budget, spent = _Budget(cfg), 0.0
    tokens_seen, train_seconds, summary = 0, 0.0, {}
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
                  TimeRemainingColumn(), disable=not (progress and run.rank == 0)) as bar:
        task = bar.add_task("train", total=cfg.max_steps, completed=step, info="")
        while step < cfg.max_steps:
            tick = time.perf_counter()
            loss, tokens = run.optimise(step, spent)
            step, train_seconds, tokens_seen = step + 1, train_seconds + time.perf_counter() - tick, tokens_seen + tokens
            spent = _rank0(budget.spent(), run.world)
            out_of_time = spent >= 1.0
            last = step == cfg.max_steps or out_of_time
            if step % cfg.eval_every == 0 or last:
                summary = _evaluate(run.model, run.validation, run.device) | {
                    "step": step, "train_loss": loss, "tokens_per_second": tokens_seen / train_seconds}
                bar.update(task, info=f"val {summary['val_loss']:.3f}")
                run.log(summary)
            if step % cfg.checkpoint_every == 0 or last:
                run.checkpoint(step)
            bar.update(task, completed=step)
            if out_of_time:
                break
    if run.rank == 0:
        save_model(run.out, run.model)
    return summary | {"parameters": run.model.parameter_count(), "flops_per_token": run.model.flops_per_token()}


class _Budget:
    """The fraction used of the wall-clock and processor-time budgets (the larger; 0 with none)."""

    def __init__(self, cfg: TrainConfig):
        self.limits = [(clock, clock(), minutes * 60) for clock, minutes in
                       ((time.perf_counter, cfg.minutes), (time.process_time, cfg.cpu_minutes)) if minutes]

    def spent(self) -> float:
        return max((clock() - start) / limit for clock, start, limit in self.limits) if self.limits else 0.0


def _rank0(value: float, world: int) -> float:
    """Rank 0's value, so that every process keeps the same schedule and stops at the same step."""
    if world == 1:
        return value
    shared = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(shared, 0)
    return float(shared.item())


def make_optimiser(model: TimelineGPT, learning_rate: float, weight_decay: float,
                   device: torch.device = torch.device("cpu")) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not norms, biases or the rate offset)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95), fused=device.type == "cuda")


def descend(model: torch.nn.Module, optimiser: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float) -> None:
    """One clipped gradient step on `loss`."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimiser.step()


def _validation_batches(timelines: Timelines, split: np.ndarray, block: int, cfg: TrainConfig) -> list[dict]:
    people = np.flatnonzero(split == 1)
    if len(people) == 0:
        return []
    batches = TrainingBatches(timelines, people, block, seed=12345)
    return [batches(cfg.batch_size) for _ in range(cfg.eval_batches)]


@torch.no_grad()
def _evaluate(model: TimelineGPT, validation: list[dict], device) -> dict:
    if not validation:
        return {"val_loss": float("nan")}
    model.eval()
    parts = [model(**{k: v.to(device) for k, v in b.items()}) for b in validation]
    model.train()
    return {f"val_{k}": float(np.mean([float(p[k]) for p in parts])) for k in ("loss", "which", "when")}


def _refuse_existing(out: Path) -> None:
    if (out / CHECKPOINT).exists() or (out / WEIGHTS).exists():
        raise FileExistsError(f"{out} already holds a model; pass --resume to continue training it")


def _save_checkpoint(out: Path, model, optimiser, batches: TrainingBatches, cfg: TrainConfig, step: int) -> None:
    state = {"model": model.state_dict(), "model_config": model.cfg.to_dict(), "optimiser": optimiser.state_dict(),
             "step": step, "train_config": asdict(cfg), "sampler": batches.rng.bit_generator.state,
             "torch_rng": torch.get_rng_state()}
    _atomic_save(state, out / CHECKPOINT)


def _atomic_save(obj, file: Path) -> None:
    partial = file.with_suffix(".partial")
    torch.save(obj, partial)
    os.replace(partial, file)  # a crash mid-write never leaves a broken checkpoint


def _load_checkpoint(file: Path) -> dict:
    if not file.exists():
        raise FileNotFoundError(f"{file}: no checkpoint to resume from")
    try:
        return torch.load(file, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises many types for a damaged file
        raise ValueError(f"{file}: corrupted checkpoint ({type(error).__name__}: {error})") from None


def _restore(state: dict, model, optimiser, batches: TrainingBatches) -> int:
    model.load_state_dict(state["model"])
    optimiser.load_state_dict(state["optimiser"])
    batches.rng.bit_generator.state = state["sampler"]
    torch.set_rng_state(state["torch_rng"])
    return state["step"]


def save_model(out: Path, model: TimelineGPT) -> None:
    _atomic_save({"model": model.state_dict(), "model_config": model.cfg.to_dict()}, out / WEIGHTS)


# A model saved before GPTConfig.calendar_period existed encodes calendar time down to a month.
BEFORE_CALENDAR_PERIOD = {"calendar_period": 1 / 12}


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> tuple[TimelineGPT, Tokenizer]:
    """The trained model and its tokenizer from a `farr train` output directory."""
    directory = Path(directory)
    tokenizer = Tokenizer.load(directory / TOKENIZER)
    state = _load_checkpoint(directory / WEIGHTS)
    try:
        cfg = GPTConfig(**(BEFORE_CALENDAR_PERIOD | state["model_config"]))
        model = TimelineGPT(cfg, predictable(tokenizer.vocabulary))
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"{directory / WEIGHTS}: not a model of this farr version, or not of its tokenizer "
                         f"({' '.join(str(error).split())})") from None
    return model.to(device).eval(), tokenizer
