"""Build the BigQuery client: real BigQuery with default credentials, or an emulator.

The emulator (bqemulator) answers some unsupported calls with HTTP 500, which the client would
retry for minutes; against it we cap retries so a failure surfaces in seconds.
"""

from __future__ import annotations

from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from worker.faults import instrument_bigquery

EMULATOR_RETRY_TIMEOUT_S = 30.0


def make_bigquery_client(project: str, emulator_host: str | None = None) -> bigquery.Client:
    if not emulator_host:
        return bigquery.Client(project=project)
    endpoint = emulator_host if emulator_host.startswith("http") else f"http://{emulator_host}"
    client = bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )
    return instrument_bigquery(client)  # fault injection only (ETL_FAULT_INJECTION=1); else as is


def api_retry(emulator_host: str | None) -> bigquery.retry.Retry:
    """Retry policy for API calls: the library default, bounded when talking to an emulator."""
    if emulator_host:
        return bigquery.DEFAULT_RETRY.with_timeout(EMULATOR_RETRY_TIMEOUT_S)
    return bigquery.DEFAULT_RETRY
