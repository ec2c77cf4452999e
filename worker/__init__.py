"""etl-worker: a Pub/Sub-driven ETL worker from SQL databases into BigQuery."""

__version__ = "0.1.0"
