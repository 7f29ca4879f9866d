"""A real kube-apiserver on a real etcd, for tests of the Kubernetes API path.

kube-apiserver is built from source at the version ``tests/infra/kube/go.mod`` pins, into
``.cache/bin/kube-apiserver`` (``tests/infra/kube/build.sh``, which ``scripts/setup`` runs);
etcd is Debian's ``etcd-server``. Only the API runs: no kubelet, no controller-manager, no
scheduler.

Everything listens on 127.0.0.1 on ports picked at start and keeps its files in one fresh
directory, wiped on :meth:`KubeApiServer.close`:

- etcd: one member, a 256 MiB backend quota; the API server is its only client, apart from
  :meth:`KubeApiServer.compact_etcd` (etcd's JSON gateway).
- kube-apiserver: HTTPS only, with the self-signed certificate it writes into ``certs/``
  itself; clients verify it with :attr:`KubeApiServer.ca_file`. Bearer tokens from a static
  token file: :attr:`KubeApiServer.admin_token` (group ``system:masters``) and
  :attr:`KubeApiServer.agent_token`, the user :data:`AGENT_USER`, named like the service
  account ``edge-agent/edge-agent`` and allowed nothing until a test grants it something
  (:meth:`KubeApiServer.grant_configmap_read`: the Role and RoleBinding the Helm chart makes).
  RBAC authorization; service-account keys generated with openssl.

Where it differs from a cluster, on purpose:

- The watch cache is off for ConfigMaps (``--watch-cache-sizes=configmaps#0``), so their
  watches are served by etcd: once etcd is compacted, a watch from an older resourceVersion
  gets a real 410 Gone at once. With the cache on, a version expires only when the cache has
  evicted it, and the cache keeps at least 75 s of events (growing to 100K events), which no
  test can wait for. The price: ConfigMap watches get no BOOKMARK events from this server.
- The API server never compacts etcd itself (``--etcd-compaction-interval=0``); only
  :meth:`KubeApiServer.compact_etcd` does, so no test sees a 410 it did not cause.
- No controllers: a deleted namespace stays Terminating for ever. Tests create a namespace
  each and leave it; the whole store is wiped at the end of the session.

Start-up takes about 3 s on 2 cores; resident memory is about 45 MiB (etcd) plus 260 MiB
(kube-apiserver). Trimming the served API groups (``--runtime-config``) does not start it
faster and breaks its post-start hooks; priority and fairness on or off makes no difference.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.infra._process import (
    CACHE_DIR,
    HARNESS_MARKER,
    REPO_ROOT,
    ManagedProcess,
    ServiceError,
    free_port,
    log_tail,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from kubernetes import client

KUBE_DIR = REPO_ROOT / "tests" / "infra" / "kube"
KUBE_APISERVER_BIN = CACHE_DIR / "bin" / "kube-apiserver"
START_TIMEOUT_S = float(os.environ.get("EDGE_AGENT_TEST_KUBE_START_TIMEOUT_S", "90"))
AGENT_SERVICE_ACCOUNT = ("edge-agent", "edge-agent")
"""(namespace, name) of the service account the agent user stands for."""
AGENT_USER = "system:serviceaccount:{}:{}".format(*AGENT_SERVICE_ACCOUNT)
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/24"


def ensure_kube_apiserver() -> Path:
    """Build kube-apiserver unless the pinned version is already built; return its path."""
    result = subprocess.run(
        ["bash", str(KUBE_DIR / "build.sh")], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise ServiceError(
            f"building kube-apiserver failed (tests/infra/kube/build.sh):\n"
            f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    if result.stdout.strip():
        print(result.stdout.strip())
    return KUBE_APISERVER_BIN


def etcd_binary() -> str:
    """Path of etcd, or a clear error saying how to get it."""
    for candidate in (shutil.which("etcd"), "/usr/bin/etcd"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ServiceError(
        "etcd is not installed; run `apt-get install etcd-server` (scripts/setup does it)."
    )


class KubeApiServer:
    """etcd plus kube-apiserver, owned by the test run; see the module docstring."""

    def __init__(self, apiserver_binary: Path | None = None) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{HARNESS_MARKER}-kube-"))
        self.apiserver_binary = apiserver_binary
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.admin_token = secrets.token_urlsafe(24)
        self.agent_token = secrets.token_urlsafe(24)
        self.cert_dir = self.base_dir / "certs"
        self.etcd_log = self.base_dir / "etcd.log"
        self.apiserver_log = self.base_dir / "kube-apiserver.log"
        self.started_in_s = 0.0
        self.version = ""
        self.etcd_version = ""
        self._etcd: ManagedProcess | None = None
        self._apiserver: ManagedProcess | None = None
        self._admin: client.ApiClient | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def url(self) -> str:
        """``https://127.0.0.1:<port>``."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def ca_file(self) -> Path:
        """The API server's self-signed certificate (with its CA): what clients trust."""
        return self.cert_dir / "apiserver.crt"

    @property
    def running(self) -> bool:
        return all(p is not None and p.running for p in (self._etcd, self._apiserver))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start whatever is not running and wait until the API server is ready."""
        started = time.monotonic()
        if self._etcd is None or self._apiserver is None:
            self._prepare()
        assert self._etcd is not None
        assert self._apiserver is not None
        self._etcd.start()
        self._wait("etcd", self._etcd_healthy, [self._etcd])
        self._apiserver.start()
        self._wait("kube-apiserver", self._apiserver_ready, [self._etcd, self._apiserver])
        self.version = json.loads(self._get("/version"))["gitVersion"]
        self.started_in_s = time.monotonic() - started

    def heal(self) -> KubeApiServer:
        """Start again whatever an earlier test stopped; return self."""
        if not self.running:
            self.start()
        return self

    def stop(self) -> None:
        """Stop the API server (it drains its requests), then etcd."""
        if self._admin is not None:
            self._admin.close()  # type: ignore[no-untyped-call]
            self._admin = None
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                proc.stop(timeout_s=30.0)

    def close(self) -> None:
        """Stop both and delete the data directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def memory_rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process, from /proc."""
        out: dict[str, int] = {}
        for proc in (self._etcd, self._apiserver):
            if proc is not None and proc.proc is not None and proc.running:
                status = Path(f"/proc/{proc.proc.pid}/status").read_text()
                kb = next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))  # fmt: skip
                out[proc.name] = kb * 1024
        return out

    def _prepare(self) -> None:
        apiserver = self.apiserver_binary or ensure_kube_apiserver()
        etcd = etcd_binary()
        self.etcd_version = _etcd_version(etcd)
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        sa_key, sa_pub = self.base_dir / "sa.key", self.base_dir / "sa.pub"
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", str(sa_key))  # fmt: skip
        _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
        tokens = self.base_dir / "tokens.csv"
        tokens.write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f"{self.agent_token},{AGENT_USER},edge-agent,"
            f'"system:serviceaccounts,system:serviceaccounts:{AGENT_SERVICE_ACCOUNT[0]}"\n'
        )
        tokens.chmod(0o600)
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        self._etcd = ManagedProcess("etcd", [
            etcd,
            "--name=edge-test",
            f"--data-dir={self.base_dir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=edge-test={peer}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={HARNESS_MARKER}",
            "--quota-backend-bytes=268435456",
            "--snapshot-count=10000",
            "--logger=zap",
            "--log-level=warn",
        ], self.etcd_log)  # fmt: skip
        self._apiserver = ManagedProcess("kube-apiserver", [
            str(apiserver),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.cert_dir}",
            f"--etcd-servers={self.etcd_url}",
            "--etcd-compaction-interval=0",
            "--watch-cache-sizes=configmaps#0",
            "--authorization-mode=RBAC",
            "--anonymous-auth=false",
            f"--token-auth-file={tokens}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={sa_pub}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            "--allow-privileged=true",
            "--v=1",
        ], self.apiserver_log)  # fmt: skip

    # ------------------------------------------------------------------ readiness
    def _wait(self, what: str, ready: Callable[[], bool], procs: list[ManagedProcess]) -> None:
        """Poll ``ready`` until true; fail at once with the log tail if one of ``procs`` exits."""
        deadline = time.monotonic() + START_TIMEOUT_S
        last_error = "not tried yet"
        while time.monotonic() < deadline:
            for proc in procs:
                if not proc.running:
                    raise ServiceError(f"{proc.name} exited during start-up.{log_tail(proc.log)}")
            try:
                if ready():
                    return
            except (OSError, ValueError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise ServiceError(
            f"{what} not ready in {START_TIMEOUT_S:.0f} s: {last_error}"
            f"{log_tail(self.etcd_log, 20)}{log_tail(self.apiserver_log, 40)}"
        )

    def _etcd_healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.etcd_url}/health", timeout=2) as response:  # noqa: S310
            return json.loads(response.read()).get("health") == "true"

    def _apiserver_ready(self) -> bool:
        if not self.ca_file.exists():
            return False
        try:
            self._get("/readyz")
        except urllib.error.HTTPError as exc:  # 500 with the failing checks while starting
            raise ValueError(exc.read().decode(errors="replace")[-500:]) from exc
        return True

    def _get(self, path: str) -> str:
        """GET ``path`` as the admin; the body as text. Raises HTTPError on a non-2xx status."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        request = urllib.request.Request(  # noqa: S310 - https to our own loopback server
            f"{self.url}{path}", headers={"Authorization": f"Bearer {self.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=5, context=context) as response:  # noqa: S310
            return str(response.read().decode())

    # ------------------------------------------------------------------ clients
    def api_client(self, token: str) -> client.ApiClient:
        """A client of this server with ``token``, verifying its certificate. Close it."""
        from kubernetes import client  # noqa: PLC0415 - heavy; only tests that use it pay

        configuration = client.Configuration(host=self.url)
        configuration.ssl_ca_cert = str(self.ca_file)
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(configuration)

    @property
    def admin(self) -> client.ApiClient:
        """A client with the admin token, shared; closed by :meth:`stop`."""
        if self._admin is None:
            self._admin = self.api_client(self.admin_token)
        return self._admin

    def _core(self) -> client.CoreV1Api:
        from kubernetes import client  # noqa: PLC0415

        return client.CoreV1Api(self.admin)

    # ------------------------------------------------------------------ objects (as the admin)
    def create_namespace(self, name: str) -> None:
        self._core().create_namespace({"metadata": {"name": name}})

    def create_configmap(
        self,
        namespace: str,
        name: str,
        data: Mapping[str, str],
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create a ConfigMap; return its resourceVersion."""
        body = {"metadata": {"name": name, "labels": dict(labels or {})}, "data": dict(data)}
        created = self._core().create_namespaced_config_map(namespace, body)
        return str(created.metadata.resource_version)

    def patch_configmap(
        self,
        namespace: str,
        name: str,
        *,
        data: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Merge-patch a ConfigMap's data and/or labels; return its new resourceVersion."""
        body: dict[str, Any] = {}
        if data is not None:
            body["data"] = dict(data)
        if labels is not None:
            body["metadata"] = {"labels": dict(labels)}
        patched = self._core().patch_namespaced_config_map(name, namespace, body)
        return str(patched.metadata.resource_version)

    def delete_configmap(self, namespace: str, name: str) -> None:
        self._core().delete_namespaced_config_map(name, namespace)

    def grant_configmap_read(self, namespace: str, name: str) -> None:
        """Let :data:`AGENT_USER` get, list and watch the one ConfigMap ``name``, nothing else.

        The same Role and RoleBinding as ``helm/edge-agent/templates/role*.yaml``. Returns once
        the grant is in effect: the RBAC authorizer reads roles from its informers' caches, so
        a request sent right after the write can still be refused (about 1 in 100 here).
        """
        from kubernetes import client  # noqa: PLC0415

        rbac = client.RbacAuthorizationV1Api(self.admin)
        role = f"{name}-reader"
        rbac.create_namespaced_role(namespace, {
            "metadata": {"name": role},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [name],
                       "verbs": ["get", "list", "watch"]}],
        })  # fmt: skip
        sa_namespace, sa_name = AGENT_SERVICE_ACCOUNT
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
        })  # fmt: skip
        review = {"spec": {"user": AGENT_USER, "resourceAttributes": {
            "namespace": namespace, "resource": "configmaps", "name": name, "verb": "watch",
        }}}  # fmt: skip
        authz = client.AuthorizationV1Api(self.admin)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not authz.create_subject_access_review(review).status.allowed:
            if time.monotonic() > deadline:
                raise ServiceError(f"RBAC never allowed {AGENT_USER} to watch {namespace}/{name}.")
            time.sleep(0.02)

    def watch_count(self, resource: str) -> int:
        """How many watches of ``resource`` (core group) the API server is serving now."""
        total = 0.0
        for line in self._get("/metrics").splitlines():
            if (
                line.startswith("apiserver_longrunning_requests{")
                and f'resource="{resource}"' in line
                and 'group=""' in line
                and 'verb="WATCH"' in line
            ):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    # ------------------------------------------------------------------ etcd
    def etcd_revision(self) -> int:
        """etcd's current revision (the newest resourceVersion of any object)."""
        key = base64.b64encode(b"/registry/").decode()
        reply = self._etcd_call("/v3/kv/range", {"key": key, "limit": 1, "keys_only": True})
        return int(reply["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision; return it. Older versions are gone."""
        revision = self.etcd_revision()
        self._etcd_call("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd_call(self, path: str, body: Mapping[str, object]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - http to our own loopback etcd
            f"{self.etcd_url}{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            reply: dict[str, Any] = json.loads(response.read())
        return reply


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _etcd_version(etcd: str) -> str:
    result = subprocess.run([etcd, "--version"], capture_output=True, text=True, check=False)
    first = result.stdout.splitlines()[0] if result.stdout else ""
    return first.removeprefix("etcd Version: ").strip()
