"""Missions shared by the nodes of a cluster whose storage is one PostgreSQL database
(docs/deployment.md "Several nodes": "Missions and files").

Each node keeps its missions in memory (``liaison.missions``) and writes every change through to
the shared database. After a batch of its writes is committed, the node publishes on core NATS
(``<cluster.prefix>.missions``, ``protocol/mission_share.py``) the missions and log entries the
batch touched and the mission notices it sent since the previous batch. Every other node reads
those missions and entries back from the database (replacing what it held) and then hands each
notice to the clients it names that are connected to it, under its own access decision: a
subscriber connected to any node gets each notice once, from its own node.

Core NATS keeps nothing: a node that is down or cut from NATS when a message passes misses it;
it reads every mission again when it starts, and the next change to a mission brings it up to
date (the message names the mission, the node reads all of it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from liaison.cluster.bus import DRAIN_S, NatsBus
from liaison.errors import StorageError
from liaison.metrics import Metrics
from liaison.protocol import mission_share
from liaison.protocol.mission_share import MissionShare, ShareError

if TYPE_CHECKING:
    from liaison.missions import Missions

log = logging.getLogger(__name__)

# Messages waiting to be published, and received messages waiting to be applied. Past either,
# the oldest is dropped, logged and counted (liaison_cluster_missions_dropped_total): the other
# nodes (or this one) then hold that mission as it was until its next change.
MAX_OUTBOX = 1024
MAX_INBOX = 1024
# Seconds before a mission is read again when this node was writing to it while it read it
# (Missions.apply_shared); it is read again until a read sees no write of this node meanwhile.
RETRY_S = 0.1
# Missions waiting to be read again, at most (a node holds at most missions.MAX_MISSIONS); past
# it one is not read again (dropped, counted: it stays as this node held it until its next change).
MAX_RETRY = 1000


class MissionSharing:
    """A lifetimes Component, started after the bus and the missions, closed before them."""

    name = "cluster-missions"

    def __init__(self, bus: NatsBus, missions: Missions, metrics: Metrics) -> None:
        self._bus = bus
        self._missions = missions
        self._node = bus.settings.node
        self._subject = mission_share.subject(bus.settings.prefix)
        self._out: collections.deque[MissionShare] = collections.deque()
        self._in: collections.deque[MissionShare] = collections.deque()
        self._wake = asyncio.Event()
        self._retry: dict[str, None] = {}  # missions to read again (in order)
        self._subscription: Any = None
        self.m_published = metrics.counter(
            "liaison_cluster_missions_published_total",
            "Mission share messages this node published",
        )
        self.m_received = metrics.counter(
            "liaison_cluster_missions_received_total",
            "Mission share messages from other nodes applied",
        )
        self.m_refused = metrics.counter(
            "liaison_cluster_missions_refused_total",
            "Mission share messages refused (not well formed)",
        )
        self.m_dropped = metrics.counter(
            "liaison_cluster_missions_dropped_total",
            "Mission share messages dropped (queue full, too large, or NATS refused them)",
            "reason",
        )

    async def bind(self) -> None:
        self._subscription = await self._bus.client.subscribe(self._subject, cb=self._on_msg)
        self._missions.share = self.submit

    async def run(self) -> None:
        while True:
            if self._retry:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), RETRY_S)
            else:
                await self._wake.wait()
            self._wake.clear()
            await self._publish()
            await self._apply()

    async def close(self) -> None:
        self._missions.share = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._publish(), DRAIN_S)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
            self._subscription = None

    # --- out ------------------------------------------------------------------------------

    def submit(self, msg: MissionShare) -> None:
        """What the missions wrote (``Missions.share``): queued for publishing, in order."""
        if len(self._out) >= MAX_OUTBOX:
            self._out.popleft()
            self.m_dropped.inc("outbox_full")
            log.error("cluster: %d mission messages wait for NATS; oldest dropped", MAX_OUTBOX)
        self._out.append(MissionShare(self._node, msg.missions, msg.logs, msg.notices))
        self._wake.set()

    async def _publish(self) -> None:
        nc = self._bus.client
        while self._out:
            msg = self._out[0]
            for payload in self._payloads(msg):
                try:
                    await nc.publish(self._subject, payload)
                except Exception as exc:  # nats-py raises its own error types
                    self.m_dropped.inc("publish_failed")
                    log.error("cluster: mission message not published: %s", exc)
                    continue
                self.m_published.inc()
            self._out.popleft()

    def _payloads(self, msg: MissionShare) -> list[bytes]:
        """``msg`` encoded, split so that each part is within the wire's limits (names first,
        then the notices in order, so a reader reads the missions before their notices)."""
        parts: list[bytes] = []
        names = mission_share.MAX_NAMES
        for i in range(0, max(len(msg.missions), len(msg.logs)), names):
            parts.append(
                mission_share.encode(
                    MissionShare(self._node, msg.missions[i : i + names], msg.logs[i : i + names])
                )
            )
        pending = list(msg.notices)
        while pending:
            take = min(len(pending), mission_share.MAX_NOTICES)
            while True:
                payload = mission_share.encode(
                    MissionShare(self._node, notices=tuple(pending[:take]))
                )
                if len(payload) <= mission_share.MAX_MESSAGE_BYTES or take == 1:
                    break
                take = max(1, take // 2)
            if len(payload) > mission_share.MAX_MESSAGE_BYTES:
                self.m_dropped.inc("too_large")
                log.error("cluster: a mission notice of %d bytes not shared", len(payload))
            else:
                parts.append(payload)
            del pending[:take]
        return parts

    # --- in -------------------------------------------------------------------------------

    async def _on_msg(self, msg: Any) -> None:
        self.receive(msg.data)

    def receive(self, payload: bytes) -> bool:
        """A message from the bus: queued to be applied unless it is this node's own or not
        well formed (refused, logged, counted)."""
        try:
            msg = mission_share.decode(payload)
        except ShareError as exc:
            self.m_refused.inc()
            log.warning("cluster: mission message refused: %s", exc)
            return False
        if msg.node == self._node:
            return False
        if len(self._in) >= MAX_INBOX:
            self._in.popleft()
            self.m_dropped.inc("inbox_full")
            log.error("cluster: %d mission messages wait to be applied; oldest dropped", MAX_INBOX)
        self._in.append(msg)
        self._wake.set()
        return True

    async def _apply(self) -> None:
        """Apply what arrived: every mission and log entry named is read once (whatever number
        of messages named it), then the notices are delivered in the order they came."""
        if not self._in and not self._retry:
            return
        batch = list(self._in)
        self._in.clear()
        missions = list(dict.fromkeys([*self._retry, *(n for m in batch for n in m.missions)]))
        self._retry.clear()
        logs = list(dict.fromkeys(i for m in batch for i in m.logs))
        try:
            again = await self._missions.apply_shared(missions, logs)
        except StorageError as exc:
            again = missions  # read again once the database answers
            log.error("cluster: missions changed by another node not read yet: %s", exc)
        except Exception as exc:  # a fault reading them must not end this node: logged, counted
            again = []
            self.m_refused.inc()
            log.exception("cluster: missions changed by another node not applied: %r", exc)
        for name in again:
            if len(self._retry) >= MAX_RETRY:
                self.m_dropped.inc("retry_full")
                log.error("cluster: mission %r changed by another node not read again", name)
                continue
            self._retry[name] = None
        for msg in batch:
            for notice in msg.notices:
                self._missions.deliver_shared(notice)
            self.m_received.inc()
