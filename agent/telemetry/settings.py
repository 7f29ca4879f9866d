"""Settings of the agent's HTTP endpoint (metrics and health)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agent._config.checks import is_host


def _listen_host(host: str) -> str:
    """An IP address or a DNS host name, so listening does not fail at every start."""
    if not is_host(host):
        raise ValueError(
            f"{host!r} is neither an IP address nor a host name; use e.g. 0.0.0.0 (every "
            "interface), 127.0.0.1 (this gateway only) or :: (IPv6)"
        )
    return host


class HttpSettings(BaseModel):
    """Where ``/metrics``, ``/healthz`` and ``/readyz`` are served. Needs a restart to change."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        default=True,
        description="Serve the HTTP endpoint at all.",
        json_schema_extra={"reload": "restart"},
    )
    listen_host: Annotated[str, AfterValidator(_listen_host)] = Field(
        default="127.0.0.1",
        description=(
            "Address to listen on. The default keeps the unauthenticated endpoint on the "
            "gateway itself; 0.0.0.0 (every interface, what the Helm chart sets so probes and "
            "Prometheus reach the pod IP) or :: (IPv6) to be scraped from the network."
        ),
        json_schema_extra={"reload": "restart"},
    )
    port: int = Field(
        default=9810,
        ge=0,
        le=65535,
        description="TCP port (0 = pick a free one).",
        json_schema_extra={"reload": "restart"},
    )
    loop_stall_secs: float = Field(
        default=10.0,
        gt=0,
        description="/healthz fails when the event loop has not ticked for this long.",
        json_schema_extra={"reload": "restart"},
    )
