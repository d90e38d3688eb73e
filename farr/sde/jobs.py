"""Jobs: approved operations that run inside the environment ("code goes to the data").

A researcher names an operation, an approved dataset and a few typed parameters; a background
worker runs it with the dataset's path (which researchers never see), writes its log and outputs
to ``<workspace>/projects/<project>/jobs/<id>/`` and registers every output file with its
SHA-256: only such files can be requested through the airlock.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from farr.events.io import scan_events, scan_subjects, sha256_file
from farr.governance.opt_out import OPT_OUTS
from farr.privacy.sdc import apply_sdc
from farr.sde import audit
from farr.sde.models import OPERATIONS, Dataset, Job, OutputFile, Project, utcnow

LOG = "log.txt"
COHORT_COLUMNS = ("sex", "ethnicity", "imd_quintile", "region", "birth_decade")
PARAMETERS = {  # operation -> parameter -> (type, default)
    "cohort_counts": {"by": (list, ["sex"]), "codes": (list, [])},
    "train": {"preset": (str, "tiny"), "max_steps": (int, 200), "seed": (int, 0)},
    "evaluate": {"model_job": (int, None), "at": (str, "60"), "horizons": (str, "1y,5y")},
    "forecast": {"model_job": (int, None), "at": (str, "60"), "horizons": (str, "1y,5y")},
    "synthesise": {"model_job": (int, None), "patients": (int, 100), "seed": (int, 0)},
}
MAX_TRAIN_STEPS, MAX_SYNTHETIC_PATIENTS = 20_000, 100_000


def job_dir(workspace: Path, project: str, job_id: int) -> Path:
    return Path(workspace) / "projects" / project / "jobs" / str(job_id)


def check_params(operation: str, params: dict) -> dict:
    """The parameters with defaults filled in; ValueError for anything unknown or mistyped."""
    if operation not in OPERATIONS:
        raise ValueError(f"unknown operation {operation!r}; one of {', '.join(OPERATIONS)}")
    allowed = PARAMETERS[operation]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{operation}: unknown parameter(s) {unknown}; allowed: {sorted(allowed)}")
    checked = {}
    for name, (kind, default) in allowed.items():
        value = params.get(name, default)
        if value is None or not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(f"{operation}: parameter {name!r} must be a {kind.__name__}")
        checked[name] = value
    if operation == "cohort_counts":
        bad = [c for c in checked["by"] if c not in COHORT_COLUMNS]
        if bad or not all(isinstance(code, str) for code in checked["codes"]):
            raise ValueError(f"cohort_counts: 'by' takes {', '.join(COHORT_COLUMNS)} (got {bad}); "
                             "'codes' takes code prefixes")
    if not 1 <= checked.get("max_steps", 1) <= MAX_TRAIN_STEPS:
        raise ValueError(f"train: max_steps must be 1..{MAX_TRAIN_STEPS}")
    if not 1 <= checked.get("patients", 1) <= MAX_SYNTHETIC_PATIENTS:
        raise ValueError(f"synthesise: patients must be 1..{MAX_SYNTHETIC_PATIENTS}")
    return checked


def model_source(session: Session, workspace: Path, project: Project, params: dict) -> Path:
    """The model directory of a succeeded train job of the same project."""
    job = session.get(Job, params["model_job"])
    if job is None or job.project_id != project.id or job.operation != "train":
        raise LookupError(f"model_job {params['model_job']}: no train job of project {project.name}")
    if job.status != "succeeded":
        raise ValueError(f"model_job {job.id} has not succeeded (status {job.status})")
    return job_dir(workspace, project.name, job.id) / "model"


def cohort_counts(dataset: Path, out: Path, params: dict, project: Project, log) -> None:
    """People by the chosen columns (and with any event whose code starts with a prefix),
    opted-out patients excluded unless the project is exempt; raw and SDC-safe tables."""
    people = scan_subjects(dataset).with_columns(
        birth_decade=pl.col("year_month_of_birth").str.slice(0, 3) + "0s")
    for name, flag in OPT_OUTS.items():
        if name not in (project.exemptions or {}):
            people = people.filter(~pl.col(flag).fill_null(False))
    by = params["by"]
    columns = {"people": pl.len()}
    for prefix in params["codes"]:
        with_code = scan_events(dataset).filter(pl.col("code").str.starts_with(prefix)).select(
            "subject_id").unique().with_columns(pl.lit(True).alias(f"has_{prefix}"))
        people = people.join(with_code, on="subject_id", how="left")
        columns[f"people_with_{prefix}"] = pl.col(f"has_{prefix}").fill_null(False).sum()
    agg = [expr.alias(name) for name, expr in columns.items()]
    table = (people.group_by(by).agg(agg) if by else people.select(agg)).sort(by or []).collect()
    table = table.with_columns(pl.col(list(columns)).cast(pl.Int64))
    table.write_csv(out / "counts.csv")
    result = apply_sdc(table, list(columns), project.sdc_profile,  # group and column totals
                       group_columns=[by[:1], []] if by else None)
    result.table.write_csv(out / "counts_sdc.csv")
    log(f"{table.height} groups; SDC ({project.sdc_profile}) suppressed {result.suppressed} cells; "
        f"counts_sdc.csv is the table to request")


def run_operation(operation: str, dataset: Path, out: Path, params: dict, project: Project,
                  model_dir: Path | None, log) -> None:
    if operation == "cohort_counts":
        return cohort_counts(dataset, out, params, project, log)
    if operation == "train":
        from farr.model.train import TrainConfig, train

        steps = params["max_steps"]
        cfg = TrainConfig(preset=params["preset"], max_steps=steps, seed=params["seed"],
                          eval_every=max(1, steps // 4), checkpoint_every=steps,
                          warmup_steps=min(100, max(1, steps // 10)), batch_size=16)
        summary = train(dataset, out / "model", cfg, progress=False)
        log(f"trained: {summary}")
        return None
    from farr.forecast.predict import parse_horizons

    if operation == "evaluate":
        from farr.forecast.evaluate import EvaluationConfig, evaluate, save

        cfg = EvaluationConfig(at=params["at"], horizons=tuple(parse_horizons(params["horizons"])),
                               oracle_draws=20, rollout_people=50, rollout_draws=5,
                               next_event_people=200)
        log(f"evaluation: {save(evaluate(model_dir, dataset, cfg), out)}")
    elif operation == "forecast":
        from farr.forecast.predict import forecast

        log(f"risks: {forecast(model_dir, dataset, params['at'], parse_horizons(params['horizons']), out)}")
    else:
        from farr.synth import synthesize  # written alongside this stage; imported when needed

        log(f"synthetic: {synthesize(model_dir, params['patients'], out / 'synthetic', fmt='meds', seed=params['seed'], progress=False)}")


class Worker:
    """Runs jobs in background threads so requests stay fast."""

    def __init__(self, sessions: sessionmaker, workspace: Path, threads: int = 2):
        self.sessions, self.workspace = sessions, Path(workspace)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="farr-job")
        with sessions.begin() as session:  # jobs a restart interrupted will not finish
            session.execute(update(Job).where(Job.status.in_(("queued", "running")))
                            .values(status="failed", error="interrupted by a restart"))

    def submit(self, job_id: int):
        return self.pool.submit(self.run, job_id)

    def run(self, job_id: int) -> None:
        with self.sessions.begin() as session:
            job = session.get(Job, job_id)
            project = session.get(Project, job.project_id)
            dataset = Path(session.scalar(select(Dataset.path).where(Dataset.name == job.dataset)))
            job.status = "running"
        out = job_dir(self.workspace, project.name, job.id)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / LOG, "a") as log_file:
            def log(line: str) -> None:
                log_file.write(f"{utcnow().isoformat(timespec='seconds')} {line}\n")
                log_file.flush()

            log(f"{job.operation} on {job.dataset} with {job.params}")
            try:
                with self.sessions() as session:
                    model_dir = (model_source(session, self.workspace, project, job.params)
                                 if "model_job" in job.params else None)
                run_operation(job.operation, dataset, out, job.params, project, model_dir, log)
                status, error = "succeeded", None
            except Exception as exc:  # a failed job is recorded, never crashes the worker
                log(traceback.format_exc())
                status, error = "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            log(status)
        with self.sessions.begin() as session:
            files = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name != LOG]
            session.add_all(OutputFile(job_id=job.id, name=p.relative_to(out).as_posix(),
                                       sha256=sha256_file(p), size=p.stat().st_size) for p in files)
            session.execute(update(Job).where(Job.id == job.id).values(
                status=status, error=error, finished_at=utcnow()))
        audit.record(self.sessions, "worker", "job.finish", f"job/{job.id}",
                     "ok" if status == "succeeded" else "failed", status=status, files=len(files))
