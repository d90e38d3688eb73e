"""`farr simulate`: a whole population, streamed chunk by chunk into a farr dataset.

Each chunk is one shard with its own random streams, derived from (seed, chunk), so the output
is the same bytes for any number of worker processes. Besides the events and subjects, the
dataset holds the simulation's ground truth under `truth/`: the hazard model and, per person,
the hidden frailty and the true onset ages; `farr.simulate.oracle` reads them back.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from farr import __version__
from farr.events.io import DatasetWriter, ShardInfo, write_shard
from farr.events.schema import DEATH_CODE, END_REASONS, ETHNICITIES, REGIONS, SEXES
from farr.simulate import england as eng
from farr.simulate.calendar import to_datetime_us, to_days
from farr.simulate.codes import DIAGNOSES, ENCOUNTERS, codebook
from farr.simulate.hazards import HazardModel, build_model
from farr.simulate.identifiers import identifier_columns, opt_outs
from farr.simulate.observe import CODE_INDEX, observe
from farr.simulate.population import Population, draw_population

CHUNK_SIZE = 50_000
_SECONDS_1800_TO_1970 = 5_364_662_400  # keeps event seconds positive and below 2**35
TRUTH_DIR = "truth"
HAZARDS_FILE = "truth/hazards.json"


def simulate_dataset(out: str | Path, patients: int, seed: int, *, identifiable: bool = False,
                     overwrite: bool = False, workers: int | None = None, progress: bool = True,
                     chunk_size: int = CHUNK_SIZE) -> Path:
    if patients < 1:
        raise ValueError(f"--patients must be at least 1, got {patients}")
    if seed < 0:
        raise ValueError(f"--seed must be non-negative, got {seed}")
    chunks = [(i, start, min(chunk_size, patients - start))
              for i, start in enumerate(range(0, patients, chunk_size))]
    workers = max(1, min(workers or os.cpu_count() or 1, len(chunks)))
    with DatasetWriter(out, overwrite=overwrite, identifiable=identifiable) as writer:
        jobs = [(writer.staging, seed, chunk, start, size, patients, identifiable)
                for chunk, start, size in chunks]
        results = _run(jobs, workers, progress)
        model = build_model()
        (writer.staging / HAZARDS_FILE).write_text(model.to_json())
        writer.commit([info for info, _ in results], created_by=f"farr simulate {__version__}",
                      dataset_name="farr simulated England population", code_descriptions=codebook(),
                      extra={"outcomes": outcome_definitions(model), "simulation": {"patients": patients, "seed": seed, "chunk_size": chunk_size,
                                            "identifiable": identifiable,
                                            "extract_window": [eng.EXTRACT_START, eng.EXTRACT_END]}},
                      extra_files=[HAZARDS_FILE, *(truth for _, truth in results)])
    return Path(out)


def _run(jobs, workers: int, progress: bool) -> list[tuple[ShardInfo, str]]:
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("simulating", total=sum(job[4] for job in jobs))
        if workers == 1:
            results = []
            for job in jobs:
                results.append(simulate_chunk(*job))
                bar.advance(task, job[4])
            return results
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(simulate_chunk, *job) for job in jobs]
            for future, job in zip(futures, jobs):
                future.result()
                bar.advance(task, job[4])
            return [f.result() for f in futures]


def simulate_chunk(staging: Path, seed: int, chunk: int, start: int, size: int, total: int,
                   identifiable: bool) -> tuple[ShardInfo, str]:
    """Simulate one chunk and write its shard and truth file (returned relative to the dataset
    root); runs in a worker process."""
    truth_rng, observe_rng, identity_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed, spawn_key=(chunk,)).spawn(3))
    model = build_model()
    pop = draw_population(model, size, truth_rng, practices_per_site(total))
    subject_ids = np.arange(start + 1, start + size + 1, dtype=np.int64)
    events = _events_table(model, pop, subject_ids, observe_rng)
    subjects = _subjects_table(pop, subject_ids, identifiable, seed, identity_rng)
    info = write_shard(staging, chunk, events, subjects, identifiable=identifiable)
    truth_file = f"{TRUTH_DIR}/{chunk:05d}.parquet"
    (Path(staging) / TRUTH_DIR).mkdir(exist_ok=True)
    pq.write_table(truth_table(model, pop, subject_ids), Path(staging) / truth_file, compression="zstd")
    return info, truth_file


def outcome_definitions(model: HazardModel) -> dict[str, dict]:
    """How each simulated outcome shows in the record, for forecasting and evaluation."""
    outcomes = {name: {"codes": [f"SNOMED/{r.snomed}", f"ICD10/{r.icd10}"], "recurrent": False}
                for name, r in DIAGNOSES.items()}
    for name in ("unplanned_admission", "ae_attendance"):
        outcomes[name] = {"codes": [ENCOUNTERS[name][0]], "recurrent": True}
    outcomes["death"] = {"codes": [DEATH_CODE], "recurrent": False}
    assert set(outcomes) == {model.names[k] for k in range(len(model.names))} - {"gp_consultation"}
    return outcomes


def practices_per_site(total: int) -> np.ndarray:
    practices = np.clip(total // eng.PATIENTS_PER_PRACTICE, len(REGIONS), eng.MAX_PRACTICES)
    site_region, share_of_region = eng.sites()
    share = np.asarray(eng.REGION_MILLIONS)[site_region] * share_of_region / sum(eng.REGION_MILLIONS)
    return np.clip(np.round(share * practices), 1, 999).astype(np.int64)


def _events_table(model: HazardModel, pop: Population, subject_ids: np.ndarray, rng) -> pa.Table:
    obs = observe(model, pop, rng)
    time = to_datetime_us(pop.birth_year[obs.person] + obs.age)
    # One int64 key (person, then second since 1800) sorts ~3x faster than a two-key lexsort.
    seconds = time // 1_000_000 + _SECONDS_1800_TO_1970
    order = np.argsort((obs.person.astype(np.int64) << 35) | seconds, kind="stable")
    codes = pa.array(list(CODE_INDEX))
    value = obs.value[order]
    return pa.table({
        "subject_id": subject_ids[obs.person[order]],
        "time": pa.array(time[order], pa.timestamp("us")),
        "code": codes.take(pa.array(obs.code[order])),
        "numeric_value": pa.array(value, pa.float32(), mask=np.isnan(value)),
    })


def _labels(labels, index: np.ndarray) -> pa.Array:
    return pa.array(list(labels)).take(pa.array(index))


def _subjects_table(pop: Population, subject_ids: np.ndarray, identifiable: bool, seed: int,
                    rng) -> pa.Table:
    birth = pa.array(to_days(pop.birth_year), pa.int32()).cast(pa.date32())
    national, type1 = opt_outs(len(pop), rng) if identifiable else (np.zeros(len(pop), bool),) * 2
    columns = {
        "subject_id": subject_ids,
        "sex": _labels(SEXES, pop.male.astype(np.int8)),
        "year_month_of_birth": pc.strftime(birth, format="%Y-%m"),
        "ethnicity": _labels(ETHNICITIES, pop.ethnicity),
        "imd_quintile": pa.array(pop.imd_quintile, pa.int8()),
        "region": _labels(REGIONS, pop.region),
        "practice_id": _practice_ids(pop),
        "site_id": pc.binary_join_element_wise("ICB", _digits(pop.site + 1, 2), ""),
        "registration_start": pa.array(to_days(pop.birth_year + pop.entry_age), pa.int32()).cast(pa.date32()),
        "registration_end": pa.array(to_days(pop.birth_year + pop.exit_age), pa.int32()).cast(pa.date32()),
        "end_reason": _labels(END_REASONS, pop.end_reason),
        "national_opt_out": national,
        "type1_opt_out": type1,
    }
    if identifiable:
        columns |= identifier_columns(pop, subject_ids, birth, seed, rng)
    return pa.table(columns)


def _digits(values: np.ndarray, width: int) -> pa.Array:
    return pc.utf8_lpad(pc.cast(pa.array(values), pa.string()), width, "0")


def _practice_ids(pop: Population) -> pa.Array:
    """ODS-style practice codes: region letter, site (2 digits), practice within the site (3)."""
    number = pc.binary_join_element_wise(_digits(pop.site + 1, 2), _digits(pop.practice + 1, 3), "")
    return pc.binary_join_element_wise(_labels(eng.REGION_PRACTICE_LETTER, pop.region), number, "")


def truth_table(model: HazardModel, pop: Population, subject_ids: np.ndarray) -> pa.Table:
    """Per person: what the oracle needs (covariates, hidden frailty) and the true onset ages."""
    columns = {
        "subject_id": subject_ids, "male": pop.male, "ethnicity": pop.ethnicity.astype(np.int8),
        "imd_quintile": pop.imd_quintile, "frailty": pop.frailty, "birth_year": pop.birth_year,
        "entry_age": pop.entry_age, "exit_age": pop.exit_age,
    }
    for k in np.flatnonzero(~model.recurrent):
        onset = pop.histories.onset[:, k]
        columns[f"onset_{model.names[k]}"] = pa.array(onset, mask=np.isnan(onset))  # null: never
    return pa.table(columns)


def read_model(path: str | Path) -> HazardModel:
    """The hazard model a simulated dataset was drawn from."""
    file = Path(path) / HAZARDS_FILE
    if not file.exists():
        raise FileNotFoundError(f"{file}: missing; {path} is not a farr simulation (no ground truth)")
    return build_model(json.loads(file.read_text()))


def read_truth(path: str | Path) -> tuple[HazardModel, pa.Table]:
    """The hazard model and the per-person truth of a simulated dataset."""
    files = sorted((Path(path) / TRUTH_DIR).glob("*.parquet"))
    return read_model(path), pa.concat_tables(pq.read_table(f) for f in files)
