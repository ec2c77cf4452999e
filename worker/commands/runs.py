"""`etl-worker runs`: recent runs, failures included, and per-table health, from the run history.

The history (`_etl_runs`, worker/history.py) has every delivery's outcome: committed, failed,
retrying, dead-lettered, replayed, running. A dataset without one (ETL_HISTORY off, or runs made
before it existed) falls back to the ledger, which records committed runs only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from google.api_core import exceptions as gexc
from google.cloud import bigquery
from rich import box
from rich.console import Console
from rich.table import Table

from worker.history import HistoryTable, RunRecord, latest_sql, record_from_row
from worker.ledger import LedgerEntry
from worker.modes import mode_of
from worker.settings import Settings
from worker.sinks import bigquery_client

COLUMNS = ("committed at (UTC)", "run id", "source", "table", "mode", "status", "rows", "window",
           "duration")
HISTORY_COLUMNS = ("last event (UTC)", "run id", "source", "table", "mode", "status", "attempt", "rows",
                   "duration", "window or error")
SUMMARY_COLUMNS = ("source", "table", "runs", "success rate", "last success (UTC)", "median duration",
                   "rows/day", "now")
DEFAULT_SINCE = timedelta(days=7)
ERROR_CHARS = 90


@dataclass(frozen=True)
class Filters:
    data_source_id: int | None = None
    table: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    limit: int = 20


def runs(settings: Settings, *, limit: int, data_source_id: int | None, console: Console,
         table: str | None = None, outcome: str | None = None, since: datetime | None = None,
         summary: bool = False) -> int:
    filters = Filters(data_source_id, table, outcome, since, limit)
    client = bigquery_client.make_bigquery_client(settings.gcp_project_id, settings.bigquery_emulator_host)
    history = HistoryTable(client, settings.gcp_project_id, settings.bigquery_dataset,
                           bigquery_client.api_retry(settings.bigquery_emulator_host))
    if not _exists(client, history.table_id):
        return _from_ledger(settings, filters, console)
    if summary:
        window = filters.since or datetime.now(UTC) - DEFAULT_SINCE
        records = recent_runs(history, Filters(data_source_id, table, None, window, 10_000))
        console.print(summary_table(summarise(records, window, datetime.now(UTC))))
    else:
        console.print(history_table(recent_runs(history, filters)))
    return 0


def recent_runs(history: HistoryTable, filters: Filters) -> list[RunRecord]:
    """Each run's state from its newest event, newest first, filtered."""
    conditions, params = [], [bigquery.ScalarQueryParameter("limit", "INT64", filters.limit if not
                                                               filters.outcome else 10_000)]
    if filters.data_source_id is not None:
        conditions.append("data_source_id = @data_source_id")
        params.append(bigquery.ScalarQueryParameter("data_source_id", "INT64", filters.data_source_id))
    if filters.table:
        conditions.append("dest_table = @dest_table")
        params.append(bigquery.ScalarQueryParameter("dest_table", "STRING", filters.table))
    if filters.since:
        conditions.append("occurred_at >= @since")
        params.append(bigquery.ScalarQueryParameter("since", "TIMESTAMP", filters.since))
    records = [record_from_row(row) for row in history.query(latest_sql(conditions), params)]
    if filters.outcome:
        records = [r for r in records if r.outcome == filters.outcome][:filters.limit]
    return records


# --- per-table health ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TableHealth:
    data_source_id: int | None
    dest_table: str | None
    runs: int
    success_rate: float | None  # committed / finished (committed, failed, dead-lettered); None: none
    last_success: datetime | None
    median_duration_s: float | None
    rows_per_day: float
    now: str  # the newest run's state


def summarise(records: Sequence[RunRecord], since: datetime, now: datetime) -> list[TableHealth]:
    """Health per data source and table over the runs since `since`."""
    by_table: dict[tuple[int | None, str | None], list[RunRecord]] = {}
    for record in records:
        by_table.setdefault((record.data_source_id, record.dest_table), []).append(record)
    days = max((now - since).total_seconds() / 86400, 1 / 24)
    return [_health(key, group, days) for key, group in sorted(by_table.items(), key=lambda kv: str(kv[0]))]


def _health(key: tuple[int | None, str | None], group: list[RunRecord], days: float) -> TableHealth:
    committed = [r for r in group if r.outcome == "committed"]
    finished = [r for r in group if r.outcome in ("committed", "failed", "dead-lettered")]
    newest = max(group, key=lambda r: r.last_at)
    return TableHealth(
        data_source_id=key[0], dest_table=key[1], runs=len(group),
        success_rate=len(committed) / len(finished) if finished else None,
        last_success=max((r.last_at for r in committed), default=None),
        median_duration_s=statistics.median(r.duration_seconds for r in committed) if committed else None,
        rows_per_day=sum(r.rows_loaded for r in committed) / days, now=newest.outcome,
    )


# --- tables --------------------------------------------------------------------------------------
def history_table(records: Sequence[RunRecord]) -> Table:
    table = Table(*HISTORY_COLUMNS, box=box.SIMPLE_HEAD, caption_justify="left",
                  caption=f"{len(records)} run(s), newest first, from the run history" if records
                  else "no runs in the history")
    for r in records:
        table.add_row(_when(r.last_at), r.run_id, _text(r.data_source_id), r.dest_table or "-",
                      r.load_type or "-", r.outcome, str(r.attempt), f"{r.rows_loaded:,}",
                      f"{r.duration_seconds:.1f}s", _detail(r))
    return table


def _detail(record: RunRecord) -> str:
    if record.window or record.error:
        return record.window or (record.error or "")[:ERROR_CHARS]
    return "whole table" if record.outcome == "committed" else ""


def summary_table(health: Sequence[TableHealth]) -> Table:
    table = Table(*SUMMARY_COLUMNS, box=box.SIMPLE_HEAD, caption_justify="left",
                  caption=f"{len(health)} table(s)" if health else "no runs in the period")
    for h in health:
        rate = "-" if h.success_rate is None else f"{h.success_rate:.0%}"
        median = "-" if h.median_duration_s is None else f"{h.median_duration_s:.1f}s"
        last = _when(h.last_success) if h.last_success else "never"
        table.add_row(_text(h.data_source_id), h.dest_table or "-", str(h.runs), rate, last, median,
                      f"{h.rows_per_day:,.0f}", h.now)
    return table


def runs_table(entries: Sequence[LedgerEntry]) -> Table:
    """One row per ledger entry, in the order given (newest first from `recent_entries`)."""
    table = Table(*COLUMNS, box=box.SIMPLE_HEAD, caption=_caption(entries), caption_justify="left")
    for entry in entries:
        table.add_row(*entry_cells(entry))
    return table


def entry_cells(entry: LedgerEntry) -> tuple[str, ...]:
    return (
        _when(entry.committed_at),
        entry.run_id,
        str(entry.data_source_id),
        entry.dest_table,
        entry.load_type,
        "committed",
        f"{entry.rows_loaded:,}",
        window_text(entry),
        f"{entry.duration_seconds:.1f}s",
    )


def window_text(entry: LedgerEntry) -> str:
    if not mode_of(entry.load_type).windowed:
        return "whole table"
    low = entry.window_low or "-∞"
    return f"{entry.window_column}: [{low}, {entry.window_high})"


def _from_ledger(settings: Settings, filters: Filters, console: Console) -> int:
    from worker.sinks.bigquery import BigQuerySink

    client = bigquery_client.make_bigquery_client(settings.gcp_project_id, settings.bigquery_emulator_host)
    sink = BigQuerySink.from_settings(settings, client)
    entries = sink.recent_entries(filters.limit, filters.data_source_id)
    if filters.table:
        entries = [e for e in entries if e.dest_table == filters.table]
    console.print(runs_table(entries))
    return 0


def _exists(client: bigquery.Client, table_id: str) -> bool:
    try:
        client.get_table(table_id)
    except gexc.NotFound:
        return False
    return True


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _when(moment: datetime) -> str:
    return (moment.astimezone(UTC) if moment.tzinfo else moment).strftime("%Y-%m-%d %H:%M:%S")


def _caption(entries: Sequence[LedgerEntry]) -> str:
    if not entries:
        return "no committed runs in the ledger"
    return f"{len(entries)} run(s), newest first; the ledger records committed runs only"
