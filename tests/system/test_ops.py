"""Ops pack: compose.yaml checked statically, Prometheus + dashboard + alerts against a live stack, `splitter report`."""

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml
from backends import start_backend
from conftest import ROOT, Proc, eventually, free_port, routes_yaml, wait_http

from splitter import cli, config
from splitter.admin.security import host_allowed
from splitter.bucketing import bucket

DEPLOY = ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_compose_parses_and_has_the_whole_stack():
    services = compose()["services"]
    assert {"redis", "legacy_backend", "new_backend", "splitter-a", "splitter-b", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
        if "build" in svc:
            assert (ROOT / svc["build"]["dockerfile"]).is_file()
        for env_file in svc.get("env_file", []):
            assert (ROOT / env_file).is_file()
        assert "healthcheck" in svc or name in ("prometheus", "grafana", "alertmanager"), name


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m)", text)
    assert m, text
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


def test_compose_restarts_drains_pins_and_keeps_secrets_where_they_are_used():
    c = compose()
    services = c["services"]
    assert {"postgres", "alertmanager"} <= set(services)
    for name, svc in services.items():
        assert svc.get("restart") in ("unless-stopped", "always"), f"{name} has no restart policy"
        image = svc.get("image")
        if image:
            repo, _, tag = image.rpartition(":")
            assert repo and re.fullmatch(r"v?\d+\.\d+(\.\d+)?(-[a-z0-9]+)?", tag), f"{name}: pin a version, not {image!r} (no latest, no major-only tag)"
    for name in ("splitter-a", "splitter-b"):
        args = cli.build_parser().parse_args(services[name]["command"][1:])
        assert _seconds(services[name]["stop_grace_period"]) >= args.graceful_timeout + 5, "Docker must not kill a replica mid-drain"
    env_of = {name: set(svc.get("env_file", [])) for name, svc in services.items()}
    assert env_of["splitter-a"] == {"deploy/splitter.env", "deploy/redis.env"} and env_of["legacy_backend"] == env_of["new_backend"] == {"deploy/backends.env"}
    assert env_of["grafana"] == {"deploy/grafana.env"} and env_of["postgres"] == {"deploy/postgres.env"}
    assert env_of["redis"] == {"deploy/redis.env"} and not env_of["prometheus"], "no secrets where none are used"
    assert "REDIS_PASSWORD" in services["redis"]["healthcheck"]["test"][-1], "the health check logs in"
    keys = lambda f: {line.split("=", 1)[0] for line in (ROOT / f).read_text().splitlines() if line and not line.startswith("#")}  # noqa: E731
    assert keys("deploy/splitter.env") == {"SPLITTER_ADMIN_TOKEN", "SPLITTER_FORCE_TOKEN"}
    assert keys("deploy/redis.env") == {"REDIS_PASSWORD"} and "$$REDIS_PASSWORD" in services["redis"]["command"][-1]
    assert keys("deploy/backends.env") == {"JWT_SECRET", "DATABASE_URL"} and keys("deploy/grafana.env") >= {"GF_SECURITY_ADMIN_PASSWORD"}
    assert "GF_SECURITY_ADMIN_PASSWORD" not in services["grafana"].get("environment", {}), "from the env file, not admin/admin in compose"
    db = next(line.split("=", 1)[1] for line in (ROOT / "deploy/backends.env").read_text().splitlines() if line.startswith("DATABASE_URL="))
    pw = next(line.split("=", 1)[1] for line in (ROOT / "deploy/postgres.env").read_text().splitlines() if line.startswith("POSTGRES_PASSWORD="))
    assert db.startswith("postgresql://splitter:" + pw + "@postgres:5432/"), "the backends use the compose PostgreSQL"
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert prom["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    am = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    assert am["route"]["receiver"] in {r["name"] for r in am["receivers"]} and am["receivers"][0]["webhook_configs"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    for name in ("legacy_backend", "new_backend", "splitter-a"):
        assert "HEALTHCHECK" in (ROOT / services[name]["build"]["dockerfile"]).read_text(), name


def container_path(svc: dict, path: str) -> Path:
    for vol in svc["volumes"]:
        src, dst = vol.split(":")[:2]
        if path.startswith(dst + "/"):
            return ROOT / src / path[len(dst) + 1 :]
    raise AssertionError(f"{path} is not on a mounted volume")


def test_compose_commands_ports_and_env_match_the_code():
    c = compose()
    services = c["services"]
    backend_ports = {}
    for name in ("legacy_backend", "new_backend"):
        cmd = services[name]["command"]
        assert cmd[:3] == ["python", "-m", name]
        port = int(cmd[cmd.index("--port") + 1])
        backend_ports[name] = port
        assert f":{port}/health" in " ".join(services[name]["healthcheck"]["test"])
        assert set(services[name]["environment"]) <= {"DATABASE_URL", "UPLOAD_DIR", "FAULT_ERROR_RATE", "FAULT_LATENCY_MS", "UPLOAD_MAX_BYTES"}
    scrape = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    for name in ("splitter-a", "splitter-b"):
        svc = services[name]
        cmd = svc["command"]
        assert cmd[:2] == ["splitter", "serve"]
        args = cli.build_parser().parse_args(cmd[1:])
        assert args.admin_host == "0.0.0.0", "Prometheus scrapes the admin listener from another container"
        published = {p.rsplit(":", 1)[1] for p in svc["ports"]}
        assert published == {str(args.port), str(args.admin_port)}
        assert f"{name}:{args.admin_port}" in targets
        assert host_allowed(f"{name}:{args.admin_port}", args.admin_allowed_hosts), "it answers Prometheus' Host"
        cfg_file = container_path(svc, args.config)
        cfg = config.load(cfg_file, svc["environment"]["SPLITTER_ENV"])
        for bname, svc_name in (("legacy", "legacy_backend"), ("new", "new_backend")):
            assert cfg.backends[bname].url == f"http://{svc_name}:{backend_ports[svc_name]}"
        assert cfg.redis_url == "redis://redis:6379/0" and cfg.redis_ha.password_env == "REDIS_PASSWORD"
        assert f":{args.admin_port}/readyz" in " ".join(svc["healthcheck"]["test"])
    # the Dockerfiles' default commands agree with compose's
    for name in ("legacy_backend", "new_backend"):
        df = (ROOT / services[name]["build"]["dockerfile"]).read_text()
        assert json.dumps(services[name]["command"]) in df
    grafana = services["grafana"]["volumes"]
    assert any(v.startswith("./deploy/grafana/dashboards:") for v in grafana)
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None or shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (make test installs the Debian package)")
    return path


def test_promtool_accepts_config_and_rules(promtool):
    for args in (["check", "config", str(DEPLOY / "prometheus/prometheus.yml")], ["check", "rules", str(DEPLOY / "prometheus/alerts.yml")]):
        r = subprocess.run([promtool, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def dashboard_exprs() -> list[tuple[str, str]]:
    """Every panel's and annotation's query, by title (annotations: "annotation: NAME")."""
    dash = json.loads((DEPLOY / "grafana/dashboards/splitter.json").read_text())
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource", "route"]
    panels = [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]
    return panels + [(f"annotation: {a['name']}", a["expr"]) for a in dash["annotations"]["list"]]


def test_the_dashboard_imports_anywhere_and_names_every_series():
    dash = json.loads((DEPLOY / "grafana/dashboards/splitter.json").read_text())
    # import: Grafana asks for DS_PROMETHEUS and writes the answer into the datasource variable;
    # provisioning (compose) leaves ${DS_PROMETHEUS} unresolved and the variable falls back to the default Prometheus
    assert dash["__inputs"] == [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "the Prometheus that scrapes splitter", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}]
    var = dash["templating"]["list"][0]
    assert var["type"] == "datasource" and var["query"] == "prometheus" and var["current"]["value"] == "${DS_PROMETHEUS}"
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert [d["type"] for d in provisioned if d.get("isDefault")] == [var["query"]], "the variable's fallback is the provisioned Prometheus"
    sources = [p["datasource"] for p in dash["panels"]] + [t["datasource"] for p in dash["panels"] for t in p["targets"]]
    sources += [dash["templating"]["list"][1]["datasource"]] + [a["datasource"] for a in dash["annotations"]["list"]]
    assert all(ds == {"type": "prometheus", "uid": "${datasource}"} for ds in sources), "no hard-coded datasource uid"
    for panel in dash["panels"]:
        for t in panel["targets"]:
            for group in re.findall(r"\bby \(([^)]*)\)", t["expr"]):
                for label in (x.strip() for x in group.split(",")):
                    assert label == "le" or "{{" + label + "}}" in t["legendFormat"], (panel["title"], label, t["legendFormat"])
        if panel["type"] == "stat":
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults["mappings"] and len(defaults["thresholds"]["steps"]) >= 2, panel["title"]
    mapped = {p["title"]: p["fieldConfig"]["defaults"]["mappings"][0]["options"] for p in dash["panels"] if p["type"] == "stat"}
    assert mapped["Kill switch"]["1"]["color"] == "red" and mapped["Redis up (per replica)"]["0"]["color"] == "red"
    assert {a["name"] for a in dash["annotations"]["list"]} >= {"Guard trips", "Rollbacks", "Percent changes"}


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in rules["groups"] for r in g["rules"]]


EXPECTED_LABELS = {
    "Requests/s by handler (old vs new)": {"handler"},
    "Error rate by handler": {"handler"},
    "p95 latency by handler": {"handler"},
    "p99 latency by handler": {"handler"},
    "Effective percent to new": {"route"},
    "Upstream errors by kind": {"handler", "kind"},
    "Kill switch": set(),
    "Config reload failures (1h)": set(),
    "Requests refused by the proxy": {"reason"},
    "SplitterNewErrorRateHigh": {"route"},
    "SplitterNewSlowerThanOld": {"route"},
    "SplitterRedisDown": {"instance", "job"},
    "SplitterConfigReloadFailing": {"instance", "job", "result"},
    "Redis up (per replica)": {"instance"},
    # valid queries whose series this scenario does not produce (no guard, shadow or rollout, no aborts, no replica down)
    "Guard trips (automatic rollbacks)": None,
    "Shadow comparisons by result": None,
    "Rollout step (percent)": None,
    "Client aborts by handler": None,
    "SplitterGuardTripped": None,
    "Rollout events (advanced, done, rolled back, ...)": None,
    "SplitterRolloutRolledBack": None,
    "SplitterRolloutStalled": None,
    "SplitterReplicaDown": None,
    # annotations: changes within the last minute (none in this scenario's last minute but a reload, counted from 1)
    "annotation: Guard trips": None,
    "annotation: Rollbacks": None,
    "annotation: Percent changes": None,
    "annotation: Kill switch": None,
    "annotation: Config reloads": None,
    "annotation: Changes (who changed what: splitter history)": None,
}


def test_dashboard_and_alerts_against_a_real_prometheus(procs, tmp_path, splitter, promtool):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "0.3", "FAULT_LATENCY_MS": "40"})
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    s = splitter(routes_yaml(legacy, new, extra=f'redis: {{url: "{dead_redis}"}}\nmax_body_bytes: 100000'), ready=False)
    wait_http(s.admin + "/healthz")
    assert httpx.get(s.admin + "/readyz").status_code == 503, "Redis never reached: not ready"

    users = [f"p{i}" for i in range(200)]
    sent = {"legacy": 0, "new": 0}
    errors_new = 0
    with httpx.Client(base_url=s.url, timeout=10) as c:
        for u in users:
            r = c.get("/api/auth/me", headers={"X-User-ID": u})
            side = "new" if bucket(u) < 50 else "legacy"
            sent[side] += 1
            errors_new += side == "new" and r.status_code == 500
        c.post("/api/upload", content=b"x" * 200_000)  # refused: too large

    work = tmp_path / "prom"
    work.mkdir()
    shutil.copy(DEPLOY / "prometheus/alerts.yml", work / "alerts.yml")
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "splitter", "static_configs": [{"targets": [f"127.0.0.1:{s.admin_port}"]}]}],
    }))
    port = free_port()
    prom = Proc([shutil.which("prometheus"), f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"], log=work / "prometheus.log")
    procs.append(prom)
    base = f"http://127.0.0.1:{port}"

    def query(expr: str) -> list[dict]:
        resp = httpx.get(base + "/api/v1/query", params={"query": expr}, timeout=10)
        assert resp.status_code == 200, (expr, resp.text)
        r = resp.json()
        return r["data"]["result"]

    eventually(lambda: _ok(base), timeout=20)
    # keep traffic flowing while Prometheus scrapes, so rates are non-zero: 6 s, and at least 200 requests to new
    # (the alerts want 60 in their 5 m window; a loaded machine sent fewer in 6 s and SplitterNewErrorRateHigh had none)
    t_end, new_before = time.monotonic() + 6, sent["new"]
    with httpx.Client(base_url=s.url, timeout=10) as c:
        while time.monotonic() < t_end or sent["new"] - new_before < 200:
            for u in users[:20]:
                r = c.get("/api/auth/me", headers={"X-User-ID": u})
                side = "new" if bucket(u) < 50 else "legacy"
                sent[side] += 1
                errors_new += side == "new" and r.status_code == 500
            c.post("/api/upload", content=b"x" * 200_000)
            if time.monotonic() > t_end - 3 and not s.config.read_text().startswith("routes: [broken"):
                s.config.write_text("routes: [broken")  # a failed reload, while Prometheus watches
    eventually(lambda: s.metric("splitter_config_reloads_total", result="failure") == 1, timeout=3)
    time.sleep(2.5)  # the last scrape

    for title, expr in dashboard_exprs() + alert_exprs():
        concrete = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace('"$route"', '".*"')
        if EXPECTED_LABELS[title] is None:
            resp = httpx.get(base + "/api/v1/query", params={"query": concrete}, timeout=10)
            assert resp.status_code == 200 and resp.json()["status"] == "success", (title, resp.text)
            continue
        try:
            result = eventually(lambda e=concrete: query(e), timeout=10)
        except AssertionError:
            raise AssertionError(f"{title}: no data for {concrete}") from None
        labels = set(result[0]["metric"]) - {"__name__"}
        assert EXPECTED_LABELS[title] <= labels, (title, labels)
        if title.startswith("Splitter") and "route" in EXPECTED_LABELS[title]:
            assert {x["metric"]["route"] for x in result} == {"auth"}, (title, result)

    # splitter report, from Prometheus and from the admin API: the numbers the test sent
    from test_cli import run

    for source in (["--prometheus", base], ["--admin", s.admin]):
        r = run("report", *source, "--route", "auth", "--json")
        assert r.returncode == 3, r.stderr  # new fails the criteria
        rep = json.loads(r.stdout)[0]
        assert rep["old"]["requests"] == sent["legacy"] and rep["new"]["requests"] == sent["new"], (source, rep, sent)
        assert rep["new"]["errors"] == errors_new and rep["old"]["errors"] == 0
        assert rep["new"]["p95_ms"] >= 40 and rep["verdict"] == "fail"
        table = run("report", *source)
        assert table.returncode == 3 and re.search(r"auth\s+\d+\s+\d+", table.stdout) and "FAIL" in table.stdout


def _ok(base: str) -> bool:
    """Prometheus is ready (a fresh one answers 503 in plain text while it loads) and has scraped splitter."""
    try:
        if httpx.get(base + "/-/ready").status_code != 200:
            return False
        for expr in ("up", "splitter_requests_total"):
            r = httpx.get(base + "/api/v1/query", params={"query": expr})
            if r.status_code != 200 or not r.json()["data"]["result"]:
                return False
        return True
    except httpx.HTTPError:
        return False


def test_report_counts_a_healthy_migration_exactly(procs, tmp_path, splitter):
    from test_cli import run

    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path)
    s = splitter(routes_yaml(legacy, new))
    with httpx.Client(base_url=s.url) as c:
        for i in range(100):
            c.get("/api/auth/me", headers={"X-User-ID": f"h{i}"})
    r = run("report", "--admin", s.admin, "--route", "auth", "--json")
    rep = json.loads(r.stdout)[0]
    n_new = sum(bucket(f"h{i}") < 50 for i in range(100))
    assert rep["new"]["requests"] == n_new and rep["old"]["requests"] == 100 - n_new
    assert rep["new"]["errors"] == 0 and rep["new"]["error_rate"] == 0
    # two healthy backends may still differ in p95 by more than 10 %: the exit code must follow the verdict
    assert r.returncode == {"pass": 0, "fail": 3, "not_enough_evidence": 4}[rep["verdict"]]
    # 0 errors in about 50 requests: the error rate's interval reaches past 0.1 %, so never a pass
    assert rep["verdict"] != "pass" and any(x.startswith("new error rate 0.000%, but its 95 %") for x in rep["reasons"])
    # effect sizes with their uncertainty: exact interval for 0 errors in n, order-statistic intervals for p50/p95
    lo, hi = rep["new"]["error_rate_ci"]
    assert lo == 0 and 0 < hi < 0.1 and rep["confidence"] == 0.95
    for side in ("old", "new"):
        p50_lo, p50_hi = rep[side]["p50_ci_ms"]
        assert p50_lo <= rep[side]["p50_ms"] <= p50_hi
        assert rep[side]["p95_ci_ms"][0] <= rep[side]["p95_ms"]
    text = run("report", "--admin", s.admin, "--route", "auth").stdout
    assert re.search(r"new: error rate 0\.000% \[0\.000% \.\. \d", text) and "intervals at 95%" in text, text


def test_report_judge_and_quantile():
    from splitter import report

    # a p95 without its histogram has no interval: never a pass (tests/integration/test_report.py: pass, fail and undecided)
    bare = report.judge("auth", report.Side(1000, 0, 100.0), report.Side(1000, 0, 105.0))
    assert bare.verdict == "not_enough_evidence" and "p95" in bare.reasons[-1]
    erring = report.judge("auth", report.Side(1000, 0, 100.0), report.Side(1000, 10, 100.0))
    assert erring.verdict == "fail" and "error rate" in erring.reasons[0]  # 1 %: the whole interval is above 0.1 %
    assert report.judge("auth", report.Side(10, 0, 1.0), report.Side()).verdict == "no_data"
    # histogram_quantile semantics: linear inside the bucket
    assert report.quantile(0.5, [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.1)
    assert report.quantile(0.95, [(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)]) == pytest.approx(0.19)
    assert report.quantile(0.95, []) is None


def test_report_operator_errors_are_one_line():
    from test_cli import one_line_error, run

    one_line_error(run("report", "--prometheus", f"http://127.0.0.1:{free_port()}"), "cannot query Prometheus")
    one_line_error(run("report", "--admin", f"http://127.0.0.1:{free_port()}"), "cannot reach the admin API")
