"""classify() as a table: every error the docs name → the worker's error type → transient or permanent.

The README's outcome table says which failures are permanent (run.failed with retryable false, then
ack) and which transient (retryable true, then nack); `worker/errors.py` lists the error classes. This
table holds constructed vendor exceptions, read the way the worker reads them: through a dialect's
hook for driver errors, the sink's commit mapping for commit-script errors, `classify()` for the
rest. `tests/sources/test_error_outcomes.py` holds the same outcomes for real drivers' exceptions.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import MySQLdb
import psycopg2
import pytest
from google.api_core import exceptions as gexc
from sqlalchemy import exc as saexc

from tests.sinks.bigquery_errors import (
    ACCESS_DENIED,
    BACKEND_ERROR,
    PROJECT_QUOTA,
    QUOTA_EXCEEDED,
    RATE_LIMITS,
    SERIALIZE,
    TRANSACTION_ABORTED,
    api_error,
    job_error,
)
from worker import classify as classify_module
from worker import errors
from worker.classify import classify
from worker.sinks.bigquery import _commit_error
from worker.sinks.bigquery_sql import NULL_KEY_MARKER, SUPERSEDED_MARKER, VERIFICATION_MARKER
from worker.sources.dialect import SqlDialect, driver_errors
from worker.sources.mysql import MySQLDialect
from worker.sources.postgresql import PostgresDialect
from worker.sources.sqlite import SQLiteDialect

README = Path(__file__).resolve().parents[2] / "README.md"
PERMANENT, TRANSIENT = "permanent", "transient"


@dataclass(frozen=True)
class Case:
    documented: str  # the README's words for it (a phrase of an outcome row), or the error class's
    raised: BaseException
    expected: type[errors.EtlError]
    outcome: str  # PERMANENT or TRANSIENT
    reader: type[SqlDialect] | None = None  # the dialect whose source reads it (driver errors)

    def reading(self) -> errors.EtlError:
        """What the worker makes of `raised`: the dialect's hook where a source catches it, the
        commit mapping for a commit script's error, classify() for everything."""
        if self.reader is not None:
            read = self.reader().classify_error(self.raised)
            assert read is not None, "a dialect reads every SQLAlchemy error"
            return read
        return classify(self.raised)


def operational(text: str) -> saexc.OperationalError:
    return saexc.OperationalError("SELECT 1", {}, Exception(text))


def programming(text: str) -> saexc.ProgrammingError:
    return saexc.ProgrammingError("SELECT 1", {}, Exception(text))


def commit(failure: str | gexc.GoogleAPICallError) -> errors.EtlError:
    """The sink's reading of a failed commit script (real BigQuery reports ERROR() as a 400); a
    text stands for a 400 with that message."""
    exc = gexc.BadRequest(failure) if isinstance(failure, str) else failure
    return _commit_error(exc) or classify(exc)


PG, MY, LITE = PostgresDialect, MySQLDialect, SQLiteDialect
CASES = [
    # --- permanent: the README's words -----------------------------------------------------------
    Case("invalid request", errors.MessageDecodeError("not JSON", b"{"), errors.MessageDecodeError,
         PERMANENT),
    Case("invalid request", saexc.ArgumentError("Could not parse SQLAlchemy URL"), errors.ConfigurationError,
         PERMANENT),
    Case("invalid request", operational("(1300, \"Invalid utf8mb4 character string: '\\xF0\\x90'\")"),
         errors.ConfigurationError, PERMANENT, MY),
    Case("invalid request", operational("(1059, \"Identifier name 'aaaa' is too long\")"),
         errors.ConfigurationError, PERMANENT, MY),
    Case("invalid request", programming('syntax error at or near "x"'), errors.ConfigurationError,
         PERMANENT, PG),
    Case("invalid request", saexc.DatabaseError("PRAGMA x", {}, Exception("file is not a database")),
         errors.ConfigurationError, PERMANENT, LITE),
    Case("invalid request", gexc.NotFound("Dataset p:d was not found"), errors.ConfigurationError, PERMANENT),
    Case("invalid request", api_error(403, ACCESS_DENIED, "accessDenied"), errors.ConfigurationError,
         PERMANENT),
    Case("unknown table/column", saexc.NoSuchTableError("orders"), errors.SourceSchemaError, PERMANENT),
    Case("unknown table/column", programming('relation "t" does not exist'), errors.SourceSchemaError,
         PERMANENT, PG),
    Case("unknown table/column", programming("(1146, \"Table 'db.t' doesn't exist\")"),
         errors.SourceSchemaError, PERMANENT, MY),
    Case("unknown table/column", programming("no such table: t"), errors.SourceSchemaError, PERMANENT, LITE),
    Case("unknown table/column", operational('FATAL:  database "nope" does not exist'),
         errors.SourceSchemaError, PERMANENT, PG),
    Case("unknown table/column", operational("(1049, \"Unknown database 'nope'\")"), errors.SourceSchemaError,
         PERMANENT, MY),
    Case("bad credentials", operational('FATAL:  password authentication failed for user "u"'),
         errors.SourceAuthError, PERMANENT, PG),
    Case("bad credentials", operational('FATAL:  role "nobody" does not exist'), errors.SourceAuthError,
         PERMANENT, PG),
    Case("bad credentials", operational('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "u"'),
         errors.SourceAuthError, PERMANENT, PG),
    Case("bad credentials", operational("(1045, \"Access denied for user 'u'@'h' (using password: YES)\")"),
         errors.SourceAuthError, PERMANENT, MY),
    Case("incompatible schema", errors.SchemaMismatchError("column n: INT64 cannot become DATE"),
         errors.SchemaMismatchError, PERMANENT),
    Case("incompatible schema", errors.UnsupportedTypeError("column 'p' has type 'point'"),
         errors.UnsupportedTypeError, PERMANENT),
    Case("incompatible schema", gexc.BadRequest("Invalid value at 'rows[0]'"), errors.DataRejectedError,
         PERMANENT),
    Case("count mismatch", commit(f"Query error: {VERIFICATION_MARKER} staging holds 3 rows, 4 were extracted"
                                  " at [9:5]"), errors.VerificationError, PERMANENT),
    # --- permanent: the other classes of errors.py -----------------------------------------------
    Case("SourceDataError", errors.SourceDataError("column 'd': value 'infinity' ..."),
         errors.SourceDataError, PERMANENT),
    Case("SupersededError", commit(f"{SUPERSEDED_MARKER} an overlapping window of this table is already "
                                   "committed"), errors.SupersededError, PERMANENT),
    Case("unknown table/column", operational("(1054, \"Unknown column 'x' in 'SELECT'\")"),
         errors.SourceSchemaError, PERMANENT, MY),
    Case("unknown table/column", MySQLdb.OperationalError(1054, "Unknown column 'x' in 'SELECT'"),
         errors.SourceSchemaError, PERMANENT, MY),
    Case("SourceDataError", commit(f"{NULL_KEY_MARKER} a primary key column (id) holds NULL"),
         errors.SourceDataError, PERMANENT),
    Case("RunIdConflictError", errors.RunIdConflictError("run id etl-run-5 is already used by ..."),
         errors.RunIdConflictError, PERMANENT),
    Case("DataQualityError", errors.DataQualityError("quality rule min_rows: measured 0, allowed 1"),
         errors.DataQualityError, PERMANENT),
    Case("ColumnNameError", errors.ColumnNameError("source columns 'Order' and 'order' would both ..."),
         errors.ColumnNameError, PERMANENT),
    # --- transient: the README's words -----------------------------------------------------------
    Case("database or BigQuery unavailable", operational("could not connect to server: Connection refused"),
         errors.SourceConnectionError, TRANSIENT, PG),
    Case("database or BigQuery unavailable", operational("(2003, \"Can't connect to MySQL server on 'h'\")"),
         errors.SourceConnectionError, TRANSIENT, MY),
    Case("database or BigQuery unavailable", operational("database is locked"), errors.SourceConnectionError,
         TRANSIENT, LITE),
    # the fast readers meet the driver's own errors, unwrapped by SQLAlchemy
    Case("database or BigQuery unavailable",
         MySQLdb.OperationalError(2013, "Lost connection to MySQL server during query"),
         errors.SourceConnectionError, TRANSIENT, MY),
    Case("database or BigQuery unavailable",
         psycopg2.OperationalError("server closed the connection unexpectedly"),
         errors.SourceConnectionError, TRANSIENT, PG),
    Case("database or BigQuery unavailable", gexc.ServiceUnavailable("down"), errors.LoadError, TRANSIENT),
    Case("database or BigQuery unavailable", gexc.InternalServerError("oops"), errors.LoadError, TRANSIENT),
    Case("database or BigQuery unavailable", job_error("backendError", BACKEND_ERROR), errors.LoadError,
         TRANSIENT),
    Case("database or BigQuery unavailable", ConnectionResetError("reset"), errors.LoadError, TRANSIENT),
    Case("database or BigQuery unavailable", commit(TRANSACTION_ABORTED), errors.LoadError, TRANSIENT),
    Case("database or BigQuery unavailable", commit(job_error("invalidQuery", SERIALIZE)), errors.LoadError,
         TRANSIENT),
    Case("timeouts", TimeoutError("slow"), errors.LoadError, TRANSIENT),
    Case("timeouts", gexc.DeadlineExceeded("deadline"), errors.LoadError, TRANSIENT),
    Case("timeouts", errors.RunTimeoutError("ran longer than ETL_MAX_RUN_SECONDS"), errors.RunTimeoutError,
         TRANSIENT),
    # BigQuery answers a quota or a rate limit with 403 Forbidden (an API call) or a failed job whose
    # reason the client maps to 403 (quotaExceeded) or 429 (rateLimitExceeded): tests/sinks/bigquery_errors.py
    Case("quota", api_error(403, QUOTA_EXCEEDED, "quotaExceeded"), errors.LoadError, TRANSIENT),
    Case("quota", api_error(403, RATE_LIMITS, "rateLimitExceeded"), errors.LoadError, TRANSIENT),
    Case("quota", job_error("quotaExceeded", PROJECT_QUOTA), errors.LoadError, TRANSIENT),
    Case("quota", job_error("rateLimitExceeded", RATE_LIMITS), errors.LoadError, TRANSIENT),
    Case("quota", gexc.Forbidden(PROJECT_QUOTA), errors.LoadError, TRANSIENT),  # no details: its text
    Case("quota", api_error(403, "", "rateLimitExceeded"), errors.LoadError, TRANSIENT),  # the reason alone
    Case("quota", commit(job_error("quotaExceeded", PROJECT_QUOTA)), errors.LoadError, TRANSIENT),
    # --- transient: the other classes of errors.py -----------------------------------------------
    Case("ExtractionError", saexc.DataError("SELECT", {}, Exception("invalid input syntax")),
         errors.ExtractionError, TRANSIENT, PG),
    Case("PublishError", errors.PublishError("run.failed not published"), errors.PublishError, TRANSIENT),
    Case("ShutdownInterrupted", errors.ShutdownInterrupted("SIGTERM"), errors.ShutdownInterrupted, TRANSIENT),
    Case("UnexpectedError", ZeroDivisionError("bug"), errors.UnexpectedError, TRANSIENT),
    Case("CdcSetupError", errors.CdcSetupError("CDC cannot run: wal_level is replica, CDC needs logical"),
         errors.CdcSetupError, PERMANENT),
    Case("UnsupportedChangeError", errors.UnsupportedChangeError("key column 'id' changed type"),
         errors.UnsupportedChangeError, PERMANENT),
    Case("BinlogPurgedError", errors.BinlogPurgedError("the binlog no longer holds the changes after ..."),
         errors.BinlogPurgedError, PERMANENT),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.documented}:{type(case.raised).__name__}")
def test_every_documented_error_has_its_documented_outcome(case: Case) -> None:
    error = case.reading()
    assert type(error) is case.expected
    # permanent: run.failed with retryable false, then ack; transient: retryable true, then nack
    assert error.retryable is (case.outcome == TRANSIENT)


def _readme_outcome_phrases() -> dict[str, str]:
    """The README's outcome table: each phrase in a row's parentheses → that row's outcome."""
    phrases: dict[str, str] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| (permanent|transient) error \(([^)]*)\)", line)
        if row is not None:
            phrases.update({phrase.strip(): row.group(1) for phrase in row.group(2).split(",")})
    return phrases


def _error_classes() -> set[type[errors.EtlError]]:
    markers = {errors.EtlError, errors.TransientError, errors.PermanentError}
    return {cls for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.EtlError) and cls not in markers}


def test_the_table_covers_every_phrase_of_the_readme_outcome_table() -> None:
    documented = _readme_outcome_phrases()
    assert len(documented) >= 8, "the README's outcome table moved: update this test"
    covered = {(case.documented, case.outcome) for case in CASES}
    assert set(documented.items()) <= covered
    # and names nothing else: a phrase of the README, or an error class
    assert {case.documented for case in CASES} <= set(documented) | {cls.__name__ for cls in _error_classes()}


def test_the_table_covers_every_error_class_of_errors_py() -> None:
    assert _error_classes() <= {case.expected for case in CASES}
    for case in CASES:  # each class's outcome is the one its marker declares
        assert issubclass(case.expected, errors.TransientError if case.outcome == TRANSIENT
                          else errors.PermanentError)


# --- the dialect hook: marker texts are each dialect's own ------------------------------------------
def test_a_dialect_reads_only_its_own_driver_texts() -> None:
    mysql_auth = operational("(1045, \"Access denied for user 'u'@'h'\")")
    assert isinstance(MySQLDialect().classify_error(mysql_auth), errors.SourceAuthError)
    assert isinstance(SQLiteDialect().classify_error(mysql_auth), errors.SourceConnectionError)


def test_a_dialect_leaves_what_is_not_a_sqlalchemy_error_to_classify() -> None:
    assert PostgresDialect().classify_error(TimeoutError("slow")) is None
    assert PostgresDialect().classify_error(errors.SourceDataError("x")) is None


def test_an_error_no_dialect_read_is_decided_by_its_class_alone() -> None:
    assert isinstance(classify(operational("password authentication failed")), errors.SourceConnectionError)
    assert isinstance(classify(programming("relation does not exist")), errors.ConfigurationError)


def test_driver_errors_leave_the_source_unchanged_carrying_the_dialects_reading() -> None:
    raised = operational('FATAL:  password authentication failed for user "u"')
    with pytest.raises(saexc.OperationalError) as caught, driver_errors(PostgresDialect()):
        raise raised
    assert caught.value is raised
    assert isinstance(classify(caught.value), errors.SourceAuthError)


def test_commit_errors_the_script_did_not_raise_are_left_to_classify() -> None:
    assert _commit_error(gexc.BadRequest("Syntax error: Unexpected keyword")) is None
    message = f"Query error: {VERIFICATION_MARKER} staging holds 3 rows, 4 were extracted at [9:5]; x"
    assert str(_commit_error(gexc.BadRequest(message))) == "staging holds 3 rows, 4 were extracted at [9:5]"
    serialize = _commit_error(job_error("invalidQuery", SERIALIZE))
    assert isinstance(serialize, errors.LoadError)
    assert str(serialize) == f"commit lost a race with a concurrent transaction: 400 {SERIALIZE}"
    assert _commit_error(job_error("quotaExceeded", PROJECT_QUOTA)) is None  # classify() decides


def test_only_bigquerys_quota_texts_and_reasons_make_a_refusal_transient() -> None:
    # A 400 or 403 whose text only mentions the word (a column named quota, a table of quotas and
    # rate limits) is no quota failure
    unknown_column = job_error("invalidQuery", "Unrecognized name: quota at [1:8]")
    assert type(classify(unknown_column)) is errors.DataRejectedError
    denied = api_error(403, "Access Denied: Table p:d.quota rate limit", "accessDenied")
    assert type(classify(denied)) is errors.ConfigurationError


def test_classify_module_keeps_no_dialect_texts() -> None:
    # Driver texts live in the dialect modules; classify.py holds only rules and Google's classes.
    source = Path(classify_module.__file__).read_text(encoding="utf-8").lower()
    for text in ("access denied", "pg_hba", "unknown database", "no such table", "doesn't exist"):
        assert text not in source, text
