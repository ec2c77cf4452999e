"""The one place that decides whether a failure is transient or permanent.

Vendor exceptions (SQLAlchemy / DB-API, google-api-core, OS) are mapped to the worker's error tree.
Unknown errors default to transient: they are retried and end in the dead-letter topic, where an
operator can see them, rather than being acked and forgotten.
"""

from __future__ import annotations

import concurrent.futures
import socket

from google.api_core import exceptions as gexc
from sqlalchemy import exc as saexc

from worker import errors

# Substrings of DB-API error texts that mean "your credentials are wrong": retrying will not help.
_AUTH_MARKERS = (
    "password authentication failed",
    "access denied for user",
    "no pg_hba.conf entry",
    "role \"",
    "authentication failed",
)
# ... "the name you gave cannot be a name here" (MySQL/MariaDB raise some as OperationalError).
_INVALID_NAME_MARKERS = ("invalid utf8", "incorrect table name", "incorrect database name",
                         "incorrect column name", "identifier name")
# ... "the database/schema you named does not exist".
_MISSING_MARKERS = ("does not exist", "unknown database", "no such table", "doesn't exist")

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


def classify(exc: BaseException) -> errors.EtlError:
    """Return `exc` as an EtlError (itself when it already is one)."""
    if isinstance(exc, errors.EtlError):
        return exc
    text = str(exc)
    if isinstance(exc, saexc.SQLAlchemyError):
        return _classify_sqlalchemy(exc, text)
    if isinstance(exc, gexc.GoogleAPIError):
        return _classify_google(exc, text)
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError, ConnectionError, socket.error)):
        return errors.LoadError(f"{type(exc).__name__}: {text}")
    return errors.UnexpectedError(f"{type(exc).__name__}: {text}")


def _classify_sqlalchemy(exc: saexc.SQLAlchemyError, text: str) -> errors.EtlError:
    lowered = text.lower()
    if isinstance(exc, saexc.NoSuchTableError):
        return errors.SourceSchemaError(f"source table not found: {text}")
    if isinstance(exc, saexc.ArgumentError):
        return errors.ConfigurationError(text)
    if isinstance(exc, saexc.OperationalError):
        if any(marker in lowered for marker in _AUTH_MARKERS):
            return errors.SourceAuthError(_first_line(text))
        if "unknown database" in lowered or ("database \"" in lowered and "does not exist" in lowered):
            return errors.SourceSchemaError(_first_line(text))
        if any(marker in lowered for marker in _INVALID_NAME_MARKERS):
            return errors.ConfigurationError(_first_line(text))
        return errors.SourceConnectionError(_first_line(text))
    if isinstance(exc, saexc.ProgrammingError):
        if any(marker in lowered for marker in _MISSING_MARKERS):
            return errors.SourceSchemaError(_first_line(text))
        return errors.ConfigurationError(_first_line(text))
    if isinstance(exc, saexc.DatabaseError) and "file is not a database" in lowered:  # SQLite
        return errors.ConfigurationError(_first_line(text))
    if isinstance(exc, (saexc.DataError, saexc.IntegrityError)):
        return errors.ExtractionError(_first_line(text))
    if isinstance(exc, saexc.DBAPIError) and exc.connection_invalidated:
        return errors.SourceConnectionError(_first_line(text))
    return errors.ExtractionError(_first_line(text))


def _classify_google(exc: gexc.GoogleAPIError, text: str) -> errors.EtlError:
    if isinstance(exc, gexc.BadRequest) and _is_quota(text):
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


def _is_quota(text: str) -> bool:
    """400s that BigQuery documents as retryable: quotas, rate limits, transaction conflicts."""
    lowered = text.lower()
    return any(marker in lowered for marker in (
        "quota", "ratelimitexceeded", "rate limit", "concurrent update", "could not serialize"))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
