"""Keeping optional heavy libraries out of processes that never use them.

pyarrow probes for pandas the first time it meets a Python object (``pa.array([...])``, and while
``pyarrow.dataset`` initialises, which ``pyiceberg.io.pyarrow`` imports): when pandas is installed,
that probe imports it, about a second of a batch ingest's start that nothing on the path uses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
