"""The same contract, run against each backend directly."""

import uuid

import httpx
import pytest
from backends import start_backend

pytestmark = pytest.mark.xdist_group("postgres")  # one worker runs the module: one PostgreSQL server

RESUME = """Summary: engineer. Experience at Acme 2019-2024: led a team of 5, built the billing system,
reduced costs by 30%, improved latency. Education: BSc, University of Somewhere. Skills: Python, SQL.
Projects: an open-source proxy.
""" + "More words about the work done here. " * 25


@pytest.fixture(scope="session")
def postgres():
    from backends import Postgres

    pg = Postgres()
    yield pg
    pg.stop()


@pytest.fixture(params=["legacy-sqlite", "new-sqlite", "legacy-postgresql", "new-postgresql"])
def api(request, procs, tmp_path):
    name, db = request.param.split("-")
    env = {"DATABASE_URL": request.getfixturevalue("postgres").database()} if db == "postgresql" else {}
    url = start_backend(procs, name, tmp_path, env)
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c


def register_login(c: httpx.Client) -> tuple[str, dict[str, str]]:
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    r = c.post("/api/auth/register", json={"email": email, "password": "correct horse"})
    assert r.status_code == 201
    assert list(r.json()) == ["id", "email"] and r.json()["email"] == email
    r = c.post("/api/auth/login", json={"email": email, "password": "correct horse"})
    assert r.status_code == 200
    assert list(r.json()) == ["access_token", "token_type"] and r.json()["token_type"] == "bearer"
    return email, {"Authorization": "Bearer " + r.json()["access_token"]}


def test_health(api):
    assert api.get("/health").json() == {"status": "ok"}


def test_auth_flow_and_errors(api):
    email, auth = register_login(api)
    me = api.get("/api/auth/me", headers=auth)
    assert me.status_code == 200 and me.json()["email"] == email
    assert api.post("/api/auth/register", json={"email": email, "password": "correct horse"}).status_code == 409
    assert api.post("/api/auth/register", json={"email": "nope", "password": "correct horse"}).status_code == 422
    assert api.post("/api/auth/register", json={"email": "a@b.co", "password": "short"}).status_code == 422
    assert api.post("/api/auth/login", json={"email": email, "password": "wrong password"}).status_code == 401
    r = api.get("/api/auth/me")
    assert r.status_code == 401 and r.json() == {"detail": "missing bearer token"}
    assert api.get("/api/auth/me", headers={"Authorization": "Bearer a.b.c"}).status_code == 401
    assert api.post("/api/auth/logout", headers=auth).status_code == 204
    assert api.get("/api/auth/me", headers=auth).json() == {"detail": "session ended"}


def test_every_answer_echoes_the_request_id_for_the_proxys_check(api):
    """splitter's check_request_id refuses an answer that does not carry its request's X-Request-ID."""
    calls = [("GET", "/health", 200), ("GET", "/api/auth/me", 401), ("POST", "/api/auth/register", 422)]
    for method, path, status in [*calls, ("GET", "/nowhere", 404), ("DELETE", "/health", 405)]:
        r = api.request(method, path, headers={"X-Request-ID": f"rid-{status}"}, content=b"{not json")
        assert r.status_code == status and r.headers.get_list("x-request-id") == [f"rid-{status}"], (method, path)
    assert "x-request-id" not in api.get("/health").headers, "nothing to echo: none is made up"


def test_every_answer_names_the_service_that_made_it(api):
    """X-Served-By: a person (or a test) sees which service answered through the proxy."""
    served = [api.get(path).headers.get_list("x-served-by") for path in ("/health", "/api/auth/me", "/nowhere")]
    assert served[0] in (["legacy_backend"], ["new_backend"]) and served == [served[0]] * 3, served


def test_the_new_backend_runs_as_another_service_under_its_own_name(procs, tmp_path):
    """The reference stack runs new_backend a second time as `upload_service` (routes.yaml's upload route)."""
    url = start_backend(procs, "new", tmp_path, None, "--name", "upload_service")
    r = httpx.get(url + "/api/auth/me", headers={"X-Request-ID": "r9"})
    assert r.status_code == 401 and r.headers.get_list("x-served-by") == ["upload_service"]
    assert r.headers["x-request-id"] == "r9"


def test_bad_json_is_422_with_a_message(api):
    r = api.post("/api/auth/register", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json() == {"detail": "request body must be a JSON object"}


def test_upload_review_and_errors(api):
    _, auth = register_login(api)
    r = api.post("/api/upload", headers=auth, files={"file": ("cv.md", RESUME.encode(), "text/markdown")})
    assert r.status_code == 201, r.text
    up = r.json()
    assert list(up) == ["id", "status", "original_filename"] and up["status"] == "processed" and up["original_filename"] == "cv.md"
    got = api.get(f"/api/upload/{up['id']}", headers=auth).json()
    assert got["text_length"] == len(RESUME)
    assert api.get("/api/upload/nope", headers=auth).status_code == 404
    assert api.post("/api/upload", files={"file": ("cv.txt", b"x")}).status_code == 401
    assert api.post("/api/upload", headers=auth, files={"file": ("cv.pdf", b"%PDF")}).status_code == 415
    assert api.post("/api/upload", headers=auth, files={"file": ("cv.txt", b"x" * 70_000)}).status_code == 413
    assert api.post("/api/upload", headers=auth, files={"file": ("cv.txt", b"x" * 200_000)}).status_code == 413
    assert api.post("/api/upload", headers=auth, data={"other": "1"}).status_code == 422

    r = api.post("/api/resume/review", headers=auth, json={"analysis_request_id": up["id"]})
    assert r.status_code == 200, r.text
    review = r.json()
    assert list(review) == ["id", "analysis_request_id", "overall_score", "strengths", "weaknesses"]
    assert 0 <= review["overall_score"] <= 100 and review["strengths"]
    assert api.get(f"/api/resume/review/{review['id']}", headers=auth).json() == review
    assert api.get("/api/resume/review/nope", headers=auth).status_code == 404
    assert api.post("/api/resume/review", headers=auth, json={"analysis_request_id": "nope"}).status_code == 404
    assert api.post("/api/resume/review", headers=auth, json={}).status_code == 422
    assert api.post("/api/resume/review", json={"analysis_request_id": up["id"]}).status_code == 401


def test_both_backends_give_byte_identical_reviews_and_share_sessions(procs, tmp_path):
    with httpx.Client(base_url=start_backend(procs, "legacy", tmp_path)) as legacy, httpx.Client(base_url=start_backend(procs, "new", tmp_path)) as new:
        check_parity(legacy, new)


def test_on_one_postgresql_database_a_user_of_legacy_is_a_user_of_new(procs, tmp_path, postgres):
    env = {"DATABASE_URL": postgres.database()}
    with httpx.Client(base_url=start_backend(procs, "legacy", tmp_path, env)) as legacy, httpx.Client(base_url=start_backend(procs, "new", tmp_path, env)) as new:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        assert legacy.post("/api/auth/register", json={"email": email, "password": "correct horse"}).status_code == 201
        login = new.post("/api/auth/login", json={"email": email, "password": "correct horse"})
        assert login.status_code == 200, login.text
        assert new.get("/api/auth/me", headers={"Authorization": "Bearer " + login.json()["access_token"]}).json()["email"] == email
        check_parity(legacy, new)


def check_parity(legacy: httpx.Client, new: httpx.Client) -> None:
    _, auth = register_login(legacy)
    assert new.get("/api/auth/me", headers=auth).status_code == 200, "a session from legacy works on new"
    texts = [RESUME, "tiny", "Skills only. " * 400, "Experience: led built shipped launched managed 1 2 3 4 " * 30]
    for text in texts:
        up = legacy.post("/api/upload", headers=auth, files={"file": ("cv.txt", text.encode())}).json()
        a = legacy.post("/api/resume/review", headers=auth, json={"analysis_request_id": up["id"]})
        b = new.post("/api/resume/review", headers=auth, json={"analysis_request_id": up["id"]})
        strip = lambda raw: raw.split(b",", 1)[1]  # noqa: E731 - drop the random review id
        assert strip(a.content) == strip(b.content), (a.text, b.text)
    assert new.post("/api/auth/logout", headers=auth).status_code == 204
    assert legacy.get("/api/auth/me", headers=auth).status_code == 401, "logout on new ends the session on legacy"
    for path in ("/api/auth/me", "/api/upload/x", "/api/resume/review/x"):
        assert legacy.get(path).content == new.get(path).content


def test_fault_injection(procs, tmp_path):
    url = start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "1", "FAULT_LATENCY_MS": "200"})
    r = httpx.get(url + "/api/auth/me", headers={"X-Request-ID": "r1"})
    assert r.status_code == 500 and r.json() == {"detail": "injected fault"} and r.headers["x-request-id"] == "r1"
    assert r.elapsed.total_seconds() >= 0.2
    assert httpx.get(url + "/health").status_code == 200
