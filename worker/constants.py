"""Names shared by several modules: event types, attribute keys, ledger and staging names."""

from typing import Final

# Message types (the `message_type` attribute / handler registry key).
ETL_RUN_REQUESTED: Final = "etl-run-requested"

# Event types published on the events topic.
RUN_STARTED: Final = "run.started"
RUN_PROGRESS: Final = "run.progress"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_DEAD_LETTERED: Final = "run.dead_lettered"
RUN_REPLAYED: Final = "run.replayed"

# Pub/Sub attribute keys.
ATTR_EVENT_TYPE: Final = "event_type"
ATTR_RUN_ID: Final = "run_id"
ATTR_DATA_SOURCE_ID: Final = "data_source_id"
ATTR_MESSAGE_TYPE: Final = "message_type"
ATTR_REPLAY_OF: Final = "replay_of"
ATTR_REPLAY_COUNT: Final = "replay_count"
# Deliveries of the run before its replay, so that event attempts (and event ids) go on counting.
ATTR_PRIOR_ATTEMPTS: Final = "prior_attempts"
DEAD_LETTER_ATTR_PREFIX: Final = "CloudPubSubDeadLetter"

# BigQuery bookkeeping tables live in the destination dataset, prefixed so they sort apart.
LEDGER_TABLE: Final = "_etl_ledger"
HEADS_TABLE: Final = "_etl_heads"
STAGING_PREFIX: Final = "_etl_staging_"

# The states of a run as the run history shows them (docs/events.md, "The states of a run").
RUN_OUTCOMES: Final = ("committed", "failed", "retrying", "dead-lettered", "running", "replayed")

# Load modes.
CATALOG: Final = "catalog"
TRANSACTIONAL: Final = "transactional"
MERGE: Final = "merge"
CDC: Final = "cdc"

# A job's commit is ONE BigQuery transaction, which may modify at most 100 tables (BigQuery's
# "Multi-statement transactions", Limitations); besides its destinations it writes the ledger and
# the heads table, so a job names at most 98 tables (docs/jobs.md).
BIGQUERY_TRANSACTION_MAX_TABLES: Final = 100
MAX_JOB_TABLES: Final = BIGQUERY_TRANSACTION_MAX_TABLES - 2
