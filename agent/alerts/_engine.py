"""The alert engine: valid readings in, raised/cleared alert records out, state transactional.

Contract (see ``docs/reference/alert-rules.md``):

* State is per series, a (rule id, device id, metric) triple. A series is raised, idle,
  pending (a threshold holds but ``for_s`` has not passed yet) or suppressed (a raise was
  refused by the rule's rate limit: that episode emits neither raised nor cleared, so a
  cleared never comes without its raised).
* :meth:`AlertEngine.observe` reads the normalized records a group of messages produced, so it
  sees exactly the readings that go to Kafka whatever the payload profile. A record whose
  device matches no rule is skipped without decoding it (a bounded per-device cache).
  Threshold and rate rules use numbers only; a boolean or string reading is ignored and
  counted. Time for ``for_s`` and rates is the reading's timestamp. Time for staleness, the
  check interval and rate limits is ``elapsed_ms``, a monotonic clock: a wall-clock step
  (NTP at boot, a hand-set clock) neither raises every staleness rule at once nor delays them
  by the step. Wall time (``now_ms``) only stamps what :meth:`tick` raises or clears.
* Transactions: ingest calls :meth:`observe` and :meth:`tick` for one group, stores
  :meth:`state` in the same spool transaction as the group's block (alert records included),
  then calls :meth:`commit`, or :meth:`rollback` when the block was not stored (the state goes
  back to what is on disk). :meth:`load` takes the stored state at start: raised alerts stay
  raised (no second raised), and their clear comes when the value returns (no lost cleared).
  Recognised MQTT redeliveries are skipped (``replayed``): the stored state already took
  their first copy into account.
  What is persisted: raised, pending and suppressed series and the keys of staleness series
  (their clocks start again at :meth:`load`). Not persisted: rate windows and rate-limit
  buckets (they start empty/full after a restart).
* Bounded: at most ``max_series`` series; when full the least recently seen series that is
  neither raised nor pending nor suppressed is forgotten (counted as evicted); when there is
  none, the new series is not tracked (also counted).
* Reload (:meth:`replace_settings`): a series whose rule is gone, changed kind, or no longer
  selects its device or metric is cleared at the next :meth:`tick` (reason ``rule_removed``)
  when raised, and forgotten; a rule changed in place keeps its raised alerts.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import orjson

from agent.alerts._records import AlertEvent, alert_id, alert_record, event_id
from agent.alerts.settings import RateOfChangeRule, Severity, StalenessRule, ThresholdRule

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from collections.abc import Set as AbstractSet

    from agent.alerts.settings import AlertSettings, Rule
    from agent.model import Record

_log = logging.getLogger(__name__)

STATE_VERSION = 1
MAX_RATE_SAMPLES = 64
MAX_PERSISTED_STALENESS_KEYS = 20_000
"""Staleness series keys kept in the stored state beyond the raised/pending/suppressed ones."""
MAX_STATE_BYTES = 3 * 1024 * 1024
"""The stored state's limit: with the message-id journal (at most ~416 KiB) it stays under the
spool's 4 MiB journal limit."""
_DEVICE_CACHE_ENTRIES = 4096
_EVICTION_SCAN = 64
_MESSAGE_ID = "message-id"
_MESSAGE_ID_HEADERS = frozenset((_MESSAGE_ID, "parent-message-id"))

SeriesKey = tuple[str, str, str]
_Snapshot = tuple[str, bool, str | None, int, int | None, bool, int, str | None]


def _globs(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True, slots=True)
class _Compiled:
    rule: Rule
    devices: re.Pattern[str]
    metrics: re.Pattern[str]
    condition: dict[str, object]

    @classmethod
    def of(cls, rule: Rule) -> _Compiled:
        if isinstance(rule, ThresholdRule):
            condition: dict[str, object] = {"deadband": rule.deadband, "for_s": rule.for_s}
            if rule.above is not None:
                condition["above"] = rule.above
            elif rule.below is not None:
                condition["below"] = rule.below
            else:
                condition["outside"] = list(rule.outside or ())
        elif isinstance(rule, RateOfChangeRule):
            condition = {"max_rate_per_s": rule.max_rate_per_s, "window_s": rule.window_s}
        else:
            condition = {"silent_for_s": rule.silent_for_s}
        return cls(rule, _globs(rule.devices), _globs(rule.metrics), condition)

    def selects(self, device_id: str, metric: str) -> bool:
        return bool(self.devices.match(device_id)) and bool(self.metrics.match(metric))


def _breached(rule: ThresholdRule, value: float) -> bool:
    if rule.above is not None:
        return value > rule.above
    if rule.below is not None:
        return value < rule.below
    lo, hi = rule.outside or (0.0, 0.0)
    return value < lo or value > hi


def _recovered(rule: ThresholdRule, value: float) -> bool:
    band = rule.deadband
    if rule.above is not None:
        return value <= rule.above - band
    if rule.below is not None:
        return value >= rule.below + band
    lo, hi = rule.outside or (0.0, 0.0)
    return lo + band <= value <= hi - band


@dataclass(slots=True)
class _Series:
    kind: str
    raised: bool = False
    alert_id: str | None = None
    raised_at: int = 0
    pending_since: int | None = None
    suppressed: bool = False
    last_seen_ms: int = 0  # the monotonic clock (elapsed_ms)
    last_message_id: str | None = None
    samples: deque[tuple[int, float]] | None = None

    def snapshot(self) -> _Snapshot:
        return (
            self.kind,
            self.raised,
            self.alert_id,
            self.raised_at,
            self.pending_since,
            self.suppressed,
            self.last_seen_ms,
            self.last_message_id,
        )

    @classmethod
    def restore(cls, snap: _Snapshot) -> _Series:
        return cls(*snap)

    @property
    def busy(self) -> bool:
        """Holds state that eviction would lose."""
        return self.raised or self.suppressed or self.pending_since is not None


@dataclass(frozen=True, slots=True)
class _Hit:
    """One series being evaluated: its rule, device, metric, and the time and trigger."""

    compiled: _Compiled
    device: str
    metric: str
    series: _Series
    ts: int
    """The reading's timestamp (for staleness and rule removal: when the agent decided)."""
    trigger: str | None
    """The triggering reading's message id (staleness: the last reading's), when known."""
    elapsed_ms: int
    """The monotonic clock (rate limits)."""


@dataclass(slots=True)
class AlertStats:
    """What the engine did since start (labels: rule ids only, bounded by the config)."""

    raised: Counter[str] = field(default_factory=Counter)
    cleared: Counter[str] = field(default_factory=Counter)
    suppressed: Counter[str] = field(default_factory=Counter)
    evicted: int = 0
    ignored_not_a_number: int = 0
    internal_errors: int = 0


class AlertEngine:
    """Evaluates alert rules; see the module docstring."""

    def __init__(self, settings: AlertSettings, gateway_id: str, readings_topic: str) -> None:
        """Compile ``settings`` for the gateway; readings are the records on ``readings_topic``."""
        self._gateway_id = gateway_id
        self._series: OrderedDict[SeriesKey, _Series] = OrderedDict()
        self._undo: dict[SeriesKey, _Snapshot | None] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._state = b""
        self._state_stale = True
        self._warned_state_size = False
        self._next_tick_ms = 0
        self.stats = AlertStats()
        self._retired: dict[str, _Compiled] = {}
        self._apply(settings, readings_topic)
        self._orphans = False

    def _apply(self, settings: AlertSettings, readings_topic: str) -> None:
        self._settings = settings
        self._topic = settings.topic
        self._readings_topic = readings_topic
        self._rules = {rule.id: _Compiled.of(rule) for rule in settings.rules}
        self._device_rules: dict[bytes | None, tuple[_Compiled, ...]] = {}
        self._staleness = any(isinstance(r, StalenessRule) for r in settings.rules)
        self._interval_ms = round(settings.check_interval_s * 1000)

    def replace_settings(self, settings: AlertSettings, readings_topic: str) -> None:
        """Use new rules from the next group on; orphaned series are settled at :meth:`tick`."""
        self._retired = {**self._retired, **self._rules} if self._series else {}
        self._apply(settings, readings_topic)
        self._orphans = bool(self._series)
        self._next_tick_ms = 0

    @property
    def on(self) -> bool:
        """Whether ingest must call the engine at all (rules, or series left to settle)."""
        return bool(self._rules) or bool(self._series)

    @property
    def check_interval_s(self) -> float:
        """How often :meth:`tick` has work."""
        return self._settings.check_interval_s

    @property
    def active(self) -> int:
        """Alerts raised now."""
        return sum(1 for s in self._series.values() if s.raised)

    # ------------------------------------------------------------------ evaluation
    def observe(
        self,
        records: Sequence[Record],
        elapsed_ms: int,
        *,
        replayed: AbstractSet[str] = frozenset(),
    ) -> list[Record]:
        """Evaluate the readings among ``records``; return the alert records they cause.

        ``elapsed_ms`` is the monotonic clock in milliseconds (``time.monotonic()``).

        Readings of the messages in ``replayed`` (recognised redeliveries, by message id; a
        multi-reading message's readings by their ``parent-message-id``) are skipped: the
        stored state already took their first copy into account.
        """
        if replayed:
            records = [r for r in records if not _replayed(r, replayed)]
        out: list[Record] = []
        topic = self._readings_topic
        cache = self._device_rules
        for record in records:
            if record.topic != topic:
                continue
            key = record.key
            try:
                rules = cache[key]
            except KeyError:
                rules = self._rules_for_device(key)
            if rules:
                try:
                    self._reading(record, rules, elapsed_ms, out)
                except Exception:  # noqa: BLE001 - a bug must not stop the readings being stored
                    self.stats.internal_errors += 1
                    if self.stats.internal_errors == 1:
                        _log.exception(
                            "Alert evaluation failed on a reading; it is stored without "
                            "evaluation. Please report this.",
                        )
        return out

    def _rules_for_device(self, key: bytes | None) -> tuple[_Compiled, ...]:
        device = key.decode("utf-8", "replace") if key is not None else ""
        rules = tuple(r for r in self._rules.values() if r.devices.match(device))
        if len(self._device_rules) >= _DEVICE_CACHE_ENTRIES:
            del self._device_rules[next(iter(self._device_rules))]
        self._device_rules[key] = rules
        return rules

    def _reading(
        self, record: Record, rules: tuple[_Compiled, ...], elapsed_ms: int, out: list[Record]
    ) -> None:
        reading = orjson.loads(record.value)
        device: str = reading["device_id"]
        metric: str = reading["metric"]
        value = reading["value"]
        ts: int = reading["ts"]
        message_id = next((v.decode() for n, v in record.headers if n == _MESSAGE_ID), None)
        number = value.__class__ is float or value.__class__ is int
        for compiled in rules:
            if not compiled.metrics.match(metric):
                continue
            rule = compiled.rule
            if not number and not isinstance(rule, StalenessRule):
                self.stats.ignored_not_a_number += 1
                continue
            series = self._touch((rule.id, device, metric), rule.kind, elapsed_ms)
            if series is None:
                continue
            series.last_seen_ms = elapsed_ms
            series.last_message_id = message_id
            hit = _Hit(compiled, device, metric, series, ts, message_id, elapsed_ms)
            if isinstance(rule, StalenessRule):
                if series.raised:
                    self._clear(hit, out, value=float(value) if number else None)
                series.suppressed = False
            elif isinstance(rule, ThresholdRule):
                self._threshold(hit, rule, float(value), out)
            else:
                self._rate(hit, rule, float(value), out)

    def _threshold(self, hit: _Hit, rule: ThresholdRule, value: float, out: list[Record]) -> None:
        series = hit.series
        if series.raised or series.suppressed:
            if _recovered(rule, value):
                if series.raised:
                    self._clear(hit, out, value=value)
                series.suppressed = False
            return
        if not _breached(rule, value):
            series.pending_since = None
            return
        if rule.for_s > 0:
            if series.pending_since is None:
                series.pending_since = hit.ts
            if hit.ts - series.pending_since < rule.for_s * 1000:
                return
        series.pending_since = None
        self._raise(hit, out, value=value)

    def _rate(self, hit: _Hit, rule: RateOfChangeRule, value: float, out: list[Record]) -> None:
        series = hit.series
        samples = series.samples
        if samples is None:
            samples = series.samples = deque(maxlen=MAX_RATE_SAMPLES)
        ts = hit.ts
        if samples and ts <= samples[-1][0]:
            return  # out of order or a copy: no rate from it
        samples.append((ts, value))
        oldest = ts - rule.window_s * 1000
        while samples[0][0] < oldest:
            samples.popleft()
        if len(samples) < 2:  # noqa: PLR2004 - a rate needs two readings
            return
        first_ts, first_value = samples[0]
        rate = (value - first_value) / ((ts - first_ts) / 1000)
        fast = abs(rate) > rule.max_rate_per_s
        if series.raised or series.suppressed:
            if not fast:
                if series.raised:
                    self._clear(hit, out, value=value, rate=rate)
                series.suppressed = False
        elif fast:
            self._raise(hit, out, value=value, rate=rate)

    def _raise(
        self,
        hit: _Hit,
        out: list[Record],
        *,
        value: float | None = None,
        rate: float | None = None,
    ) -> None:
        """Raise the series' alert unless the rule's rate limit suppresses it."""
        rule = hit.compiled.rule
        series = hit.series
        if not self._take_token(rule, hit.device, hit.elapsed_ms):
            series.suppressed = True
            self.stats.suppressed[rule.id] += 1
            return
        trigger = hit.trigger or f"ts/{hit.ts}"
        aid = alert_id(rule.id, hit.device, hit.metric, trigger)
        series.raised = True
        series.alert_id = aid
        series.raised_at = hit.ts
        self.stats.raised[rule.id] += 1
        event = AlertEvent(
            state="raised",
            alert_id=aid,
            event_id=event_id(aid, "raised", trigger),
            rule_id=rule.id,
            kind=rule.kind,
            severity=rule.severity,
            device_id=hit.device,
            metric=hit.metric,
            value=value,
            ts=hit.ts,
            reading_message_id=hit.trigger,
            condition=hit.compiled.condition,
            reason="condition",
            rate_per_s=rate,
        )
        out.append(alert_record(event, self._topic, self._gateway_id))

    def _clear(
        self,
        hit: _Hit,
        out: list[Record],
        *,
        value: float | None = None,
        rate: float | None = None,
        reason: str = "recovered",
    ) -> None:
        """Clear the series' raised alert."""
        series = hit.series
        aid = series.alert_id or ""
        rule = hit.compiled.rule
        self.stats.cleared[rule.id] += 1
        event = AlertEvent(
            state="cleared",
            alert_id=aid,
            event_id=event_id(aid, "cleared", hit.trigger or reason),
            rule_id=rule.id,
            kind=series.kind,
            severity=rule.severity,
            device_id=hit.device,
            metric=hit.metric,
            value=value,
            ts=hit.ts,
            reading_message_id=hit.trigger,
            condition=hit.compiled.condition,
            reason=reason,
            raised_at=series.raised_at,
            rate_per_s=rate,
        )
        series.raised = False
        series.alert_id = None
        series.pending_since = None
        out.append(alert_record(event, self._topic, self._gateway_id))

    def _take_token(self, rule: Rule, device: str, elapsed_ms: int) -> bool:
        capacity = float(rule.max_raised_per_minute)
        key = (rule.id, device)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._settings.max_series:
                del self._buckets[next(iter(self._buckets))]
            bucket = self._buckets[key] = [capacity, float(elapsed_ms)]
        # The clock is monotonic; the clamp only guards a caller that passes an older time.
        refill_ms = max(0.0, elapsed_ms - bucket[1])
        tokens = min(capacity, bucket[0] + refill_ms * capacity / 60_000)
        bucket[1] = float(elapsed_ms)
        if tokens < 1:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1
        return True

    # ------------------------------------------------------------------ timer
    def tick(self, now_ms: int, elapsed_ms: int) -> list[Record]:
        """Settle orphaned series and evaluate staleness; at most once per check interval.

        ``now_ms`` (wall clock, epoch ms) stamps the records; ``elapsed_ms`` (monotonic) paces
        the checks and measures silences.
        """
        if elapsed_ms < self._next_tick_ms:
            return []
        self._next_tick_ms = elapsed_ms + self._interval_ms
        out: list[Record] = []
        if self._orphans:
            self._orphans = False
            self._settle_orphans(now_ms, elapsed_ms, out)
        if self._staleness:
            self._stale(now_ms, elapsed_ms, out)
        return out

    def _settle_orphans(self, now_ms: int, elapsed_ms: int, out: list[Record]) -> None:
        rules = self._rules
        for key in list(self._series):
            rule_id, device, metric = key
            compiled = rules.get(rule_id)
            series = self._series[key]
            if (
                compiled is not None
                and compiled.rule.kind == series.kind
                and compiled.selects(device, metric)
            ):
                continue
            self._undo.setdefault(key, series.snapshot())
            if series.raised:
                retired = self._retired.get(rule_id) or _unknown_rule(rule_id)
                hit = _Hit(retired, device, metric, series, now_ms, None, elapsed_ms)
                self._clear(hit, out, reason="rule_removed")
            del self._series[key]
        self._retired = {}

    def _stale(self, now_ms: int, elapsed_ms: int, out: list[Record]) -> None:
        rules = self._rules
        for key, series in list(self._series.items()):
            if series.raised or series.suppressed:
                continue
            compiled = rules.get(key[0])
            if compiled is None or not isinstance(compiled.rule, StalenessRule):
                continue
            if elapsed_ms - series.last_seen_ms < compiled.rule.silent_for_s * 1000:
                continue
            self._undo.setdefault(key, series.snapshot())
            # The silence began at last_seen_ms on the monotonic clock; name it in wall time.
            began_ms = now_ms - (elapsed_ms - series.last_seen_ms)
            trigger = series.last_message_id or f"silent/{began_ms}"
            hit = _Hit(compiled, key[1], key[2], series, now_ms, trigger, elapsed_ms)
            self._raise(hit, out)

    # ------------------------------------------------------------------ state
    def _touch(self, key: SeriesKey, kind: str, elapsed_ms: int) -> _Series | None:
        series = self._series.get(key)
        if key not in self._undo:
            self._undo[key] = series.snapshot() if series is not None else None
        if series is not None:
            self._series.move_to_end(key)
            return series
        if len(self._series) >= self._settings.max_series and not self._evict_one():
            self.stats.evicted += 1
            return None
        series = self._series[key] = _Series(kind, last_seen_ms=elapsed_ms)
        return series

    def _evict_one(self) -> bool:
        for scanned, (key, series) in enumerate(self._series.items()):
            if scanned >= _EVICTION_SCAN:
                return False
            if not series.busy:
                self._undo.setdefault(key, series.snapshot())
                del self._series[key]
                self.stats.evicted += 1
                return True
        return False

    def state(self) -> bytes:
        """The state to store with the current group's block (see the module docstring).

        Encoded again only when a stored field changed in this group (a raise, a clear, a
        pending timer, a suppressed episode, a staleness series added or forgotten), so a
        group of readings that change nothing costs no encoding.
        """
        if self._state_stale or self._stored_fields_changed():
            self._state = self._encode()
            self._state_stale = False
        return self._state

    def _stored_fields_changed(self) -> bool:
        series = self._series
        for key, snap in self._undo.items():
            now = series.get(key)
            if snap is None or now is None:
                if (snap is None) != (now is None):
                    return True
                continue
            if snap[:6] != now.snapshot()[:6]:
                return True
        return False

    def _encode(self) -> bytes:
        """The stored state, at most :data:`MAX_STATE_BYTES` (raised series kept first)."""
        raised: list[list[object]] = []
        others: list[list[object]] = []
        staleness_keys = 0
        for (rule_id, device, metric), s in self._series.items():
            row: list[object] = [
                rule_id, device, metric, s.kind, s.raised, s.alert_id, s.raised_at,
                s.pending_since, s.suppressed,
            ]  # fmt: skip
            if s.raised:
                raised.append(row)
            elif s.busy:
                others.append(row)
            elif s.kind == "staleness" and staleness_keys < MAX_PERSISTED_STALENESS_KEYS:
                staleness_keys += 1
                others.append(row)
        encoded = orjson.dumps({"v": STATE_VERSION, "series": raised + others})
        if len(encoded) <= MAX_STATE_BYTES:
            return encoded
        encoded = orjson.dumps({"v": STATE_VERSION, "series": raised})
        while len(encoded) > MAX_STATE_BYTES:
            raised = raised[: len(raised) * MAX_STATE_BYTES // len(encoded) * 9 // 10]
            encoded = orjson.dumps({"v": STATE_VERSION, "series": raised})
        if not self._warned_state_size:
            self._warned_state_size = True
            _log.warning(
                "The alert state is too large to store whole; after a crash some alerts may be "
                "raised again or not cleared. Lower alerts.max_series or narrow the rules.",
                extra={"series": len(self._series), "max_state_bytes": MAX_STATE_BYTES},
            )
        return encoded

    def load(self, state: bytes, elapsed_ms: int) -> int:
        """Take a state written by :meth:`state` (at start); returns the series loaded.

        Staleness series start their silence at ``elapsed_ms`` (the monotonic clock).
        """
        if not state:
            return 0
        try:
            document = orjson.loads(state)
            if document["v"] != STATE_VERSION:
                raise ValueError(document["v"])  # noqa: TRY301 - one handler for every defect
            rows = [
                (
                    (str(r[0]), str(r[1]), str(r[2])),
                    _Series(str(r[3]), bool(r[4]), r[5], int(r[6]), r[7], bool(r[8]), elapsed_ms),
                )
                for r in document["series"]
            ]
        except (ValueError, KeyError, TypeError, IndexError):
            _log.warning(
                "Ignored an unreadable alert state; alerts raised before the restart will not "
                "be cleared.",
                extra={"state_bytes": len(state)},
            )
            return 0
        self._series = OrderedDict(rows)
        self._state = state
        self._state_stale = False
        self._orphans = bool(rows)
        return len(rows)

    def commit(self) -> None:
        """The group's block (with :meth:`state`) is stored: forget the undo log."""
        self._undo.clear()

    def rollback(self) -> None:
        """The group's block was not stored: go back to the state stored last."""
        for key, snap in self._undo.items():
            if snap is None:
                self._series.pop(key, None)
            else:
                self._series[key] = _Series.restore(snap)
        self._undo.clear()
        self._state_stale = True


def _replayed(record: Record, replayed: AbstractSet[str]) -> bool:
    for name, value in record.headers:
        if name in _MESSAGE_ID_HEADERS and value.decode("ascii", "replace") in replayed:
            return True
    return False


def _unknown_rule(rule_id: str) -> _Compiled:
    """Stands in for a rule that is gone and unknown (removed while the agent was down)."""
    rule = StalenessRule(id=rule_id, kind="staleness", severity=Severity.INFO, silent_for_s=1)
    compiled = _Compiled.of(rule)
    return _Compiled(rule, compiled.devices, compiled.metrics, {})
