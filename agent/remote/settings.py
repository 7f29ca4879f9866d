"""Settings of remote configuration: where the agent watches for a new configuration.

These settings choose and tune the *source* of remote configuration; they need a restart to
take effect (the watcher is built once at start). Which fields of the agent's own configuration
reload live is decided by the agent, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

RemoteConfigMode = Literal["none", "directory", "api"]
"""``"none"``: no remote configuration; ``"directory"``: a mounted ConfigMap (or any directory);
``"api"``: the Kubernetes API (list + watch of one ConfigMap)."""

# A DNS-1123 subdomain, the form Kubernetes requires of ConfigMap names.
_CONFIGMAP_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A DNS-1123 label, the form Kubernetes requires of namespace names.
_NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class RemoteConfigSettings(BaseModel):
    """Where a new configuration comes from while the agent runs, and what to do with it.

    With ``mode: directory`` the agent watches a directory, normally a ConfigMap mounted as a
    volume (never with ``subPath``: such mounts are never updated). It works offline and needs
    no RBAC; kubelet updates the volume within about a minute of a change. With ``mode: api`` the
    agent lists and watches one ConfigMap through the Kubernetes API: changes arrive within
    seconds, and the pod's service account needs ``get``, ``list`` and ``watch`` on
    ``configmaps`` restricted to ``resourceNames: [<configmap_name>]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RemoteConfigMode = Field(
        default="none",
        description=(
            "'none': only the configuration read at start is used. 'directory': watch "
            "`directory` (a mounted ConfigMap). 'api': watch ConfigMap `configmap_name` in "
            "`namespace` through the Kubernetes API."
        ),
        json_schema_extra={"reload": "restart"},
    )
    directory: Path = Field(
        default=Path("/etc/edge-agent"),
        description=(
            "mode 'directory': the directory to watch. A ConfigMap volume (kubelet's `..data` "
            "layout) is read atomically through `..data`; any other directory is read file by "
            "file (top-level regular files whose names do not start with a dot)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    config_key: str = Field(
        default="agent.yaml",
        min_length=1,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description=(
            "The ConfigMap key (in mode 'directory': the file name) that holds the agent's YAML "
            "configuration."
        ),
        json_schema_extra={"reload": "restart"},
    )
    debounce_secs: float = Field(
        default=1.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description=(
            "mode 'directory': after a change is noticed, wait until the directory has been quiet "
            "this long before reading it, so a burst of updates yields one new configuration."
        ),
        json_schema_extra={"reload": "restart"},
    )
    poll_interval_secs: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description=(
            "mode 'directory': how often the directory's content is hashed as a safety net "
            "behind inotify; the only detection where inotify is unavailable (not Linux, or "
            "inotify failed), and for files edited in place."
        ),
        json_schema_extra={"reload": "restart"},
    )
    namespace: str | None = Field(
        default=None,
        max_length=63,
        pattern=_NAMESPACE_PATTERN,
        description=(
            "mode 'api': namespace of the ConfigMap. Default: the pod's own namespace, read at "
            "start from /var/run/secrets/kubernetes.io/serviceaccount/namespace."
        ),
        json_schema_extra={"reload": "restart"},
    )
    configmap_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=_CONFIGMAP_NAME_PATTERN,
        description=(
            "mode 'api' (required there): name of the ConfigMap to watch. The list and watch "
            "requests select it with the field selector metadata.name=<name>, which is what "
            "lets a Role restricted to this one resource name allow them."
        ),
        json_schema_extra={"reload": "restart"},
    )
    request_timeout_secs: float = Field(
        default=10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description=(
            "mode 'api': client-side limit on connecting to the API server and on waiting for a "
            "list response. A watch that has received nothing for watch_timeout_secs plus this "
            "long is presumed dead (network partition) and started again."
        ),
        json_schema_extra={"reload": "restart"},
    )
    watch_timeout_secs: int = Field(
        default=300,
        ge=1,
        le=3600,
        description=(
            "mode 'api': server-side duration of one watch request (timeoutSeconds); the agent "
            "then resumes watching from the last resourceVersion it saw."
        ),
        json_schema_extra={"reload": "restart"},
    )
    backoff_initial_secs: float = Field(
        default=1.0,
        gt=0,
        allow_inf_nan=False,
        description=(
            "mode 'api': delay before retrying after a failed list or watch; each further "
            "failure doubles it, with jitter (a random 50-100% of the nominal delay)."
        ),
        json_schema_extra={"reload": "restart"},
    )
    backoff_max_secs: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="mode 'api': upper bound of the retry delay.",
        json_schema_extra={"reload": "restart"},
    )
    restart_on_restart_only_change: bool = Field(
        default=False,
        description=(
            "When a new configuration changes a field that only takes effect at start: False "
            "applies the fields that reload live, reports the others as pending a restart, and "
            "keeps running; True drains (as on SIGTERM) and exits, so that the supervisor "
            "(Kubernetes, systemd) starts the agent again with the new configuration."
        ),
        json_schema_extra={"reload": "restart"},
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.mode == "api" and self.configmap_name is None:
            raise ValueError("mode 'api' needs configmap_name")
        if self.backoff_max_secs < self.backoff_initial_secs:
            raise ValueError("backoff_max_secs must not be less than backoff_initial_secs")
        return self
