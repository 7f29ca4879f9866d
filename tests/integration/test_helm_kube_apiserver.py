"""The Helm chart installs, upgrades and uninstalls against a real kube-apiserver and etcd.

``helm`` (``.cache/bin/helm``, built by ``scripts/setup``) talks to the session's API server
(``tests/infra/_kube.py``) as the admin, through a kubeconfig of its own. Only the API runs: no
kubelet, scheduler or controllers, so no pod is ever created; the tests assert on the objects
the server accepted and stored (after its validation, defaulting and admission), and on what the
agent's ServiceAccount may do, asked two ways: a SubjectAccessReview (``kubectl auth can-i
--as``) and real requests with a token the server issued to that ServiceAccount (TokenRequest),
as a pod would hold it.

Each test gets its own namespace (left behind: without controllers a namespace never finishes
terminating; the store is wiped with the server at the end of the session).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from tests.infra import KubeApiServer
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "edge-agent"
HELM = ROOT / ".cache" / "bin" / "helm"
RELEASE = "plant"
FULLNAME = f"{RELEASE}-edge-agent"
DEADLINE_SECS = 30.0
MONITORING_CRDS = (("prometheusrules", "PrometheusRule"), ("servicemonitors", "ServiceMonitor"),
                   ("podmonitors", "PodMonitor"))  # fmt: skip

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Cluster:
    """The API server, a namespace of this test's own, and helm pointed at both."""

    kube: KubeApiServer
    namespace: str
    home: Path

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run helm in this test's namespace, with its own HOME (config, cache, kubeconfig)."""
        if not HELM.is_file():
            pytest.fail(
                f"helm is missing at {HELM.relative_to(ROOT)}: run scripts/setup (never skipped)",
                pytrace=False,
            )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env |= {"HOME": str(self.home), "KUBECONFIG": str(self.home / "kubeconfig")}
        proc = subprocess.run(
            [str(HELM), *args, "--namespace", self.namespace],
            capture_output=True, text=True, check=False, timeout=120, env=env,
        )  # fmt: skip
        if check and proc.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}", pytrace=False)
        return proc

    def install(self, *values: str, sets: tuple[str, ...] = ()) -> list[Manifest]:
        """``helm install`` with ci/<name>-values.yaml files and --set items; what it applied."""
        args = ["install", RELEASE, str(CHART)]
        for name in values:
            args += ["--values", str(CHART / "ci" / f"{name}-values.yaml")]
        for item in sets:
            args += ["--set", item]
        self.helm(*args)
        return self.manifest()

    def manifest(self) -> list[Manifest]:
        """The objects of the release's current revision (``helm get manifest``)."""
        text = self.helm("get", "manifest", RELEASE).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    @property
    def dynamic(self) -> DynamicClient:
        return DynamicClient(self.kube.admin)

    def read(self, manifest: Manifest) -> Any:
        """The object as the server stores it, or None when it does not exist."""
        resource = self.dynamic.resources.get(
            api_version=manifest["apiVersion"], kind=manifest["kind"]
        )
        try:
            return resource.get(name=manifest["metadata"]["name"], namespace=self.namespace)
        except NotFoundError:
            return None

    def read_daemonset(self) -> client.V1DaemonSet:
        return client.AppsV1Api(self.kube.admin).read_namespaced_daemon_set(
            FULLNAME, self.namespace
        )

    def release_secrets(self) -> list[str]:
        """Names of the Secrets in which helm keeps the release's history."""
        secrets = client.CoreV1Api(self.kube.admin).list_namespaced_secret(
            self.namespace, label_selector=f"owner=helm,name={RELEASE}"
        )
        return sorted(s.metadata.name for s in secrets.items)

    @property
    def service_account_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{FULLNAME}"

    def can(self, verb: str, resource: str, name: str = "", namespace: str = "") -> bool:
        """``kubectl auth can-i VERB RESOURCE/NAME --as`` the chart's ServiceAccount."""
        attributes = {"namespace": namespace or self.namespace, "verb": verb,
                      "resource": resource, "name": name}  # fmt: skip
        review = {"spec": {"user": self.service_account_user,
                           "groups": ["system:serviceaccounts",
                                      f"system:serviceaccounts:{self.namespace}",
                                      "system:authenticated"],
                           "resourceAttributes": attributes}}  # fmt: skip
        answer = client.AuthorizationV1Api(self.kube.admin).create_subject_access_review(review)
        return bool(answer.status.allowed)

    def service_account_client(self) -> client.ApiClient:
        """A client holding a token the server issued to the chart's ServiceAccount."""
        request = client.CoreV1Api(self.kube.admin).create_namespaced_service_account_token(
            FULLNAME, self.namespace, {"spec": {"expirationSeconds": 600}}
        )
        return self.kube.api_client(request.status.token)


def _kubeconfig(kube: KubeApiServer) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": kube.url, "certificate-authority": str(kube.ca_file)}}],
        "users": [{"name": "admin", "user": {"token": kube.admin_token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
        "current-context": "test",
    }  # fmt: skip


@pytest.fixture
def cluster(kube: KubeApiServer, unique_name: str, tmp_path: Path) -> Cluster:
    """A fresh namespace and a helm home whose kubeconfig names the API server's admin."""
    base, _, suffix = unique_name.lower().rpartition("-")
    namespace = f"{base[:50].strip('-')}-{suffix}"
    kube.create_namespace(namespace)
    home = tmp_path / "helm-home"
    home.mkdir()
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(_kubeconfig(kube)), encoding="utf-8")
    kubeconfig.chmod(0o600)
    return Cluster(kube, namespace, home)


@pytest.fixture(scope="session")
def monitoring_crds(kube_apiserver: KubeApiServer) -> None:
    """Stand-ins for the Prometheus Operator CRDs the chart's monitoring objects need.

    Same group, version, kinds and scope as the operator's, but the spec is not validated
    (x-kubernetes-preserve-unknown-fields): the shape of the objects is asserted by the unit
    tests, this only lets the API server accept and store them.
    """
    extensions = client.ApiextensionsV1Api(kube_apiserver.admin)
    for plural, kind in MONITORING_CRDS:
        body = {
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                    "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}],
            },
        }  # fmt: skip
        try:
            extensions.create_custom_resource_definition(body)
        except client.ApiException as exc:
            if exc.status != 409:
                raise

    def established() -> bool:
        for plural, _ in MONITORING_CRDS:
            crd = extensions.read_custom_resource_definition(f"{plural}.monitoring.coreos.com")
            conditions = {c.type: c.status for c in crd.status.conditions or []}
            if conditions.get("Established") != "True":
                return False
        return True

    wait_until(established, DEADLINE_SECS, "the monitoring CRDs to be established")


# ---------------------------------------------------------------- install
def test_helm_install_objects_are_accepted_and_stored(cluster: Cluster) -> None:
    """Every object of a default install is stored as rendered, labelled as the release's."""
    applied = cluster.install()
    assert {m["kind"] for m in applied} == {"ServiceAccount", "ConfigMap", "Service", "DaemonSet"}
    for manifest in applied:
        stored = cluster.read(manifest)
        assert stored is not None, f"{manifest['kind']} was not stored"
        labels = stored.metadata.labels
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert stored.metadata.annotations["meta.helm.sh/release-name"] == RELEASE
    daemonset = cluster.read_daemonset()
    pod = daemonset.spec.template.spec
    (container,) = pod.containers
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.capabilities.drop == ["ALL"]
    assert pod.automount_service_account_token is False
    assert pod.service_account_name == FULLNAME
    spool = next(v for v in pod.volumes if v.name == "spool")
    assert spool.host_path.path == f"/var/lib/edge-agent/{RELEASE}"
    assert cluster.release_secrets() == [f"sh.helm.release.v1.{RELEASE}.v1"]


def test_helm_install_every_ci_variant_is_accepted(cluster: Cluster, monitoring_crds: None) -> None:
    """The API server accepts the objects of each ci/*-values.yaml (one release at a time)."""
    del monitoring_crds
    for values in sorted(CHART.glob("ci/*-values.yaml")):
        name = values.name.removesuffix("-values.yaml")
        applied = cluster.install(name)
        missing = [f"{m['kind']}/{m['metadata']['name']}" for m in applied
                   if cluster.read(m) is None]  # fmt: skip
        assert missing == [], f"{name}: not stored: {missing}"
        cluster.helm("uninstall", RELEASE, "--wait")


def test_helm_install_monitoring_stores_rules_and_dashboard(
    cluster: Cluster, monitoring_crds: None
) -> None:
    """The PrometheusRule and the dashboard ConfigMap are stored with the chart's files in them."""
    del monitoring_crds
    cluster.install("monitoring")
    rules = client.CustomObjectsApi(cluster.kube.admin).get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", cluster.namespace, "prometheusrules", FULLNAME
    )
    expected = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rules["spec"] == expected
    dashboard = client.CoreV1Api(cluster.kube.admin).read_namespaced_config_map(
        f"{FULLNAME}-dashboard", cluster.namespace
    )
    assert dashboard.metadata.labels["grafana_dashboard"] == "1"
    text = (CHART / "files" / "grafana-dashboard.json").read_text()
    assert dashboard.data["edge-agent.json"] == text.rstrip("\n")


# ---------------------------------------------------------------- RBAC as designed
def test_helm_api_mode_service_account_reads_only_its_configmap(cluster: Cluster) -> None:
    """In api mode the agent's ServiceAccount may get/list/watch its ConfigMap and nothing else."""
    cluster.install("api-watch")
    client.CoreV1Api(cluster.kube.admin).create_namespaced_config_map(
        cluster.namespace, {"metadata": {"name": "other"}, "data": {"k": "v"}}
    )
    # The RBAC authorizer reads roles from its informers' caches: wait for the grant.
    wait_until(
        lambda: cluster.can("watch", "configmaps", FULLNAME),
        DEADLINE_SECS,
        "the Role to take effect",
    )
    for verb in ("get", "list", "watch"):
        assert cluster.can(verb, "configmaps", FULLNAME), verb
        assert not cluster.can(verb, "configmaps", "other"), verb
    for verb in ("create", "update", "patch", "delete"):
        assert not cluster.can(verb, "configmaps", FULLNAME), verb
    assert not cluster.can("list", "configmaps")  # the whole namespace
    assert not cluster.can("get", "secrets", FULLNAME)
    assert not cluster.can("list", "pods")
    assert not cluster.can("get", "configmaps", FULLNAME, namespace="default")

    # The same through a token the server issued to the ServiceAccount, as the pod holds it.
    agent = cluster.service_account_client()
    try:
        core = client.CoreV1Api(agent)
        own = core.read_namespaced_config_map(FULLNAME, cluster.namespace)
        assert "agent.yaml" in own.data
        listed = core.list_namespaced_config_map(
            cluster.namespace, field_selector=f"metadata.name={FULLNAME}"
        )
        assert [item.metadata.name for item in listed.items] == [FULLNAME]
        for call in (
            lambda: core.read_namespaced_config_map("other", cluster.namespace),
            lambda: core.list_namespaced_config_map(cluster.namespace),
            lambda: core.patch_namespaced_config_map(FULLNAME, cluster.namespace, {"data": {}}),
            lambda: core.list_namespaced_secret(cluster.namespace),
        ):
            with pytest.raises(client.ApiException) as refused:
                call()
            assert refused.value.status == 403
    finally:
        agent.close()  # type: ignore[no-untyped-call]


def test_helm_directory_mode_service_account_may_do_nothing(cluster: Cluster) -> None:
    """Outside api mode the chart grants its ServiceAccount nothing, not even its ConfigMap."""
    applied = cluster.install()
    assert not {m["kind"] for m in applied} & {"Role", "RoleBinding"}
    for verb in ("get", "list", "watch"):
        assert not cluster.can(verb, "configmaps", FULLNAME), verb


# ---------------------------------------------------------------- upgrade
def test_helm_upgrade_config_change_keeps_pods_and_mode_change_moves_rbac(cluster: Cluster) -> None:
    """A config-only upgrade changes the ConfigMap, not the pod template; leaving api mode
    removes the Role and RoleBinding from the server and rolls the pods."""
    cluster.install("api-watch")
    generation = cluster.read_daemonset().metadata.generation
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": FULLNAME}}  # fmt: skip
    binding = {**role, "kind": "RoleBinding"}
    assert cluster.read(role) is not None
    assert cluster.read(binding) is not None

    cluster.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set",
                 "config.log_level=DEBUG")  # fmt: skip
    config = client.CoreV1Api(cluster.kube.admin).read_namespaced_config_map(
        FULLNAME, cluster.namespace
    )
    assert yaml.safe_load(config.data["agent.yaml"])["log_level"] == "DEBUG"
    # Live reload (api mode): the pods must not restart, so the template is unchanged.
    assert cluster.read_daemonset().metadata.generation == generation

    cluster.helm("upgrade", RELEASE, str(CHART), "--reuse-values", "--set",
                 "remoteConfig.mode=directory")  # fmt: skip
    assert cluster.read(role) is None
    assert cluster.read(binding) is None
    daemonset = cluster.read_daemonset()
    assert daemonset.metadata.generation == generation + 1
    env = {e.name: e.value for e in daemonset.spec.template.spec.containers[0].env}
    assert env["EDGE_AGENT_REMOTE_CONFIG__MODE"] == "directory"
    assert daemonset.spec.template.spec.automount_service_account_token is False
    history = cluster.helm("history", RELEASE, "--output", "yaml").stdout
    assert [entry["revision"] for entry in yaml.safe_load(history)] == [1, 2, 3]


# ---------------------------------------------------------------- uninstall
def test_helm_uninstall_removes_every_object_and_the_history(cluster: Cluster) -> None:
    """After `helm uninstall` nothing of the release is left on the server."""
    applied = cluster.install("api-watch")
    assert {"Role", "RoleBinding"} <= {m["kind"] for m in applied}
    cluster.helm("uninstall", RELEASE, "--wait")
    left = [f"{m['kind']}/{m['metadata']['name']}" for m in applied if cluster.read(m) is not None]
    assert left == []
    assert cluster.release_secrets() == []


def test_helm_uninstall_keeps_the_spool_claim(cluster: Cluster) -> None:
    """A PVC spool (annotated helm.sh/resource-policy: keep) survives `helm uninstall`."""
    applied = cluster.install("pvc")
    (claim,) = [m for m in applied if m["kind"] == "PersistentVolumeClaim"]
    cluster.helm("uninstall", RELEASE, "--wait")
    assert cluster.read(claim) is not None
    assert cluster.read({"apiVersion": "apps/v1", "kind": "DaemonSet",
                         "metadata": {"name": FULLNAME}}) is None  # fmt: skip
