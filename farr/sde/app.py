"""The SDE's HTTP API (FastAPI; OpenAPI docs at /docs) and its web pages (``ui.py``).

Every endpoint authenticates (a bearer token, or the web page's cookie), checks the caller's
role and project membership, and every refusal is answered with a one-line reason and audited.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from farr.events.schema import FARR_METADATA_FILE
from farr.governance.opt_out import set_exemption
from farr.governance.pseudonymise import check_project_name
from farr.privacy.sdc import PROFILES
from farr.sde import audit
from farr.sde.airlock import REQUIRED_APPROVALS, AirlockRefused, check_file, check_viewable, release
from farr.sde.db import connect, default_url, migrate, sessions
from farr.sde.jobs import LOG, Worker, check_params, job_dir, model_source
from farr.sde.models import (OPERATIONS, Dataset, Job, Membership, OutputFile, Project,
                             ReleaseRequest, RequestFile, Review, User, utcnow)
from farr.sde.security import AuthError, RateLimited, create_user, login, user_for_token

COOKIE = "farr_token"
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Name = Annotated[str, Field(min_length=1, max_length=64)]


class Conflict(ValueError):
    """The action clashes with the state of the record (HTTP 409): e.g. a replayed approval."""


ERRORS = {AuthError: 401, RateLimited: 429, PermissionError: 403, LookupError: 404,
          FileNotFoundError: 404,
          Conflict: 409, AirlockRefused: 422, ValueError: 400}


class Credentials(BaseModel):
    username: Name
    password: Annotated[str, Field(min_length=1, max_length=200)]


class NewUser(Credentials):
    role: Name


class NewDataset(BaseModel):
    name: Name
    path: Text


class NewProject(BaseModel):
    name: Name
    purpose: Text
    datasets: list[Name]
    operations: list[Name]
    sdc_profile: Name = "minimum10"
    start_date: dt.date
    end_date: dt.date


class NewMember(BaseModel):
    username: Name


class NewExemption(BaseModel):
    opt_out: Name
    reason: Text | None = None
    revoke: bool = False


class NewJob(BaseModel):
    operation: Name
    dataset: Name
    params: dict = {}


class NewRequest(BaseModel):
    file_ids: list[int] = Field(min_length=1, max_length=50)
    justification: Text


class NewReview(BaseModel):
    decision: Name
    comment: Annotated[str, Field(max_length=2000)] = ""


def token_of(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else \
        request.cookies.get(COOKIE)


def database(request: Request):
    """One transaction per request: committed on success, rolled back on any refusal."""
    with request.app.state.sessions() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def current_user(request: Request) -> User:
    """The caller, from a short session of its own: a request holds a database connection only
    while its endpoint runs, so a burst of requests cannot exhaust the pool while queued."""
    with request.app.state.sessions() as session:
        user = user_for_token(session, token_of(request))
    request.state.actor = user.username
    return user


DB = Annotated[Session, Depends(database)]
Me = Annotated[User, Depends(current_user)]


def require_role(user: User, *roles: str) -> None:
    if user.role not in roles:
        raise PermissionError(f"role {user.role} may not do this (needs {' or '.join(roles)})")


def is_member(session: Session, project_id: int, user: User) -> bool:
    return session.get(Membership, (project_id, user.id)) is not None


def project_for(session: Session, project_id: int, user: User, *, member: bool = True) -> Project:
    """The project, if the user is a member (data controllers oversee every project)."""
    project = session.get(Project, project_id)
    if project is None:
        raise LookupError(f"no project {project_id}")
    if member and user.role != "data_controller" and not is_member(session, project_id, user):
        raise PermissionError(f"{user.username} is not a member of project {project.name}")
    return project


def job_for(session: Session, job_id: int, user: User) -> tuple[Job, Project]:
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    return job, project_for(session, job.project_id, user)


def request_for(session: Session, request_id: int, user: User) -> tuple[ReleaseRequest, Project]:
    found = session.get(ReleaseRequest, request_id)
    if found is None:
        raise LookupError(f"no release request {request_id}")
    return found, project_for(session, found.project_id, user)


def project_view(project: Project) -> dict:
    return {"id": project.id, "name": project.name, "purpose": project.purpose,
            "datasets": project.datasets, "operations": project.operations,
            "sdc_profile": project.sdc_profile, "start_date": project.start_date.isoformat(),
            "end_date": project.end_date.isoformat(), "exemptions": project.exemptions}


def job_view(session: Session, job: Job) -> dict:
    files = session.scalars(select(OutputFile).where(OutputFile.job_id == job.id)).all()
    return {"id": job.id, "project_id": job.project_id, "operation": job.operation,
            "dataset": job.dataset, "params": job.params, "status": job.status,
            "error": job.error, "created_at": job.created_at.isoformat(),
            "files": [{"id": f.id, "name": f.name, "sha256": f.sha256, "bytes": f.size}
                      for f in files]}


def request_view(session: Session, found: ReleaseRequest) -> dict:
    reviews = session.scalars(select(Review).where(Review.request_id == found.id)).all()
    return {"id": found.id, "project_id": found.project_id, "status": found.status,
            "author": session.get(User, found.author_id).username,
            "justification": found.justification, "files": found.checks,
            "reviews": [{"checker": session.get(User, r.checker_id).username,
                         "decision": r.decision, "comment": r.comment} for r in reviews]}


def output_path(session: Session, workspace: Path, project: Project, file: OutputFile) -> Path:
    return job_dir(workspace, project.name, file.job_id) / file.name


def decide(session: Session, workspace: Path, user: User, request_id: int, decision: str,
           comment: str) -> ReleaseRequest:
    """An output checker's vote; the second approval releases the files, one rejection closes."""
    require_role(user, "output_checker")
    found, project = request_for(session, request_id, user)
    if found.author_id == user.id:
        raise PermissionError("the author of a request cannot review it")
    if decision not in ("approve", "reject"):
        raise ValueError(f"decision {decision!r}: approve or reject")
    if found.status != "submitted":
        raise Conflict(f"request {found.id} is {found.status}; reviews are closed")
    if session.scalar(select(Review).where(Review.request_id == found.id,
                                           Review.checker_id == user.id)):
        raise Conflict(f"{user.username} has already reviewed request {found.id}")
    session.add(Review(request_id=found.id, checker_id=user.id, decision=decision, comment=comment))
    session.flush()
    approvals = session.scalar(select(func.count()).select_from(Review).where(
        Review.request_id == found.id, Review.decision == "approve"))
    if decision == "reject":
        found.status, found.decided_at = "rejected", utcnow()
    elif approvals >= REQUIRED_APPROVALS:
        files = [(c["name"], output_path(session, workspace, project,
                                         session.get(OutputFile, c["file_id"])), c["sha256"])
                 for c in found.checks]
        release(files, workspace / "releases" / str(found.id))
        found.status, found.decided_at = "released", utcnow()
    return found


def create_app(db_url: str | None = None, workspace: str | Path = "sde-workspace", *,
               token_minutes: int = 60, job_threads: int = 2) -> FastAPI:
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    engine = connect(db_url or default_url(workspace))
    migrate(engine)
    app = FastAPI(title="farr secure data environment", version="1")
    app.state.engine, app.state.sessions, app.state.workspace = engine, sessions(engine), workspace
    app.state.worker = Worker(app.state.sessions, workspace, job_threads)
    lifetime = app.state.token_lifetime = dt.timedelta(minutes=token_minutes)

    def record(request: Request, session: Session | None, action: str, target: str = "",
               outcome: str = "ok", **detail):
        """Commit the action, then audit it (SQLite has one writer at a time)."""
        if session is not None:
            session.commit()
        actor = getattr(request.state, "actor", "anonymous")
        audit.record(app.state.sessions, actor, action, target, outcome, **detail)

    async def refuse(request: Request, exc: Exception):
        status = next((code for kind, code in ERRORS.items() if isinstance(exc, kind)), 400)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, RequestValidationError):
            status, reason = 422, "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())[:500]
        await run_in_threadpool(record, request, None, f"{request.method} {request.url.path}",
                                outcome="refused", status=status, reason=reason)
        return JSONResponse({"detail": reason}, status_code=status)

    for kind in (*ERRORS, RequestValidationError):
        app.add_exception_handler(kind, refuse)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.post("/auth/login")
    def login_endpoint(body: Credentials, request: Request, session: DB) -> dict:
        request.state.actor = body.username
        try:
            token = login(session, body.username, body.password, lifetime)
        except AuthError:
            session.commit()  # keep the failure: it counts towards the rate limit
            raise
        record(request, session, "login")
        return {"token": token, "expires_in_minutes": token_minutes}

    @app.get("/me")
    def me(user: Me) -> dict:
        return {"username": user.username, "role": user.role}

    @app.post("/users", status_code=201)
    def add_user(body: NewUser, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "admin")
        created = create_user(session, body.username, body.password, body.role)
        session.flush()
        record(request, session, "user.create", f"user/{created.id}", role=body.role)
        return {"id": created.id, "username": created.username, "role": created.role}

    @app.get("/users")
    def list_users(user: Me, session: DB) -> list[dict]:
        require_role(user, "admin", "data_controller")
        return [{"id": u.id, "username": u.username, "role": u.role}
                for u in session.scalars(select(User).order_by(User.id))]

    @app.post("/datasets", status_code=201)
    def add_dataset(body: NewDataset, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "data_controller")
        path = Path(body.path)
        if not (path / FARR_METADATA_FILE).is_file():
            raise FileNotFoundError(f"{body.name}: no farr dataset at the given path")
        if session.scalar(select(Dataset).where(Dataset.name == body.name)):
            raise Conflict(f"dataset {body.name!r} is registered already")
        dataset = Dataset(name=check_project_name(body.name), path=str(path.resolve()))
        session.add(dataset)
        session.flush()
        record(request, session, "dataset.register", f"dataset/{dataset.id}", name=body.name)
        return {"id": dataset.id, "name": dataset.name}

    @app.post("/projects", status_code=201)
    def add_project(body: NewProject, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "data_controller")
        check_project_name(body.name)
        unknown = [d for d in body.datasets
                   if not session.scalar(select(Dataset.id).where(Dataset.name == d))]
        bad_ops = [o for o in body.operations if o not in OPERATIONS]
        if unknown or bad_ops or body.sdc_profile not in PROFILES:
            raise ValueError(f"unknown datasets {unknown}, operations {bad_ops} or SDC profile "
                             f"{body.sdc_profile!r} (operations: {', '.join(OPERATIONS)}; "
                             f"profiles: {', '.join(PROFILES)})")
        if body.end_date < body.start_date:
            raise ValueError("the project ends before it starts")
        if session.scalar(select(Project).where(Project.name == body.name)):
            raise Conflict(f"project {body.name!r} exists already")
        project = Project(**body.model_dump(), exemptions={})
        session.add(project)
        session.flush()
        record(request, session, "project.create", f"project/{project.id}", name=body.name)
        return project_view(project)

    @app.get("/projects")
    def list_projects(user: Me, session: DB) -> list[dict]:
        query = select(Project).order_by(Project.id)
        if user.role != "data_controller":
            query = query.join(Membership, Membership.project_id == Project.id).where(
                Membership.user_id == user.id)
        return [project_view(p) for p in session.scalars(query)]

    @app.get("/projects/{project_id}")
    def get_project(project_id: int, user: Me, session: DB) -> dict:
        project = project_for(session, project_id, user)
        members = session.scalars(select(User.username).join(
            Membership, Membership.user_id == User.id).where(Membership.project_id == project.id))
        return project_view(project) | {"members": list(members)}

    @app.post("/projects/{project_id}/members", status_code=201)
    def add_member(project_id: int, body: NewMember, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "data_controller")
        project = project_for(session, project_id, user)
        member = session.scalar(select(User).where(User.username == body.username))
        if member is None:
            raise LookupError(f"no user {body.username!r}")
        if member.role not in ("researcher", "output_checker"):
            raise ValueError(f"{member.username} is a {member.role}; members are researchers "
                             "or output checkers")
        if not is_member(session, project.id, member):
            session.add(Membership(project_id=project.id, user_id=member.id))
        record(request, session, "project.member_add", f"project/{project.id}", member=member.username)
        return {"project": project.name, "member": member.username}

    @app.post("/projects/{project_id}/exemptions")
    def exempt(project_id: int, body: NewExemption, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "data_controller")
        project = project_for(session, project_id, user)
        set_exemption(workspace / "keys", project.name, body.opt_out, body.reason, revoke=body.revoke)
        exemptions = dict(project.exemptions or {})
        if body.revoke:
            exemptions.pop(body.opt_out, None)
        else:
            exemptions[body.opt_out] = body.reason
        project.exemptions = exemptions
        record(request, session, "project.exemption", f"project/{project.id}", opt_out=body.opt_out,
               revoke=body.revoke)
        return project_view(project)

    @app.post("/projects/{project_id}/jobs", status_code=202)
    def submit_job(project_id: int, body: NewJob, request: Request, user: Me, session: DB) -> dict:
        require_role(user, "researcher")
        project = project_for(session, project_id, user)
        today = utcnow().date()
        if not project.start_date <= today <= project.end_date:
            raise PermissionError(f"project {project.name} runs {project.start_date} to "
                                  f"{project.end_date}; no jobs outside those dates")
        if body.dataset not in project.datasets:
            raise PermissionError(f"project {project.name} is not approved for dataset "
                                  f"{body.dataset!r}")
        if body.operation not in project.operations:
            raise PermissionError(f"project {project.name} is not approved for operation "
                                  f"{body.operation!r}")
        params = check_params(body.operation, body.params)
        if "model_job" in params:
            model_source(session, workspace, project, params)
        job = Job(project_id=project.id, author_id=user.id, operation=body.operation,
                  dataset=body.dataset, params=params, status="queued")
        session.add(job)
        session.flush()
        record(request, session, "job.submit", f"job/{job.id}", operation=body.operation,
               dataset=body.dataset, params=params)
        app.state.worker.submit(job.id)
        return job_view(session, job)

    @app.get("/projects/{project_id}/jobs")
    def list_jobs(project_id: int, user: Me, session: DB) -> list[dict]:
        project = project_for(session, project_id, user)
        jobs = session.scalars(select(Job).where(Job.project_id == project.id).order_by(Job.id))
        return [job_view(session, job) for job in jobs]

    @app.get("/jobs/{job_id}")
    def get_job(job_id: int, user: Me, session: DB) -> dict:
        return job_view(session, job_for(session, job_id, user)[0])

    @app.get("/jobs/{job_id}/log", response_class=PlainTextResponse)
    def job_log(job_id: int, request: Request, user: Me, session: DB) -> str:
        job, project = job_for(session, job_id, user)
        log = job_dir(workspace, project.name, job.id) / LOG
        record(request, session, "file.view", f"job/{job.id}/{LOG}")
        return log.read_text() if log.is_file() else ""

    @app.get("/jobs/{job_id}/files/{name:path}")
    def view_file(job_id: int, name: str, request: Request, user: Me, session: DB):
        """An aggregate output, viewed inside the environment (row-level files never are)."""
        job, project = job_for(session, job_id, user)
        file = session.scalar(select(OutputFile).where(OutputFile.job_id == job.id,
                                                       OutputFile.name == name))
        if file is None:
            raise LookupError(f"job {job.id} wrote no file named {name!r}")
        path = output_path(session, workspace, project, file)
        check_viewable(path)
        record(request, session, "file.view", f"job/{job.id}/{file.name}", sha256=file.sha256)
        return FileResponse(path)

    @app.post("/projects/{project_id}/requests", status_code=201)
    def request_release(project_id: int, body: NewRequest, request: Request, user: Me,
                        session: DB) -> dict:
        require_role(user, "researcher", "output_checker")  # checkers may request, never self-review
        project = project_for(session, project_id, user)
        checks = []
        for file_id in dict.fromkeys(body.file_ids):
            file = session.get(OutputFile, file_id)
            job = file and session.get(Job, file.job_id)
            if job is None or job.project_id != project.id:
                raise LookupError(f"file {file_id}: not an output of a job of project {project.name}")
            path = output_path(session, workspace, project, file)
            checks.append({"file_id": file.id, "name": f"job{job.id}-{file.name.replace('/', '-')}"}
                          | check_file(path, file.sha256, project.sdc_profile))
        found = ReleaseRequest(project_id=project.id, author_id=user.id,
                               justification=body.justification, checks=checks)
        session.add(found)
        session.flush()
        session.add_all(RequestFile(request_id=found.id, file_id=c["file_id"]) for c in checks)
        record(request, session, "request.create", f"request/{found.id}",
               files=[c["sha256"] for c in checks])
        return request_view(session, found)

    @app.get("/projects/{project_id}/requests")
    def list_requests(project_id: int, user: Me, session: DB) -> list[dict]:
        project = project_for(session, project_id, user)
        found = session.scalars(select(ReleaseRequest).where(
            ReleaseRequest.project_id == project.id).order_by(ReleaseRequest.id))
        return [request_view(session, r) for r in found]

    @app.get("/requests/{request_id}")
    def get_request(request_id: int, user: Me, session: DB) -> dict:
        return request_view(session, request_for(session, request_id, user)[0])

    @app.post("/requests/{request_id}/reviews", status_code=201)
    def review(request_id: int, body: NewReview, request: Request, user: Me, session: DB) -> dict:
        found = decide(session, workspace, user, request_id, body.decision, body.comment)
        record(request, session, "request.review", f"request/{found.id}", decision=body.decision,
               status=found.status)
        return request_view(session, found)

    @app.get("/requests/{request_id}/files/{name}")
    def released_file(request_id: int, name: str, request: Request, user: Me, session: DB):
        found, _ = request_for(session, request_id, user)
        if found.status != "released":
            raise PermissionError(f"request {found.id} is {found.status}, not released")
        entry = next((c for c in found.checks if c["name"] == name), None)
        if entry is None:
            raise LookupError(f"request {found.id} released no file named {name!r}")
        record(request, session, "file.download", f"request/{found.id}/{name}", sha256=entry["sha256"])
        return FileResponse(workspace / "releases" / str(found.id) / entry["name"],
                            headers={"X-Content-SHA256": entry["sha256"]})

    @app.get("/audit")
    def audit_log(user: Me, session: DB, limit: int = 100) -> list[dict]:
        require_role(user, "admin", "data_controller")
        return [{"id": e.id, "at": e.at, "actor": e.actor, "action": e.action, "target": e.target,
                 "outcome": e.outcome, "detail": json.loads(e.detail), "hash": e.hash}
                for e in audit.entries(session, min(limit, 1000))]

    from farr.sde.ui import add_pages

    add_pages(app, record, decide)
    return app


def bootstrap_user(db_url: str | None, workspace: str | Path, username: str, password: str,
                   role: str) -> None:
    """Create a user from the command line (the first admin); audited as 'cli'."""
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    engine = connect(db_url or default_url(workspace))
    migrate(engine)
    factory = sessions(engine)
    with factory.begin() as session:
        create_user(session, username, password, role)
    audit.record(factory, "cli", "user.create", username, role=role)


def verify_audit(db_url: str | None, workspace: str | Path, expect: str | None = None) -> audit.Verification:
    return audit.verify(connect(db_url or default_url(Path(workspace))), expect=expect)

