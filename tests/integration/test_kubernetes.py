"""The Kubernetes manifests, without a cluster: schemas, the code they run, and the ConfigMap swap."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from conftest import PY, ROOT, eventually

from splitter import cli, config
from splitter.bucketing import bucket

K8S = ROOT / "deploy/kubernetes"
CRDS = {"ServiceMonitor", "PrometheusRule"}


def objects(overlay: str) -> list[dict]:
    """What `kubectl kustomize` renders from an overlay, for the features these manifests use:
    resources, labels (metadata only), components whose patches merge into a kind/name, images."""
    return _build(K8S / overlay)


def _build(folder: Path) -> list[dict]:
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert set(kust) <= {"apiVersion", "kind", "labels", "resources", "components", "patches", "images"}, "this loader is all the build there is"
    out: list[dict] = []
    for res in kust.get("resources", []):
        path = (folder / res).resolve()
        out.extend(_build(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d])
    patches = list(kust.get("patches", []))
    for comp in kust.get("components", []):
        inner = yaml.safe_load((folder / comp / "kustomization.yaml").read_text())
        assert inner["kind"] == "Component" and set(inner) <= {"apiVersion", "kind", "patches"}
        patches.extend(inner["patches"])
    for patch in patches:
        target, body = patch["target"], yaml.safe_load(patch["patch"])
        hits = [o for o in out if o["kind"] == target["kind"] and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])]
        assert hits, f"patch target {target} matches nothing"
        for o in hits:
            _merge(o, {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    for group in kust.get("labels", []):
        assert set(group) == {"pairs"}, "labels on metadata only"
        for o in out:
            o["metadata"].setdefault("labels", {}).update(group["pairs"])
    for image in kust.get("images", []):
        for o in out:
            for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    return out


def _merge(into: dict, patch: dict) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def by_kind(objs: list[dict], kind: str, name: str | None = None) -> dict:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


@pytest.mark.parametrize("overlay", ["base", "demo"])
def test_every_object_validates_against_the_kubernetes_schemas(overlay):
    version = kubernetes_validate.latest_version()
    objs = objects(overlay)
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy", "StatefulSet", "ServiceMonitor", "PrometheusRule"}
    for o in objs:
        if o["kind"] in CRDS:
            continue
        kubernetes_validate.validate(o, version, strict=True)  # raises on an unknown field or a wrong type
    broken = yaml.safe_load(yaml.safe_dump(by_kind(objs, "Deployment", "splitter")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)  # the check can fail


def test_the_prometheus_operator_objects_match_their_published_schemas():
    """ServiceMonitor and PrometheusRule through the models generated from the operator's CRDs;
    a field the CRD does not know is dropped by the model, so a round trip must give the input back."""
    from cloudcoil.models.prometheus_operator import v1

    for kind, model in (("ServiceMonitor", v1.ServiceMonitor), ("PrometheusRule", v1.PrometheusRule)):
        doc = by_kind(objects("base"), kind)
        parsed = model.model_validate(doc)
        again = parsed.model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
        assert again == doc, (kind, again, doc)
    typo = by_kind(objects("base"), "ServiceMonitor")
    typo["spec"]["endpoints"][0]["intervall"] = "15s"
    again = v1.ServiceMonitor.model_validate(typo).model_dump(by_alias=True, exclude_none=True, exclude_unset=True, mode="json")
    assert again != typo, "a field the CRD does not know is caught"


def test_the_prometheus_rule_is_generated_from_the_alerts_file_and_promtool_accepts_it(tmp_path):
    assert subprocess.run([PY, str(ROOT / "scripts/gen_prometheusrule.py"), "--check"]).returncode == 0, "stale: run scripts/gen_prometheusrule.py"
    rule = by_kind(objects("base"), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_deployment_runs_what_splitter_serve_accepts_and_probes_what_it_serves():
    objs = objects("base")
    dep = by_kind(objs, "Deployment", "splitter")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:2] == ["splitter", "serve"]
    args = cli.build_parser().parse_args(c["command"][1:])  # the CLI's own parser: an unknown flag fails here
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"proxy": args.port, "admin": args.admin_port} and args.admin_host == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > args.graceful_timeout + pre_stop
    assert dep["spec"]["replicas"] >= 2 and pod["topologySpreadConstraints"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] and c["resources"]["requests"] and c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    assert env["SPLITTER_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "splitter-tokens"
    assert "value" not in env["SPLITTER_ADMIN_TOKEN"] and "value" not in env["SPLITTER_FORCE_TOKEN"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert Path(args.config).parent.as_posix() in mounts and "/tmp" in mounts, "config from the ConfigMap; a writable /tmp for --workers' metrics"
    # the Services and the NetworkPolicy point at these ports
    assert by_kind(objs, "Service", "splitter-admin")["spec"]["type"] == "ClusterIP"
    assert by_kind(objs, "Service", "splitter")["spec"]["ports"][0]["targetPort"] == "proxy"
    np = by_kind(objs, "NetworkPolicy")
    admin_rule = next(r for r in np["spec"]["ingress"] if any(p["port"] == args.admin_port for p in r["ports"]))
    assert admin_rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    redis = by_kind(objs, "StatefulSet", "splitter-redis")
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]


def test_the_configmap_routes_pass_splitter_check_and_point_at_the_demo_services():
    objs = objects("demo")
    text = by_kind(objs, "ConfigMap", "splitter-routes")["data"]["routes.yaml"]
    cfg = config.parse(text, "routes.yaml", "production")
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    for backend in cfg.backends.values():
        host, port = backend.url.split("//")[1].split(":")
        assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]], backend.url
    assert cfg.redis_url is not None and "splitter-redis" in cfg.redis_url
    for dep in (o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-backend")):
        cmd = dep["spec"]["template"]["spec"]["containers"][0]["command"]
        assert cmd[:3] == ["python", "-m", dep["metadata"]["name"].replace("-", "_")] and "--host" in cmd


def _kubelet_write(folder: Path, text: str, n: int) -> None:
    """What the kubelet does on a ConfigMap update: a new timestamped dir, then an atomic rename of ..data."""
    new = folder / f"..2026_11_28_{n:02d}"
    new.mkdir()
    (new / "routes.yaml").write_text(text)
    tmp = folder / "..data_tmp"
    tmp.symlink_to(new.name)
    os.replace(tmp, folder / "..data")
    link = folder / "routes.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/routes.yaml")


def test_a_configmap_swap_changes_routing_within_2s_and_a_broken_one_is_refused(standin, splitter, tmp_path):
    from conftest import routes_yaml

    mount = tmp_path / "configmap"
    mount.mkdir()
    legacy, new = standin("legacy"), standin("new")
    text = routes_yaml(legacy, new)
    _kubelet_write(mount, text, 1)
    s = splitter(text, config=mount / "routes.yaml")
    uid = next(u for u in (f"k{i}" for i in range(100)) if bucket(u) >= 50)

    def handler() -> str:
        return httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": uid}).headers["x-splitter-handler"]

    assert handler() == "old_auth"
    _kubelet_write(mount, text.replace("    percent: 50", "    percent: 100", 1), 2)
    t0 = time.monotonic()
    eventually(lambda: handler() == "new_auth", timeout=2)
    assert time.monotonic() - t0 < 2
    _kubelet_write(mount, "routes: [broken", 3)
    eventually(lambda: s.metric("splitter_config_reloads_total", result="failure") == 1, timeout=3)
    assert handler() == "new_auth", "the old routing stays"


def _documented_k8s_commands() -> list[list[str]]:
    """The shell commands of docs/running.md "Run on Kubernetes", continuation lines joined, comments dropped."""
    import shlex

    text = (ROOT / "docs" / "running.md").read_text()
    section = text[text.index("## Run on Kubernetes") :]
    section = section[: section.index("\n## ", 5)]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")].replace("\\\n", " ")
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(words)
    return commands


def _images_in(objs: list[dict]) -> set[str]:
    return {c["image"] for o in objs for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])}


def test_the_documented_steps_create_what_the_demo_reads_and_load_what_it_runs():
    import shlex

    objs = objects("demo")
    cmds = _documented_k8s_commands()
    # the Secrets: every (name, key) a pod reads, and nothing else
    read = {(ref["name"], ref["key"]) for o in objs for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            for e in c.get("env", []) if (ref := e.get("valueFrom", {}).get("secretKeyRef"))}
    created = set()
    for words in cmds:
        if words[:1] == ["kubectl"] and "secret" in words and "create" in words:
            assert words[1:3] == ["-n", "splitter-demo"] and words[words.index("secret") + 1] == "generic", words
            name = words[words.index("generic") + 1]
            created |= {(name, w.split("=", 2)[1]) for w in words if w.startswith("--from-literal=")}
    assert read == created, (read - created, created - read)
    assert not [o for o in objs if o["kind"] == "Secret"], "the Secrets come from the commands, not from the repository"
    # the database URL names the demo's PostgreSQL Service, user and database
    url = next(w for words in cmds for w in words if w.startswith("--from-literal=database-url="))
    pg = by_kind(objs, "StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0]
    pg_env = {e["name"]: e.get("value") for e in pg["env"]}
    assert url.startswith(f"--from-literal=database-url=postgresql://{pg_env['POSTGRES_USER']}:") and url.endswith(f"@postgres:5432/{pg_env['POSTGRES_DB']}")
    assert by_kind(objs, "Service", "postgres")["spec"]["ports"][0]["port"] == 5432
    # the images: make images builds exactly the ones the demo runs (besides the pinned third-party ones), kind loads them
    alone = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}  # not as make test's child
    dry = subprocess.run(["make", "--no-print-directory", "-n", "images"], cwd=ROOT, env=alone,
                         capture_output=True, text=True, check=True).stdout
    built = {}
    for line in dry.splitlines():
        words = shlex.split(line)
        assert words[:2] == ["docker", "build"] and words[-1] == ".", line
        built[words[words.index("-t") + 1]] = words[words.index("-f") + 1]
    ours = {i for i in _images_in(objs) if i.startswith("splitter")}
    assert set(built) == ours == {"splitter:0.1.0", "splitter-legacy-backend:0.1.0", "splitter-new-backend:0.1.0"}
    assert all(tag.endswith(":" + __import__("splitter").__version__) for tag in built)
    loaded = next(words for words in cmds if words[:3] == ["kind", "load", "docker-image"])
    assert set(loaded[3:loaded.index("--name")]) == ours
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    dockerfiles = {s["build"]["dockerfile"] for s in compose.values() if "build" in s}
    assert set(built.values()) == dockerfiles and all(s["build"]["context"] == "." for s in compose.values() if "build" in s)
    # monitoring: the Helm release docs/running.md installs is the objects' label, in the namespace the policy admits
    helm = next(words for words in cmds if words[:2] == ["helm", "install"])
    release, namespace = helm[2], helm[helm.index("-n") + 1]
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert by_kind(objs, kind)["metadata"]["labels"]["release"] == release
    admin_rule = next(r for r in by_kind(objs, "NetworkPolicy", "splitter")["spec"]["ingress"] if "from" in r)
    assert admin_rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
    assert ["kubectl", "-n", "splitter-demo", "apply", "-k", "deploy/kubernetes/demo"] in cmds


def test_the_python_render_is_what_kubectl_kustomize_renders():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python render stands alone")
    for overlay in ("base", "demo"):
        out = subprocess.run([kubectl, "kustomize", str(K8S / overlay)], capture_output=True, text=True, check=True).stdout
        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted(yaml.safe_load_all(out), key=key) == sorted(objects(overlay), key=key), overlay


def test_redis_wants_a_password_and_admits_only_splitter_pods():
    objs = objects("base")
    redis = by_kind(objs, "StatefulSet", "splitter-redis")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in redis["env"]}
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDISCLI_AUTH)" and env["REDISCLI_AUTH"] == {"name": "splitter-redis", "key": "password"}
    splitter = by_kind(objs, "Deployment", "splitter")["spec"]["template"]["spec"]["containers"][0]
    cfg = config.parse(by_kind(objs, "ConfigMap", "splitter-routes")["data"]["routes.yaml"], "routes.yaml", "production")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in splitter["env"] if "valueFrom" in e}
    assert refs[cfg.redis_ha.password_env] == env["REDISCLI_AUTH"], "splitter reads the password Redis requires"
    policy = by_kind(objs, "NetworkPolicy", "splitter-redis")
    redis_labels = by_kind(objs, "StatefulSet", "splitter-redis")["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= redis_labels.items()
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "splitter"}}}], "ports": [{"port": 6379, "protocol": "TCP"}]}]
    splitter_labels = by_kind(objs, "Deployment", "splitter")["spec"]["template"]["metadata"]["labels"]
    assert {"app.kubernetes.io/name": "splitter"}.items() <= splitter_labels.items()


def test_the_grafana_dashboard_configmap_is_generated_from_the_dashboard_and_carries_the_sidecar_label():
    """kube-prometheus-stack's Grafana sidecar loads ConfigMaps labelled grafana_dashboard: "1"; the one in base
    holds exactly deploy/grafana's dashboard (regenerate: scripts/gen_dashboard_configmap.py)."""
    import json

    assert subprocess.run([PY, str(ROOT / "scripts/gen_dashboard_configmap.py"), "--check"]).returncode == 0, "stale: run scripts/gen_dashboard_configmap.py"
    cm = by_kind(objects("base"), "ConfigMap", "splitter-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/splitter.json").read_text())
    assert json.loads(cm["data"]["splitter.json"]) == dashboard and dashboard["panels"]
    assert cm in objects("demo"), "the demo overlay carries it too"


def test_the_hpa_names_metrics_server_the_configmap_comment_says_both_delays_and_images_are_pinned():
    """A release version (postgres 16.4 is one; python 3.11 is a moving line) or a digest, never a floating tag."""
    import re

    hpa = (K8S / "base/hpa.yaml").read_text()
    assert "metrics-server" in hpa.split("apiVersion")[0], "the HPA's prerequisite, said where it is applied"
    routes_cm = (K8S / "base/configmap.yaml").read_text().split("apiVersion")[0]
    assert "within 2 s" in routes_cm and "about a minute" in routes_cm and "sync period" in routes_cm
    for dockerfile in (ROOT / "deploy/docker").glob("*.Dockerfile"):
        bases = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
        assert bases and all("@sha256:" in b or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", b) for b in bases), (dockerfile, bases)
    for image in _images_in(objects("demo")):
        assert image.startswith("splitter") or re.search(r":\d+\.\d+(\.\d+)?(-[\w.]+)?$", image), image
