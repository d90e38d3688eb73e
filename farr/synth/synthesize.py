"""`farr synthesize`: a whole synthetic population from a trained model, streamed in shards.

Each shard of `SHARD_PEOPLE` people has its own random streams (from the seed and the shard
number), so the output depends only on the model, the seed and the number of patients. The
dataset is written through `DatasetWriter` (atomic), with any OMOP CDM 5.4 or FHIR R4 export
written into it before the commit, so `farr.json` checksums those files too. `farr.json` records
where the data came from: the model card's checksum, its training dataset and the (ε, δ) spent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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
SHARD_PEOPLE = 50_000
BATCH_PEOPLE = 4_096  # rows sampled together


def synthesize(model_dir: str | Path, patients: int, out: str | Path, *, fmt: str = "meds", seed: int = 0,
               progress: bool = False) -> Path:
    """Write `patients` synthetic people as a farr dataset at `out` (and an export in `fmt`); returns `out`."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    if patients < 1:
        raise ValueError(f"--patients {patients}: ask for at least one synthetic patient")
    card = read_card(model_dir)
    model, tokenizer = load_model(model_dir)
    decoder = Decoder(tokenizer)
    token_id = {t: i for i, t in enumerate(tokenizer.vocabulary)}
    shards = []
    with DatasetWriter(out) as writer, _bar(progress) as bar, single_threaded():
        exporter = EXPORTERS[fmt](writer.staging) if fmt in EXPORTERS else None
        task = bar.add_task("synthesize", total=patients)
        for shard, first in enumerate(range(0, patients, SHARD_PEOPLE)):
            rng = np.random.default_rng([seed, shard])
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            people = draw_people(card, min(SHARD_PEOPLE, patients - first), rng)
            prefix = np.vectorize(lambda t: token_id.get(t, token_id[UNKNOWN]))(people.demographics)
            sampled = _sample(model, tokenizer.vocabulary, people, prefix, generator, lambda k: bar.advance(task, k))
            ids = np.arange(first + 1, first + len(people) + 1, dtype=np.int64)
            events, subjects = events_table(people, sampled, ids, decoder, rng), subjects_table(people, sampled, ids)
            shards.append(writer.write_shard(shard, events, subjects))
            if exporter:
                exporter.write(events, subjects)
        files = exporter.close() if exporter else []
        writer.commit(shards, created_by="farr synthesize", dataset_name="farr synthetic population",
                      extra={"synthetic": _provenance(model_dir, card, patients, seed, fmt)}, extra_files=files)
    return Path(out)


def _sample(model, vocabulary, people: People, prefix: np.ndarray, generator, advance) -> Sampled:
    parts = []
    for lo in range(0, len(people), BATCH_PEOPLE):
        rows = slice(lo, lo + BATCH_PEOPLE)
        part = sample_lives(model, vocabulary, prefix[rows, :PREFIX], people.start_age[rows], people.end_age[rows],
                            generator)
        part.person += lo
        parts.append(part)
        advance(len(part.died))
    return Sampled(*(np.concatenate(x) for x in zip(*((p.person, p.token, p.age, p.died, p.death_age) for p in parts))))


def _provenance(model_dir, card: dict, patients: int, seed: int, fmt: str) -> dict:
    return {"generator": "farr TimelineGPT", "model_card_sha256": sha256_file(Path(model_dir) / CARD),
            "training_dataset": card["dataset"], "data_window": card["data_window"], "privacy": card["privacy"],
            "patients": patients, "seed": seed, "format": fmt}


def _bar(progress: bool) -> Progress:
    return Progress(TextColumn("synthesizing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    disable=not progress)
