"""The error tree. Every failure a run can meet becomes one of these, in `classify()` alone.

A concrete error is either *transient* (worth retrying: nack, redelivery, dead-letter at the end) or
*permanent* (retrying cannot help: report `run.failed` and ack).
"""

from __future__ import annotations

from typing import ClassVar


class EtlError(Exception):
    """Root of every error the worker reports. `retryable` decides the message's fate."""

    retryable: ClassVar[bool] = True

    @property
    def type_name(self) -> str:
        return type(self).__name__


class TransientError(EtlError):
    """Marker: the same request may succeed later."""

    retryable = True


class PermanentError(EtlError):
    """Marker: the same request will fail again; do not retry."""

    retryable = False


# --- permanent -----------------------------------------------------------------------------------
class ConfigurationError(PermanentError):
    """The request is invalid (the origin's ConfigurationError)."""


class MessageDecodeError(ConfigurationError):
    """The message body is not a valid request; keeps the raw bytes for the dead-letter operator."""

    def __init__(self, message: str, raw: bytes = b"") -> None:
        super().__init__(message)
        self.raw = raw


class SourceAuthError(PermanentError):
    """The source database refused the credentials."""


class ColumnNameError(ConfigurationError):
    """Two source columns would share one BigQuery column, or a `column_names` override is not a
    legal BigQuery name (worker/names.py)."""


class SourceSchemaError(PermanentError):
    """The source table or a selected column does not exist."""


class UnsupportedTypeError(PermanentError):
    """A source column has a type with no faithful BigQuery mapping."""


class SourceDataError(PermanentError):
    """A source value BigQuery cannot hold, in a run that asked for `strict_types`."""


class SchemaMismatchError(PermanentError):
    """The destination table's schema cannot take the source's columns."""


class DataRejectedError(PermanentError):
    """BigQuery rejected the data itself (invalid values, schema mismatch in a load)."""


class DataQualityError(PermanentError):
    """A data-quality rule with on_violation `fail` was violated: nothing is committed; the message
    names the rule, the column, the measured and the allowed value."""


class VerificationError(PermanentError):
    """Counts disagree (extracted vs staged vs the source's COUNT): nothing is committed."""


class SupersededError(PermanentError):
    """A newer run has already committed this window or snapshot; this run is not applied."""


class RunIdConflictError(PermanentError):
    """The run id (e.g. a reused etl_run_id) belongs to a committed run of another table or mode:
    nothing is loaded, and the message says what the id was used for."""


# --- transient -----------------------------------------------------------------------------------
class SourceConnectionError(TransientError):
    """The source database is unreachable or dropped the connection (the origin's ConnectionError)."""


class ExtractionError(TransientError):
    """Reading rows failed for a reason that may pass (deadlock, timeout, lost connection)."""


class LoadError(TransientError):
    """A BigQuery load, query or metadata call failed for a reason that may pass."""


class PublishError(TransientError):
    """An event could not be published; the request must not be acked."""


class RunTimeoutError(TransientError):
    """The run exceeded ETL_MAX_RUN_SECONDS and was stopped before its lease could lapse."""


class ShutdownInterrupted(TransientError):
    """The worker is shutting down; the run stopped and its request goes back to Pub/Sub."""


class UnexpectedError(TransientError):
    """Anything not recognised. Transient so that it ends in the dead-letter topic, not silently acked."""


# --- change data capture (load_type cdc) -----------------------------------------------------------
class CdcSetupError(PermanentError):
    """A server setting, privilege or object CDC needs is missing (wal_level, REPLICATION, a
    publication the user may not create, a table without replica identity); the message names
    exactly what to change."""


class UnsupportedChangeError(PermanentError):
    """The change log holds a change the worker cannot apply faithfully (a primary key column
    changed type, the table was dropped, an unsent TOASTed value under a changed key)."""


class BinlogPurgedError(PermanentError):
    """The MySQL/MariaDB binary log no longer holds the changes after the ledger's position (purged
    by retention or PURGE BINARY LOGS): the table must be loaded again from a fresh snapshot."""
