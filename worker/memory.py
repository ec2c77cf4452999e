"""Arrow's memory pool for the worker: jemalloc, unless the operator chose one.

pyarrow's default pool on Linux is mimalloc, which keeps freed pages in per-thread heaps; with the
threads a run uses (COPY pipe, CSV reader, read-ahead, Parquet writer, part loader) the whole
extraction peaked at 258-282 MiB on the 1M-row benchmark table. jemalloc returns freed memory to
the system: 186-205 MiB, at the same speed (docs/performance.md). `ARROW_DEFAULT_MEMORY_POOL`
(Arrow's own variable: jemalloc, mimalloc, system) still decides when it is set.
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa

log = logging.getLogger(__name__)


def use_worker_memory_pool() -> str:
    """Switch Arrow's default pool to jemalloc where pyarrow has it; return the pool in use."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # a pyarrow built without jemalloc: keep its default
            log.debug("pyarrow has no jemalloc pool; keeping %s", pa.default_memory_pool().backend_name)
    return str(pa.default_memory_pool().backend_name)
