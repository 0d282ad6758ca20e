"""examples/: each routes file for a common setup is complete, commented and accepted by `splitter check`
(a real process, as an operator runs it); the rollout example is the one the quickstart judges on make run's
stack: steps 20, 50, 100 every 5 s, gates with confidence."""

import subprocess
import sys

import yaml
from conftest import ROOT

from splitter import config

EXAMPLES = ROOT / "examples"
SETUPS = {"single-host", "fleet-redis", "sentinel", "rollout", "cohorts-first", "shadow"}


def test_every_common_setup_has_an_example_and_splitter_check_accepts_each():
    files = sorted(EXAMPLES.glob("*.yaml"))
    assert {f.stem for f in files} == SETUPS
    for f in files:
        r = subprocess.run([sys.executable, "-m", "splitter", "check", str(f)], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert r.returncode == 0 and r.stdout.startswith(f"{f}: ok"), (f, r.stdout, r.stderr)
        text = f.read_text()
        assert text.startswith("# yaml-language-server: $schema=../routes.schema.json\n"), f
        assert f"splitter check examples/{f.name}" in text, f"{f.name} says how to check it"
        assert sum(line.lstrip().startswith("#") or " # " in line for line in text.splitlines()) >= 5, f"{f.name}: comments"


def test_each_example_shows_what_its_name_promises():
    load = {name: config.load(EXAMPLES / f"{name}.yaml") for name in SETUPS}
    assert load["single-host"].redis_url is None and not load["single-host"].redis_ha.sentinels
    assert load["fleet-redis"].redis_url and any(r.guard for r in load["fleet-redis"].routes)
    assert load["sentinel"].redis_ha.sentinels and load["sentinel"].redis_ha.service == "mymaster"
    assert load["cohorts-first"].routes[0].cohorts and load["cohorts-first"].routes[0].percent == 0
    assert load["shadow"].routes[0].shadow is not None
    raw = yaml.safe_load((EXAMPLES / "rollout.yaml").read_text())
    auth = next(r for r in raw["routes"] if r["name"] == "auth")
    assert auth["rollout"]["steps"] == [20, 50, 100] and auth["rollout"]["interval_s"] == 5
    assert auth["rollout"]["gates"]["confidence"] and auth["percent"] == 0
    assert raw["backends"]["legacy"]["url"] == "http://127.0.0.1:8001", "make run's ports (BASE_PORT moves them)"
