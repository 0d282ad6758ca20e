"""`splitter check`, `bucket --config` and `serve` on routes.yaml files, as processes (the parser's own
tests are in tests/unit/test_config.py)."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from test_config import VALID


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_valid_file_exits_0_with_one_line(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID)
    r = run_cli("check", str(f))
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1 and "ok" in r.stdout
    assert r.stderr == ""


def test_check_the_shipped_routes_yaml_in_every_environment():
    for env in ("development", "staging", "production"):
        r = run_cli("check", "routes.yaml", "--env", env)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    "change,message",
    [
        (("percent: 0\n    salt", "percent: 150\n    salt"), ":13: routes[1].percent: must be a number 0..100 with at most two decimals, got 150"),
        (("unmatched: new", "unmatched: new\ncolour: blue"), ":19: colour: unknown key"),
        (("name: upload", "name: auth"), ":11: routes[1].name: duplicate name"),
        (("production: 10}", "prod: 10}"), ":10: routes[0].percent: no value for environment 'production'"),
        (('"http://127.0.0.1:8002"', '"not a url"'), ":4: backends.new.url: must be an origin"),
    ],
)
def test_check_reports_each_error_with_file_line_key_and_exit_1(tmp_path, change, message):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID.replace(*change))
    r = run_cli("check", str(f))
    assert r.returncode == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert any(line.startswith(str(f) + ":") and message in line for line in lines), r.stderr
    assert "Traceback" not in r.stderr


def test_check_against_another_environment(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID)
    r = run_cli("check", str(f), "--env", "qa")
    assert r.returncode == 1 and "no value for environment 'qa'" in r.stderr


def test_check_missing_file_one_line_exit_1(tmp_path):
    r = run_cli("check", str(tmp_path / "missing.yaml"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "not found" in r.stderr


def test_bucket_command_prints_bucket_and_backend(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID)
    r = run_cli("bucket", "alice", "--config", str(f))
    assert r.returncode == 0, r.stderr
    import hashlib

    b = int(hashlib.md5(b"alice").hexdigest()[:8], 16) % 100
    auth_line = next(line for line in r.stdout.splitlines() if line.startswith("auth "))
    assert auth_line.split()[1] == str(b)
    assert auth_line.split()[3] == ("new" if b < 10 else "legacy")


def test_serve_names_an_unset_redis_password_variable(tmp_path):
    f = tmp_path / "routes.yaml"
    f.write_text(VALID + "redis: {url: redis://127.0.0.1:1/0, password_env: SPLITTER_TEST_UNSET_PW}\n")
    r = run_cli("serve", "--config", str(f), "--port", "0", "--admin-port", "0")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        "splitter: redis.password_env names SPLITTER_TEST_UNSET_PW, which is not set: export the Redis password in SPLITTER_TEST_UNSET_PW"
    ), r.stderr
