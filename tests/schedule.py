"""Expected durations, so that pytest-xdist starts the longest tests first.

`make test` runs `--dist load --maxschedchunk 1`: each worker holds at most two tests and asks for
more as it finishes, so a collection sorted longest first is scheduled longest-processing-time first,
and the last minute is not one worker alone on a crash scenario. Only the order changes (never what
runs); every worker sorts alike (tests/conftest.py), and a sequential run keeps the file order.

Seconds measured on the 2-core machine (`--durations=0`, sequential); the longest matching nodeid
prefix wins, anything unlisted counts as 0. Rough is fine: only the order matters.
"""

from __future__ import annotations

EXPECTED_S: dict[str, float] = {
    # SIGKILL at every phase: two worker processes, the killed lease handed back (the few scenarios
    # that wait for its 10 s expiry take ~5 s more)
    "tests/faults/test_crash_recovery.py::": 9.0,
    "tests/faults/test_job_crashes.py::": 13.0,
    "tests/faults/test_cdc_crashes.py::": 10.0,
    "tests/cdc/test_cdc_randomized.py::": 10.0,
    "tests/cdc/test_cdc_randomized_mariadb.py::": 12.0,  # each of its two
    "tests/cdc/test_cdc_mariadb.py::": 10.0,
    "tests/faults/test_sub_window_crashes.py::": 8.0,
    "tests/e2e/test_big_tables.py::": 8.0,
    "tests/faults/test_merge_under_writers.py::": 29.0,
    "tests/lifecycle/test_shutdown_timeout_scale.py::test_sigterm_during": 25.0,
    "tests/lifecycle/test_shutdown_timeout_scale.py::test_two_workers": 30.0,
    "tests/lifecycle/test_shutdown_timeout_scale.py::test_a_run_past": 5.0,
    "tests/e2e/test_secrets_never_leak.py::": 23.0,
    "tests/e2e/test_replay.py::": 20.0,
    "tests/e2e/test_hostile_input.py::test_identifiers_crafted": 16.0,
    "tests/e2e/test_hostile_input.py::test_hostile_messages": 13.0,
    "tests/e2e/test_hostile_input.py::": 3.0,
    "tests/test_lint.py::test_lint_is_clean[mypy]": 10.0,
    "tests/faults/test_windows_and_readers.py::": 5.0,
    "tests/test_bench_smoke.py::test_cdc_bench": 15.0,
    "tests/test_bench_smoke.py::": 5.0,
    "tests/e2e/test_pipeline.py::": 4.5,
    "tests/e2e/": 2.0,
    # Long ones that were missing (2026-12-04, `--durations=40` of `make test` halved: its four
    # workers share two cores; the property tests measured alone)
    "tests/django_ref/test_dead_letter.py::": 14.0,
    "tests/django_ref/test_event_order.py::test_redelivered": 5.0,
    "tests/ops/test_dashboard.py::test_a_week": 8.0,
    "tests/ops/test_dashboard.py::test_the_dashboard_shows": 8.0,
    "tests/e2e/test_jobs.py::test_a_concurrent_writer": 8.0,
    "tests/test_bench_smoke.py::test_resume_bench": 14.0,
    "tests/test_bench_smoke.py::test_mysql_speed_bench": 7.5,
    "tests/sources/test_json_templates.py::test_a_plain_number": 6.5,
    "tests/sources/test_json_templates.py::test_json_column_with_templates": 5.0,
    "tests/sources/test_json_templates.py::test_a_document_matching": 4.0,
    "tests/sources/test_iso_layouts.py::test_the_layout": 5.0,
    "tests/unit/test_fast_json.py::test_fast_json_column_is_json_text": 6.0,
    "tests/sinks/test_bigquery_emulator.py::": 0.5,
    "tests/types/test_evolution.py::": 0.5,
}


def expected_seconds(nodeid: str) -> float:
    matches = [prefix for prefix in EXPECTED_S if nodeid.startswith(prefix)]
    return EXPECTED_S[max(matches, key=len)] if matches else 0.0
