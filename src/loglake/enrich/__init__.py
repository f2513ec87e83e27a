"""Enrichers add columns computed from existing ones; registered by name, imported lazily."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from loglake.errors import ConfigError

if TYPE_CHECKING:
    import polars as pl


class Enricher(Protocol):
    """Adds columns to a parsed batch; per-distinct-value work is cached across batches."""

    def enrich(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Return ``frame`` with the enricher's columns added (same rows, same order)."""
        ...


REGISTRY: dict[str, str] = {"useragent": "loglake.enrich.useragent:UserAgentEnricher"}


def get_enricher(name: str) -> Enricher:
    """A new enricher instance by registry name."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown enricher {name!r}; known: {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
