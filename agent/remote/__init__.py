"""Remote configuration: noticing that a new configuration was published, and handing it over.

Two sources implement :class:`RemoteConfigSource`:

* :class:`DirectoryWatcher` watches a directory, normally a ConfigMap mounted as a volume
  (kubelet's atomic ``..data`` swap), with inotify and a content-hash poll. Works offline and
  needs no RBAC.
* :class:`ConfigMapWatcher` lists and watches one ConfigMap through the Kubernetes API.

Both publish a :class:`ConfigSnapshot` (every key and its text, with a content hash) at start
and after every change of content, never twice in a row the same content. What the agent does
with it (parse, validate, apply live fields, report) is not this package's business.
"""

from __future__ import annotations

from typing import Any

from agent.errors import ConfigError
from agent.remote._snapshot import ConfigSnapshot, RemoteConfigSource, content_hash
from agent.remote.directory import DirectoryWatcher, DirectoryWatcherStats
from agent.remote.settings import RemoteConfigMode, RemoteConfigSettings

__all__ = [
    "ConfigMapWatcher",
    "ConfigSnapshot",
    "DirectoryWatcher",
    "DirectoryWatcherStats",
    "RemoteConfigMode",
    "RemoteConfigSettings",
    "RemoteConfigSource",
    "content_hash",
    "make_source",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - module attribute hook
    # The Kubernetes client costs ~35 MiB of memory on import: only load it for the API mode.
    if name == "ConfigMapWatcher":
        from agent.remote.configmap import ConfigMapWatcher  # noqa: PLC0415

        return ConfigMapWatcher
    raise AttributeError(name)


def make_source(settings: RemoteConfigSettings) -> RemoteConfigSource | None:
    """The source ``settings`` ask for, or None for ``mode: none``.

    Nothing is read or connected here; that happens when the source's ``run`` starts.
    """
    if settings.mode == "directory":
        return DirectoryWatcher(
            settings.directory,
            debounce_secs=settings.debounce_secs,
            poll_interval_secs=settings.poll_interval_secs,
        )
    if settings.mode == "api":
        if settings.configmap_name is None:  # the settings' validator already refuses this
            raise ConfigError("remote_config.mode 'api' needs remote_config.configmap_name.")
        from agent.remote.configmap import ConfigMapWatcher  # noqa: PLC0415 - see __getattr__

        return ConfigMapWatcher(
            name=settings.configmap_name,
            namespace=settings.namespace,
            request_timeout_secs=settings.request_timeout_secs,
            watch_timeout_secs=settings.watch_timeout_secs,
            backoff_initial_secs=settings.backoff_initial_secs,
            backoff_max_secs=settings.backoff_max_secs,
        )
    return None
