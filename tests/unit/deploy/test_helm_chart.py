"""The Helm chart renders valid, hardened objects for every ``ci/*-values.yaml`` variant.

Uses the helm that ``scripts/setup`` builds into ``.cache/bin/helm``; without it every test fails
(never skips) and says so. Rendered objects are validated against the Kubernetes JSON schemas of
``kubernetes-validate`` for the chart's oldest supported Kubernetes and the newest it ships.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent.app import SHUTDOWN_MARGIN_SECS

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "helm" / "edge-agent"
HELM = ROOT / ".cache" / "bin" / "helm"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "plant"
NAMESPACE = "edge"
KUBE_VERSIONS = ("1.29.0", "1.37.0")
"""The chart's kubeVersion floor and the newest Kubernetes that kubernetes-validate ships."""
NEWEST = KUBE_VERSIONS[-1]
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
"""Prometheus Operator kinds: no schema in kubernetes-validate; their shape is asserted here."""
AGENT_UID = 10001
CONFIG_DIR = "/etc/edge-agent"
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
DASHBOARD_CONFIGMAP = f"{RELEASE}-edge-agent-dashboard"
SPOOL_DIR = "/var/lib/edge-agent"

Manifest = dict[str, Any]


def _ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


ci_values = pytest.mark.parametrize("values_file", CI_VALUES, ids=_ci_id)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm; fail the test with the set-up hint when it is not built."""
    if not HELM.is_file():
        pytest.fail(
            f"helm is missing at {HELM.relative_to(ROOT)}: run scripts/setup, which builds it "
            "with `go install` (the chart tests never skip)",
            pytrace=False,
        )
    return subprocess.run(
        [str(HELM), *args], capture_output=True, text=True, check=False, timeout=120
    )


@functools.cache
def _render(values_file: Path | None, sets: tuple[str, ...], kube_version: str) -> str:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    args += ["--kube-version", kube_version]
    if values_file is not None:
        args += ["--values", str(values_file)]
    for item in sets:
        args += ["--set", item]
    proc = helm(*args)
    if proc.returncode != 0:
        raise RenderError(proc.stderr.strip())
    return proc.stdout


class RenderError(Exception):
    """``helm template`` refused the values; the message is helm's."""


def render(
    values_file: Path | None = None, *sets: str, kube_version: str = NEWEST
) -> list[Manifest]:
    """The objects ``helm template`` renders, in order."""
    text = _render(values_file, sets, kube_version)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def the(manifests: list[Manifest], kind: str) -> Manifest:
    """The one object of ``kind``."""
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, rendered {len(found)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def agent_config_maps(manifests: list[Manifest]) -> list[Manifest]:
    """The rendered ConfigMaps of the agent's configuration (not the Grafana dashboard's)."""
    return [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"] != DASHBOARD_CONFIGMAP
    ]


def pod_spec(manifests: list[Manifest]) -> Manifest:
    return the(manifests, "DaemonSet")["spec"]["template"]["spec"]


def agent_container(manifests: list[Manifest]) -> Manifest:
    (container,) = [c for c in pod_spec(manifests)["containers"] if c["name"] == "edge-agent"]
    return container


def env_of(container: Manifest) -> dict[str, Any]:
    """Environment variables: name -> literal value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def walk(node: object, path: str = "") -> Iterator[tuple[str, object]]:
    """Every (dotted path, value) in a nested structure."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}[{index}]")


def values_of(values_file: Path) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    override = yaml.safe_load(values_file.read_text(encoding="utf-8")) or {}
    return _merge(defaults, override)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------- helm itself
def test_helm_chart_helm_is_built():
    """scripts/setup built helm v3 (the tests fail, not skip, without it)."""
    proc = helm("version", "--short")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("v3."), proc.stdout


@ci_values
def test_helm_chart_lints_clean(values_file):
    """`helm lint --strict` passes for every ci values file."""
    proc = helm(
        "lint", "--strict", str(CHART), "--kube-version", NEWEST, "--values", str(values_file)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


# ---------------------------------------------------------------- schema validity
@ci_values
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_helm_chart_renders_schema_valid_objects(values_file, kube_version):
    """Every rendered object is valid (strict: no unknown fields) for Kubernetes 1.29 and 1.37."""
    manifests = render(values_file, kube_version=kube_version)
    assert "DaemonSet" in kinds(manifests)
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        assert manifest["metadata"].get("namespace") == NAMESPACE, name
        if manifest["kind"] in CRD_KINDS:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1", name
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is invalid for Kubernetes {kube_version}: {exc.message}")


@pytest.mark.parametrize("kind", ["PodMonitor", "ServiceMonitor"])
def test_helm_chart_monitors_scrape_metrics_endpoint(kind):
    """ServiceMonitor and PodMonitor scrape /metrics on the named http port of these pods."""
    manifests = render(CHART / "ci" / "monitoring-values.yaml")
    monitor = the(manifests, kind)
    endpoints = monitor["spec"].get("endpoints") or monitor["spec"]["podMetricsEndpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("http", "/metrics")]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == the(manifests, "DaemonSet")["spec"]["selector"]["matchLabels"]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_helm_chart_renders_no_monitors_by_default():
    """Without the Prometheus Operator CRDs the default install must not need them."""
    manifests = render()
    assert not kinds(manifests) & CRD_KINDS
    assert DASHBOARD_CONFIGMAP not in {m["metadata"]["name"] for m in manifests}


def test_helm_chart_prometheus_rule_is_the_rules_file():
    """The PrometheusRule's spec is files/prometheus-rules.yaml, unchanged, with its labels."""
    rule = the(render(CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_helm_chart_grafana_dashboard_is_the_dashboard_file():
    """The dashboard ConfigMap holds files/grafana-dashboard.json under the sidecar's label."""
    manifests = render(CHART / "ci" / "monitoring-values.yaml")
    (config_map,) = [m for m in manifests if m["metadata"]["name"] == DASHBOARD_CONFIGMAP]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Edge"}
    assert list(config_map["data"]) == ["edge-agent.json"]
    text = config_map["data"]["edge-agent.json"]
    assert text == DASHBOARD_FILE.read_text(encoding="utf-8").rstrip("\n")
    assert json.loads(text)["uid"] == "edge-agent"


def test_helm_chart_grafana_dashboard_namespace_is_settable():
    """A sidecar that watches one namespace gets the dashboard there."""
    sets = ("monitoring.grafanaDashboard.enabled=true", "monitoring.grafanaDashboard.namespace=mon")
    (config_map,) = [m for m in render(None, *sets) if m["metadata"]["name"] == DASHBOARD_CONFIGMAP]
    assert config_map["metadata"]["namespace"] == "mon"


def test_helm_chart_package_ships_ci_values_and_monitoring_files(tmp_path):
    """`helm package` keeps ci/*-values.yaml (the docs name them) and files/ (templates read it)."""
    proc = helm("package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (archive,) = tmp_path.glob("edge-agent-*.tgz")
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    wanted = {f"edge-agent/ci/{path.name}" for path in CI_VALUES}
    wanted |= {"edge-agent/files/prometheus-rules.yaml", "edge-agent/files/grafana-dashboard.json"}
    assert wanted - names == set()


# ---------------------------------------------------------------- pod properties
@ci_values
def test_helm_chart_never_uses_subpath(values_file):
    """No volume is mounted with subPath: subPath mounts never see ConfigMap updates."""
    for manifest in render(values_file):
        for path, _ in walk(manifest):
            assert not path.endswith((".subPath", ".subPathExpr")), path


@ci_values
def test_helm_chart_hardens_every_container(values_file):
    """Pod and containers run as 10001, read-only, without privileges, seccomp RuntimeDefault."""
    spec = pod_spec(render(values_file))
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (AGENT_UID,) * 3
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, container["name"]
        assert sc["runAsUser"] == AGENT_UID, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, container["name"]
        assert not sc.get("privileged"), container["name"]
    # The one exception: the opt-out init container that chowns a hostPath spool directory.
    for container in spec.get("initContainers", []):
        assert container["name"] == "spool-permissions"
        sc = container["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")
        assert [m["mountPath"] for m in container["volumeMounts"]] == [SPOOL_DIR]


@ci_values
def test_helm_chart_grace_period_outlasts_drain(values_file):
    """terminationGracePeriodSeconds exceeds the preStop sleep plus the agent's whole shutdown."""
    manifests = render(values_file)
    spec = pod_spec(manifests)
    container = agent_container(manifests)
    drain = float(env_of(container)["EDGE_AGENT_DRAIN_TIMEOUT_SECS"])
    assert drain == values_of(values_file)["drainTimeoutSeconds"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
    sleep = int(pre_stop["command"][-1]) if pre_stop else 0
    assert pre_stop.get("command", ["sleep"])[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] > sleep + drain + SHUTDOWN_MARGIN_SECS


@pytest.mark.parametrize(
    ("sets", "grace"),
    [
        (("drainTimeoutSeconds=120",), 140),
        (("preStopSleepSeconds=0",), 45),
        (("terminationGracePeriodSeconds=300",), 300),
    ],
)
def test_helm_chart_grace_period_follows_values(sets, grace):
    """The grace period is derived from drainTimeoutSeconds and the preStop sleep, or set."""
    manifests = render(None, *sets)
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] == grace
    if "preStopSleepSeconds=0" in sets:
        assert "lifecycle" not in agent_container(manifests)


def test_helm_chart_refuses_grace_period_within_drain():
    """A grace period that would SIGKILL the agent mid-drain fails the render."""
    with pytest.raises(RenderError, match="must exceed preStopSleepSeconds"):
        render(None, "terminationGracePeriodSeconds=30")


def test_helm_chart_grace_floor_is_the_agents_shutdown_bound():
    """The chart's floor is preStop + drain + the agent's SHUTDOWN_MARGIN_SECS, no less."""
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    bound = values["preStopSleepSeconds"] + values["drainTimeoutSeconds"] + SHUTDOWN_MARGIN_SECS
    with pytest.raises(RenderError, match="must exceed preStopSleepSeconds"):
        render(None, f"terminationGracePeriodSeconds={int(bound)}")
    manifests = render(None, f"terminationGracePeriodSeconds={int(bound) + 1}")
    assert pod_spec(manifests)["terminationGracePeriodSeconds"] == int(bound) + 1


@ci_values
def test_helm_chart_probes_use_health_endpoints(values_file):
    """Liveness and startup probe /healthz, readiness /readyz, on the agent's HTTP port."""
    container = agent_container(render(values_file))
    (port,) = container["ports"]
    assert port == {"name": "http", "containerPort": 9810, "protocol": "TCP"}
    assert env_of(container)["EDGE_AGENT_HTTP__PORT"] == "9810"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def test_helm_chart_http_port_moves_probes_and_service():
    """Changing http.port changes the agent's port, the container port and the Service together."""
    manifests = render(None, "http.port=9900")
    container = agent_container(manifests)
    assert env_of(container)["EDGE_AGENT_HTTP__PORT"] == "9900"
    assert container["ports"][0]["containerPort"] == 9900
    assert the(manifests, "Service")["spec"]["ports"][0]["port"] == 9900


# ---------------------------------------------------------------- configuration
@ci_values
def test_helm_chart_mounts_config_as_directory(values_file):
    """The ConfigMap is mounted whole at /etc/edge-agent and the agent runs on agent.yaml in it."""
    manifests = render(values_file)
    values = values_of(values_file)
    container = agent_container(manifests)
    assert container["args"] == ["run", "--config", f"{CONFIG_DIR}/agent.yaml"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert mount == {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "config"]
    wanted = values["configMap"]["existingName"] or f"{RELEASE}-edge-agent"
    assert volume == {"name": "config", "configMap": {"name": wanted}}
    rendered = agent_config_maps(manifests)
    if values["configMap"]["existingName"]:
        assert rendered == []
    else:
        assert [m["metadata"]["name"] for m in rendered] == [wanted]
        assert list(rendered[0]["data"]) == ["agent.yaml"]


@ci_values
def test_helm_chart_remote_config_mode_reaches_agent(values_file):
    """The agent learns the reload mode, and the directory or ConfigMap it watches."""
    values = values_of(values_file)
    env = env_of(agent_container(render(values_file)))
    mode = values["remoteConfig"]["mode"]
    assert env["EDGE_AGENT_REMOTE_CONFIG__MODE"] == mode
    if mode == "directory":
        assert env["EDGE_AGENT_REMOTE_CONFIG__DIRECTORY"] == CONFIG_DIR
    if mode == "api":
        wanted = values["configMap"]["existingName"] or f"{RELEASE}-edge-agent"
        assert env["EDGE_AGENT_REMOTE_CONFIG__CONFIGMAP_NAME"] == wanted
        assert env["EDGE_AGENT_REMOTE_CONFIG__NAMESPACE"] == {
            "fieldRef": {"fieldPath": "metadata.namespace"}
        }


@ci_values
def test_helm_chart_config_checksum_only_without_live_reload(values_file):
    """Pods carry the config checksum (restart on change) only when the agent cannot reload."""
    values = values_of(values_file)
    template = the(render(values_file), "DaemonSet")["spec"]["template"]
    annotations = template["metadata"].get("annotations", {})
    live = values["remoteConfig"]["mode"] != "none"
    assert ("checksum/config" in annotations) is not live


@pytest.mark.parametrize(
    ("mode", "roll", "restarts"),
    [
        ("directory", "auto", False),
        ("api", "auto", False),
        ("none", "auto", True),
        ("directory", "always", True),
        ("none", "never", False),
    ],
)
def test_helm_chart_config_change_restarts_pods_only_when_asked(mode, roll, restarts):
    """`helm upgrade` with a changed config changes the pod template only when it must."""
    sets = (f"remoteConfig.mode={mode}", f"rollOnConfigChange={roll}")
    before = the(render(None, *sets), "DaemonSet")["spec"]["template"]
    after = the(render(None, *sets, "config.log_level=DEBUG"), "DaemonSet")["spec"]["template"]
    assert (before != after) is restarts


@ci_values
def test_helm_chart_rendered_config_passes_check_config(values_file, check_config):
    """agent.yaml plus the pod's environment is a configuration the agent accepts.

    The agent ignores EDGE_AGENT_* variables of options it does not have (http, remote_config
    while they are being added); from the day it has them they are checked here too.
    """
    manifests = render(values_file)
    values = values_of(values_file)
    config_maps = agent_config_maps(manifests)
    # configMap.existingName: the operator's ConfigMap names Kafka (the agent requires it).
    existing = {"kafka": {"bootstrap_servers": "kafka.example.net:9092"}}
    config = yaml.safe_load(config_maps[0]["data"]["agent.yaml"]) if config_maps else existing
    downward = {
        "spec.nodeName": "node-1",
        "metadata.namespace": NAMESPACE,
        "status.hostIP": "192.0.2.7",
    }
    env = {
        name: value if isinstance(value, str) else downward[value["fieldRef"]["fieldPath"]]
        for name, value in env_of(agent_container(manifests)).items()
    }
    proc, effective = check_config(config, env)
    assert proc.returncode == 0, proc.stderr
    assert effective["gateway_id"] == (values["gatewayId"] or "node-1")
    assert effective["drain_timeout_secs"] == values["drainTimeoutSeconds"]
    assert effective["spool"]["directory"] == f"{SPOOL_DIR}/spool"
    if values["secrets"]["kafkaSaslPasswordKey"]:
        assert effective["kafka"]["sasl_password_file"].startswith("/var/run/secrets/edge-agent/")
    if values["mqttHostFromNode"]:
        assert effective["mqtt"]["host"] == "192.0.2.7"


@pytest.mark.parametrize(
    ("setting", "hint"),
    [
        ("config.drain_timeout_secs=10", "set drainTimeoutSeconds instead"),
        ("config.gateway_id=gw", "set gatewayId instead"),
        ("config.remote_config.mode=none", "set remoteConfig.mode instead"),
        ("config.remote_config.configmap_name=x", "set remoteConfig.mode instead"),
        ("config.spool.directory=/data", "persistence"),
        ("config.http.port=80", "set http.port instead"),
        ("config.mqtt.password_file=/p", "secrets.mqttPasswordKey"),
        ("config.kafka.ssl_ca_file=/ca", "tls.kafka"),
        ("remoteConfig.mode=watch", "must be none, directory or api"),
        ("persistence.type=nfs", "must be hostPath, pvc or emptyDir"),
        ("rollOnConfigChange=sometimes", "must be auto, always or never"),
        ("secrets.mqttPasswordKey=mqtt-password", "need secrets.existingSecret or secrets.data"),
    ],
)
def test_helm_chart_refuses_inconsistent_values(setting, hint):
    """Chart-owned options set in config, and unknown modes, fail with what to set instead."""
    with pytest.raises(RenderError, match=re.escape(hint)):
        render(None, setting)


def test_helm_chart_allows_remote_config_tuning():
    """remote_config options that do not concern the pod spec may be set in config."""
    manifests = render(None, "config.remote_config.restart_on_restart_only_change=true")
    config = yaml.safe_load(the(manifests, "ConfigMap")["data"]["agent.yaml"])
    assert config["remote_config"] == {"restart_on_restart_only_change": True}


# ---------------------------------------------------------------- RBAC
def _api_mode(values_file: Path) -> bool:
    return values_of(values_file)["remoteConfig"]["mode"] == "api"


@pytest.mark.parametrize("values_file", [v for v in CI_VALUES if _api_mode(v)], ids=_ci_id)
def test_helm_chart_api_mode_reads_only_its_configmap(values_file):
    """In api mode the Role allows get/list/watch on the one ConfigMap, by name, and no more."""
    manifests = render(values_file)
    values = values_of(values_file)
    config_map = values["configMap"]["existingName"] or f"{RELEASE}-edge-agent"
    role = the(manifests, "Role")
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [config_map],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = the(manifests, "RoleBinding")
    account = the(manifests, "ServiceAccount")["metadata"]["name"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    spec = pod_spec(manifests)
    assert spec["serviceAccountName"] == account
    assert spec["automountServiceAccountToken"] is True
    assert not kinds(manifests) & {"ClusterRole", "ClusterRoleBinding"}


@pytest.mark.parametrize("values_file", [v for v in CI_VALUES if not _api_mode(v)], ids=_ci_id)
def test_helm_chart_without_api_mode_has_no_rbac(values_file):
    """Outside api mode there is no Role, no binding, and no API token in the pod."""
    manifests = render(values_file)
    assert not kinds(manifests) & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    assert pod_spec(manifests)["automountServiceAccountToken"] is False
    assert the(manifests, "ServiceAccount")["automountServiceAccountToken"] is False


# ---------------------------------------------------------------- identity, spool, secrets
def test_helm_chart_gateway_id_is_node_name():
    """By default each agent is named after its node (downward API spec.nodeName)."""
    env = env_of(agent_container(render()))
    assert env["EDGE_AGENT_GATEWAY_ID"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


@pytest.mark.parametrize(
    ("values_file", "volume", "init"),
    [
        (
            "default",
            {"hostPath": {"path": f"/var/lib/edge-agent/{RELEASE}", "type": "DirectoryOrCreate"}},
            True,
        ),
        ("pvc", {"persistentVolumeClaim": {"claimName": f"{RELEASE}-edge-agent-spool"}}, False),
        ("no-reload", {"emptyDir": {"sizeLimit": "2Gi"}}, False),
    ],
)
def test_helm_chart_spool_volume_follows_persistence_type(values_file, volume, init):
    """The spool volume is a per-release hostPath, the chart's PVC, or an emptyDir."""
    manifests = render(CHART / "ci" / f"{values_file}-values.yaml")
    spec = pod_spec(manifests)
    (spool,) = [v for v in spec["volumes"] if v["name"] == "spool"]
    assert {k: v for k, v in spool.items() if k != "name"} == volume
    assert ("initContainers" in spec) is init
    mounts = {m["name"]: m["mountPath"] for m in agent_container(manifests)["volumeMounts"]}
    assert mounts["spool"] == SPOOL_DIR
    if "persistentVolumeClaim" in volume:
        claim = the(manifests, "PersistentVolumeClaim")
        assert claim["metadata"]["name"] == volume["persistentVolumeClaim"]["claimName"]
        assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}


def test_helm_chart_mqtt_host_from_node_reads_the_nodes_broker():
    """mqttHostFromNode points the agent at its own node's IP; by default config.mqtt.host rules."""
    env = env_of(agent_container(render(None, "mqttHostFromNode=true")))
    assert env["EDGE_AGENT_MQTT__HOST"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert "EDGE_AGENT_MQTT__HOST" not in env_of(agent_container(render()))


def test_helm_chart_selinux_options_reach_the_pod():
    """seLinuxOptions labels the pod (and so what it writes to the hostPath); unset by default."""
    spec = pod_spec(render(CHART / "ci" / "multinode-values.yaml"))
    assert spec["securityContext"]["seLinuxOptions"] == {"level": "s0:c123,c456"}
    assert spec["securityContext"]["runAsUser"] == AGENT_UID  # merged, not replaced
    for container in spec["containers"] + spec.get("initContainers", []):
        assert "seLinuxOptions" not in container["securityContext"], container["name"]
    assert "seLinuxOptions" not in pod_spec(render())["securityContext"]


def test_helm_chart_spool_permissions_are_opt_out():
    """spoolPermissions.enabled=false removes the root init container."""
    assert "initContainers" not in pod_spec(render(None, "spoolPermissions.enabled=false"))


def test_helm_chart_mounts_secrets_as_read_only_files():
    """Passwords and TLS files are 0400 files of one projected volume that the agent points at."""
    values_file = CHART / "ci" / "tls-sasl-values.yaml"
    manifests = render(values_file)
    container = agent_container(manifests)
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "secrets"]
    assert mount == {
        "name": "secrets",
        "mountPath": "/var/run/secrets/edge-agent",
        "readOnly": True,
    }
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "secrets"]
    assert volume["projected"]["defaultMode"] == 0o400
    files = {
        f"{mount['mountPath']}/{item['path']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }
    wired = {v for k, v in env_of(container).items() if k.endswith("_FILE")}
    assert wired == files
    assert len(files) == 6  # MQTT password, CA, cert, key; Kafka SASL password, CA
    secret = the(manifests, "Secret")
    assert set(secret["data"]) == {"mqtt-password", "kafka-sasl-password"}
    # The secret values appear in the Secret only (base64), never in plain text elsewhere.
    text = _render(values_file, (), NEWEST)
    for value in values_of(values_file)["secrets"]["data"].values():
        assert value not in text


def test_helm_chart_existing_secret_is_not_rendered():
    """With secrets.existingSecret the chart mounts that Secret and creates none."""
    manifests = render(
        None, "secrets.existingSecret=gateway-creds", "secrets.kafkaSaslPasswordKey=sasl"
    )
    assert "Secret" not in kinds(manifests)
    (volume,) = [v for v in pod_spec(manifests)["volumes"] if v["name"] == "secrets"]
    assert volume["projected"]["sources"] == [
        {
            "secret": {
                "name": "gateway-creds",
                "items": [{"key": "sasl", "path": "kafka-sasl-password"}],
            }
        }
    ]


@ci_values
def test_helm_chart_rolls_one_node_at_a_time(values_file):
    """Updates never surge: a second pod on a node would find the spool locked."""
    strategy = the(render(values_file), "DaemonSet")["spec"]["updateStrategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"].get("maxSurge", 0) == 0


# ---------------------------------------------------------------- NOTES.txt
def render_notes(tmp_path: Path, values_file: Path) -> str:
    """NOTES.txt as `helm install` prints it (helm template skips it: render it via a probe)."""
    chart = tmp_path / "edge-agent"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (chart / "templates" / "_notes.tpl").write_text(
        '{{- define "probe.notes" -}}\n' + notes + "{{- end }}\n", encoding="utf-8"
    )
    (chart / "templates" / "notes-probe.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ include "probe.notes" . | quote }}\n',
        encoding="utf-8",
    )
    proc = helm(
        "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", NEWEST,
        "--values", str(values_file), "--show-only", "templates/notes-probe.yaml",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["data"]["notes"]


@ci_values
def test_helm_chart_notes_say_where_the_spool_is(tmp_path, values_file):
    """The install notes name the spool's location and shout when it is an emptyDir."""
    notes = render_notes(tmp_path, values_file)
    persistence = values_of(values_file)["persistence"]["type"]
    expected = {
        "hostPath": f"/var/lib/edge-agent/{RELEASE}",
        "pvc": f"{RELEASE}-edge-agent-spool",
        "emptyDir": "WARNING: in an emptyDir",
    }
    assert expected[persistence] in notes
    assert f"rollout status daemonset/{RELEASE}-edge-agent" in notes


# ---------------------------------------------------------------- values.yaml documentation
_DOC = re.compile(r"^\s*# ([A-Za-z0-9_.]+) -- \S")


def test_helm_chart_values_document_every_key():
    """Every key of values.yaml has a `# key.path -- description` comment (or its parent has)."""
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented = {m.group(1) for line in text.splitlines() if (m := _DOC.match(line))}
    values = yaml.safe_load(text)
    missing: list[str] = []

    def check(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in documented:
                continue
            if isinstance(value, dict) and value:
                check(value, f"{path}.")
            else:
                missing.append(path)

    check(values, "")
    assert missing == []
    stale = documented - {path.lstrip(".") for path, _ in walk(values)}
    assert stale == set(), "comments document keys that values.yaml does not have"
