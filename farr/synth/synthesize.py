"""`farr synthesize`: a whole synthetic population from a trained model, streamed in shards.

Each shard of people has its own random streams (from the seed and the shard number), so the
output depends only on the model, the seed, the number of patients and the kind of device. The
dataset is written through `DatasetWriter` (atomic), with any OMOP CDM 5.4 or FHIR R4 export
written into it before the commit, so `farr.json` checksums those files too. `farr.json` records
where the data came from: the model card's checksum, its training dataset and the (ε, δ) spent.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from farr.events.io import DatasetWriter, sha256_file
from farr.model.card import CARD, read_card
from farr.model.data import PREFIX
from farr.model.tokenizer import UNKNOWN
from farr.model.train import load_model
from farr.synth.export import EXPORTERS
from farr.synth.population import People, draw_people
from farr.synth.records import Decoder, events_table, subjects_table
from farr.synth.sampler import Sampled, sample_lives
from farr.synth.threads import single_threaded

FORMATS = ("meds", *EXPORTERS)
SHARD_PEOPLE = {"cpu": 16_384, "cuda": 65_536}  # a GPU samples a whole shard at once where memory allows
CPU_BATCH_PEOPLE = 4_096  # rows sampled together on a CPU: larger batches were no faster
GPU_MEMORY_SHARE = 0.4  # of free GPU memory, for the key/value cache of a batch at its widest


def synthesize(model_dir: str | Path, patients: int, out: str | Path, *, fmt: str = "meds", seed: int = 0,
               device: str = "cpu", workers: int = 1, progress: bool = False) -> Path:
    """Write `patients` synthetic people as a farr dataset at `out` (and an export in `fmt`); returns `out`.

    Shards are sampled by `workers` processes on a CPU (0: one a core; one process on a GPU) and
    written in order. The same seed gives the same data for any number of workers on the same kind
    of device (CPU and GPU random streams differ)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    if patients < 1:
        raise ValueError(f"--patients {patients}: ask for at least one synthetic patient")
    device = resolve_device(device)
    if workers < 0 or (workers > 1 and device != "cpu"):
        raise ValueError(f"--workers {workers}: use 0 (one a core) or more workers, and one on a GPU")
    workers = workers or ((os.cpu_count() or 1) if device == "cpu" else 1)
    card = read_card(model_dir)
    size = SHARD_PEOPLE[device]
    plan = [(shard, first, min(size, patients - first)) for shard, first in enumerate(range(0, patients, size))]
    shards = []
    with DatasetWriter(out) as writer, _bar(progress) as bar:
        exporter = EXPORTERS[fmt](writer.staging) if fmt in EXPORTERS else None
        task = bar.add_task("synthesize", total=patients)
        for shard, events, subjects in _sampled_shards((str(model_dir), device, seed), plan, workers):
            shards.append(writer.write_shard(shard, events, subjects))
            if exporter:
                exporter.write(events, subjects)
            bar.advance(task, len(subjects))
        files = exporter.close() if exporter else []
        writer.commit(shards, created_by="farr synthesize", dataset_name="farr synthetic population",
                      extra={"synthetic": _provenance(model_dir, card, patients, seed, fmt, device)},
                      extra_files=files)
    return Path(out)


class ShardSampler:
    """Samples shards of synthetic people, each from its own random streams (the seed and shard number)."""

    def __init__(self, model_dir: str, device: str, seed: int):
        self.card, self.device, self.seed = read_card(model_dir), device, seed
        self.model, tokenizer = load_model(model_dir, device)
        self.vocabulary, self.decoder = tokenizer.vocabulary, Decoder(tokenizer)
        self.token_id = {t: i for i, t in enumerate(tokenizer.vocabulary)}
        self.batch_people = _batch_people(self.model, device)

    def __call__(self, part: tuple[int, int, int]) -> tuple[int, pa.Table, pa.Table]:
        """Shard `shard` of `n` people, whose ids start after `first`: (shard, events, subjects)."""
        shard, first, n = part
        rng = np.random.default_rng([self.seed, shard])
        generator = torch.Generator(self.device).manual_seed(int(rng.integers(2**62)))
        people = draw_people(self.card, n, rng)
        prefix = np.vectorize(lambda t: self.token_id.get(t, self.token_id[UNKNOWN]))(people.demographics)
        sampled = self._sample(people, prefix[:, :PREFIX], generator)
        ids = np.arange(first + 1, first + n + 1, dtype=np.int64)
        return shard, events_table(people, sampled, ids, self.decoder, rng), subjects_table(people, sampled, ids)

    def _sample(self, people: People, prefix: np.ndarray, generator: torch.Generator) -> Sampled:
        parts = []
        for lo in range(0, len(people), self.batch_people):
            rows = slice(lo, lo + self.batch_people)
            part = sample_lives(self.model, self.vocabulary, prefix[rows], people.birth_day[rows],
                                people.start_age[rows], people.end_age[rows], generator)
            part.person += lo
            parts.append(part)
        return Sampled(*(np.concatenate(x) for x in zip(*((p.person, p.token, p.age, p.died, p.death_age)
                                                          for p in parts))))


def _sampled_shards(spec: tuple[str, str, int], plan: list, workers: int):
    """(shard, events, subjects) in shard order. The next shards are sampled while one is written:
    in a thread beside this one (one worker), or in `workers` processes."""
    workers = min(workers, len(plan))
    if workers == 1:
        with single_threaded(), ThreadPoolExecutor(1) as thread:
            yield from _ahead(thread, ShardSampler(*spec), plan, depth=1)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_start_worker, initargs=spec) as pool:
        yield from _ahead(pool, _sample_in_worker, plan, depth=2 * workers)


def _ahead(executor: Executor, sample, plan: list, depth: int):
    """`sample(part)` for each part in order, with up to `depth` parts waiting to be taken."""
    pending: deque = deque()
    for part in plan:
        pending.append(executor.submit(sample, part))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


_worker_sampler: ShardSampler | None = None


def _start_worker(*spec) -> None:
    global _worker_sampler
    torch.set_num_threads(1)  # one core a worker (see farr.synth.threads)
    _worker_sampler = ShardSampler(*spec)


def _sample_in_worker(part):
    return _worker_sampler(part)


def resolve_device(device: str) -> str:
    """"auto" is the GPU when there is one; asking for a GPU that is not there is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: choose cpu, cuda or auto")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is visible to torch")
    return device


def _batch_people(model, device: str) -> int:
    """On a GPU, as many rows as fit the key/value cache at full width in a share of free memory."""
    if device == "cpu":
        return CPU_BATCH_PEOPLE
    c = model.cfg
    row_bytes = 4 * (2 * c.n_layer * c.block_size * c.n_embd * 1.5 + 8 * c.vocab_size)  # 1.5: cache growth copies
    free, _ = torch.cuda.mem_get_info()
    return int(min(SHARD_PEOPLE[device], max(CPU_BATCH_PEOPLE, GPU_MEMORY_SHARE * free / row_bytes)))


def _provenance(model_dir, card: dict, patients: int, seed: int, fmt: str, device: str) -> dict:
    return {"generator": "farr TimelineGPT", "model_card_sha256": sha256_file(Path(model_dir) / CARD),
            "training_dataset": card["dataset"], "data_window": card["data_window"], "privacy": card["privacy"],
            "patients": patients, "seed": seed, "format": fmt, "device": device}


def _bar(progress: bool) -> Progress:
    return Progress(TextColumn("synthesizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not progress)
