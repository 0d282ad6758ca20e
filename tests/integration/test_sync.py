"""`splitter sync`: routes.yaml kept in step with what runs, against a real proxy and its real reload."""

from __future__ import annotations

import httpx
from conftest import eventually, routes_yaml
from test_cli import TOKEN, run

ROUTES = """  - name: auth                    # the login service, migrated first
    prefix: /api/auth
    percent: {production: 50, staging: 20}   # production is what this proxy runs
    rollout: {steps: [50, 100], interval_s: 3600, gates: {min_requests: 1}}
    cohorts:
      - {name: beta, users: [ann], to: new}   # testers
  - name: upload
    prefix: /api/upload
    percent: 0                    # not started"""


def test_sync_write_after_a_finished_rollout_makes_the_file_say_what_runs(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    eventually(lambda: httpx.get(s.admin + "/admin/rollouts").json()[0]["step"] == 50, timeout=15)
    assert run("rollout", "promote", "auth", "--full", "--admin", s.admin).returncode == 0
    assert run("cohort", "add", "auth", "beta", "bob", "--admin", s.admin).returncode == 0
    status = run("status", "--admin", s.admin)
    assert "auth: routes.yaml says 50, running 100 since the rollout finished: `splitter sync --write`" in status.stdout

    shown = run("sync", "--file", str(s.config), "--admin", s.admin)
    assert shown.returncode == 3, shown
    assert "auth: routes.yaml says 50 for production, running 100 (source rollout)" in shown.stdout
    assert "auth: cohort beta has 1 members added at runtime, not in routes.yaml (bob)" in shown.stdout
    assert "upload" not in shown.stdout  # in step: not listed

    before = s.config.read_text()
    wrote = run("sync", "--write", "--file", str(s.config), "--admin", s.admin)
    assert wrote.returncode == 0, wrote
    after = s.config.read_text()
    line = "+    percent: {production: 100, staging: 20}  # production is what this proxy runs"
    assert line in wrote.stdout, wrote.stdout
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b]
    assert changed == [
        ("    percent: {production: 50, staging: 20}   # production is what this proxy runs",
         "    percent: {production: 100, staging: 20}  # production is what this proxy runs"),
        ("      - {name: beta, users: [ann], to: new}   # testers",
         "      - {name: beta, users: [ann, bob], to: new} # testers"),
    ], changed  # every other line, comments and spacing included, as it was
    assert run("check", str(s.config)).returncode == 0

    def in_step() -> bool:
        return "routes.yaml says" not in run("status", "--admin", s.admin).stdout
    eventually(in_step, timeout=10)  # the proxy reloads the file within 2 s
    view = {r["name"]: r for r in httpx.get(s.admin + "/admin/routes").json()}["auth"]
    assert view["percent"] == 100 and view["file_percent"] == 100
    again = run("sync", "--file", str(s.config), "--admin", s.admin)
    assert again.returncode == 0 and again.stdout.startswith(f"{s.config} says what runs"), again


def test_sync_under_the_kill_switch_reports_it_and_refuses_to_write(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    assert run("set", "auth", "70", "--admin", s.admin).returncode == 0
    assert run("kill", "on", "--admin", s.admin).returncode == 0
    before = s.config.read_text()
    shown = run("sync", "--file", str(s.config), "--admin", s.admin)
    assert shown.returncode == 3 and "kill switch ON at runtime" in shown.stdout, shown
    wrote = run("sync", "--write", "--file", str(s.config), "--admin", s.admin)
    assert wrote.returncode == 1 and "the kill switch is ON" in wrote.stderr, wrote
    assert s.config.read_text() == before


def test_sync_with_a_missing_file_is_one_line():
    r = run("sync", "--file", "/nonexistent/routes.yaml", "--admin", "http://127.0.0.1:9")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "cannot read /nonexistent/routes.yaml" in r.stderr, r


def test_sync_of_a_file_that_is_not_yaml_is_one_line(tmp_path):
    bad = tmp_path / "routes.yaml"
    bad.write_text("routes: [unclosed\n")
    r = run("sync", "--file", str(bad), "--admin", "http://127.0.0.1:9")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and f"{bad} is not YAML: " in r.stderr, r
