"""What an event means for alerting: a pure function of the event, the state and the rules.

An incident is about a *subject*: a data source's destination table, or (for a `per =
"data_source"` rule) the whole data source. It has a kind (`failure`, `quality`, `slow`) and stays
open until the subject succeeds again (a `run.completed`; for quality and slow, one without the
problem), which sends one recovery message. While it is open, more bad events alert nobody.

`decide` returns the alerts to send and the subjects' new tracks; notify sends, then stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from worker import constants as c
from worker.commands.alert_rules import ConsecutiveFailures, QualityWarning, Rules, SlowRun
from worker.logs import redact

Kind = Literal["failure", "quality", "slow"]
ALERT_ID_NAMESPACE = uuid.UUID("0b0f8a52-91d4-4c0e-a0c7-5be6b7c1e3a4")
MAX_TEXT = 600


@dataclass(frozen=True)
class Subject:
    data_source_id: int | None
    dest_table: str | None  # None: the whole data source

    @property
    def key(self) -> str:
        return f"{self.data_source_id}/{self.dest_table or '*'}"

    @property
    def label(self) -> str:
        ds = self.data_source_id
        source = "unknown data source" if ds is None else f"data source {ds}"
        return f"{self.dest_table} ({source})" if self.dest_table else source


@dataclass(frozen=True)
class Incident:
    kind: Kind
    opened_at: str
    run_id: str
    reason: str
    events: int = 1  # bad events while open (the opening one included)


@dataclass(frozen=True)
class Track:
    """What notify remembers about one subject."""

    failures: int = 0  # failed deliveries since the last run.completed
    last_success_at: str | None = None
    incidents: Mapping[str, Incident] = field(default_factory=dict)

    def open(self, kind: Kind) -> Incident | None:
        return self.incidents.get(kind)


@dataclass(frozen=True)
class Alert:
    alert_id: str
    status: Literal["open", "resolved"]
    kind: Kind
    subject: Subject
    title: str
    details: tuple[tuple[str, str], ...]
    run_id: str
    occurred_at: str


@dataclass(frozen=True)
class Decision:
    alerts: list[Alert]
    tracks: dict[Subject, Track]  # only the subjects that changed


@dataclass(frozen=True)
class _Event:
    """The fields of a run event that alerting reads."""

    raw: Mapping[str, Any]
    event_id: str
    event_type: str
    run_id: str
    occurred_at: str
    table: Subject
    source: Subject

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> _Event:
        """Raises KeyError / ValueError on what is not a run event (notify acks and skips it)."""
        _moment(str(raw["occurred_at"]))
        if raw["event_type"] in (c.RUN_FAILED, c.RUN_DEAD_LETTERED) and not isinstance(raw["error"], dict):
            raise ValueError(f"{raw['event_type']} without an error")
        ds = raw.get("data_source_id")
        return cls(raw, str(raw["event_id"]), str(raw["event_type"]), str(raw["run_id"]),
                   str(raw["occurred_at"]), Subject(ds, raw.get("dest_table")), Subject(ds, None))

    @property
    def duration_s(self) -> float:
        return float(self.raw.get("duration_seconds") or 0.0)

    def error_text(self) -> str:
        error = self.raw.get("error") or {}
        return _short(f"{error.get('type', 'Error')}: {error.get('message', '')}")


def subjects_of(raw: Mapping[str, Any]) -> tuple[Subject, Subject]:
    event = _Event.of(raw)
    return event.table, event.source


def decide(raw: Mapping[str, Any], tracks: Mapping[Subject, Track], rules: Rules) -> Decision:
    """The alerts `raw` causes and the tracks it changes (raises KeyError on a foreign event)."""
    event = _Event.of(raw)
    state = _State(event, dict(tracks))
    handler = _HANDLERS.get(event.event_type)
    if handler is not None:
        handler(state, rules)
    return Decision(state.alerts, state.changed)


class _State:
    """Tracks being changed by one event, and the alerts it raises."""

    def __init__(self, event: _Event, tracks: dict[Subject, Track]) -> None:
        self.event = event
        self._tracks = tracks
        self.changed: dict[Subject, Track] = {}
        self.alerts: list[Alert] = []

    def track(self, subject: Subject) -> Track:
        return self._tracks.get(subject) or Track()

    def put(self, subject: Subject, track: Track) -> None:
        self._tracks[subject] = self.changed[subject] = track

    def open(self, subject: Subject, kind: Kind, title: str, details: list[tuple[str, str]]) -> None:
        """Open an incident (one alert), or count one more bad event of the open one."""
        track = self.track(subject)
        current = track.open(kind)
        if current is not None:
            incidents = {**track.incidents, kind: replace(current, events=current.events + 1)}
            self.put(subject, replace(track, incidents=incidents))
            return
        incident = Incident(kind, self.event.occurred_at, self.event.run_id, title)
        self.put(subject, replace(track, incidents={**track.incidents, kind: incident}))
        self._alert("open", kind, subject, title, details)

    def close(self, subject: Subject, kind: Kind, title: str, details: list[tuple[str, str]]) -> None:
        track = self.track(subject)
        incident = track.open(kind)
        if incident is None:
            return
        self.put(subject, replace(track, incidents={k: v for k, v in track.incidents.items() if k != kind}))
        since = [("open since", _when(incident.opened_at)), ("opened by", incident.reason)]
        self._alert("resolved", kind, subject, title, [*details, *since])

    def _alert(self, status: Literal["open", "resolved"], kind: Kind, subject: Subject, title: str,
               details: list[tuple[str, str]]) -> None:
        name = f"{self.event.event_id}/{status}/{kind}/{subject.key}"
        self.alerts.append(Alert(
            alert_id=str(uuid.uuid5(ALERT_ID_NAMESPACE, name)), status=status, kind=kind, subject=subject,
            title=redact(title), details=tuple((k, redact(v)) for k, v in details),
            run_id=self.event.run_id, occurred_at=self.event.occurred_at))


def _run_details(event: _Event) -> list[tuple[str, str]]:
    return [("run", event.run_id), ("attempt", str(event.raw.get("attempt", "?"))),
            ("when", _when(event.occurred_at))]


def _on_completed(state: _State, rules: Rules) -> None:
    event = state.event
    rows = int(event.raw.get("rows_loaded") or 0)
    details = [*_run_details(event), ("rows loaded", f"{rows:,}")]
    for subject in (event.table, event.source):
        track = state.track(subject)
        last = max(filter(None, (track.last_success_at, event.occurred_at)), key=_moment)
        state.put(subject, replace(track, failures=0, last_success_at=last))
        state.close(subject, "failure", f"{subject.label} recovered: run {event.run_id} committed", details)
    _quality(state, rules, details)
    _slowness(state, rules, details, completed=True)


def _quality(state: _State, rules: Rules, details: list[tuple[str, str]]) -> None:
    event = state.event
    quality = event.raw.get("quality") or {}
    problems = [str(v.get("rule", v)) if isinstance(v, dict) else str(v)
                for v in quality.get("violations") or []]
    warnings = [str(w) for w in event.raw.get("warnings") or []]
    rule = rules.first(QualityWarning, event.table.data_source_id, event.table.dest_table)
    if rule is not None and (problems or warnings):
        text = "; ".join(warnings) or ", ".join(problems)
        state.open(event.table, "quality", f"{event.table.label}: quality warning",
                   [*details, ("warnings", _short(text))])
    elif not problems and not warnings:
        state.close(event.table, "quality", f"{event.table.label}: quality back to normal", details)


def _slowness(state: _State, rules: Rules, details: list[tuple[str, str]], completed: bool) -> None:
    event = state.event
    rule = rules.first(SlowRun, event.table.data_source_id, event.table.dest_table)
    took = ("duration" if completed else "running for", f"{event.duration_s:.1f}s")
    if rule is not None and event.duration_s > rule.seconds:
        state.open(event.table, "slow", f"{event.table.label}: run slower than {rule.seconds:g}s",
                   [*details, took])
    elif completed:
        state.close(event.table, "slow", f"{event.table.label}: runs back within their time",
                    [*details, took])


def _on_progress(state: _State, rules: Rules) -> None:
    _slowness(state, rules, _run_details(state.event), completed=False)


def _stale(state: _State) -> bool:
    """A failure older than the table's last success (a late delivery of an old attempt)."""
    last = state.track(state.event.table).last_success_at
    return last is not None and _moment(state.event.occurred_at) <= _moment(last)


def _on_failed(state: _State, rules: Rules) -> None:
    event = state.event
    if _stale(state):
        return
    for subject in (event.table, event.source):
        track = state.track(subject)
        state.put(subject, replace(track, failures=track.failures + 1))
    error = event.raw.get("error") or {}
    details = [*_run_details(event), ("error", event.error_text())]
    permanent = not event.raw["will_retry"] and not error.get("retryable")
    if permanent and rules.permanent_failure:  # (retryable and no retry: run.dead_lettered follows)
        state.open(event.table, "failure", f"{event.table.label} failed permanently", details)
    for rule in rules.of(ConsecutiveFailures):
        subject = event.table if rule.per == "table" else event.source
        count = state.track(subject).failures
        if rule.matches(event.table.data_source_id, event.table.dest_table) and count >= rule.count:
            state.open(subject, "failure", f"{subject.label}: {_deliveries(count)} in a row",
                       [*details, ("consecutive failures", str(count))])


def _on_dead_lettered(state: _State, rules: Rules) -> None:
    event = state.event
    if _stale(state) or not rules.dead_lettered:
        return
    details = [*_run_details(event), ("error", event.error_text()),
               ("dead-letter topic", str(event.raw.get("dead_letter_topic", ""))),
               ("once fixed", f"etl-worker replay --run-id {event.run_id}")]
    state.open(event.table, "failure", f"{event.table.label}: request dead-lettered", details)


_HANDLERS = {c.RUN_COMPLETED: _on_completed, c.RUN_PROGRESS: _on_progress, c.RUN_FAILED: _on_failed,
             c.RUN_DEAD_LETTERED: _on_dead_lettered}


def _deliveries(count: int) -> str:
    return f"{count} failed deliveries" if count != 1 else "1 failed delivery"


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _when(text: str) -> str:
    try:
        return _moment(text).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return text


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"
