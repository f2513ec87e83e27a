"""Set-up of one-shot batch processes: heavy libraries they never use kept out, memory tuned.

pyarrow probes for pandas the first time it meets a Python object (``pa.array([...])``, and while
``pyarrow.dataset`` initialises, which ``pyiceberg.io.pyarrow`` imports): when pandas is installed,
that probe imports it, about a second of a batch ingest's start that nothing on the path uses.

A batch ingest also allocates few Python objects per line (its data lives in Arrow and Polars
buffers) but imports hundreds of thousands at start (pyiceberg, pydantic, SQLAlchemy): Python's
cyclic garbage collector, run every 700 allocations, then traverses them again and again, and
once more at exit, for nothing (6-8 % of a 1M-line ingest each, measured). :func:`batch_process`
makes its collections rarer (the CLI's entry point keeps the exit from traversing).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib.abc import Loader
from importlib.machinery import ModuleSpec
from types import ModuleType


class _Refuse(Loader):
    """A meta path finder under which ``import pandas`` fails as if pandas were not installed.

    It finds a spec (so ``importlib.util.find_spec``, which polars calls at import to set up its
    lazy pandas proxy, still answers) whose loading raises ModuleNotFoundError.
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name == "pandas" or name.startswith("pandas."):
            return ModuleSpec(name, self)
        return None

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        raise ModuleNotFoundError(
            f"pandas is kept out of this command: {spec.name}", name=spec.name
        )

    def exec_module(self, module: ModuleType) -> None:  # pragma: no cover - create_module raised
        raise ModuleNotFoundError("pandas is kept out of this command", name=module.__name__)


@contextmanager
def without_pandas() -> Iterator[None]:
    """Run the block with pandas unimportable, unless something already imported it.

    For one-shot commands that never hand pandas objects around (``loglake ingest``). pyarrow's
    probes then take "no pandas" and go on without it; a later call that truly needs pandas (a
    ``to_pandas()`` after the block) imports it then, since pyarrow retries when pandas is
    required. Not for long-lived processes where user code may pass pandas objects to pyarrow
    afterwards: pyarrow would keep treating them as plain sequences.
    """
    if "pandas" in sys.modules:
        yield
        return
    refuse = _Refuse()
    sys.meta_path.insert(0, refuse)
    try:
        yield
    finally:
        sys.meta_path.remove(refuse)


# Young-generation collections every 100,000 net allocations instead of 700: cycles are still
# collected (memory stays bounded over a long run), the import-time objects are not re-traversed.
_BATCH_GC_THRESHOLD = (100_000, 50, 100)


@contextmanager
def batch_process() -> Iterator[None]:
    """Tune this process for a one-shot batch command (``loglake ingest``), for the block.

    pandas stays out (:func:`without_pandas`); the garbage collector runs rarely; Arrow allocates
    from jemalloc where this pyarrow has it (a 1M-line ingest: ~150 MB lower peak and less kernel
    time than the default mimalloc, whose fresh pages are faulted in again and again). The
    collector's thresholds are restored on leaving. Not for long-lived processes (``loglake
    serve``, a notebook).
    """
    import pyarrow as pa

    before, pool = gc.get_threshold(), pa.default_memory_pool()
    gc.set_threshold(*_BATCH_GC_THRESHOLD)
    with suppress(NotImplementedError, AttributeError):  # a pyarrow built without jemalloc
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    try:
        with without_pandas():
            yield
    finally:
        gc.set_threshold(*before)
        pa.set_memory_pool(pool)
