"""`etl-worker` (also `python -m worker`): thin wiring of subcommands to the worker's parts."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from google.auth.exceptions import DefaultCredentialsError
from pydantic import ValidationError

from worker import constants as c
from worker import logs, preflight, tracing
from worker.errors import MessageDecodeError
from worker.events import PrintEventBus
from worker.handlers.base import Delivery, Redelivery
from worker.logs import redact
from worker.messages import decode_request
from worker.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

log = logging.getLogger(__name__)
OUTPUT_WIDTH = 200


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"etl-worker: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    json_logs = settings.json_logs if args.json_logs is None else args.json_logs
    logs.configure(args.log_level or settings.log_level, json_logs)
    try:
        preflight.check(settings, _NEEDS[args.command])
        tracing.configure()  # OTEL_TRACES_EXPORTER / OTEL_METRICS_EXPORTER; off when unset
        try:
            return _COMMANDS[args.command](settings, args)
        finally:
            tracing.shutdown()  # what the exporters still hold, before the process exits
    except (preflight.PreflightError, tracing.TracingSettingsError, DefaultCredentialsError) as exc:
        # A client may still find no credentials later (e.g. the ones found expired): same line.
        message = (str(exc) if not isinstance(exc, DefaultCredentialsError)
                   else preflight.no_credentials(_NEEDS[args.command]))
        print(f"etl-worker: {message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="etl-worker", description=__doc__)
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR (default: LOG_LEVEL)")
    parser.add_argument("--json-logs", action=argparse.BooleanOptionalAction, default=None,
                        help="JSON logs for Cloud Logging (default: ETL_JSON_LOGS, true)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="subscribe and process requests until SIGTERM/SIGINT")
    run = sub.add_parser("run", help="process one request without Pub/Sub, printing its events")
    run.add_argument("--request", required=True, type=Path, help="request JSON file ('-': stdin)")
    run.add_argument("--run-id", help="run id (default: from etl_run_id, else random)")
    sub.add_parser("setup", help="create topics and subscriptions (idempotent)")
    publish = sub.add_parser("publish", help="publish a request like Django does")
    publish.add_argument("--request", required=True, type=Path, help="request JSON file ('-': stdin)")
    publish.add_argument("--attribute", action="append", default=[], metavar="KEY=VALUE")
    check = sub.add_parser("cdc-check", help="check a cdc request's source (wal_level, privileges, "
                           "publication, slot) without running it")
    check.add_argument("--request", required=True, type=Path, help="request JSON file ('-': stdin)")
    _add_operator_commands(sub)
    _add_alert_dashboard_schedule_commands(sub)
    return parser


def _add_operator_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    replay = sub.add_parser("replay", help="show dead-lettered requests; republish the selected ones")
    replay.add_argument("--run-id", action="append", default=[], help="replay this run (repeatable)")
    replay.add_argument("--data-source-id", action="append", type=int, default=[],
                        help="replay this data source's requests (repeatable)")
    replay.add_argument("--all", action="store_true", help="replay every dead-lettered request")
    replay.add_argument("--limit", type=_count, help="replay at most this many")
    replay.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    replay.add_argument("--json", action="store_true", help="one JSON object per dead letter, then a summary")
    runs = sub.add_parser("runs", help="recent runs (failures too) from the run history, newest first")
    runs.add_argument("--data-source-id", type=int, help="only this data source's runs")
    runs.add_argument("--table", help="only runs into this destination table")
    runs.add_argument("--outcome", choices=c.RUN_OUTCOMES, help="only runs in this state")
    runs.add_argument("--since", type=_since,
                      help="only runs with an event since: 7d, 12h, 30m or an ISO time")
    runs.add_argument("--summary", action="store_true",
                      help="per-table health: success rate, last success, median duration, rows/day")
    runs.add_argument("--limit", type=_count, default=20, help="how many (default 20)")
    watch = sub.add_parser("watch", help="live progress of runs from the events topic")
    watch.add_argument("--run-id", help="follow this run and exit when it ends")


def _add_alert_dashboard_schedule_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    notify = sub.add_parser("notify", help="alert on Slack and/or by e-mail from the events topic")
    notify.add_argument("--rules", help="rules file, TOML or JSON (default: ETL_NOTIFY_RULES_FILE)")
    dashboard = sub.add_parser("dashboard", help="a web page of active runs, history and table health")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--since", type=_since, help="history shown: 7d (default), 12h, or an ISO time")
    schedule = sub.add_parser("schedule", help="Cloud Scheduler jobs from a schedule file")
    actions = schedule.add_subparsers(dest="schedule_action", required=True)
    apply = actions.add_parser("apply", help="create or update the file's jobs (idempotent)")
    apply.add_argument("file", type=Path, help="schedule file, TOML or JSON")
    apply.add_argument("--dry-run", action="store_true", help="show the changes; make none")
    apply.add_argument("--prune", action="store_true",
                       help="also delete jobs with ETL_SCHEDULER_JOB_PREFIX that the file no longer has")
    apply.add_argument("--location", help="Cloud Scheduler region (default: ETL_SCHEDULER_LOCATION)")
    scheduler = sub.add_parser("scheduler", help="publish a schedule file's requests on time, in-process "
                               "(the local stand-in for Cloud Scheduler)")
    scheduler.add_argument("file", type=Path, help="schedule file, TOML or JSON")


def _since(text: str) -> datetime:
    """`7d`, `12h`, `30m` ago, or an ISO date/time (UTC when no offset)."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("give 7d, 12h, 30m or an ISO date/time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _read(path: Path) -> bytes:
    return sys.stdin.buffer.read() if str(path) == "-" else path.read_bytes()


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from worker.app import build_worker, worker_bus
    from worker.events import PubSubEventBus
    from worker.history import flush_history

    bus = worker_bus(settings, PubSubEventBus(settings.gcp_project_id, settings.etl_events_topic))
    worker = build_worker(settings, bus)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        worker.stop_requested.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.serve()
    flush_history(bus)
    return 0


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from worker.app import build_handler, worker_bus
    from worker.history import flush_history

    bus = PrintEventBus(sys.stdout)
    recorded = worker_bus(settings, bus)
    handler = build_handler(settings, recorded, Redelivery(redelivers=False))  # one try, no transport
    attributes = {c.ATTR_RUN_ID: args.run_id} if args.run_id else {}
    delivery = Delivery(data=_read(args.request), message_id=f"local-{uuid.uuid4().hex[:12]}",
                        attributes=attributes)
    handler.handle(delivery, threading.Event())
    flush_history(recorded)
    return 0 if bus.last_event_type == c.RUN_COMPLETED else 1


def cmd_cdc_check(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.cdc_check import cdc_check
    from worker.secrets import SecretResolver

    return cdc_check(_read(args.request), SecretResolver.from_settings(settings), sys.stdout)


def cmd_setup(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.topology import setup

    for item in setup(settings):
        print(item)
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    data = _read(args.request)
    try:
        decode_request(data)  # the contract, enforced where it is published (no topic schema can)
    except MessageDecodeError as exc:
        print(f"etl-worker: not published: {redact(str(exc))}", file=sys.stderr)
        return 2
    attributes = dict(item.split("=", 1) for item in args.attribute)
    from google.cloud import pubsub_v1  # only the commands that talk to Pub/Sub pay for its import

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(settings.gcp_project_id, settings.etl_request_topic)
    message_id = publisher.publish(topic, data, **attributes).result(timeout=60)
    print(message_id)
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.replay import Selection, replay

    selection = Selection(run_ids=frozenset(args.run_id), data_source_ids=frozenset(args.data_source_id),
                          everything=args.all, limit=args.limit)
    return replay(settings, selection, dry_run=args.dry_run, out=sys.stdout, as_json=args.json)


def cmd_runs(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.runs import runs

    return runs(settings, limit=args.limit, data_source_id=args.data_source_id, console=_console(),
                table=args.table, outcome=args.outcome, since=args.since, summary=args.summary)


def cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.watch import watch

    return watch(settings, run_id=args.run_id, console=_console())


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_notify(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.alert_rules import RulesFileError
    from worker.commands.notify import notify

    try:
        return notify(settings, stop=_stop_on_signals(), rules_file=args.rules)
    except (RulesFileError, ValueError) as exc:
        print(f"etl-worker: {redact(str(exc))}", file=sys.stderr)
        return 2


def cmd_dashboard(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.dashboard import serve_dashboard

    return serve_dashboard(settings, host=args.host, port=args.port, since=args.since,
                           stop=_stop_on_signals())


def cmd_schedule(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.schedules import NO_CREDENTIALS, ScheduleFileError, apply_command

    try:
        return apply_command(settings, args.file, dry_run=args.dry_run, prune=args.prune,
                             location=args.location, out=sys.stdout)
    except ScheduleFileError as exc:
        print(f"etl-worker: {redact(str(exc))}", file=sys.stderr)
        return 2
    except DefaultCredentialsError:
        print(f"etl-worker: {NO_CREDENTIALS}", file=sys.stderr)
        return 2


def cmd_scheduler(settings: Settings, args: argparse.Namespace) -> int:
    from worker.commands.local_scheduler import run_scheduler
    from worker.commands.schedules import ScheduleFileError

    try:
        return run_scheduler(settings, args.file, stop=_stop_on_signals())
    except ScheduleFileError as exc:
        print(f"etl-worker: {redact(str(exc))}", file=sys.stderr)
        return 2


def _console() -> Console:
    """stdout; wide when it is not a terminal, so piped tables keep one line per row."""
    from rich.console import Console  # only the table commands: `run` and `serve` never pay for it

    return Console(width=None if sys.stdout.isatty() else OUTPUT_WIDTH)


# The Google services each command talks to (checked before it starts).
_NEEDS: dict[str, tuple[preflight.Service, ...]] = {
    "serve": ("pubsub", "bigquery"), "run": ("bigquery",), "setup": ("pubsub",), "publish": ("pubsub",),
    "replay": ("pubsub",), "runs": ("bigquery",), "watch": ("pubsub",),
}
_COMMANDS = {"serve": cmd_serve, "run": cmd_run, "setup": cmd_setup, "publish": cmd_publish,
             "replay": cmd_replay, "runs": cmd_runs, "watch": cmd_watch}
_NEEDS |= {"notify": ("pubsub",), "dashboard": ("pubsub", "bigquery"), "schedule": (),
           "scheduler": ("pubsub",), "cdc-check": ()}
_COMMANDS |= {"notify": cmd_notify, "dashboard": cmd_dashboard, "schedule": cmd_schedule,
              "scheduler": cmd_scheduler, "cdc-check": cmd_cdc_check}
