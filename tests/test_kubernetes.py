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
    """Every object a kustomization applies (resources only: no patches are used here)."""
    out: list[dict] = []

    def walk(folder: Path) -> None:
        kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert set(kust) <= {"apiVersion", "kind", "labels", "resources"}, "only resources: this loader is all the build there is"
        for res in kust["resources"]:
            path = (folder / res).resolve()
            if path.is_dir():
                walk(path)
            else:
                out.extend(d for d in yaml.safe_load_all(path.read_text()) if d)

    walk(K8S / overlay)
    return out


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
