"""BigQuery's failures as the client library raises them, with the texts and reasons BigQuery
documents (each with its source), for tests that type errors: never a message made up for the test.

Two shapes reach the worker:
- an API call refused (jobs.insert, tables.patch, ...): the HTTP status, the body's `message` and its
  `errors` list of {"domain", "reason", "message"} (`api_error`);
- a job that ran and failed: `job.result()` raises what google-cloud-bigquery maps the job's
  `errorResult` reason to (`job_error`, the library's own mapping: quotaExceeded is a 403 Forbidden,
  rateLimitExceeded a 429, backendError a 500, invalidQuery a 400).

Where BigQuery's documentation gives the reason and the behaviour but not the full message, the text
below is the one users report from real BigQuery, cited as such.
"""

from __future__ import annotations

from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.bigquery.job import _error_result_to_exception

# https://cloud.google.com/bigquery/docs/troubleshoot-quotas ("Overview"): a quota failure is an
# HTTP 403 Forbidden whose body reads {"code": 403, "errors": [{"domain": "global", "message":
# "Quota exceeded: ...", "reason": "quotaExceeded"}], "message": "Quota exceeded: ..."}; reason
# quotaExceeded is a longer-term limit ("wait 10 minutes or longer before retrying").
QUOTA_EXCEEDED = "Quota exceeded: ..."
# The same page: "the message field might say Exceeded rate limits: too many table update
# operations for this table"; reason rateLimitExceeded is a short-term limit ("retry the operation
# after few seconds. Use exponential backoff").
RATE_LIMITS = "Exceeded rate limits: too many table update operations for this table"
# A quotaExceeded message as real BigQuery words it in full (reported in
# https://github.com/PolyAI-LDN/conversational-datasets/issues/73; the link is BigQuery's own).
PROJECT_QUOTA = ("Quota exceeded: Your project exceeded quota for free query bytes scanned. For more "
                 "information, see https://cloud.google.com/bigquery/troubleshooting-errors")
# https://cloud.google.com/bigquery/docs/troubleshoot-queries ("Conflicting DML statements"): "Error
# string: Could not serialize access to table due to concurrent update". Real BigQuery names the
# table, as a 400 with reason invalidQuery ("Could not serialize access to table xxxx.yyyyy due to
# concurrent update", https://github.com/confluentinc/kafka-connect-bigquery/issues/279).
SERIALIZE = "Could not serialize access to table p:d.orders due to concurrent update"
# https://cloud.google.com/bigquery/docs/transactions ("Transaction concurrency"): "Conflicting
# transactions are cancelled." The documentation gives no text for it; real BigQuery's, a failed
# script's 400 whose reason nobody reported (https://github.com/estuary/connectors/issues/111; "400
# Query error: Transaction is aborted due to concurrent update against table XYZ" in
# https://github.com/dlt-hub/dlt/issues/2892): raise it as gexc.BadRequest(TRANSACTION_ABORTED).
TRANSACTION_ABORTED = ("Query error: Transaction is aborted due to concurrent update against table "
                       "acmeCo:dataset.flow_checkpoints_v1. Transaction ID: "
                       "61e30eea-0000-2dab-8e60-94eb2c1b1a92 at [24:9]")
# https://cloud.google.com/bigquery/docs/error-messages: "Response codes in the 5xx range indicate a
# server-side error. If you receive a 5xx response code, then retry the request later." Its table
# lists backendError (500 or 503) with no message text: the reason is what says it.
BACKEND_ERROR = ""
# The same table: accessDenied, 403 (no access to the resource, or a read-only object changed). The
# message here is abridged: only the class and the reason matter to the worker.
ACCESS_DENIED = "Access Denied: Table p:d.orders"


def api_error(status: int, message: str, reason: str) -> gexc.GoogleAPICallError:
    """An API call BigQuery refused, as google-api-core raises it from the response body."""
    detail = {"domain": "global", "message": message, "reason": reason}
    error: gexc.GoogleAPICallError = gexc.from_http_status(status, message, errors=[detail])
    return error


def job_error(reason: str, message: str, **more: Any) -> gexc.GoogleAPICallError:
    """A job that ran and failed with this errorResult, as `job.result()` raises it."""
    result = {"reason": reason, "message": message, **more}
    error: gexc.GoogleAPICallError = _error_result_to_exception(result)
    return error
