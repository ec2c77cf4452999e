"""The pure part of a chunked catalog run (worker/catalog_chunks.py): chunks cover the key space
once, the plan survives its stored form, finished chunks are skipped, names are the run's."""

from __future__ import annotations

import pytest

from worker.catalog_chunks import (
    CHUNK_COLUMN,
    PLAN_COLUMN,
    TRY_COLUMN,
    Chunk,
    ChunkPlan,
    chunk_record_name,
    final_rows_sql,
    final_rows_view_sql,
    mark_chunk_sql,
    marks_sql,
    plan_of,
    run_staging_name,
    unfinished,
)
from worker.constants import STAGING_PREFIX


def test_chunks_cover_the_key_space_once() -> None:
    plan = plan_of(("id",), [(10,), (20,)])
    assert plan.chunks() == (Chunk(1, None, (10,)), Chunk(2, (10,), (20,)), Chunk(3, (20,), None))


def test_no_split_point_is_one_unbounded_chunk() -> None:
    assert plan_of(("id",), []).chunks() == (Chunk(1, None, None),)


def test_a_repeated_point_makes_no_empty_chunk_and_the_database_order_is_kept() -> None:
    # "Z" sorts before "b" in Python but after it in a case-insensitive collation: kept as given.
    plan = plan_of(("a", "b"), [(1, "b"), (1, "b"), (1, "Z")])
    assert plan.bounds == ((1, "b"), (1, "Z"))


def test_a_point_must_match_the_key() -> None:
    with pytest.raises(ValueError, match="2 values for a key of 1"):
        plan_of(("id",), [(1, 2)])
    with pytest.raises(ValueError, match="needs a key"):
        plan_of((), [])


def test_the_plan_survives_its_stored_text() -> None:
    plan = plan_of(("tenant", "code"), [(1, "b"), (2, "a")])
    assert ChunkPlan.from_text(plan.to_text()) == plan


def test_finished_chunks_are_skipped() -> None:
    plan = plan_of(("id",), [(10,), (20,), (30,)])
    assert [chunk.number for chunk in unfinished(plan, [1, 3])] == [2, 4]
    assert unfinished(plan, [1, 2, 3, 4]) == ()


def test_the_staging_belongs_to_the_run_and_is_reaped_like_a_delivery_s() -> None:
    name = run_staging_name("run-7/x")
    assert name == f"{STAGING_PREFIX}run_7_x_chunks"
    assert run_staging_name("run-7/x") == name  # every delivery finds the same table
    assert chunk_record_name("run-7/x").startswith(STAGING_PREFIX)


def test_a_chunk_is_finished_by_one_mark_and_only_marked_tries_count() -> None:
    mark = mark_chunk_sql("`r`")
    assert mark.startswith("INSERT INTO `r`") and ";" not in mark  # one statement: atomic
    assert "PARTITION BY chunk ORDER BY read_at, try_token" in marks_sql("`r`")  # one try per chunk
    query = final_rows_sql("`s`", "`r`", ["id", "v"])
    assert f"s.`{CHUNK_COLUMN}` = m.chunk AND s.`{TRY_COLUMN}` = m.try_token" in query
    assert f"WHERE s.`{PLAN_COLUMN}` = @plan" in query


def test_the_final_view_writes_the_plan_identity_in_and_refuses_anything_else() -> None:
    plan = plan_of(("id",), [(3,)])
    view = final_rows_view_sql("`s`", "`r`", ["id", "v"], plan.identity)
    assert f"= '{plan.identity}'" in view and "@plan" not in view
    with pytest.raises(ValueError, match="not a plan identity"):
        final_rows_view_sql("`s`", "`r`", ["id"], "x' OR TRUE --")
