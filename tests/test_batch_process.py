"""The set-up of one-shot batch commands (``loglake ingest``): collector and Arrow allocator for the
block, everything restored after it, also when the block raises."""

from __future__ import annotations

import gc

import pyarrow as pa
import pytest

from loglake.imports import batch_process


def test_batch_process_tunes_the_collector_and_arrow_then_restores_them() -> None:
    threshold, pool = gc.get_threshold(), pa.default_memory_pool().backend_name
    with batch_process():
        assert gc.get_threshold() == (100_000, 50, 100)
        # pyarrow's Linux wheels carry jemalloc (the fallback keeps the default elsewhere)
        assert pa.default_memory_pool().backend_name == "jemalloc"
        table = pa.table({"n": list(range(1000))})
        assert table.column("n").to_pylist()[-1] == 999
    assert gc.get_threshold() == threshold
    assert pa.default_memory_pool().backend_name == pool
    assert gc.isenabled()


def test_batch_process_restores_after_an_error() -> None:
    threshold, pool = gc.get_threshold(), pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError, match="boom"), batch_process():
        raise RuntimeError("boom")
    assert gc.get_threshold() == threshold
    assert pa.default_memory_pool().backend_name == pool
