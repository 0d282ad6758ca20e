"""Every command's error paths against cli.EXIT_CODES, as an operator meets them: real `splitter`
processes, a real proxy for the admin API. Each mistake ends with the table's code and one line on
stderr, never a traceback. The commands come from build_parser(): a command added without a row in
INVOCATIONS fails the first test, so new commands are held to the table too."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import ROOT, free_port, routes_yaml

from splitter import cli

TOKEN = "exits-token"
KNOWN = "(routes: auth, upload, resume_review)"

# A valid command line per command and sub-action ("{route}" where a route name goes), and whether it
# changes something (then it needs a token). None: the command never talks to the admin API.
INVOCATIONS: dict[str, list[tuple[list[str], bool]] | None] = {
    "serve": None,
    "check": None,
    "schema": None,
    "completion": None,
    "bucket": [(["alice"], False)],
    "status": [([], False)],
    "set": [(["{route}", "10"], True)],
    "clear": [(["{route}"], True)],
    "rollback": [(["{route}"], True)],
    "kill": [(["on"], True), (["off"], True)],
    "shadow": [(["{route}"], False)],
    "history": [(["{route}"], False)],
    "state": [(["export"], False)],
    "cohort": [(["add", "{route}", "beta", "u1"], True), (["remove", "{route}", "beta", "u1"], True),
               (["list", "{route}"], False)],
    "rollout": [(["status", "{route}"], False), (["wait", "{route}", "--timeout", "5"], False)]
    + [([a, "{route}"], True) for a in ("pause", "resume", "abort", "promote", "restart")],
    "report": [(["--route", "{route}"], False)],
    "sync": [([], False)],
    "retire": [(["{route}", "--dry-run"], True)],
    "progress": [(["{route}"], False)],
}


def run(*args: str, token: str | None = TOKEN, env: dict[str, str] | None = None, cwd: object = ROOT) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("SPLITTER_ADMIN_TOKEN", "SPLITTER_ADMIN_URL")}
    base |= {"SPLITTER_ADMIN_TOKEN": token} if token else {}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=base | (env or {}), cwd=cwd, timeout=30)


def exits(r: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    """The table's code, and stderr one line holding `needle`, no traceback."""
    said = f"{r.args[3:]} -> {r.returncode}: {r.stderr!r}"
    assert r.returncode == code, said
    assert code in cli.EXIT_CODES, said
    assert len(r.stderr.splitlines()) == 1 and needle in r.stderr and "Traceback" not in r.stderr, said


def exits_all(cases: list[tuple[list[str], dict[str, Any], int, str]]) -> None:
    """exits() for many command lines, 4 at a time: each waits mostly on the machine, not on itself."""
    with ThreadPoolExecutor(4) as pool:
        done = list(pool.map(lambda c: (run(*c[0], **c[1]), c[2], c[3]), cases))
    for r, code, needle in done:
        exits(r, code, needle)


def commands() -> dict[str, argparse.ArgumentParser]:
    subs = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subs.choices)


def lines(name: str) -> list[tuple[list[str], bool]]:
    return INVOCATIONS[name] or []


def test_every_command_has_a_row_and_the_help_prints_the_table():
    assert set(commands()) == set(INVOCATIONS), "add the new command to INVOCATIONS: its error paths are tested here"
    for name, parser in commands().items():
        has_admin = any("--admin" in a.option_strings for a in parser._actions)
        assert has_admin == (INVOCATIONS[name] is not None), f"{name}: --admin and the table disagree"
    shown = run("--help").stdout
    for code, said in cli.EXIT_CODES.items():
        assert f"{code:>3}  {said}" in shown


def test_usage_errors_exit_2_in_one_line_for_every_command(tmp_path):
    """An unknown flag on every command, an unknown command, and each command's own bad values."""
    todo: list[tuple[list[str], dict[str, Any], int, str]] = [(["nosuch"], {}, 2, "invalid choice: 'nosuch'")]
    local = {"serve": [], "check": [], "schema": [], "completion": ["bash"]}
    for name in commands():
        argv = local[name] if INVOCATIONS[name] is None else lines(name)[0][0]
        args = [a.replace("{route}", "auth") for a in argv]
        todo.append(([name, *args, "--no-such-flag"], {}, 2, "unrecognized arguments: --no-such-flag"))
    cases = [
        (["set", "auth", "150"], "percent must be a number 0..100"),
        (["set", "auth"], "the following arguments are required: percent"),
        (["kill", "maybe"], "invalid choice: 'maybe'"),
        (["rollback"], "name one ROUTE or --all"),
        (["rollback", "auth", "--all"], "name one ROUTE or --all"),
        (["cohort", "add", "auth", "beta"], "add needs ROUTE COHORT USER... (got route 'auth', cohort 'beta' and no user ids)"),
        (["cohort", "remove", "auth"], "remove needs ROUTE COHORT USER... (got route 'auth', no cohort)"),
        (["cohort", "list", "auth", "beta", "u1"], "list takes ROUTE [COHORT], no user ids"),
        (["rollout", "pause"], "rollout pause needs a ROUTE"),
        (["rollout", "wait", "auth", "--timeout", "0"], "--timeout must be more than 0 seconds"),
        (["rollout", "pause", "auth", "--full"], "--full goes with promote"),
        (["rollout", "status", "--timeout", "x"], "invalid float value: 'x'"),
        (["history", "--limit", "0"], "--limit must be at least 1, got 0"),
        (["report", "--window", "1h"], "--window 1h needs --prometheus URL"),
        (["report", "--window", "an hour", "--prometheus", "http://127.0.0.1:9"], "--window must be a Prometheus duration"),
        (["report", "--prometheus", "localhost:9090"], "--prometheus 'localhost:9090' needs http://"),
        (["state", "import"], "import needs the file an export wrote"),
        (["serve", "--workers", "0"], "--workers must be at least 1"),
        (["serve", "--port", "9", "--admin-port", "9"], "--port and --admin-port must differ"),
        (["serve", "--admin-allowed-hosts", "http://x"], "is not a host name"),
        (["completion", "fish"], "invalid choice: 'fish'"),
        (["serve", "--backend-url", "legacy"], "'legacy' is not NAME=URL"),
        (["bucket", "alice", "--file", "routes.yaml", "--admin", "http://127.0.0.1:9"], "--file decides on the file alone"),
        (["serve", "--access-log", "a.log", "--no-access-log"], "--access-log PATH and --no-access-log: choose one"),
    ]
    exits_all(todo + [(argv, {}, 2, needle) for argv, needle in cases])


def test_bad_admin_urls_are_usage_errors_on_every_admin_command():
    """`--admin localhost:8081` (no scheme) and the same in $SPLITTER_ADMIN_URL: exit 2, nothing sent."""
    todo: list[tuple[list[str], dict[str, Any], int, str]] = []
    for name in commands():
        for argv, _ in lines(name):
            args = [name, *(a.replace("{route}", "auth") for a in argv)]
            todo.append(([*args, "--admin", "localhost:8081"], {}, 2, "--admin 'localhost:8081' needs http://"))
            todo.append((args, {"env": {"SPLITTER_ADMIN_URL": "localhost:8081"}}, 2, "SPLITTER_ADMIN_URL 'localhost:8081'"))
            todo.append(([*args, "--admin", "http://"], {}, 2, "names no host"))
    exits_all(todo)


def test_failures_exit_1_unreachable_admin_missing_token_files():
    nobody = f"http://127.0.0.1:{free_port()}"
    todo: list[tuple[list[str], dict[str, Any], int, str]] = []
    for name in commands():
        for argv, writes in lines(name):
            args = [name, *(a.replace("{route}", "auth") for a in argv)]
            if name == "rollout" and argv[0] == "wait":
                continue  # wait retries an unreachable API until --timeout: exit 4 (below)
            todo.append((args, {"env": {"SPLITTER_ADMIN_URL": nobody}}, 1, f"cannot reach the admin API at {nobody}"))
            if writes:
                todo.append((args, {"token": None, "env": {"SPLITTER_ADMIN_URL": nobody}}, 1, "SPLITTER_ADMIN_TOKEN is not set"))
    exits_all(todo)
    r = run("rollout", "wait", "auth", "--timeout", "1", env={"SPLITTER_ADMIN_URL": nobody})
    assert r.returncode == 4 and "not done within 1 s" in r.stderr.splitlines()[-1] and "Traceback" not in r.stderr
    exits(run("check", "nosuch.yaml"), 1, "nosuch.yaml")
    exits(run("bucket", "alice", "--file", "nosuch.yaml"), 1, "nosuch.yaml")
    exits(run("serve", "--config", "nosuch.yaml", "--port", "0", "--admin-port", "0"), 1, "nosuch.yaml")
    free = ["--port", "0", "--admin-port", "0"]
    exits(run("serve", "--backend-url", "nosuch=http://127.0.0.1:9", *free), 1, "the file has no backend 'nosuch'")
    exits(run("serve", "--backend-url", "new=ftp://x", *free), 1, "backends.new.url")
    exits(run("serve", "--access-log", "/nonexistent/dir/a.log", *free), 1, "--access-log /nonexistent/dir/a.log: cannot open")
    exits(run("state", "import", "/nonexistent/state.json", env={"SPLITTER_ADMIN_URL": nobody}), 1, "cannot read")


def test_an_unknown_route_exits_1_naming_the_known_ones_on_every_command(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    tried, todo = set(), []
    for name in commands():
        for argv, _ in lines(name):
            if "{route}" not in argv:
                continue
            args = [name, *(a.replace("{route}", "nosuch") for a in argv)]
            todo.append((args, {"env": {"SPLITTER_ADMIN_URL": s.admin}}, 1, f"unknown route 'nosuch' {KNOWN}"))
            tried.add(name)
    exits_all(todo)
    assert tried == {"set", "clear", "rollback", "shadow", "history", "cohort", "rollout", "report", "progress", "retire"}
    r = run("bucket", "alice", "--admin", s.admin)  # the live decision, asked of the same proxy
    assert r.returncode == 0 and "live values from" in r.stdout, r.stderr


@pytest.mark.parametrize("argv", [["schema"], ["history"]])
def test_a_closed_pipe_is_quiet(standin, splitter, argv):
    """`splitter ... | head` that stops reading: no BrokenPipeError traceback, nothing on stderr, 141 as a
    shell shows for a command SIGPIPE ended. The read end is closed before the command writes: no race."""
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    for pct in ("10", "20", "30"):
        assert run("set", "auth", pct, "--admin", s.admin).returncode == 0
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if k != "SPLITTER_ADMIN_URL"} | {"SPLITTER_ADMIN_URL": s.admin}
    try:
        r = subprocess.run([sys.executable, "-m", "splitter", *argv], stdout=write, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=30)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")
