"""ConfigMapWatcher against a real kube-apiserver and etcd, as a user limited by RBAC.

Each test gets its own namespace holding the agent's ConfigMap and the Role and RoleBinding the
Helm chart makes (get, list, watch on that one ConfigMap). The watcher uses the agent user's
token; changes are made with the admin token. "Nothing was published" is shown with a barrier:
a later change that is published proves the watcher has handled every event before it (a
watch delivers events in order), so no test sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from kubernetes import client, watch

from agent.remote import ConfigMapWatcher
from tests.infra import KubeApiServer
from tests.unit.remote._support import Recorder, running, wait_until

NAME = "edge-agent"
SELECTOR = f"metadata.name={NAME}"
V1 = {"agent.yaml": "gateway_id: gw-1\n", "notes.txt": "first"}
V2 = {"agent.yaml": "gateway_id: gw-2\n", "notes.txt": "first"}
V3 = {"agent.yaml": "gateway_id: gw-3\n"}
WATCHER_LOG = "agent.remote.configmap"


@dataclass(frozen=True)
class Setting:
    """The server, this test's namespace, the agent's ConfigMap (V1) and the agent's client."""

    kube: KubeApiServer
    namespace: str
    version: str  # the ConfigMap's resourceVersion when created
    agent_client: client.ApiClient

    def watcher(self, *, watch_timeout_secs: int = 30) -> ConfigMapWatcher:
        return ConfigMapWatcher(
            name=NAME,
            namespace=self.namespace,
            api_client=self.agent_client,
            request_timeout_secs=5.0,
            watch_timeout_secs=watch_timeout_secs,
            backoff_initial_secs=0.05,
            backoff_max_secs=0.5,
        )

    async def patch(self, name: str = NAME, **changes: dict[str, str]) -> str:
        """Merge-patch ``data`` and/or ``labels`` as the admin; the new resourceVersion."""
        return await asyncio.to_thread(self.kube.patch_configmap, self.namespace, name, **changes)

    def source(self, version: str) -> str:
        return f"configmap:{self.namespace}/{NAME}@{version}"


@pytest.fixture
def setting(kube: KubeApiServer, unique_name: str) -> Iterator[Setting]:
    """A fresh namespace (a DNS label) with the agent's ConfigMap, readable by the agent."""
    base, _, suffix = unique_name.lower().rpartition("-")
    namespace = f"{base[:54].strip('-')}-{suffix}"
    kube.create_namespace(namespace)
    version = kube.create_configmap(namespace, NAME, V1)
    kube.grant_configmap_read(namespace, NAME)
    agent_client = kube.api_client(kube.agent_token)
    yield Setting(kube, namespace, version, agent_client)
    agent_client.close()


@pytest.fixture
def recorder() -> Recorder:
    """The publish callback, recording every snapshot."""
    return Recorder()


def _published(recorder: Recorder, count: int = 1) -> Callable[[], bool]:
    """A condition: at least ``count`` snapshots were published."""
    return lambda: len(recorder.snapshots) >= count


async def test_configmap_first_snapshot_is_the_current_content(
    setting: Setting, recorder: Recorder
) -> None:
    """The first snapshot is the ConfigMap's data, tagged with its resourceVersion."""
    async with running(setting.watcher(), recorder):
        await wait_until(_published(recorder), "the first snapshot")
    assert recorder.contents == [V1]
    assert recorder.snapshots[0].source == setting.source(setting.version)


async def test_configmap_patch_is_published_once(setting: Setting, recorder: Recorder) -> None:
    """A patch of the data is published once, with the patched object's resourceVersion."""
    async with running(setting.watcher(), recorder):
        await wait_until(_published(recorder), "the first snapshot")
        v2 = await setting.patch(data=V2)
        await wait_until(_published(recorder, 2), "the patched content")
        v3 = await setting.patch(data=V3)
        await wait_until(_published(recorder, 3), "the barrier change")
    assert recorder.contents == [V1, V2, {**V2, **V3}]
    assert [s.source for s in recorder.snapshots] == [
        setting.source(setting.version),
        setting.source(v2),
        setting.source(v3),
    ]


async def test_configmap_label_change_is_not_published(
    setting: Setting, recorder: Recorder
) -> None:
    """A change of labels only (a real MODIFIED event, same data) publishes nothing."""
    async with running(setting.watcher(), recorder):
        await wait_until(_published(recorder), "the first snapshot")
        relabelled = await setting.patch(labels={"tier": "edge"})
        await setting.patch(data=V2)
        await wait_until(_published(recorder, 2), "the barrier change")
    assert relabelled != setting.version  # the server did write a new version
    assert recorder.contents == [V1, V2]


async def test_configmap_deletion_keeps_config_and_recreation_is_published(
    setting: Setting, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """DELETED publishes nothing and warns; the ConfigMap created again is published."""
    kube, namespace = setting.kube, setting.namespace
    async with running(setting.watcher(), recorder):
        await wait_until(_published(recorder), "the first snapshot")
        await asyncio.to_thread(kube.delete_configmap, namespace, NAME)
        created = await asyncio.to_thread(kube.create_configmap, namespace, NAME, V3)
        await wait_until(_published(recorder, 2), "the re-created ConfigMap")
    assert recorder.contents == [V1, V3]
    assert recorder.snapshots[1].source == setting.source(created)
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == WATCHER_LOG and r.levelno >= logging.WARNING
    ]
    assert warnings == ["The ConfigMap was deleted; keeping the running configuration."]


def test_configmap_rbac_allows_only_the_named_configmap(setting: Setting) -> None:
    """The agent user may list its ConfigMap by name, but not the namespace or another one."""
    setting.kube.create_configmap(setting.namespace, "other", {"secret": "not for the agent"})
    core = client.CoreV1Api(setting.agent_client)
    listed = core.list_namespaced_config_map(setting.namespace, field_selector=SELECTOR)
    assert [item.metadata.name for item in listed.items] == [NAME]
    with pytest.raises(client.ApiException) as unselected:
        core.list_namespaced_config_map(setting.namespace)
    assert unselected.value.status == 403
    with pytest.raises(client.ApiException) as other:
        core.read_namespaced_config_map("other", setting.namespace)
    assert other.value.status == 403


async def test_configmap_expired_version_relists_and_keeps_watching(
    setting: Setting, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """After etcd compaction the next watch gets 410 Gone: list again, keep publishing changes."""
    caplog.set_level(logging.INFO, logger=WATCHER_LOG)
    kube, namespace = setting.kube, setting.namespace

    def expired() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.getMessage().startswith("The ConfigMap watch expired")
        ]

    # Watches of 1 s: the watcher resumes from the version it holds every second, without
    # listing. Writes elsewhere move etcd past that version; compaction then forgets it.
    async with running(setting.watcher(watch_timeout_secs=1), recorder):
        await wait_until(_published(recorder), "the first snapshot")
        await asyncio.to_thread(kube.create_configmap, namespace, "churn", {"n": "0"})
        for n in ("1", "2"):
            await setting.patch("churn", data={"n": n})
        await asyncio.to_thread(kube.compact_etcd)
        status = await asyncio.to_thread(_watch_status, setting, setting.version)
        assert status == 410  # the server really expired the versions the watcher holds
        await wait_until(lambda: len(expired()) > 0, "the watcher to meet 410 Gone")
        await setting.patch(data=V2)
        await wait_until(_published(recorder, 2), "the change after the re-list")
    assert recorder.contents == [V1, V2]  # the re-list found V1 again: not published twice
    assert expired()[0].in_a_row == 1  # type: ignore[attr-defined]
    problems = [r for r in caplog.records if r.name == WATCHER_LOG and r.levelno >= logging.WARNING]
    assert problems == []


def _watch_status(setting: Setting, version: str) -> int | None:
    """Watch from ``version`` as the agent user: the HTTP status it fails with, or None."""
    stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
        client.CoreV1Api(setting.agent_client).list_namespaced_config_map,
        setting.namespace,
        field_selector=SELECTOR,
        resource_version=version,
        timeout_seconds=1,
        _request_timeout=(5, 6),
    )
    try:
        for _ in stream:
            pass
    except client.ApiException as exc:
        return int(exc.status)
    return None


async def test_configmap_cancel_returns_promptly_and_closes_the_watch(
    setting: Setting, recorder: Recorder
) -> None:
    """Cancelling during a long, quiet watch returns within 3 s and the server's watch ends."""
    kube = setting.kube
    baseline = await asyncio.to_thread(kube.watch_count, "configmaps")
    loop = asyncio.get_running_loop()
    async with running(setting.watcher(watch_timeout_secs=300), recorder):
        await wait_until(_published(recorder), "the first snapshot")
        await _wait_watches(kube, lambda n: n > baseline, "the watcher's watch on the server")
        cancelled_at = loop.time()
    assert loop.time() - cancelled_at < 3.0
    assert not any(t.name.startswith(f"configmap-{NAME}") for t in threading.enumerate())
    await _wait_watches(kube, lambda n: n <= baseline, "the server to see the watch closed")


async def _wait_watches(kube: KubeApiServer, condition: Callable[[int], bool], what: str) -> None:
    """Poll the API server's count of open ConfigMap watches until ``condition`` holds."""
    count = -1

    async def poll() -> None:
        nonlocal count
        while not condition(count := await asyncio.to_thread(kube.watch_count, "configmaps")):
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout=10)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}; open ConfigMap watches: {count}")
