"""A user journey through the running proxy, with both real backends sharing one database."""

import uuid

import httpx
from backends import start_backend
from conftest import routes_yaml
from test_backends_contract import RESUME

from splitter.bucketing import bucket


def routes_for(legacy: str, new: str) -> str:
    """auth 50 % / upload 0 % / resume_review 100 %: one journey crosses backends."""
    return routes_yaml(legacy, new).replace("read_timeout: 2", "read_timeout: 30")


def journey(c: httpx.Client, handlers: list[str]) -> None:
    """register, login, upload, review, fetch; every call must work whichever backend serves it."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    pre = {"X-User-ID": email}  # before login the user is known by email; after, by the JWT sub
    r = c.post("/api/auth/register", json={"email": email, "password": "correct horse"}, headers=pre)
    assert r.status_code == 201, r.text
    handlers.append(r.headers["x-splitter-handler"])
    r = c.post("/api/auth/login", json={"email": email, "password": "correct horse"}, headers=pre)
    assert r.status_code == 200, r.text
    handlers.append(r.headers["x-splitter-handler"])
    auth = {"Authorization": "Bearer " + r.json()["access_token"]}
    r = c.get("/api/auth/me", headers=auth)
    assert r.status_code == 200 and r.json()["email"] == email
    handlers.append(r.headers["x-splitter-handler"])
    user_id = r.json()["id"]
    assert r.headers["x-splitter-handler"] == ("new_auth" if bucket(user_id) < 50 else "old_auth")
    r = c.post("/api/upload", headers=auth, files={"file": ("cv.md", RESUME.encode())})
    assert r.status_code == 201 and r.headers["x-splitter-handler"] == "old_upload", r.text
    upload_id = r.json()["id"]
    r = c.post("/api/resume/review", headers=auth, json={"analysis_request_id": upload_id})
    assert r.status_code == 200 and r.headers["x-splitter-handler"] == "new_resume_review", r.text
    review = r.json()
    r = c.get(f"/api/resume/review/{review['id']}", headers=auth)
    assert r.json() == review
    r = c.get(f"/api/upload/{upload_id}", headers=auth)
    assert r.status_code == 200 and r.json()["text_length"] == len(RESUME)
    handlers.append(r.headers["x-splitter-handler"])


def test_journey_crosses_backends_and_still_works(procs, tmp_path, splitter):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path)
    s = splitter(routes_for(legacy, new))
    handlers: list[str] = []
    with httpx.Client(base_url=s.url, timeout=20) as c:
        for _ in range(8):
            journey(c, handlers)
    auth_handlers = {h for h in handlers if h.endswith("_auth")}
    assert auth_handlers == {"old_auth", "new_auth"}, "with 8 users at 50% both auth backends served someone"
    assert s.metric("splitter_requests_total", route="upload", backend="legacy", handler="old_upload", code="201") == 8
    assert s.metric("splitter_requests_total", route="resume_review", backend="new", handler="new_resume_review", code="200") == 16  # review + fetch


def test_fault_injection_on_new_shows_errors_for_new_handlers_only(procs, tmp_path, splitter):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "0.3"})
    s = splitter(routes_for(legacy, new))
    with httpx.Client(base_url=s.url, timeout=20) as c:
        codes = [c.get("/api/auth/me", headers={"X-User-ID": f"f{i}"}).status_code for i in range(300)]
    assert set(codes) <= {401, 500}
    metrics = s.metrics()
    error_lines = [line for line in metrics.splitlines() if line.startswith("splitter_errors_total{")]
    assert error_lines, metrics
    assert all('handler="new_auth"' in line and 'kind="status_5xx"' in line for line in error_lines), error_lines
    new_errors = s.metric("splitter_errors_total", route="auth", backend="new", handler="new_auth", kind="status_5xx")
    assert new_errors == codes.count(500) and 0.15 < new_errors / sum(bucket(f"f{i}") < 50 for i in range(300)) < 0.45
