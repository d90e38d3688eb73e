"""The web pages for researchers and output checkers: projects, jobs, and airlock review with
the disclosure-control result beside each table. Server-rendered HTML; the token lives in an
HttpOnly, SameSite=Strict cookie, so a page from elsewhere cannot post a review."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from farr.sde.airlock import TABLES, read_table
from farr.sde.security import AuthError, login, user_for_token

STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;padding:.2rem .5rem}
.pair{display:flex;gap:2rem;align-items:flex-start}.passed{color:#060}.failed{color:#a00}"""


def page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(title)}"
                        f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
                        f"{body}</body></html>")


def table_html(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def esc(value) -> str:
    return html.escape("" if value is None else str(value))


def add_pages(app: FastAPI, record, decide) -> None:
    from farr.sde.app import (COOKIE, is_member, job_view, output_path, project_for,
                              request_for, request_view)
    from farr.sde.models import Job, OutputFile, Project, ReleaseRequest

    def viewer(request: Request, session):
        try:
            user = user_for_token(session, request.cookies.get(COOKIE))
        except AuthError:
            return None
        request.state.actor = user.username
        return user

    def to_login() -> RedirectResponse:
        return RedirectResponse("/ui/login", status_code=303)

    @app.get("/", include_in_schema=False)
    @app.get("/ui/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(error: str = "") -> HTMLResponse:
        message = f"<p class=failed>{esc(error)}</p>" if error else ""
        return page("farr secure data environment", message + """<form method=post action=/ui/login>
<label>Username <input name=username id=username></label>
<label>Password <input name=password id=password type=password></label>
<button id=login type=submit>Log in</button></form><p><a href=/docs>API documentation</a></p>""")

    @app.post("/ui/login", include_in_schema=False)
    def login_form(request: Request, username: Annotated[str, Form(max_length=64)],
                   password: Annotated[str, Form(max_length=200)]):
        request.state.actor = username
        with app.state.sessions.begin() as session:
            try:
                token = login(session, username, password, app.state.token_lifetime)
            except PermissionError as exc:
                error = str(exc)
            else:
                error = ""
        record(request, None, "login", outcome="refused" if error else "ok", via="web")
        if error:
            return RedirectResponse(f"/ui/login?error={html.escape(error)}", status_code=303)
        response = RedirectResponse("/ui", status_code=303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict",
                            max_age=int(app.state.token_lifetime.total_seconds()))
        return response

    @app.get("/ui", response_class=HTMLResponse, include_in_schema=False)
    def home(request: Request):
        with app.state.sessions() as session:
            user = viewer(request, session)
            if user is None:
                return to_login()
            projects = [p for p in session.scalars(select(Project).order_by(Project.id))
                        if user.role == "data_controller" or is_member(session, p.id, user)]
            rows = [[f"<a href=/ui/projects/{p.id}>{esc(p.name)}</a>", esc(p.purpose),
                     esc(", ".join(p.datasets)), esc(f"{p.start_date} to {p.end_date}")]
                    for p in projects]
            return page(f"Projects of {user.username} ({user.role})",
                        table_html(["project", "purpose", "datasets", "dates"], rows))

    @app.get("/ui/projects/{project_id}", response_class=HTMLResponse, include_in_schema=False)
    def project_page(project_id: int, request: Request):
        with app.state.sessions() as session:
            user = viewer(request, session)
            if user is None:
                return to_login()
            project = project_for(session, project_id, user)
            jobs = [job_view(session, j) for j in session.scalars(
                select(Job).where(Job.project_id == project.id).order_by(Job.id))]
            requests = [request_view(session, r) for r in session.scalars(select(
                ReleaseRequest).where(ReleaseRequest.project_id == project.id))]
            body = (f"<p>{esc(project.purpose)}</p><h2>Jobs</h2>" + table_html(
                ["job", "operation", "dataset", "status", "files"],
                [[j["id"], esc(j["operation"]), esc(j["dataset"]), esc(j["status"]),
                  esc(", ".join(f["name"] for f in j["files"]))] for j in jobs])
                + "<h2>Release requests</h2>" + table_html(
                ["request", "author", "status", "approvals"],
                [[f"<a href=/ui/requests/{r['id']}>request {r['id']}</a>", esc(r["author"]),
                  f"<span class=status>{esc(r['status'])}</span>",
                  sum(v["decision"] == "approve" for v in r["reviews"])] for r in requests]))
            return page(f"Project {project.name}", body)

    @app.get("/ui/requests/{request_id}", response_class=HTMLResponse, include_in_schema=False)
    def request_page(request_id: int, request: Request):
        with app.state.sessions() as session:
            user = viewer(request, session)
            if user is None:
                return to_login()
            found, project = request_for(session, request_id, user)
            view = request_view(session, found)
            sections = []
            for checked in view["files"]:
                file = session.get(OutputFile, checked["file_id"])
                path = output_path(session, app.state.workspace, project, file)
                preview = ""
                if path.suffix in TABLES:
                    table = read_table(path).head(20)
                    preview = table_html(table.columns, [[esc(v) for v in row]
                                                         for row in table.iter_rows()])
                sdc = checked.get("sdc")
                verdict = ("<p>no disclosure control needed (not a table)</p>" if sdc is None else
                           f"<p class={'passed' if sdc['passed'] else 'failed'}>SDC "
                           f"{esc(sdc['profile'])}: {'passed' if sdc['passed'] else 'failed'}</p>"
                           f"<pre>{esc(sdc)}</pre>")
                sections.append(f"<h2>{esc(checked['name'])}</h2><p>SHA-256 "
                                f"<code>{esc(checked['sha256'])}</code></p><div class=pair>"
                                f"<div>{preview}</div><div class=sdc>{verdict}</div></div>")
            reviews = table_html(["checker", "decision", "comment"], [
                [esc(r["checker"]), esc(r["decision"]), esc(r["comment"])] for r in view["reviews"]])
            form = ""
            voted = any(r["checker"] == user.username for r in view["reviews"])
            if user.role == "output_checker" and found.author_id != user.id \
                    and found.status == "submitted" and not voted:
                form = f"""<form method=post action=/ui/requests/{found.id}/review>
<input name=comment id=comment placeholder=comment>
<button name=decision value=approve id=approve>Approve</button>
<button name=decision value=reject id=reject>Reject</button></form>"""
            record(request, None, "request.view", f"request/{found.id}", via="web")
            return page(f"Release request {found.id} ({found.status})",
                        f"<p>Project {esc(project.name)}, by {esc(view['author'])}: "
                        f"{esc(found.justification)}</p><p id=status>{esc(found.status)}</p>"
                        + "".join(sections) + "<h2>Reviews</h2>" + reviews + form)

    @app.post("/ui/requests/{request_id}/review", include_in_schema=False)
    def review_form(request_id: int, request: Request, decision: Annotated[str, Form(max_length=16)],
                    comment: Annotated[str, Form(max_length=2000)] = ""):
        with app.state.sessions() as session, session.begin():
            user = viewer(request, session)
            if user is None:
                return to_login()
            found = decide(session, app.state.workspace, user, request_id, decision, comment)
            status = found.status
        record(request, None, "request.review", f"request/{request_id}", decision=decision,
               status=status, via="web")
        return RedirectResponse(f"/ui/requests/{request_id}", status_code=303)

