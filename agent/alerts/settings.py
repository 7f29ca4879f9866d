"""The ``alerts:`` section: edge alert rules and the ``iot.alerts`` topic.

Every rule has an ``id`` (unique, it names the rule in records and metrics), ``devices`` and
``metrics`` (lists of shell-style globs, ``*`` by default), a ``severity`` and one ``kind``:

- ``threshold``: ``above``, ``below`` or ``outside: [lo, hi]``; ``deadband`` (hysteresis: a raised
  alert clears only once the value is back past the limit by at least this much) and ``for_s``
  (the condition must hold this long, in reading time, before the alert is raised);
- ``rate_of_change``: the value changes faster than ``max_rate_per_s`` (either direction),
  measured between the oldest and the newest reading within ``window_s``;
- ``staleness``: a series that matched the rule has been silent for ``silent_for_s``.

See ``docs/reference/alert-rules.md``.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


class Severity(StrEnum):
    """How urgent an alert is (the record's ``severity``)."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class _Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(
        pattern=RULE_ID_PATTERN,
        description=(
            "Names the rule in alert records and in the rule_id metric label: 1-64 letters, "
            "digits, '_', '.', ':' or '-', unique among the rules."
        ),
    )
    devices: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(
        default=("*",),
        min_length=1,
        description="Device id globs (fnmatch, case-sensitive); the rule applies when one matches.",
    )
    metrics: tuple[Annotated[str, Field(min_length=1, max_length=256)], ...] = Field(
        default=("*",),
        min_length=1,
        description="Metric name globs (fnmatch, case-sensitive).",
    )
    severity: Severity = Field(default=Severity.WARNING, description="info, warning or critical.")
    max_raised_per_minute: int = Field(
        default=6,
        ge=1,
        le=10_000,
        description=(
            "Raised alerts per rule and device, per minute (a token bucket of this size refilled "
            "over a minute). A raise over it is suppressed and counted; its episode then emits "
            "neither raised nor cleared."
        ),
    )


def _finite(value: float | None, name: str) -> None:
    if value is not None and not math.isfinite(value):
        msg = f"{name} must be a finite number"
        raise ValueError(msg)


class ThresholdRule(_Rule):
    """Raised while the value is above, below or outside a band (with hysteresis)."""

    kind: Literal["threshold"]
    above: float | None = Field(default=None, description="Raised when the value is above this.")
    below: float | None = Field(default=None, description="Raised when the value is below this.")
    outside: tuple[float, float] | None = Field(
        default=None, description="[lo, hi]: raised when the value is below lo or above hi."
    )
    deadband: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Hysteresis: a raised alert clears only when the value is back inside by at least "
            "this much (above: value <= above - deadband)."
        ),
    )
    for_s: float = Field(
        default=0.0,
        ge=0,
        le=86_400,
        description=(
            "The condition must hold this long (reading timestamps) before the alert is raised."
        ),
    )

    @model_validator(mode="after")
    def _one_limit(self) -> ThresholdRule:
        given = [n for n in ("above", "below", "outside") if getattr(self, n) is not None]
        if len(given) != 1:
            msg = (
                f"rule {self.id!r}: a threshold rule needs exactly one of above, below or "
                f"outside (it has {', '.join(given) or 'none'})"
            )
            raise ValueError(msg)
        _finite(self.above, "above")
        _finite(self.below, "below")
        _finite(self.deadband, "deadband")
        if self.outside is not None:
            lo, hi = self.outside
            _finite(lo, "outside")
            _finite(hi, "outside")
            if not lo < hi:
                msg = f"rule {self.id!r}: outside must be [lo, hi] with lo < hi"
                raise ValueError(msg)
            if 2 * self.deadband >= hi - lo:
                msg = (
                    f"rule {self.id!r}: deadband {self.deadband} leaves no value inside the band "
                    f"{lo}..{hi} at which the alert clears; make it smaller than half the band"
                )
                raise ValueError(msg)
        return self


class RateOfChangeRule(_Rule):
    """Raised while the value changes faster than a limit."""

    kind: Literal["rate_of_change"]
    max_rate_per_s: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="Largest change per second (either direction) that is not an alert.",
    )
    window_s: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description=(
            "The rate is measured between the oldest and the newest reading within this window "
            "(at most 64 readings kept per series)."
        ),
    )


class StalenessRule(_Rule):
    """Raised when a series that matched the rule has been silent for ``silent_for_s``."""

    kind: Literal["staleness"]
    silent_for_s: float = Field(
        gt=0,
        le=30 * 86_400,
        allow_inf_nan=False,
        description="Seconds without a reading of the series (receive time) before it is stale.",
    )


Rule = Annotated[ThresholdRule | RateOfChangeRule | StalenessRule, Field(discriminator="kind")]


class AlertSettings(BaseModel):
    """Edge alert rules, evaluated on valid readings; alerts go to ``topic`` through the spool."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    topic: str = Field(
        default="iot.alerts",
        min_length=1,
        max_length=249,
        description=(
            "Kafka topic of alert records (raised/cleared pairs keyed by device id). Must differ "
            "from pipeline.topics and lifecycle.topic."
        ),
        json_schema_extra={"reload": "restart"},
    )
    rules: tuple[Rule, ...] = Field(
        default=(),
        description=(
            "Alert rules; none by default (then alerts cost nothing per message). See "
            "docs/reference/alert-rules.md. A rule removed while raised is cleared (reason "
            "rule_removed); a rule changed under the same id keeps its raised alerts."
        ),
        json_schema_extra={"reload": "live"},
    )
    max_series: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description=(
            "Most (rule, device, metric) series tracked at once. When full, the least recently "
            "seen series that is not raised is forgotten (counted as evicted)."
        ),
        json_schema_extra={"reload": "live"},
    )
    check_interval_s: float = Field(
        default=1.0,
        ge=0.05,
        le=60,
        allow_inf_nan=False,
        description="How often staleness rules are evaluated while no message arrives.",
        json_schema_extra={"reload": "live"},
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> AlertSettings:
        seen: set[str] = set()
        for rule in self.rules:
            if rule.id in seen:
                msg = f"rule id {rule.id!r} is used twice; give every rule its own id"
                raise ValueError(msg)
            seen.add(rule.id)
        return self
