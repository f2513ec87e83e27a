"""Several ``loglake serve`` nodes on one NATS: who is there, and who delivers what.

With ``[stream] backend = "nats"`` every node accepts appends to every stream, and each stream is
*delivered* (read, written to the lake, its continuous queries run) by one node, its owner; each
scheduled ETL job is run by one node too. Ownership is a lease in a JetStream key-value bucket
(``<prefix>_cluster``, entries expire after :data:`LEASE_S` unless renewed):

- ``node.<id>``: each node's heartbeat (what it owns, since when), put every :data:`RENEW_S`.
- ``owner.<stream>`` / ``job.<name>``: the owner's node id. A free key is taken with a create (only
  one node can create it); the owner renews it every second with a compare-and-set on its revision.
  When the owner dies its key expires and the next node to try takes it over: within
  :data:`LEASE_S` + :data:`RENEW_S` seconds.
- A node that cannot renew (NATS unreachable) gives its leases up once :data:`LEASE_S` passed
  since its last renewal, before another node can have taken them.

Leases make the work efficient, not correct: correctness is the fence on every stream commit
(lake/writer.py), which refuses a commit whose records another node already committed, so an
owner that is paused past its lease and wakes up cannot write anything twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loglake.stream.nats import NatsClient

log = logging.getLogger("loglake.cluster")

LEASE_S = 6.0  # an unrenewed key (a dead node's) expires after this long
RENEW_S = 1.0  # how often a node renews its leases and tries to take free ones


@dataclass
class ClusterStats:
    """What the lease loop did (read any time)."""

    renewals: int = 0
    acquired: int = 0  # leases taken (a stream or job this node started delivering or running)
    released: int = 0  # leases given up or lost
    errors: int = 0  # rounds that failed to reach NATS
    owned: set[str] = field(default_factory=set)  # keys this node holds now


class Cluster:
    """This node's view of the cluster, and its leases. ``wanted()`` lists the keys to hold
    (``owner.<stream>`` for each stream, ``job.<name>`` for each scheduled job);
    ``on_acquire(key)`` / ``on_release(key)`` run in the lease thread when one is taken or lost.
    Raises nothing from :meth:`run`'s loop: a failed round is logged and retried."""

    def __init__(
        self,
        client: NatsClient,
        node: str,
        wanted: Callable[[], list[str]],
        on_acquire: Callable[[str], None],
        on_release: Callable[[str], None],
    ) -> None:
        self.client = client
        self.node = node
        self.bucket = f"{client.config.prefix}_cluster"
        self.stats = ClusterStats()
        self._wanted = wanted
        self._on_acquire = on_acquire
        self._on_release = on_release
        self._started = time.time()
        self._revisions: dict[str, int] = {}  # key -> revision of our last write
        self._renewed_at = time.monotonic()
        self._kv: Any = None
        self._stop = threading.Event()

    def owns(self, key: str) -> bool:
        return key in self.stats.owned

    def run(self) -> None:
        """Renew and take leases every :data:`RENEW_S` until :meth:`stop`; then give them up."""
        while not self._stop.is_set():
            try:
                # The round runs on the NATS event loop; starting and stopping delivery (which
                # itself waits on that loop) happens here, in the lease thread, after it.
                taken, lost = self.client.run(self._round())
                self._renewed_at = time.monotonic()
                for key in lost:
                    self._release(key, "another node took the lease over")
                for key in taken:
                    self._on_acquire(key)
            except Exception as exc:
                self.stats.errors += 1
                log.warning("cluster: lease round failed: %s", exc)
                if time.monotonic() - self._renewed_at > LEASE_S:
                    # Another node may hold our leases by now: stop the work they cover.
                    for key in sorted(self.stats.owned):
                        self._release(key, "its lease could not be renewed")
            self._stop.wait(RENEW_S)
        for key in sorted(self.stats.owned):
            self._release(key, "the node stops")
        try:
            self.client.run(self._give_up(), timeout=10)
        except Exception as exc:
            log.warning("cluster: giving the leases up failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()

    async def _bucket(self) -> Any:
        if self._kv is None:
            from nats.js.api import KeyValueConfig
            from nats.js.errors import BucketNotFoundError

            js = self.client.js
            try:
                self._kv = await js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await js.create_key_value(
                    KeyValueConfig(
                        bucket=self.bucket,
                        ttl=LEASE_S,
                        history=1,
                        replicas=self.client.config.replicas,
                    )
                )
        return self._kv

    async def _round(self) -> tuple[list[str], list[str]]:
        """Renew what we hold, try to take what is free; the keys taken and lost."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = await self._bucket()
        wanted = self._wanted()
        me = self.node.encode()
        taken: list[str] = []
        lost: list[str] = []
        for key in wanted:
            mine = key in self.stats.owned
            try:
                if mine:
                    self._revisions[key] = await kv.update(key, me, last=self._revisions[key])
                    self.stats.renewals += 1
                else:
                    self._revisions[key] = await kv.create(key, me)
                    self.stats.owned.add(key)
                    self.stats.acquired += 1
                    log.info(
                        "cluster: %s now owns %s",
                        self.node,
                        key,
                        extra={"fields": {"node": self.node, "key": key}},
                    )
                    taken.append(key)
            except (KeyWrongLastSequenceError, KeyNotFoundError):
                if mine:  # our lease expired and another node took it
                    lost.append(key)
            except Exception as exc:
                if "wrong last sequence" in str(exc).lower() or "key exists" in str(exc).lower():
                    if mine:
                        lost.append(key)
                    continue
                raise
        lost += sorted(self.stats.owned - set(wanted))  # no longer configured
        owns = sorted(self.stats.owned - set(lost))
        heartbeat = {"node": self.node, "since": self._started, "owns": owns}
        await kv.put(f"node.{self.node}", json.dumps(heartbeat).encode())
        return taken, lost

    def _release(self, key: str, why: str) -> None:
        if key not in self.stats.owned:
            return
        self.stats.owned.discard(key)
        self._revisions.pop(key, None)
        self.stats.released += 1
        log.info(
            "cluster: %s gives %s up (%s)",
            self.node,
            key,
            why,
            extra={"fields": {"node": self.node, "key": key, "reason": why}},
        )
        try:
            self._on_release(key)
        except Exception as exc:
            log.error("cluster: stopping the work of %s failed: %s", key, exc)

    async def _give_up(self) -> None:
        kv = await self._bucket()
        for key in [*self._revisions, f"node.{self.node}"]:
            try:
                await kv.delete(key)
            except Exception as exc:  # the key expires anyway
                log.debug("cluster: deleting %s failed: %s", key, exc)

    def view(self) -> dict[str, Any]:
        """The nodes alive (their heartbeats) and the owner of every key, as /v1/cluster shows."""
        return self.client.run(self._view())

    async def _view(self) -> dict[str, Any]:
        from nats.js.errors import NoKeysError

        kv = await self._bucket()
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        nodes, owners = [], {}
        for key in sorted(keys):
            try:
                entry = await kv.get(key)
            except Exception:
                continue  # expired meanwhile
            value = (entry.value or b"").decode()
            if key.startswith("node."):
                nodes.append(json.loads(value))
            else:
                owners[key] = value
        return {"node": self.node, "nodes": nodes, "owners": owners}
