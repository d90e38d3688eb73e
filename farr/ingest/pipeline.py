"""`farr ingest`: a source extract into a pseudonymised, opt-out-respecting farr dataset.

    source ──prepare──► parts ──read + clean (workers)──► shards, quarantine parts
           ──► across parts: pseudonym collisions (fail), repeated patients (withheld)
           ──► k-anonymity (and generalisation) ──► quarantine, manifest, report ──► commit

Everything is written into the ``DatasetWriter``'s staging directory and moved into place in
one rename at the end, so a crash or an error leaves no output at all. Each part is one output
shard, cleaned by ``farr.ingest.rules`` in a worker process; memory is bounded by one part per
worker (plus the small per-subject arrays kept for the checks across parts).
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import Progress

from farr import __version__
from farr.events.io import DatasetWriter, ShardInfo, write_shard
from farr.governance import kanonymity, pseudonymise
from farr.governance.opt_out import OptOutPolicy
from farr.governance.pseudonymise import first_repeats, load_or_create_key
from farr.ingest import manifest, quarantine, report
from farr.ingest.fhir import FhirSource
from farr.ingest.identifiable import IdentifiableSource
from farr.ingest.meds import MedsSource
from farr.ingest.omop import OmopSource
from farr.ingest.rules import Counts, Rules, clean
from farr.ingest.source import InputFile, Source, Tally

FORMATS = {
    "fhir": FhirSource,
    "omop": OmopSource,
    "meds": MedsSource,
    "farr-identifiable": IdentifiableSource,
}
WORK_DIR = ".work"  # in staging, removed before commit
DUPLICATE_ACROSS_PARTS = "duplicate patient: same identifier as a patient in another part of the source"


@dataclass(frozen=True)
class Options:
    k: int = 5  # the k of the k-anonymity report
    birth_band: int = 5  # years of birth per quasi-identifier band
    generalise: bool = False  # suppress and withhold until k-anonymous
    workers: int | None = None  # processes (None: one per core)
    progress: bool = False


@dataclass
class PartResult:
    shard: ShardInfo | None
    subject_ids: np.ndarray
    checks: np.ndarray
    counts: Counts
    tally: Tally
    inputs: list[InputFile]
    quarantine: Path


@dataclass
class IngestRun:
    """Everything the manifest and report say of one run."""

    source_format: str
    source: Path
    out: Path
    project: str
    key_id: str
    policy: OptOutPolicy
    options: Options
    started: dt.datetime
    counts: Counts = field(default_factory=Counts)
    tally: Tally = field(default_factory=Tally)
    inputs: list[InputFile] = field(default_factory=list)
    shards: list[ShardInfo] = field(default_factory=list)
    withheld_k: int = 0
    generalisation: list[dict] = field(default_factory=list)
    risk: kanonymity.Risk | None = None  # after generalisation, if any
    risk_before: kanonymity.Risk | None = None
    quarantine_rows: int = 0

    def summary(self) -> str:
        """What the command line says when the run is done."""
        c = self.counts
        subjects, rows = sum(i.subjects for i in self.shards), sum(i.rows for i in self.shards)
        lines = [f"wrote {subjects:,} subjects and {rows:,} records to {self.out} (key id {self.key_id})",
                 f"opted out: {c.opted_out['subjects']:,} patients; quarantined: "
                 f"{sum(c.quarantined_subjects.values()):,} patients, {sum(c.quarantined_records.values()):,} "
                 f"records ({self.quarantine_rows:,} rows in {quarantine.QUARANTINE_FILE})"]
        if self.risk:
            lines.append(f"k-anonymity: smallest class {self.risk.smallest_class} "
                         f"(k = {self.risk.k} {'met' if self.risk.met else 'not met'}), "
                         f"{self.risk.unique:,} unique records; see {report.REPORT_DIR}/report.html")
        return "\n".join(lines)


def open_source(source_format: str, src: Path) -> Source:
    if source_format not in FORMATS:
        raise ValueError(f"--from {source_format!r}: one of {', '.join(FORMATS)}")
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or directory")
    return FORMATS[source_format](src)


def ingest(source_format: str, src: str | Path, out: str | Path, project: str, *,
           key_dir: str | Path | None = None, opt_outs: str | Path | None = None,
           options: Options | None = None, overwrite: bool = False) -> IngestRun:
    """Ingest ``src`` (a ``source_format`` extract) into the dataset ``out`` for ``project``."""
    src, out, options = Path(src), Path(out), options or Options()
    source = open_source(source_format, src)
    keys = pseudonymise.key_dir(key_dir)
    key = load_or_create_key(project, keys, data_dirs=[out, src])
    policy = OptOutPolicy.load(keys, project, Path(opt_outs) if opt_outs else None)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    run = IngestRun(source_format, src, out, project, key.key_id, policy, options, now)
    with DatasetWriter(out, overwrite=overwrite) as writer:
        work = writer.staging / WORK_DIR
        prepared = source.prepare(work)
        run.tally.add(prepared.tally)
        run.inputs += prepared.inputs
        first_part = work / "quarantine" / "prepare.parquet"
        quarantine.write_part(pl.from_arrow(prepared.problems).with_columns(
            subject_id=pl.lit(None, pl.Int64)), source.files, first_part)
        run.counts.quarantined_records.update(_reasons(prepared.problems))
        run.counts.events_read += prepared.problems.num_rows
        results = _run_parts(source, prepared.parts, writer.staging, Rules(key, policy, now), options)
        _gather(run, results)
        shards = _withhold_repeats(writer, run, results)
        shards = _anonymise(writer, run, shards)
        run.shards = sorted(shards.values(), key=lambda info: info.shard)
        if not run.shards:
            raise ValueError(f"{src}: nothing to write: all {run.counts.subjects_read:,} patients "
                             "were opted out, quarantined or withheld")
        run.quarantine_rows = quarantine.merge_parts(
            [first_part, *(r.quarantine for r in results)], writer.staging / quarantine.QUARANTINE_FILE)
        manifest.write(run, writer.staging)
        report.write(run, writer.staging / report.REPORT_DIR)
        shutil.rmtree(work)
        writer.commit(run.shards, created_by=f"farr ingest {__version__}",
                      dataset_name=f"{project}: {source_format} extract, pseudonymised",
                      extra={"ingest": {"project": project, "key_id": key.key_id,
                                        "manifest": manifest.MANIFEST_FILE}},
                      extra_files=[manifest.MANIFEST_FILE, quarantine.QUARANTINE_FILE])
    return run


def _reasons(problems) -> dict[str, int]:
    return dict(pl.from_arrow(problems).group_by("reason").len().iter_rows())


# ---------------------------------------------------------------------------------------------
# Parts


def ingest_part(source: Source, part, shard: int, staging: Path, rules: Rules) -> PartResult:
    """Read, clean and write one part as shard ``shard``; runs in a worker process."""
    chunk = source.read(part)
    cleaned = clean(chunk, rules)
    cleaned.counts.quarantined_records.update(_reasons(chunk.problems))
    cleaned.counts.events_read += chunk.problems.num_rows
    info = None
    if cleaned.subjects.height:
        info = write_shard(staging, shard, cleaned.events.to_arrow(), cleaned.subjects.to_arrow(),
                           identifiable=False)
    problems = pl.from_arrow(chunk.problems).with_columns(subject_id=pl.lit(None, pl.Int64))
    rows = pl.concat([problems.select(cleaned.quarantine.columns), cleaned.quarantine])
    path = staging / WORK_DIR / "quarantine" / f"{shard:05d}.parquet"
    quarantine.write_part(rows, source.files, path)
    return PartResult(info, cleaned.subjects["subject_id"].to_numpy(), cleaned.checks,
                      cleaned.counts, chunk.tally, chunk.inputs, path)


def _run_parts(source: Source, parts: list, staging: Path, rules: Rules, options: Options
               ) -> list[PartResult]:
    jobs = [(source, part, shard, staging, rules) for shard, part in enumerate(parts)]
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(jobs)))
    with Progress(disable=not options.progress, transient=True) as bar:
        task = bar.add_task("ingesting", total=len(jobs))
        if workers == 1:
            results = []
            for job in jobs:
                results.append(ingest_part(*job))
                bar.advance(task)
            return results
        # Spawned, not forked: polars' thread pool does not survive a fork.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(ingest_part, *job) for job in jobs]
            for future in futures:
                future.result()
                bar.advance(task)
            return [future.result() for future in futures]


def _gather(run: IngestRun, results: list[PartResult]) -> None:
    for result in results:
        run.counts.add(result.counts)
        run.tally.add(result.tally)
        run.inputs += result.inputs


# ---------------------------------------------------------------------------------------------
# Across parts


def _withhold_repeats(writer: DatasetWriter, run: IngestRun, results: list[PartResult]
                      ) -> dict[int, ShardInfo]:
    """Fail on a pseudonym collision; withhold a patient seen in an earlier part already."""
    shards = {r.shard.shard: r.shard for r in results if r.shard is not None}
    if not results:
        return shards
    ids = np.concatenate([r.subject_ids for r in results])
    repeat = first_repeats(ids, np.concatenate([r.checks for r in results]))
    if not repeat.any():
        return shards
    run.counts.quarantined_subjects[DUPLICATE_ACROSS_PARTS] += int(repeat.sum())
    # The first of each repeated patient is kept: withhold the later ones from their shards.
    shard_of = np.concatenate([np.full(len(r.subject_ids), r.shard.shard if r.shard else -1)
                               for r in results])
    dropped = 0
    for shard in np.unique(shard_of[repeat]):
        later = ids[repeat & (shard_of == shard)]
        shards[shard], events = _rewrite(writer, shards[shard], later, None)
        dropped += events
    run.counts.quarantined_records[f"patient quarantined: {DUPLICATE_ACROSS_PARTS}"] += dropped
    return {s: info for s, info in shards.items() if info is not None}


def _subjects(writer: DatasetWriter, shards: dict[int, ShardInfo]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(writer.staging / info.subjects_file) for info in shards.values()])


def _anonymise(writer: DatasetWriter, run: IngestRun, shards: dict[int, ShardInfo]) -> dict[int, ShardInfo]:
    """Assess k-anonymity; with ``generalise``, suppress and withhold until it holds."""
    if not shards:
        return shards
    opts = run.options
    qi = kanonymity.quasi_identifiers(_subjects(writer, shards), opts.birth_band)
    run.risk = run.risk_before = kanonymity.assess(qi, opts.k)
    if not opts.generalise or run.risk.met:
        return shards
    generalised, run.generalisation, withheld = kanonymity.generalise(qi, opts.k)
    run.withheld_k = len(withheld)
    changed = generalised.join(qi, on="subject_id", suffix="_before").filter(
        pl.any_horizontal(pl.col(c).ne_missing(pl.col(f"{c}_before")) for c in kanonymity.SUPPRESSION_ORDER))
    replace = changed.select("subject_id", *kanonymity.SUPPRESSION_ORDER)
    touched = set(replace["subject_id"].to_list()) | set(withheld.tolist())
    for shard, info in list(shards.items()):
        ids = pl.read_parquet(writer.staging / info.subjects_file, columns=["subject_id"])["subject_id"]
        if ids.is_in(list(touched)).any():
            shards[shard], _ = _rewrite(writer, info, withheld, replace)
    shards = {s: info for s, info in shards.items() if info is not None}
    run.risk = kanonymity.assess(generalised, opts.k)
    return shards


def _rewrite(writer: DatasetWriter, info: ShardInfo, drop: np.ndarray, replace: pl.DataFrame | None
             ) -> tuple[ShardInfo | None, int]:
    """Shard ``info`` again without the subjects ``drop`` and with the ``replace`` values;
    returns the new ShardInfo (None if no subject is left) and the events dropped."""
    events = pl.read_parquet(writer.staging / info.events_file)
    subjects = pl.read_parquet(writer.staging / info.subjects_file)
    keep = ~pl.col("subject_id").is_in(pl.Series(drop, dtype=pl.Int64).implode())
    kept_events, subjects = events.filter(keep), subjects.filter(keep)
    if replace is not None:
        subjects = subjects.update(replace, on="subject_id", include_nulls=True)
    dropped = events.height - kept_events.height
    if not subjects.height:
        for name in (info.events_file, info.subjects_file):
            (writer.staging / name).unlink()
        return None, dropped
    return writer.write_shard(info.shard, kept_events.to_arrow(), subjects.to_arrow()), dropped

