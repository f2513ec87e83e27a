"""A stream's delivery as ``loglake serve`` runs it: its consumers and their runners.

Today a stream has one consumer, the lake writer (lake/consumer.py), run by a
:class:`~loglake.stream.consumer.ConsumerRunner` under the server's supervisor; its continuous
queries (analytics/feed.py) are the lake writer's hooks. This module is where they are put
together, so that the lake knows nothing of analytics and the stream nothing of the lake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from loglake.analytics.feed import QueryFeed
from loglake.lake.consumer import DeliveryStats, LakeConsumer
from loglake.stream.consumer import ConsumerGroup, ConsumerRunner
from loglake.supervise import plain_thread, supervised

if TYPE_CHECKING:
    import threading
    from concurrent.futures import Future

    from pyiceberg.catalog import Catalog

    from loglake.config import Config, StreamConfig
    from loglake.lake.maintenance import MaintenanceSchedule
    from loglake.lake.tables import Tables
    from loglake.stream.log import StreamLog
    from loglake.supervise import Supervisor


class Delivery:
    """The consumers of one stream: the lake writer (with the queries as its hooks), its runner
    and the group that trims the log at what every consumer has committed."""

    def __init__(
        self,
        config: Config,
        name: str,
        stream: StreamConfig,
        log: StreamLog,
        catalog: Future[Catalog],
        tables: Tables,
        maintenance: MaintenanceSchedule | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.name = name
        self.group = ConsumerGroup(name, log)
        self.lake = LakeConsumer(
            config,
            name,
            stream,
            log,
            catalog,
            tables,
            maintenance=maintenance,
            on_progress=self.group.progress,
        )
        # A notifier thread that dies is not restarted (its queue went with it): shown as dead.
        spawn = supervised(supervisor, restart=False) if supervisor is not None else plain_thread
        self.queries = QueryFeed(config, name, self.lake.table, catalog, tables, spawn)
        self.lake.hooks = self.queries
        self.consumer: ConsumerRunner = self.group.add(self.lake)
        self._supervisor = supervisor

    def start(self) -> None:
        self.consumer.start(self._supervisor)

    def stop(self, timeout: float = 30.0) -> None:
        """Deliver and commit what the log holds now, then stop (graceful shutdown)."""
        self.consumer.stop(timeout)

    @property
    def table(self) -> str:
        return self.lake.table

    @property
    def stats(self) -> DeliveryStats:
        return self.lake.stats

    @property
    def errors(self) -> list[str]:
        """The latest failures of the consumers (they resumed from the lake after each)."""
        return self.consumer.stats.errors

    @property
    def ready(self) -> threading.Event:
        return self.consumer.ready

    @property
    def alive(self) -> bool:
        return self.consumer.alive

    @property
    def runner(self) -> Any:
        """The stream's continuous queries (a QueryRunner), or None while it has none."""
        return self.queries.runner

    def add_query(self, name: str, config: Config) -> None:
        self.queries.add_query(name, config)

    def remove_query(self, name: str, config: Config) -> None:
        self.queries.remove_query(name, config)
