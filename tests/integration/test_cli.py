"""Operator CLI: happy path against a running proxy, and each mistake as one line on stderr."""

import os
import subprocess
import sys

import httpx
import pytest
import respx
from conftest import ROOT, routes_yaml

from splitter import cli

TOKEN = "cli-token"


def run(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPLITTER_ADMIN_TOKEN"}
    if token:
        env["SPLITTER_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)


def test_happy_path_against_a_running_proxy(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    r = run("status", "--admin", s.admin)
    assert r.returncode == 0 and "auth" in r.stdout and "kill switch: off" in r.stdout
    assert run("set", "auth", "25", "--admin", s.admin).stdout.strip() == "auth: 25% to new (file 50%, source override)"
    assert "auth                 /api/auth                     25    50  override" in run("status", "--admin", s.admin).stdout
    assert run("clear", "auth", "--admin", s.admin).returncode == 0
    assert run("rollback", "upload", "--admin", s.admin).returncode == 0
    assert run("kill", "on", "--admin", s.admin).stdout.startswith("kill switch ON")
    assert "kill switch: ON" in run("status", "--admin", s.admin).stdout
    assert run("kill", "off", "--admin", s.admin).returncode == 0


def one_line_error(r: subprocess.CompletedProcess[str], needle: str, code: int = 1) -> None:
    assert r.returncode == code, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_unreachable_admin(tmp_path):
    from conftest import free_port

    one_line_error(run("status", "--admin", f"http://127.0.0.1:{free_port()}"), "cannot reach the admin API")


def test_missing_token():
    one_line_error(run("set", "auth", "5", token=None), "SPLITTER_ADMIN_TOKEN is not set")


def test_bad_percent_is_refused_before_any_request():
    one_line_error(run("set", "auth", "150"), "percent must be a number 0..100 with at most two decimals, got '150'", code=2)
    one_line_error(run("set", "auth", "ten"), "percent must be a number 0..100 with at most two decimals, got 'ten'", code=2)


def test_a_send_timeout_that_is_not_positive_is_one_line():
    r = run("serve", "--send-timeout", "0", "--port", "0", "--admin-port", "0")
    one_line_error(r, "--send-timeout must be more than 0 seconds, got 0", code=2)


def test_rollback_needs_a_route_or_all():
    one_line_error(run("rollback"), "splitter rollback: name one ROUTE or --all", code=2)


def test_bad_config_for_serve_is_one_line_per_error(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text("backends: {}\nroutes: []\n")
    r = run("serve", "--config", str(f), "--port", "0", "--admin-port", "0")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{f}:1: backends.legacy: required" in r.stderr


@pytest.fixture
def admin_mock():
    with respx.mock(base_url="http://admin.test", assert_all_called=False) as mock:
        yield mock


def test_unknown_route_via_respx(admin_mock, capsys, monkeypatch):
    monkeypatch.setenv("SPLITTER_ADMIN_TOKEN", TOKEN)
    admin_mock.put("/admin/routes/nope").respond(404, json={"error": "unknown route 'nope' (routes: auth)"})
    assert cli.main(["set", "nope", "5", "--admin", "http://admin.test"]) == 1
    err = capsys.readouterr().err
    assert err == "splitter: admin API answered 404: unknown route 'nope' (routes: auth)\n"


def test_wrong_token_via_respx(admin_mock, capsys, monkeypatch):
    monkeypatch.setenv("SPLITTER_ADMIN_TOKEN", "wrong")
    route = admin_mock.put("/admin/kill").respond(401, json={"error": "wrong or missing admin token"})
    assert cli.main(["kill", "on", "--admin", "http://admin.test"]) == 1
    assert route.calls.last.request.headers["authorization"] == "Bearer wrong"
    assert capsys.readouterr().err.count("\n") == 1


def test_timeout_via_respx(admin_mock, capsys):
    admin_mock.get("/admin/routes").mock(side_effect=httpx.ConnectTimeout("slow"))
    assert cli.main(["status", "--admin", "http://admin.test"]) == 1
    assert "cannot reach the admin API at http://admin.test" in capsys.readouterr().err


def test_version_json_live_bucket_completion_and_help_defaults(standin, splitter):
    import json

    from splitter import __version__
    from splitter.bucketing import bucket

    assert run("--version").stdout.strip() == f"splitter {__version__}"
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    status = json.loads(run("status", "--json", "--admin", s.admin).stdout)
    assert status["kill"] is False and {r["name"] for r in status["routes"]} == {"auth", "upload", "resume_review"}
    assert run("set", "auth", "100", "--admin", s.admin).returncode == 0
    file_view = json.loads(run("bucket", "carol", "--json", "--config", str(s.config)).stdout)
    live_view = json.loads(run("bucket", "carol", "--json", "--admin", s.admin).stdout)
    file_auth = next(r for r in file_view["routes"] if r["route"] == "auth")
    live_auth = next(r for r in live_view["routes"] if r["route"] == "auth")
    assert file_auth["bucket"] == live_auth["bucket"] == bucket("carol")
    assert file_auth["percent"] == 50 and live_auth["percent"] == 100 and live_auth["backend"] == "new"
    assert "routes.yaml values" in run("bucket", "carol", "--config", str(s.config)).stdout
    completion = run("completion", "bash")
    assert completion.returncode == 0 and "splitter" in completion.stdout and "rollout" in completion.stdout
    help_text = run("serve", "--help").stdout
    assert "(default: 8080)" in help_text and "(default: 60.0)" in help_text and "--body-timeout" in help_text
    assert json.loads(run("schema").stdout)["title"] == "splitter routes.yaml"


def test_metrics_include_build_info_in_flight_and_process(standin, splitter):
    from splitter import __version__

    s = splitter(routes_yaml(standin("legacy"), standin("new")))
    assert s.metric("splitter_build_info", version=__version__) == 1
    assert s.metric("splitter_requests_in_flight") == 0
    text = s.metrics()
    assert "process_resident_memory_bytes" in text and "process_open_fds" in text


def test_usage_errors_exit_2_as_argparse_does():
    assert run("set", "auth").returncode == 2  # argparse: a missing argument
    assert run("kill", "maybe").returncode == 2
    one_line_error(run("serve", "--workers", "0"), "splitter serve: --workers must be at least 1", code=2)
    one_line_error(run("serve", "--port", "9", "--admin-port", "9"), "--port and --admin-port must differ", code=2)


def test_help_shows_each_default_once():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, sub in subs.choices.items():
        text = " ".join(sub.format_help().split())  # wrapped lines joined
        assert "(default: None)" not in text and "(default: False)" not in text and "None:" not in text, name
        assert "(default: [])" not in text, name
        for action in sub._actions:
            if action.help:
                shown = (sub._get_formatter()._get_help_string(action) or "").replace("%(default)s", str(action.default))
                assert shown.count("default") <= 1, (name, action.dest, shown)
    admin_help = " ".join(run("status", "--help").stdout.split())
    assert "admin API URL (default: $SPLITTER_ADMIN_URL, else http://127.0.0.1:8081)" in admin_help
    assert admin_help.count("default") == 1
    bucket_help = " ".join(run("bucket", "--help").stdout.split())
    assert "--file ROUTES_YAML" in bucket_help and "live decision" in bucket_help and "None" not in bucket_help


def test_an_admin_url_without_a_scheme_says_it_needs_http():
    env = {**os.environ, "SPLITTER_ADMIN_URL": "localhost:8081"}
    r = subprocess.run([sys.executable, "-m", "splitter", "status"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and r.stderr == "splitter status: SPLITTER_ADMIN_URL 'localhost:8081' needs http:// (for example http://localhost:8081)\n"
    one_line_error(run("rollback", "auth", "--admin", "127.0.0.1:8081"), "--admin '127.0.0.1:8081' needs http://", code=2)


def test_bucket_and_check_outside_the_project_say_where_routes_yaml_is_looked_for(tmp_path):
    for args, hint in ((["bucket", "alice", "--file", "routes.yaml"], "pass --file PATH"), (["check"], "pass the file: splitter check PATH")):
        r = subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, cwd=tmp_path, timeout=30)
        assert r.returncode == 1 and r.stderr.startswith(f"splitter: routes.yaml not found in the current directory ({tmp_path}); {hint}"), r.stderr
        assert len(r.stderr.splitlines()) == 1


def test_status_says_when_routes_yaml_was_rejected(standin, splitter):
    import json

    from conftest import eventually

    s = splitter(routes_yaml(standin("legacy"), standin("new")))
    assert "REJECTED" not in run("status", "--admin", s.admin).stdout
    s.config.write_text("routes: [broken")
    eventually(lambda: s.metric("splitter_config_reloads_total", result="failure") == 1, timeout=5)
    out = run("status", "--admin", s.admin).stdout
    line = next(x for x in out.splitlines() if "REJECTED" in x)
    assert line.startswith("routes.yaml REJECTED at the last reload; still serving the previous routes: ") and str(s.config) in line, out
    assert json.loads(run("status", "--json", "--admin", s.admin).stdout)["reload_error"]


def test_no_shadow_or_rollout_reads_as_a_missing_section(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")))
    one_line_error(run("shadow", "auth", "--admin", s.admin), "admin API answered 404: route 'auth' has no shadow section in routes.yaml")
    one_line_error(run("rollout", "status", "auth", "--admin", s.admin), "route 'auth' has no rollout section in routes.yaml")


def test_history_fits_100_columns_and_numbers_are_rounded(standin, splitter):
    """The usual history (people, a cohort change) fits 100 columns; a rollout's p95 reads to 0.01 ms."""
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    assert run("set", "auth", "12.5", "--admin", s.admin, "--reason", "canary").returncode == 0
    assert run("kill", "on", "--admin", s.admin).returncode == 0
    assert run("rollback", "upload", "--admin", s.admin).returncode == 0
    out = run("history", "--admin", s.admin).stdout.splitlines()
    assert len(out) == 4 and max(len(line) for line in out) <= 100, out
    assert out[0].split() == ["AT", "WHO", "SOURCE", "ACTION", "ROUTE", "OLD", "->", "NEW", "REASON"]
    assert out[3].split()[2:] == ["admin", "cli", "set", "auth", "50", "->", "12.5", "canary"], out
    prev = {"percent": 10, "since": 0, "until": 60, "verdict": "pass", "new": {"requests": 1, "errors": 0, "p95_ms": 1.595931}}
    view = {"route": "auth", "status": "running", "percent": 50, "step": 50, "steps": [10, 50], "reason": "", "previous": prev}
    from splitter.cli import rollout

    assert rollout._rollout_lines([view])[-1] == "  last window: 10% for 60 s, new 1 request, 0 errors, p95 1.60 ms: pass"


def test_notification_text_says_each_word_once():
    from splitter.history import describe

    trip = {"who": "guard", "source": "guard", "action": "guard_trip", "route": "auth", "old": 50, "new": 0, "reason": "5xx"}
    assert describe(trip) == "guard trip auth: 50 % → 0 % — 5xx"
    back = {**trip, "who": "rollout", "source": "rollout", "action": "rollout_rollback", "reason": ""}
    assert describe(back) == "rollout rollback auth: 50 % → 0 %"
    by_hand = {**back, "who": "alice", "source": "cli", "action": "rollout_abort"}
    assert describe(by_hand) == "alice rollout abort auth: 50 % → 0 %"
