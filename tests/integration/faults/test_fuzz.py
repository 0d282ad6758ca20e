"""Fuzzing config loading and user-ID extraction: only clear errors, never a crash or a proxy 500."""

import base64
import json

import httpx
import pytest
import yaml
from conftest import routes_yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitter import bucketing, config
from splitter.config import IdSource

VALID = routes_yaml("http://127.0.0.1:1", "http://127.0.0.1:2")
SOURCES = (IdSource("header", "x-user-id"), IdSource("jwt_sub", "authorization"), IdSource("cookie", "user_id"))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(allow_nan=True), st.text(max_size=20))
KEYS = ["routes", "backends", "legacy", "new", "url", "name", "prefix", "percent", "user_id", "header", "guard", "shadow", "rollout", "steps", "gates", "x"]
keys = st.sampled_from(KEYS) | st.text(max_size=8)
documents = st.recursive(scalars, lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=5)), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_gives_a_config_or_a_config_error(text):
    try:
        config.parse(text)
    except config.ConfigError as exc:
        assert exc.errors and all(e.startswith("routes.yaml:") for e in exc.errors)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_arbitrary_documents_give_a_config_or_a_config_error(doc):
    try:
        config.parse(yaml.safe_dump(doc))
    except config.ConfigError as exc:
        assert all(": " in e for e in exc.errors)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VALID) - 1), st.text(max_size=30))
def test_mutated_valid_files_give_a_config_or_a_config_error(pos, junk):
    try:
        config.parse(VALID[:pos] + junk + VALID[pos:])
    except config.ConfigError:
        pass


def jwt_with(payload: bytes) -> str:
    return "Bearer e30." + base64.urlsafe_b64encode(payload).rstrip(b"=").decode() + ".sig"


header_values = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=300)


@settings(max_examples=500, deadline=None)
@given(header_values, header_values, header_values, st.binary(max_size=200))
def test_user_id_extraction_never_raises(uid, cookie, auth, payload):
    for text in ({"x-user-id": uid, "cookie": cookie, "authorization": auth}, {"authorization": jwt_with(payload)}, {"cookie": cookie}):
        headers = {k.encode(): v.encode("latin-1") for k, v in text.items()}
        got = bucketing.user_id(SOURCES, headers, True)
        assert got is None or (0 < len(got) <= bucketing.MAX_ID_LEN and 0 <= bucketing.bucket(got) < 100)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One proxy for the whole fuzz run (hypothesis calls the test many times)."""
    from conftest import PY, ROOT, Proc, free_port, wait_http

    tmp = tmp_path_factory.mktemp("fuzz")
    procs = []
    urls = []
    for name in ("legacy", "new"):
        port = free_port()
        procs.append(Proc([PY, str(ROOT / "tests" / "standin.py"), "--port", str(port), "--name", name], log=tmp / f"{name}.log"))
        wait_http(f"http://127.0.0.1:{port}/r", proc=procs[-1].p)
        urls.append(f"http://127.0.0.1:{port}")
    cfg = tmp / "routes.yaml"
    cfg.write_text(routes_yaml(*urls).replace("anonymous: legacy", "anonymous: cookie"))
    port, admin = free_port(), free_port()
    procs.append(Proc([PY, "-m", "splitter", "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin)], log=tmp / "splitter.log"))
    wait_http(f"http://127.0.0.1:{admin}/readyz", proc=procs[-1].p)
    yield f"http://127.0.0.1:{port}", procs[-1]
    for p in reversed(procs):
        p.stop()


@pytest.mark.xdist_group("fuzzed_proxy")  # one proxy for both, on one worker: the second reads what the first did
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header_values, header_values, st.binary(max_size=100), st.text(alphabet="/abcdef%.~_-", max_size=40))
def test_hostile_ids_never_make_the_proxy_fail(live, uid, cookie, payload, path):
    url, proc = live
    headers = {"X-User-ID": uid, "Cookie": cookie, "Authorization": jwt_with(payload)}
    try:
        r = httpx.get(url + "/api/auth/" + path.lstrip("/"), headers={k: v.encode("latin-1") for k, v in headers.items()}, timeout=10)
    except httpx.LocalProtocolError:
        return  # the client itself refused to send it
    assert r.status_code in (200, 400), (r.status_code, r.text[:200])
    if r.status_code == 200:
        assert r.json()["backend"] in ("legacy", "new")
    assert "Traceback" not in proc.output()


@pytest.mark.xdist_group("fuzzed_proxy")
def test_the_fuzzed_proxy_logged_no_traceback(live):
    _, proc = live
    import time

    time.sleep(0.3)
    out = proc.output()
    assert "Traceback" not in out and "Exception in ASGI application" not in out
    assert json.loads(out.splitlines()[0])["event"] == "listening"
