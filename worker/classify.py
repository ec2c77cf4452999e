"""The one place that decides whether a failure is transient or permanent.

Vendor exceptions (SQLAlchemy / DB-API, google-api-core, OS) are mapped to the worker's error tree.
Unknown errors default to transient: they are retried and end in the dead-letter topic, where an
operator can see them, rather than being acked and forgotten.

What a driver's message texts mean is data kept by each dialect (`DriverMarkers` in
`worker/sources/<dialect>.py`); the source reads its driver's errors through its dialect
(`SqlDialect.classify_error`, which calls `driver_error` here) where it catches them, and records
the reading on the exception (`remember`), which goes on unchanged: `classify()` answers with it.
The BigQuery sink's commit script and Secret Manager go through this module too.
"""

from __future__ import annotations

import concurrent.futures
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from google.api_core import exceptions as gexc
from sqlalchemy import exc as saexc

from worker import errors

# A marker is a text, or texts that must all appear, in a lower-cased error message.
Marker = str | tuple[str, ...]


@dataclass(frozen=True)
class DriverMarkers:
    """What one driver's error texts say, for the errors whose class alone does not tell."""

    auth: tuple[Marker, ...] = ()  # the credentials are wrong: retrying will not help
    unknown_database: tuple[Marker, ...] = ()  # the database named in the connection does not exist
    invalid_name: tuple[Marker, ...] = ()  # a name that cannot be a name here (an OperationalError)
    missing_object: tuple[Marker, ...] = ()  # a ProgrammingError naming a table or schema that does not exist
    not_a_database: tuple[Marker, ...] = ()  # the file or target is no database at all


NO_MARKERS = DriverMarkers()  # a SQLAlchemy error no dialect has read: its class decides alone

_PERMANENT_GOOGLE = (
    gexc.BadRequest,
    gexc.Forbidden,
    gexc.Unauthorized,
    gexc.MethodNotAllowed,
    gexc.PreconditionFailed,
    gexc.RequestRangeNotSatisfiable,
    gexc.InvalidArgument,
    gexc.PermissionDenied,
    gexc.Unauthenticated,
    gexc.FailedPrecondition,
    gexc.OutOfRange,
)
_TRANSIENT_GOOGLE = (
    gexc.TooManyRequests,
    gexc.ServerError,
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.GatewayTimeout,
    gexc.InternalServerError,
    gexc.Aborted,
    gexc.ResourceExhausted,
    gexc.RetryError,
    gexc.Conflict,
)
# Texts of the errors real BigQuery gives when two transactions touch one table at once: the loser
# may simply try again, unlike other invalid-query errors ("Could not serialize access to table ...
# due to concurrent update", "Transaction is aborted due to concurrent update against table ...").
_CONCURRENCY_MARKERS = ("concurrent update", "could not serialize")
# Quota and rate-limit failures, which BigQuery documents as retryable, later (quotaExceeded) or
# after a backoff (rateLimitExceeded): an HTTP 403 Forbidden, or a failed job whose errorResult
# reason the client maps to 403 (quotaExceeded) or 429 (rateLimitExceeded), its message "Quota
# exceeded: ..." or "Exceeded rate limits: ..." (docs: bigquery/docs/troubleshoot-quotas). The
# reasons are read from the error's details first; the texts catch a reason-less message.
_RETRYABLE_REASONS = frozenset({"quotaExceeded", "rateLimitExceeded", "backendError"})
_RETRYABLE_TEXTS = ("quota exceeded", "exceeded quota", "exceeded rate limits", *_CONCURRENCY_MARKERS)
# The attribute on which a source records its dialect's reading of a driver's exception.
_SOURCE_READING = "etl_source_reading"


def classify(exc: BaseException) -> errors.EtlError:
    """Return `exc` as an EtlError (itself when it already is one)."""
    if isinstance(exc, errors.EtlError):
        return exc
    reading = getattr(exc, _SOURCE_READING, None)
    if isinstance(reading, errors.EtlError):
        return reading
    text = str(exc)
    if isinstance(exc, saexc.SQLAlchemyError):
        return _classify_sqlalchemy(exc, text, NO_MARKERS)
    if isinstance(exc, gexc.GoogleAPIError):
        return _classify_google(exc, text)
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError, ConnectionError, socket.error)):
        return errors.LoadError(f"{type(exc).__name__}: {text}")
    return errors.UnexpectedError(f"{type(exc).__name__}: {text}")


# --- source databases ------------------------------------------------------------------------------
def driver_error(exc: BaseException, markers: DriverMarkers) -> errors.EtlError | None:
    """A SQLAlchemy (DB-API) error read with one driver's markers, or the driver's own DB-API error
    as the fast readers (COPY, the raw MySQL reader) meet it, unwrapped; None for anything else."""
    if isinstance(exc, saexc.SQLAlchemyError):
        return _classify_sqlalchemy(exc, str(exc), markers)
    kind = _dbapi_kind(exc)
    if kind is None:
        return None
    return _classify_sqlalchemy(kind(None, None, exc), str(exc), markers)


# PEP 249's error classes, most specific first: a driver's exception is read as SQLAlchemy's twin.
_DBAPI_KINDS: tuple[tuple[str, type[saexc.DBAPIError]], ...] = (
    ("OperationalError", saexc.OperationalError), ("ProgrammingError", saexc.ProgrammingError),
    ("DataError", saexc.DataError), ("IntegrityError", saexc.IntegrityError),
    ("InterfaceError", saexc.InterfaceError), ("DatabaseError", saexc.DatabaseError),
)


def _dbapi_kind(exc: BaseException) -> type[saexc.DBAPIError] | None:
    if type(exc).__module__.split(".")[0] not in _DBAPI_MODULES:
        return None
    names = {cls.__name__ for cls in type(exc).__mro__}
    return next((kind for name, kind in _DBAPI_KINDS if name in names), None)


# pymysql: the binlog stream's driver (python-mysql-replication)
_DBAPI_MODULES = frozenset({"psycopg2", "MySQLdb", "_mysql_exceptions", "sqlite3", "pymysql"})


def remember(exc: BaseException, error: errors.EtlError) -> None:
    """Record on `exc` how the source that caught it reads it; `classify(exc)` then returns `error`.
    The exception itself goes on unchanged (callers may still catch the vendor's class)."""
    setattr(exc, _SOURCE_READING, error)


def _classify_sqlalchemy(exc: saexc.SQLAlchemyError, text: str, markers: DriverMarkers) -> errors.EtlError:
    lowered = text.lower()
    if isinstance(exc, saexc.NoSuchTableError):
        return errors.SourceSchemaError(f"source table not found: {text}")
    if isinstance(exc, saexc.ArgumentError):
        return errors.ConfigurationError(text)
    if isinstance(exc, saexc.OperationalError):
        return _operational(lowered, _first_line(text), markers)
    if isinstance(exc, saexc.ProgrammingError):
        if _mentions(lowered, markers.missing_object):
            return errors.SourceSchemaError(_first_line(text))
        return errors.ConfigurationError(_first_line(text))
    if isinstance(exc, saexc.DatabaseError) and _mentions(lowered, markers.not_a_database):
        return errors.ConfigurationError(_first_line(text))
    if isinstance(exc, (saexc.DataError, saexc.IntegrityError)):
        return errors.ExtractionError(_first_line(text))
    if isinstance(exc, saexc.DBAPIError) and exc.connection_invalidated:
        return errors.SourceConnectionError(_first_line(text))
    return errors.ExtractionError(_first_line(text))


def _operational(lowered: str, first_line: str, markers: DriverMarkers) -> errors.EtlError:
    if _mentions(lowered, markers.auth):
        return errors.SourceAuthError(first_line)
    if _mentions(lowered, markers.unknown_database) or _mentions(lowered, markers.missing_object):
        return errors.SourceSchemaError(first_line)
    if _mentions(lowered, markers.invalid_name):
        return errors.ConfigurationError(first_line)
    return errors.SourceConnectionError(first_line)


def _mentions(lowered: str, markers: tuple[Marker, ...]) -> bool:
    return any(
        marker in lowered if isinstance(marker, str) else all(part in lowered for part in marker)
        for marker in markers
    )


# --- Google APIs (BigQuery, Secret Manager) --------------------------------------------------------
def _classify_google(exc: gexc.GoogleAPIError, text: str) -> errors.EtlError:
    if isinstance(exc, (gexc.BadRequest, gexc.Forbidden)) and (
        _reasons(exc) & _RETRYABLE_REASONS or _mentions(text.lower(), _RETRYABLE_TEXTS)
    ):
        return errors.LoadError(text)
    if isinstance(exc, gexc.NotFound):
        # A missing dataset/table we did not create ourselves is a configuration problem.
        return errors.ConfigurationError(f"BigQuery resource not found: {text}")
    if isinstance(exc, gexc.BadRequest):
        return errors.DataRejectedError(text)
    if isinstance(exc, _PERMANENT_GOOGLE):
        return errors.ConfigurationError(f"BigQuery refused the request: {text}")
    if isinstance(exc, _TRANSIENT_GOOGLE):
        return errors.LoadError(text)
    return errors.LoadError(text)


def _reasons(exc: gexc.GoogleAPIError) -> set[str]:
    """The `reason` of each of the error's details (BigQuery's ErrorProto: {"reason", "message",
    ...}), as the client keeps them from the response body or the failed job's errorResult."""
    details = exc.errors if isinstance(exc, gexc.GoogleAPICallError) else []
    return {str(detail["reason"]) for detail in details if isinstance(detail, Mapping) and "reason" in detail}


def commit_error(exc: BaseException, script_errors: Mapping[str, type[errors.EtlError]]
                 ) -> errors.EtlError | None:
    """The BigQuery commit script's failure, where its text says more than its class: an error the
    script raised itself (`ERROR('<marker> why')`, each marker mapped to its error class in
    `script_errors`, first match wins), or a lost race with a concurrent transaction (transient).
    None: `classify()` decides."""
    text = str(exc)
    for marker, error in script_errors.items():
        if marker in text:
            return error(_marked_message(text, marker))
    if _mentions(text.lower(), _CONCURRENCY_MARKERS):
        return errors.LoadError(f"commit lost a race with a concurrent transaction: {text}")
    return None


def _marked_message(text: str, marker: str) -> str:
    start = text.index(marker) + len(marker)
    return text[start:].split(";")[0].split("\n")[0].strip()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
