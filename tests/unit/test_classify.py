"""classify() as a table: vendor exception → worker error type → transient or permanent."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as gexc
from sqlalchemy import exc as saexc

from worker import errors
from worker.classify import classify


def operational(text: str) -> saexc.OperationalError:
    return saexc.OperationalError("SELECT 1", {}, Exception(text))


@pytest.mark.parametrize(
    ("raised", "expected", "retryable"),
    [
        (operational('FATAL:  password authentication failed for user "u"'), errors.SourceAuthError,
         False),
        (operational("(1045, \"Access denied for user 'u'@'h' (using password: YES)\")"),
         errors.SourceAuthError, False),
        (operational("could not connect to server: Connection refused"), errors.SourceConnectionError,
         True),
        (operational("(2003, \"Can't connect to MySQL server on 'h'\")"), errors.SourceConnectionError,
         True),
        (operational('FATAL:  database "nope" does not exist'), errors.SourceSchemaError, False),
        (operational("(1049, \"Unknown database 'nope'\")"), errors.SourceSchemaError, False),
        (operational("(1300, \"Invalid utf8mb4 character string: '\\xF0\\x90'\")"),
         errors.ConfigurationError, False),
        (operational("(1059, \"Identifier name 'aaaa' is too long\")"), errors.ConfigurationError, False),
        (saexc.NoSuchTableError("orders"), errors.SourceSchemaError, False),
        (saexc.DatabaseError("PRAGMA x", {}, Exception("file is not a database")),
         errors.ConfigurationError, False),
        (saexc.ProgrammingError("x", {}, Exception('relation "t" does not exist')),
         errors.SourceSchemaError, False),
        (gexc.BadRequest("Invalid value"), errors.DataRejectedError, False),
        (gexc.BadRequest("Quota exceeded: too many table update operations"), errors.LoadError, True),
        (gexc.Forbidden("Access Denied"), errors.ConfigurationError, False),
        (gexc.NotFound("Dataset not found"), errors.ConfigurationError, False),
        (gexc.TooManyRequests("rate"), errors.LoadError, True),
        (gexc.ServiceUnavailable("down"), errors.LoadError, True),
        (gexc.InternalServerError("oops"), errors.LoadError, True),
        (TimeoutError("slow"), errors.LoadError, True),
        (ConnectionResetError("reset"), errors.LoadError, True),
        (ZeroDivisionError("bug"), errors.UnexpectedError, True),
        (errors.VerificationError("mismatch"), errors.VerificationError, False),
    ],
)
def test_classification_table(raised: BaseException, expected: type, retryable: bool) -> None:
    result = classify(raised)
    assert type(result) is expected
    assert result.retryable is retryable
