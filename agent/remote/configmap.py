"""Remote configuration from one ConfigMap, listed and watched through the Kubernetes API.

Uses the official (synchronous) ``kubernetes`` client on one dedicated worker thread that this
watcher owns (started and ended by :meth:`ConfigMapWatcher.run`); the event loop only awaits
that thread's results.

Contract
--------
1. List, then watch: ``list_namespaced_config_map`` with the field selector
   ``metadata.name=<name>`` gives the current content and a resourceVersion; a watch with the
   same selector, ``allowWatchBookmarks`` and a server-side ``timeoutSeconds`` continues from
   it. The selector is what lets a Role restricted to ``resourceNames: [<name>]`` allow the
   requests: it is always sent.
2. Every event moves the resourceVersion on: ADDED and MODIFIED publish the ConfigMap's
   ``data`` (``binaryData`` is not part of a snapshot), BOOKMARK only moves the version,
   DELETED logs a warning and publishes nothing (the running configuration stays). When a
   watch ends cleanly (its timeout), the next one resumes from the last version seen, without
   listing again.
3. Expired versions (an ERROR event or an HTTP response with status 410 Gone): list again and
   watch from the new version, at once (backing off only if that keeps happening).
4. Any other failure (connection refused, 5xx, 403, a read timeout): log, wait a jittered,
   capped, exponentially growing delay, then list again. Nothing is lost: the list returns the
   current content, and publishing skips content already handed over.
5. Partitions cannot hang the watcher: every request has a client-side connect timeout, a list
   a read timeout of ``request_timeout_secs``, and a watch one of ``watch_timeout_secs`` plus
   ``request_timeout_secs`` (the server should have ended it by then).
6. Cancelling :meth:`ConfigMapWatcher.run` shuts the watch's socket down, so the worker thread
   returns at once (a request still waiting for its response headers returns within its
   timeouts). The worker is a daemon thread: it never delays the process's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from kubernetes import client, config, watch

from agent._backoff import Backoff
from agent.errors import ConfigError, RetryableError
from agent.remote._snapshot import ChangeFilter, ConfigSnapshot, wall_clock_ms

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Generator, Mapping

_log = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE_FILE: Final = Path(
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
)
"""Where Kubernetes tells a pod its namespace."""

_HTTP_GONE: Final = 410
_HTTP_UNAUTHORIZED: Final = 401
_HTTP_FORBIDDEN: Final = 403
_STOP_GRACE_SECS: Final = 2.0
_STOP_POLL_SECS: Final = 0.05

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Options:
    name: str
    request_timeout_secs: float
    watch_timeout_secs: int

    @property
    def field_selector(self) -> str:
        return f"metadata.name={self.name}"


class ConfigMapWatcher:
    """Lists and watches one ConfigMap and publishes its ``data`` whenever it changes.

    See the module documentation for the contract.
    """

    def __init__(  # noqa: PLR0913 - every knob is a documented setting
        self,
        *,
        name: str,
        namespace: str | None = None,
        api_client: client.ApiClient | None = None,
        request_timeout_secs: float = 10.0,
        watch_timeout_secs: int = 300,
        backoff_initial_secs: float = 1.0,
        backoff_max_secs: float = 60.0,
        namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE_FILE,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        """Create a watcher; nothing happens until :meth:`run`.

        Args:
            name: The ConfigMap's name.
            namespace: Its namespace; None reads ``namespace_file`` when :meth:`run` starts.
            api_client: A configured client (tests: a fake server's URL, no auth); None loads
                the in-cluster configuration (service account token and CA) in :meth:`run`.
            request_timeout_secs: Connect timeout, and read timeout of a list.
            watch_timeout_secs: Server-side duration of one watch.
            backoff_initial_secs: First delay after a failure.
            backoff_max_secs: Cap of the delay.
            namespace_file: Where to read the namespace from when none is given.
            clock_ms: Wall clock in epoch milliseconds, for ``observed_at_ms``.
        """
        self._options = _Options(name, request_timeout_secs, watch_timeout_secs)
        self._namespace = namespace
        self._api_client = api_client
        self._backoff = Backoff(backoff_initial_secs, backoff_max_secs)
        self._namespace_file = namespace_file
        self._clock_ms = clock_ms

    async def run(self, publish: Callable[[ConfigSnapshot], Awaitable[None]]) -> None:
        """Publish the ConfigMap's content now and after every change, until cancelled.

        Raises:
            ConfigError: No namespace was given and none can be read from the service account,
                or no client was given and the in-cluster configuration cannot be loaded
                (not running in a pod).
        """
        namespace = self._namespace
        if namespace is None:
            namespace = await asyncio.to_thread(_read_namespace, self._namespace_file)
        api_client = self._api_client
        owned = api_client is None
        if api_client is None:
            api_client = await asyncio.to_thread(_in_cluster_client)
        worker = _Worker(f"configmap-{self._options.name}")
        session = _Session(
            options=self._options,
            api=client.CoreV1Api(api_client),
            namespace=namespace,
            worker=worker,
            backoff=self._backoff,
            clock_ms=self._clock_ms,
        )
        _log.info(
            "Watching the configuration ConfigMap.",
            extra={"namespace": namespace, "configmap": self._options.name},
        )
        try:
            await session.run(ChangeFilter(publish))
        finally:
            worker.close()
            if owned:
                api_client.close()  # type: ignore[no-untyped-call]


class _Session:
    """The state of one :meth:`ConfigMapWatcher.run`."""

    def __init__(  # noqa: PLR0913 - private; built in one place
        self,
        *,
        options: _Options,
        api: client.CoreV1Api,
        namespace: str,
        worker: _Worker,
        backoff: Backoff,
        clock_ms: Callable[[], int],
    ) -> None:
        self._options = options
        self._api = api
        self._namespace = namespace
        self._worker = worker
        self._backoff = backoff
        self._clock_ms = clock_ms
        self._resource_version: str | None = None  # None: list before watching
        self._gone_in_a_row = 0
        self._where = f"{namespace}/{options.name}"

    async def run(self, changes: ChangeFilter) -> None:
        while True:
            try:
                if self._resource_version is None:
                    await self._list(changes)
                await self._watch(changes)
                self._made_progress()
            except client.ApiException as exc:
                if exc.status == _HTTP_GONE:
                    await self._gone()
                else:
                    await self._fail(exc)
            except Exception as exc:  # noqa: BLE001 - the top loop: log, back off, go on
                await self._fail(exc)

    def _made_progress(self) -> None:
        self._backoff.reset()
        self._gone_in_a_row = 0

    async def _gone(self) -> None:
        """The version is too old for the server: list again (at once the first time)."""
        self._resource_version = None
        self._gone_in_a_row += 1
        _log.info(
            "The ConfigMap watch expired; listing again.",
            extra={"configmap": self._where, "in_a_row": self._gone_in_a_row},
        )
        if self._gone_in_a_row > 1:
            await asyncio.sleep(self._backoff.next_delay())

    async def _fail(self, exc: Exception) -> None:
        self._resource_version = None
        delay = self._backoff.next_delay()
        fields = {
            "configmap": self._where,
            "error": f"{type(exc).__name__}: {_reason(exc)}",
            "retry_in_secs": round(delay, 3),
        }
        if getattr(exc, "status", None) in {_HTTP_UNAUTHORIZED, _HTTP_FORBIDDEN}:
            _log.error(
                "The API server refused to list or watch the ConfigMap; grant the service "
                "account get, list and watch on it. Retrying.",
                extra=fields,
            )
        else:
            _log.warning("Listing or watching the ConfigMap failed; retrying.", extra=fields)
        await asyncio.sleep(delay)

    async def _list(self, changes: ChangeFilter) -> None:
        timeout = self._options.request_timeout_secs
        listed = await self._in_thread(
            functools.partial(
                self._api.list_namespaced_config_map,
                self._namespace,
                field_selector=self._options.field_selector,
                _request_timeout=(timeout, timeout),
            )
        )
        items = [i for i in listed.items if i.metadata and i.metadata.name == self._options.name]
        if items and items[0].metadata:
            await self._offer(changes, items[0].data or {}, items[0].metadata.resource_version)
        else:
            _log.warning(
                "The ConfigMap does not exist; keeping the running configuration.",
                extra={"configmap": self._where},
            )
        if listed.metadata is None or not listed.metadata.resource_version:
            raise RetryableError("The API server's list response has no resourceVersion.")
        self._resource_version = listed.metadata.resource_version

    async def _watch(self, changes: ChangeFilter) -> None:
        """Watch from the current version until the server ends the watch."""
        options = self._options
        watcher = watch.Watch()  # type: ignore[no-untyped-call]
        stream: Generator[dict[str, Any]] = watcher.stream(  # type: ignore[no-untyped-call]
            self._api.list_namespaced_config_map,
            self._namespace,
            field_selector=options.field_selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=options.watch_timeout_secs,
            _request_timeout=(
                options.request_timeout_secs,
                options.watch_timeout_secs + options.request_timeout_secs,
            ),
        )
        try:
            while (event := await self._next_event(watcher, stream)) is not None:
                await self._handle(changes, event)
        finally:
            # Releases the connection; queued behind a step still running after a cancellation.
            self._worker.submit(stream.close)

    async def _next_event(
        self, watcher: watch.Watch, stream: Generator[dict[str, Any]]
    ) -> dict[str, Any] | None:
        future = self._worker.submit(functools.partial(next, stream, None))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            await _stop(watcher, future)
            raise

    async def _handle(self, changes: ChangeFilter, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        raw = event.get("raw_object")
        obj: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "ERROR":
            # The client raises for ERROR events itself; this covers versions that yield them.
            reason = f"{obj.get('reason')}: {obj.get('message')}"
            raise client.ApiException(status=obj.get("code"), reason=reason)
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if kind in {"ADDED", "MODIFIED"} and metadata.get("name") == self._options.name:
            await self._offer(changes, obj.get("data") or {}, version)
        elif kind == "DELETED":
            _log.warning(
                "The ConfigMap was deleted; keeping the running configuration.",
                extra={"configmap": self._where, "resource_version": version},
            )
        if version:
            self._resource_version = str(version)
        self._made_progress()

    async def _offer(self, changes: ChangeFilter, data: Mapping[str, str], version: object) -> None:
        snapshot = ConfigSnapshot.of(data, f"configmap:{self._where}@{version}", self._clock_ms())
        if await changes.offer(snapshot):
            _log.info(
                "New configuration found in the ConfigMap.",
                extra={
                    "configmap": self._where,
                    "resource_version": version,
                    "content_hash": snapshot.content_hash,
                    "keys": sorted(snapshot.data),
                },
            )

    async def _in_thread(self, call: Callable[[], _T]) -> _T:
        return await asyncio.wrap_future(self._worker.submit(call))


async def _stop(watcher: watch.Watch, step: concurrent.futures.Future[Any]) -> None:
    """Unblock a watch step after a cancellation, waiting at most ``_STOP_GRACE_SECS``.

    ``Watch.stop`` shuts the response's socket down, which ends a blocked read at once; it is
    repeated because the response only becomes reachable once its headers have arrived.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _STOP_GRACE_SECS
    waiter = asyncio.wrap_future(step)
    # The step's outcome (typically "response ended prematurely") is of no interest any more.
    waiter.add_done_callback(_discard_outcome)
    while not waiter.done() and loop.time() < deadline:
        watcher.stop()  # type: ignore[no-untyped-call]
        await asyncio.wait([waiter], timeout=_STOP_POLL_SECS)
    if not waiter.done():
        waiter.cancel()  # the step ends within its timeouts; nobody waits for it


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class _Worker:
    """One daemon thread running blocking client calls in submission order.

    A daemon thread, unlike a ``ThreadPoolExecutor``'s, never delays the process's exit: a
    request stuck on a partitioned network (within its timeouts) cannot hold up a shutdown.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._calls.put((future, call))
        return future

    def close(self) -> None:
        """End the thread once the calls already submitted have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                future.set_exception(exc)
            else:
                future.set_result(result)


def _reason(exc: Exception) -> str:
    if isinstance(exc, client.ApiException):
        return f"HTTP {exc.status} {exc.reason}"
    return str(exc)


def _read_namespace(path: Path) -> str:
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the pod's namespace from {path} ({exc.strerror}); set "
            "remote_config.namespace."
        ) from exc
    if not namespace:
        raise ConfigError(f"{path} is empty; set remote_config.namespace.")
    return namespace


def _in_cluster_client() -> client.ApiClient:
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        raise ConfigError(
            f"Cannot use the Kubernetes API: {exc}. Run the agent in a pod with a service "
            "account, or set remote_config.mode to 'directory'."
        ) from exc
    return client.ApiClient(configuration)
