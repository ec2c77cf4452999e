"""A runner and handler wired to the in-memory source, sink and event bus: no services, milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from worker.events import MemoryEventBus, RunEvents
from worker.handlers.base import Delivery
from worker.handlers.etl_run_requested import EtlRunRequestedHandler
from worker.messages import EtlRunRequest
from worker.retry import RetryPolicy
from worker.runner import Runner, RunOptions
from worker.sinks.memory import MemorySink
from worker.sources.memory import MemorySource, MemoryTable, column

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ORDERS_COLUMNS = (column("id", "INT64"), column("name", "STRING"), column("updated_at", "TIMESTAMP"))


def order(i: int, minutes: int | None = None) -> dict[str, Any]:
    return {"id": i, "name": f"n{i}", "updated_at": T0 + timedelta(minutes=i if minutes is None else minutes)}


class Clock:
    """The source's clock: a test moves it forward."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Rig:
    tmp_path: Path
    clock: Clock = field(default_factory=lambda: Clock(T0 + timedelta(days=1)))
    sink: MemorySink = field(default_factory=MemorySink)
    bus: MemoryEventBus = field(default_factory=MemoryEventBus)

    def __post_init__(self) -> None:
        self.orders = MemoryTable(ORDERS_COLUMNS, [order(i) for i in range(1, 11)])
        self.source = MemorySource({"orders": self.orders, "products": MemoryTable(ORDERS_COLUMNS)},
                                   clock=self.clock)

    def runner(self, max_run_s: float = 3600, max_tries: int = 3, chunk_rows: int = 0) -> Runner:
        options = RunOptions(batch_rows=3, part_rows=4, incremental_lag_s=0, max_run_s=max_run_s,
                             spool_dir=str(self.tmp_path), chunk_rows=chunk_rows)
        return Runner(self.sink, lambda _type: self.source, options,
                      RetryPolicy(max_tries=max_tries, first_delay_s=0))

    def handler(self, **runner_options: Any) -> EtlRunRequestedHandler:
        return EtlRunRequestedHandler(self.runner(**runner_options), self.bus, progress_interval_s=0)

    def events(self, run_id: str, attempt: int = 1) -> RunEvents:
        return RunEvents(self.bus, run_id=run_id, attempt=attempt, data_source_id=7, etl_run_id=None,
                         dest_table="bq_orders", load_type="catalog", progress_interval_s=0)

    def of(self, run_id: str) -> list[Any]:
        return [e for e in self.bus.events if e.run_id == run_id]


def request(load_type: str = "catalog", **overrides: Any) -> EtlRunRequest:
    body: dict[str, Any] = {
        "data_source_id": 7, "source_type": "sqlite", "connection_params": {"database": "memory"},
        "source_table_name": "orders", "dest_table_name": "bq_orders", "load_type": load_type,
    }
    if load_type == "transactional":
        body["timestamp_column"] = "updated_at"
    body.update(overrides)
    return EtlRunRequest.model_validate(body)


def delivery(req: EtlRunRequest | bytes, message_id: str = "m-1", attempt: int = 1) -> Delivery:
    data = req if isinstance(req, bytes) else req.model_dump_json(exclude_none=True).encode()
    return Delivery(data=data, message_id=message_id, delivery_attempt=attempt)


def job_request(*tables: dict[str, Any], **overrides: Any) -> EtlRunRequest:
    """A job of `tables` (each a table's fields) from the rig's memory source."""
    body: dict[str, Any] = {
        "data_source_id": 7, "source_type": "sqlite", "connection_params": {"database": "memory"},
        "tables": list(tables),
    }
    body.update(overrides)
    return EtlRunRequest.model_validate(body)
