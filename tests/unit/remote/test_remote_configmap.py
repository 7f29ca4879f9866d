"""ConfigMapWatcher with the real kubernetes client against a fake API server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from agent.errors import ConfigError
from agent.remote import ConfigMapWatcher
from tests.unit.remote._fake_kube_api import (
    Event,
    FakeKubeApi,
    Hang,
    HttpStatus,
    status_object,
)
from tests.unit.remote._support import Recorder, running, wait_until

V1 = {"agent.yaml": "gateway_id: gw-1\n"}
V2 = {"agent.yaml": "gateway_id: gw-2\n"}
V3 = {"agent.yaml": "gateway_id: gw-3\n"}
SELECTOR = "metadata.name=edge-agent"


@pytest.fixture
def api() -> Iterator[FakeKubeApi]:
    fake = FakeKubeApi(namespace="edge", name="edge-agent")
    fake.set_configmap(V1, "10")
    fake.start()
    yield fake
    fake.close()


def _watcher(
    api: FakeKubeApi,
    *,
    watch_timeout_secs: int = 30,
    request_timeout_secs: float = 2.0,
    namespace: str | None = "edge",
    namespace_file: Path | None = None,
) -> ConfigMapWatcher:
    configuration = client.Configuration(host=api.url)
    extra = {} if namespace_file is None else {"namespace_file": namespace_file}
    return ConfigMapWatcher(
        name="edge-agent",
        namespace=namespace,
        api_client=client.ApiClient(configuration),
        request_timeout_secs=request_timeout_secs,
        watch_timeout_secs=watch_timeout_secs,
        backoff_initial_secs=0.01,
        backoff_max_secs=0.05,
        **extra,
    )


def _modified(api: FakeKubeApi, data: dict[str, str], version: str) -> Event:
    return Event("MODIFIED", api.configmap_object(data, version))


async def test_configmap_lists_watches_and_resumes_from_bookmark(
    api: FakeKubeApi, recorder: Recorder
) -> None:
    """List, then watch from the list's version; after a clean end, resume from the bookmark."""
    api.script_watch(_modified(api, V2, "11"), api.bookmark("15"))
    api.script_watch(Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(api.watches) == 2, "the second watch")
    assert recorder.contents == [V1, V2]
    assert [s.source for s in recorder.snapshots] == [
        "configmap:edge/edge-agent@10",
        "configmap:edge/edge-agent@11",
    ]
    (listed,) = api.lists  # no re-list after a clean end
    assert listed.path == "/api/v1/namespaces/edge/configmaps"
    assert listed.query == {"fieldSelector": SELECTOR}
    first, second = api.watches
    for request in (first, second):
        assert request.query["fieldSelector"] == SELECTOR
        assert request.query["allowWatchBookmarks"] == "true"
        assert request.query["timeoutSeconds"] == "30"
    assert first.query["resourceVersion"] == "10"
    assert second.query["resourceVersion"] == "15"


async def test_configmap_resumes_from_last_event_version(
    api: FakeKubeApi, recorder: Recorder
) -> None:
    """Without a bookmark, the next watch starts from the last event's resourceVersion."""
    api.script_watch(_modified(api, V2, "11"), _modified(api, V3, "12"))
    api.script_watch(Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(api.watches) == 2, "the second watch")
    assert recorder.contents == [V1, V2, V3]
    assert [w.query["resourceVersion"] for w in api.watches] == ["10", "12"]
    assert len(api.lists) == 1


async def test_configmap_error_event_gone_relists_and_watches_from_new_version(
    api: FakeKubeApi, recorder: Recorder
) -> None:
    """An ERROR event with Status 410 makes the watcher list again and watch from the new rv."""
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(api.watches) == 1, "the first watch")
        api.set_configmap(V2, "20")  # changed while the watch could not keep up
        api.script_watch(Event("ERROR", status_object(410, "Expired", "too old resource version")))
        api.script_watch(Hang())
        await wait_until(lambda: len(api.watches) == 2, "the watch after the re-list")
    assert recorder.contents == [V1, V2]
    assert len(api.lists) == 2
    assert [w.query["resourceVersion"] for w in api.watches] == ["10", "20"]


async def test_configmap_http_gone_on_watch_relists(api: FakeKubeApi, recorder: Recorder) -> None:
    """A watch answered with HTTP 410 Gone makes the watcher list again and watch from there."""
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(api.watches) == 1, "the first watch")
        api.set_configmap(V2, "20")
        api.script_watch(HttpStatus(410))
        api.script_watch(Hang())
        await wait_until(lambda: len(api.watches) == 2, "the watch after the re-list")
    assert recorder.contents == [V1, V2]
    assert len(api.lists) == 2
    assert api.watches[1].query["resourceVersion"] == "20"


async def test_configmap_hung_watch_times_out_and_reconnects(
    api: FakeKubeApi, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A watch that sends nothing is abandoned after its read timeout, then list and watch again."""
    api.script_watch(Hang())
    api.script_watch(_modified(api, V2, "11"), Hang())
    watcher = _watcher(api, watch_timeout_secs=1, request_timeout_secs=0.5)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 2, "the change after reconnecting")
    assert recorder.contents == [V1, V2]
    assert len(api.lists) == 2
    assert [w.query["timeoutSeconds"] for w in api.watches] == ["1", "1"]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == "Listing or watching the ConfigMap failed; retrying."
    assert "timed out" in warning.error  # type: ignore[attr-defined]


async def test_configmap_deleted_event_keeps_config_and_warns(
    api: FakeKubeApi, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """DELETED publishes nothing (no empty snapshot), logs a warning, and moves the version."""
    api.script_watch(Event("DELETED", api.configmap_object(V1, "12")))
    api.script_watch(Event("ADDED", api.configmap_object(V2, "13")), Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(recorder.snapshots) == 2, "the re-created ConfigMap")
    assert recorder.contents == [V1, V2]
    assert [w.query["resourceVersion"] for w in api.watches] == ["10", "12"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["The ConfigMap was deleted; keeping the running configuration."]


async def test_configmap_change_without_new_data_is_not_published(
    api: FakeKubeApi, recorder: Recorder
) -> None:
    """A MODIFIED event whose data is unchanged (say, a label edit) is not handed over."""
    api.script_watch(_modified(api, V1, "11"), _modified(api, V2, "12"), Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(recorder.snapshots) == 2, "the real change")
    assert recorder.contents == [V1, V2]
    assert recorder.snapshots[1].source == "configmap:edge/edge-agent@12"


async def test_configmap_missing_at_start_is_published_when_added(
    api: FakeKubeApi, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """An empty list is a warning, not a publish; the ADDED event later is published."""
    api.set_configmap(None, "7")
    api.script_watch(Event("ADDED", api.configmap_object(V1, "8")), Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the added ConfigMap")
    assert recorder.contents == [V1]
    assert api.watches[0].query["resourceVersion"] == "7"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["The ConfigMap does not exist; keeping the running configuration."]


async def test_configmap_failed_lists_back_off_and_retry(
    api: FakeKubeApi, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """A 403 (logged as ERROR: an operator must act) and a 500 are retried until a list works."""
    api.fail_next_list(403)
    api.fail_next_list(500)
    api.script_watch(Hang())
    async with running(_watcher(api), recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
    assert recorder.contents == [V1]
    assert len(api.lists) == 3
    levels = [r.levelno for r in caplog.records if r.name.startswith("agent.remote")]
    assert logging.ERROR in levels
    assert logging.WARNING in levels


async def test_configmap_cancel_ends_a_blocked_watch_promptly(
    api: FakeKubeApi, recorder: Recorder
) -> None:
    """Cancelling run() during a silent watch returns at once and the worker thread ends."""
    api.script_watch(Hang())
    watcher = _watcher(api, watch_timeout_secs=300)
    async with running(watcher, recorder):
        await wait_until(lambda: len(api.watches) == 1, "the watch")
        await asyncio.sleep(0)  # let the worker block in its read
    await wait_until(
        lambda: not any(t.name.startswith("configmap-edge-agent") for t in threading.enumerate()),
        "the worker thread to end",
        deadline_secs=5,
    )


async def test_configmap_namespace_comes_from_the_service_account(
    api: FakeKubeApi, recorder: Recorder, tmp_path: Path
) -> None:
    """Without a namespace setting, the pod's namespace file decides where to look."""
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("edge\n", encoding="utf-8")
    api.script_watch(Hang())
    watcher = _watcher(api, namespace=None, namespace_file=namespace_file)
    async with running(watcher, recorder):
        await wait_until(lambda: len(recorder.snapshots) == 1, "the first snapshot")
    assert api.lists[0].path == "/api/v1/namespaces/edge/configmaps"


async def test_configmap_outside_a_pod_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No namespace file, or no in-cluster configuration: run() raises ConfigError at once."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    missing = ConfigMapWatcher(name="edge-agent", namespace_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"set remote_config\.namespace"):
        await missing.run(Recorder())
    no_cluster = ConfigMapWatcher(name="edge-agent", namespace="edge")
    with pytest.raises(ConfigError, match="Run the agent in a pod"):
        await no_cluster.run(Recorder())
