"""Benchmarks (`make bench`): the worker's extraction against the databases' own dumps, dlt and a
naive loop. Not part of the test suite; see docs/performance.md."""
