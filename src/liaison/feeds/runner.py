"""The feeds as sources of the router: one task per ``[feeds.NAME]``, each publishing under its
own principal (docs/feeds.md).

An adapter reads its upstream (an ``aircraft.json`` over HTTP or from a file, SBS-1 BaseStation
lines or AIS sentences from a TCP server, AIS sentences on a UDP port), turns what it reads into
track reports with the pure parsers (``protocol.adsb``, ``protocol.sbs1``, ``protocol.ais``)
as fast as it arrives, and offers them to one pending table shared by every feed (newest fix per
track wins, so several receivers of one aircraft make one track: ``feeds.pending``). A publisher
task takes the fixes that are due out of it, at most one per track per ``min_interval_s`` widened
while the server is behind (adaptive thinning), a bounded amount of work per loop turn, and calls
``Router.publish_checked``: the same ingest rules, labelling, audit and access decision as any
other source. A flooding upstream makes the picture coarser, never late, and never holds up the
other clients. A failing upstream is retried with backoff and never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree as ET

import aiohttp

from liaison.errors import listen_errors
from liaison.federation.backoff import Backoff
from liaison.feeds.config import FeedConfig
from liaison.feeds.pending import COALESCED, Pace, PendingTracks, Thinning
from liaison.feeds.status import (
    STATUS_INTERVAL_S,
    STATUS_VERSION,
    FeedStatus,
    status_path,
    write_status,
)
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.labels import Policy
from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol import adsb, geo
from liaison.protocol.ais import AisDecoder
from liaison.protocol.feed_tracks import (
    TrackReport,
    affiliation,
    classification,
    to_event,
)
from liaison.protocol.sbs1 import Sbs1Decoder
from liaison.router import Router

log = logging.getLogger(__name__)

# Largest aircraft.json we read: a 5,000-aircraft aggregator document is about 2.5 MB.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# AIS lines waiting to be decoded (from the UDP port): a busy coastal station sends a few
# hundred a second; past this the newest are dropped and counted as ``queue_full``.
MAX_QUEUED_LINES = 10_000
# Longest line read from an SBS-1 or AIS TCP stream (see protocol.ais.MAX_LINE_BYTES; longer is
# garbage, skipped and counted as invalid).
MAX_TCP_LINE_BYTES = 4096
# Bytes a TCP feed reads at once (about 650 SBS-1 lines, parsed into the pending table in one
# go), and seconds of reading and parsing it may take in one loop turn while bytes are waiting.
READ_CHUNK_BYTES = 64 * 1024
READ_TURN_S = 0.05
# Bytes waiting unread in a TCP feed's socket past which the feed is behind its upstream (it sends
# faster than the lines can be parsed): the lines read are skipped unparsed (counted as
# ``skipped``) until it has caught up, so what is parsed is recent, never a backlog.
READ_BEHIND_BYTES = 256 * 1024
# Seconds an HTTP poll or a TCP connect may take.
UPSTREAM_TIMEOUT_S = 10.0
# Reports (or AIS lines) offered to the pending table in one go before a feed lets the event loop
# serve others: it bounds how long one large document holds the loop (docs/feeds.md).
PUBLISH_BATCH = 256
# Tracks the pending table remembers (the least recently heard is forgotten first).
MAX_TRACKS = 100_000
# The publisher's work in one loop turn: at most this many deliveries (an event to 200 clients
# is 200), MAX_EVENTS_PER_TURN events or MAX_TURN_S seconds, then it yields so the other
# sessions are served.
MAX_DELIVERIES_PER_TURN = 10_000
MAX_EVENTS_PER_TURN = 256
MAX_TURN_S = 0.05
# Seconds the publisher sleeps at most when nothing is due (a new track waits no longer).
PUBLISH_TICK_S = 0.05
# Seconds between two adaptation steps of the thinning factor (and loop-lag windows).
ADAPT_PERIOD_S = 0.5
# The signals that the server is behind, each checked at every adaptation step:
# - the event loop ran this late (the lag probe's worst in the period);
LOOP_LAG_LIMIT_S = 0.25
# - the oldest due fix has waited past its due time longer than this and than half the track's
#   (widened) interval: the publisher does not keep up with the tracks at this interval. Between
#   OVERDUE_CLEAR_MS and that it is catching up (the factor holds); below, clear (it narrows).
OVERDUE_LIMIT_MS = 1_000
OVERDUE_SHARE = 0.5
OVERDUE_CLEAR_MS = 200
# - the store's writer queue holds this share of the depth at which the router congests;
WRITER_BACKLOG_LIMIT = 0.25
# - this share of the stream subscribers each have more than OUTBOUND_BACKLOG_ITEMS waiting.
OUTBOUND_BACKLOG_ITEMS = 1_000
OUTBOUND_SHARE_LIMIT = 0.5
# Seconds between two lag probes.
LAG_PROBE_S = 0.05
# Most a track's interval is widened by load (and never past half the feed's stale_s).
MAX_THINNING = 64.0
# How long the t-x-d-d deleting a geo feed's removed item stays valid.
GEO_DELETE_STALE_MS = 60_000
# Retry delays after a failure: 1 s doubling to 60 s.
RETRY = Backoff(base=1.0, cap=60.0)


class FeedSource:
    """A feed as the router sees it: a ``router.Source`` with the feed's principal."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    @property
    def principal(self) -> Principal:
        return self._principal


def feed_principal(config: FeedConfig) -> Principal:
    """The feed's principal: a service of its organisation, writing into its groups, reading
    nothing, holding its ceiling, coming through its own gate table (``feed:NAME``)."""
    return Principal(
        name=f"feed:{config.name}",
        kind=PrincipalKind.SERVICE,
        in_groups=config.groups,
        out_groups=frozenset(),
        org=config.org,
        auths=config.ceiling,
        listener=config.listener,
    )


class _UdpLines(asyncio.DatagramProtocol):
    def __init__(
        self, queue: deque[tuple[bytes, str]], wake: asyncio.Event, drop: Callable[[], None]
    ):
        self._queue = queue
        self._wake = wake
        self._drop = drop

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        station = f"{addr[0]}:{addr[1]}" if len(addr) >= 2 else "?"
        for line in data.splitlines():
            if len(self._queue) >= MAX_QUEUED_LINES:
                self._drop()
                continue
            self._queue.append((line, station))
        self._wake.set()


class Feeds:
    """The ``feeds`` component: binds the UDP feeds' ports, runs every feed, closes them."""

    name = "feeds"

    def __init__(
        self,
        configs: list[FeedConfig],
        router: Router,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        data_dir: Path,
        policy: Policy,
    ) -> None:
        self.configs = configs
        self._policy = policy
        self.status_file = status_path(data_dir)
        self._router = router
        self._clock_ms = clock_ms
        # Every track feed's fixes, merged (newest per uid wins), waiting to be published.
        self.tracks: PendingTracks[tuple[FeedConfig, TrackReport]] = PendingTracks(
            max_tracks=MAX_TRACKS, drop=self._dropped
        )
        self.thinning = Thinning(max_factor=MAX_THINNING)
        self._paces = {
            c.name: Pace(
                base_ms=int(c.min_interval_s * 1000),
                cap_ms=max(int(c.min_interval_s * 1000), int(c.stale_s * 1000) // 2),
            )
            for c in configs
            if not c.geo
        }
        self._last_batch_ms: dict[str, int] = {}  # streaming feeds: the last batch's time
        self.loop_lag_s = 0.0  # the worst lag the probe saw in the last adaptation period
        self._lag_worst = 0.0
        self.sources = {c.name: FeedSource(feed_principal(c)) for c in configs}
        self.status = {c.name: FeedStatus(c.name, c.kind, _upstream(c)) for c in configs}
        self._udp: dict[str, asyncio.DatagramTransport] = {}
        self._queues: dict[str, deque[tuple[bytes, str]]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        # geojson and kml feeds: uid -> (fingerprint, CoT type, when published) of each item
        # published and not deleted since, per feed (what a refresh compares against).
        self.geo_items: dict[str, dict[str, tuple[str, str, int]]] = {
            c.name: {} for c in configs if c.geo
        }
        m = metrics
        self.m_reports = m.counter("liaison_feed_reports_total", "Track reports read", "feed")
        self.m_published = m.counter(
            "liaison_feed_published_total", "Feed events accepted by the router", "feed"
        )
        self.m_refused = m.counter(
            "liaison_feed_refused_total", "Feed events refused by the ingest rules", "feed"
        )
        self.m_dropped = m.counter(
            "liaison_feed_dropped_total", "Feed reports not published", "reason"
        )
        self.m_invalid = m.counter(
            "liaison_feed_invalid_total",
            "Feed documents or sentences that could not be read",
            "feed",
        )
        self.m_failures = m.counter(
            "liaison_feed_failures_total", "Feed upstream failures (retried with backoff)", "feed"
        )
        self.m_behind = m.counter(
            "liaison_feed_behind_total",
            "Adaptation steps in which a signal said the server is behind",
            "signal",
        )
        m.gauge(
            "liaison_feed_tracks",
            "Tracks the feeds' pending table remembers",
            lambda: len(self.tracks),
        )
        m.gauge(
            "liaison_feed_pending",
            "Tracks with a fix waiting to be published",
            lambda: self.tracks.pending,
        )
        m.gauge(
            "liaison_feed_thinning",
            "Factor the tracks' min_interval_s is widened by under load (1: not thinned)",
            lambda: self.thinning.factor,
        )
        m.gauge(
            "liaison_feed_loop_lag_seconds",
            "Worst event-loop lag the feeds' probe saw in the last adaptation period",
            lambda: self.loop_lag_s,
        )

    # --- lifetime -----------------------------------------------------------------------

    async def bind(self) -> None:
        """Bind every UDP feed's port; when one cannot be bound, close those already bound (a
        failed start leaves nothing of this component open) and raise."""
        try:
            await self._bind_udp()
        except BaseException:
            for transport in self._udp.values():
                transport.close()
            self._udp.clear()
            raise

    async def _bind_udp(self) -> None:
        loop = asyncio.get_running_loop()
        for c in self.configs:
            if c.kind != "ais-udp" or c.listen is None:
                continue
            queue: deque[tuple[bytes, str]] = deque()
            wake = asyncio.Event()

            def protocol(q: deque[tuple[bytes, str]] = queue, w: asyncio.Event = wake) -> _UdpLines:
                return _UdpLines(q, w, lambda: self.m_dropped.inc("queue_full"))

            with listen_errors(c.listen, f"the AIS feed {c.name} ([feeds.{c.name}] listen)"):
                transport, _ = await loop.create_datagram_endpoint(
                    protocol, local_addr=(c.listen.host, c.listen.port)
                )
            self._udp[c.name] = transport
            self._queues[c.name] = queue
            self._wakes[c.name] = wake

    def udp_port(self, name: str) -> int:
        """The port a UDP feed is bound to (for tests and logs when configured as port 0)."""
        return int(self._udp[name].get_extra_info("sockname")[1])

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for c in self.configs:
                tg.create_task(self._supervise(c), name=f"feed:{c.name}")
            tg.create_task(self._status_loop(), name="feed-status")
            if any(not c.geo for c in self.configs):
                tg.create_task(self._publisher(), name="feed-publisher")
                tg.create_task(self._lag_probe(), name="feed-lag-probe")

    async def close(self) -> None:
        for transport in self._udp.values():
            transport.close()
        self._udp.clear()
        for status in self.status.values():
            status.state = "stopped"
        with contextlib.suppress(OSError):
            await asyncio.to_thread(write_status, self.status_file, self.snapshot())

    def snapshot(self) -> dict[str, object]:
        """The status document (docs/feeds.md, "Status")."""
        feeds = []
        for c in self.configs:
            n = c.name
            counts = {
                "reports": self.m_reports.get(n),
                "published": self.m_published.get(n),
                "refused": self.m_refused.get(n),
                "invalid": self.m_invalid.get(n),
                "failures_total": self.m_failures.get(n),
            }
            feeds.append(self.status[n].to_json(counts))
        return {
            "v": STATUS_VERSION,
            "written_ms": self._clock_ms(),
            "tracks": len(self.tracks),
            "pending": self.tracks.pending,
            "thinning": round(self.thinning.factor, 2),
            "loop_lag_s": round(self.loop_lag_s, 3),
            "dropped": dict(sorted(self.m_dropped.values.items())),
            "behind": dict(sorted(self.m_behind.values.items())),
            "feeds": feeds,
        }

    async def _status_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(write_status, self.status_file, self.snapshot())
            except OSError as exc:
                log.warning("cannot write %s: %s", self.status_file, exc)
            await asyncio.sleep(STATUS_INTERVAL_S)

    # --- publishing ---------------------------------------------------------------------

    def _dropped(self, reason: str, n: int) -> None:
        self.m_dropped.inc(reason, n)

    def offer(self, config: FeedConfig, reports: list[TrackReport]) -> None:
        """Take reports of one feed into the pending table (cheap: no event is built here); the
        publisher sends them at the rate the server can afford."""
        name = config.name
        self.m_reports.inc(name, len(reports))
        now = self._clock_ms()
        pace = self._paces[name]
        offer = self.tracks.offer
        for report in reports:
            offer(report.uid, report.time_ms, (config, report), pace, now)

    def publish_one(self, config: FeedConfig, report: TrackReport) -> int:
        """Convert and publish one fix; returns the deliveries it made (at least 1 when
        accepted: in a cluster the bus delivers it later)."""
        name = config.name
        aff = affiliation(report, config.rules, config.affiliation)
        level = classification(report, config.labels)
        extra = []
        if level is not None:  # a label rule: the track's own label, REL TO the feed's org
            label = labels.listener_default_label(
                self._policy, level, report.time_ms, originator=config.org
            )
            extra.append(labels.label_to_seclabel(self._policy, label))
        event = to_event(report, aff, int(config.stale_s * 1000), extra)
        result = self._router.publish_checked(event, self.sources[name])
        if result.event is not None:
            self.m_published.inc(name)
            return max(1, result.delivered)
        if result.refused:
            self.m_refused.inc(name)
        return 1

    def publish_due(self, now_ms: int) -> int:
        """Publish the fixes due at ``now_ms``, at most one loop turn's work (the first of
        MAX_DELIVERIES_PER_TURN deliveries, MAX_EVENTS_PER_TURN events, MAX_TURN_S seconds);
        returns the events published. Nothing while the router is congested: the fixes wait,
        newest winning."""
        if self._router.congested:
            return 0
        factor = self.thinning.factor
        take = self.tracks.take_due
        spent = events = 0
        until = time.monotonic() + MAX_TURN_S
        while spent < MAX_DELIVERIES_PER_TURN and events < MAX_EVENTS_PER_TURN:
            if events and time.monotonic() > until:
                break
            due = take(now_ms, factor)
            if due is None:
                break
            config, report = due[1]
            spent += self.publish_one(config, report)
            events += 1
        return events

    def overdue_ms(self, now_ms: int) -> int:
        """How long the fix due first has waited past its due time (0: none is due)."""
        due = self.tracks.next_due_ms(self.thinning.factor)
        return 0 if due is None else max(0, now_ms - due)

    def behind(self, now_ms: int) -> list[str]:
        """The signals that say the server is behind now (docs/feeds.md, "Merge and thin")."""
        signals = []
        if self.loop_lag_s > LOOP_LAG_LIMIT_S:
            signals.append("loop_lag")
        factor = self.thinning.factor
        interval = max((p.interval_ms(factor) for p in self._paces.values()), default=0)
        if self.overdue_ms(now_ms) > max(OVERDUE_LIMIT_MS, interval * OVERDUE_SHARE):
            signals.append("overdue")
        if self._router.congested:
            signals.append("congested")
        elif self._router.store_backlog >= WRITER_BACKLOG_LIMIT:
            signals.append("writer_queue")
        subs = backlogged = 0
        for sub in self._router.subscribers:
            depth: Callable[[], int] | None = getattr(sub, "outbound_depth", None)
            if depth is None:
                continue
            subs += 1
            if depth() > OUTBOUND_BACKLOG_ITEMS:
                backlogged += 1
        if subs and backlogged >= subs * OUTBOUND_SHARE_LIMIT:
            signals.append("outbound")
        return signals

    def adapt(self, now_ms: int) -> None:
        """One adaptation step: widen the tracks' interval while the server is behind, narrow
        it back when it is not."""
        signals = self.behind(now_ms)
        for signal in signals:
            self.m_behind.inc(signal)
        self.thinning.update(signals, clear=self.overdue_ms(now_ms) <= OVERDUE_CLEAR_MS)

    async def _publisher(self) -> None:
        """Publish the pending fixes as they fall due, a bounded turn at a time; adapt the
        thinning every ADAPT_PERIOD_S."""
        loop = asyncio.get_running_loop()
        next_adapt = loop.time() + ADAPT_PERIOD_S
        while True:
            if loop.time() >= next_adapt:
                self.loop_lag_s, self._lag_worst = self._lag_worst, 0.0
                self.adapt(self._clock_ms())
                next_adapt = loop.time() + ADAPT_PERIOD_S
            now = self._clock_ms()
            if self._router.congested:  # the fixes wait (newest winning) until it clears
                await asyncio.sleep(PUBLISH_TICK_S)
                continue
            if self.publish_due(now):
                await asyncio.sleep(0)  # more may be due: let the others have this turn first
                continue
            due = self.tracks.next_due_ms(self.thinning.factor)
            wait = PUBLISH_TICK_S if due is None else (due - now) / 1000
            await asyncio.sleep(min(max(wait, 0.001), PUBLISH_TICK_S))

    async def _lag_probe(self) -> None:
        """Measure how late the event loop runs a timer (the worst per adaptation period)."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            lag = loop.time() - start - LAG_PROBE_S
            if lag > self._lag_worst:
                self._lag_worst = lag

    # --- adapters -----------------------------------------------------------------------

    async def _supervise(self, c: FeedConfig) -> None:
        status = self.status[c.name]
        runner = {
            "adsb-http": self._poll_http,
            "adsb-file": self._poll_file,
            "ais-udp": self._read_udp,
            "ais-tcp": self._read_tcp,
            "sbs1-tcp": self._read_tcp,
            "geojson": self._poll_geo,
            "kml": self._poll_geo,
        }[c.kind]
        while True:
            try:
                await runner(c, status)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any upstream failure: count, log, back off, retry
                status.failures += 1
                status.state = "failing"
                status.last_error = str(exc) or type(exc).__name__
                self.m_failures.inc(c.name)
                delay = RETRY.delay(status.failures)
                log.warning("feed %s failed (%s); retrying in %.1f s", c.name, exc, delay)
                await asyncio.sleep(delay)

    def _ok(self, status: FeedStatus) -> None:
        status.state = "running"
        status.failures = 0
        status.last_error = None

    def _invalid(self, name: str, n: int) -> None:
        """Count unreadable lines; log when the feed's count reaches 1, 10, 100, ... (a stream
        of garbage is reported without one log line per line)."""
        before = self.m_invalid.get(name)
        self.m_invalid.inc(name, n)
        after = before + n
        mark = 1
        while mark <= after:  # each power of ten this batch reached (lines come in batches)
            if mark > before:
                log.warning("feed %s: unreadable lines so far: %d", name, mark)
            mark *= 10

    def _data(self, name: str) -> None:
        self.status[name].last_data_ms = self._clock_ms()

    async def _document(self, c: FeedConfig, data: bytes, status: FeedStatus) -> None:
        """Parse one aircraft.json off the event loop (a large one takes a while), then publish
        its reports a batch at a time, letting the loop serve clients between batches."""
        try:
            parsed = await asyncio.to_thread(adsb.parse_document, data, self._clock_ms())
        except adsb.AdsbError as exc:
            self.m_invalid.inc(c.name)
            raise ValueError(f"bad aircraft.json: {exc}") from None
        self._ok(status)
        self._data(c.name)
        reports = parsed.reports
        for i in range(0, len(reports), PUBLISH_BATCH):
            if i:
                await asyncio.sleep(0)
            self.offer(c, reports[i : i + PUBLISH_BATCH])

    async def _poll_http(self, c: FeedConfig, status: FeedStatus) -> None:
        assert c.url is not None
        timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                async with session.get(c.url) as resp:
                    if resp.status != 200:
                        raise ConnectionError(f"HTTP {resp.status} from {c.url}")
                    if (resp.content_length or 0) > MAX_DOCUMENT_BYTES:
                        raise ValueError(f"document over {MAX_DOCUMENT_BYTES} bytes")
                    data = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
                    if len(data) > MAX_DOCUMENT_BYTES:
                        raise ValueError(f"document over {MAX_DOCUMENT_BYTES} bytes")
                await self._document(c, data, status)
                await asyncio.sleep(c.interval_s)

    async def _poll_file(self, c: FeedConfig, status: FeedStatus) -> None:
        assert c.path is not None
        path = c.path
        while True:

            def read() -> bytes:
                with path.open("rb") as f:
                    return f.read(MAX_DOCUMENT_BYTES + 1)

            data = await asyncio.to_thread(read)
            if len(data) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"{path}: over {MAX_DOCUMENT_BYTES} bytes")
            await self._document(c, data, status)
            await asyncio.sleep(c.interval_s)

    def _received_ms(self, name: str) -> int:
        """The receive time of a batch of lines of a streaming feed (SBS-1, AIS: a fix's time is
        when it was received): the clock, made strictly increasing per feed, so that a later
        batch is always newer (two batches in one millisecond would otherwise tie, and the
        later, newer fixes be dropped as old)."""
        now = max(self._clock_ms(), self._last_batch_ms.get(name, 0) + 1)
        self._last_batch_ms[name] = now
        return now

    def _offer_stream(self, c: FeedConfig, reports: list[TrackReport]) -> None:
        """Offer one batch of a streaming feed: all its fixes have the batch's time, so of
        several of one track the last line read wins (the earlier counted ``coalesced``)."""
        newest = {r.uid: r for r in reports}
        if len(newest) < len(reports):
            self.m_reports.inc(c.name, len(reports) - len(newest))
            self.m_dropped.inc(COALESCED, len(reports) - len(newest))
        self.offer(c, list(newest.values()))

    def _ais_lines(
        self, c: FeedConfig, decoder: AisDecoder, lines: list[tuple[bytes, str]]
    ) -> None:
        invalid = decoder.counts.invalid
        reports: list[TrackReport] = []
        now = self._received_ms(c.name)
        for line, station in lines:
            reports.extend(decoder.feed(line, station, now))
        if decoder.counts.invalid > invalid:
            self._invalid(c.name, decoder.counts.invalid - invalid)
        if reports:
            self._data(c.name)
            self._offer_stream(c, reports)

    async def _read_udp(self, c: FeedConfig, status: FeedStatus) -> None:
        queue, wake = self._queues[c.name], self._wakes[c.name]
        decoder = AisDecoder()
        self._ok(status)
        while True:
            await wake.wait()
            wake.clear()
            while queue:  # a batch at a time, letting the loop serve clients between batches
                n = min(len(queue), PUBLISH_BATCH)
                self._ais_lines(c, decoder, [queue.popleft() for _ in range(n)])
                await asyncio.sleep(0)

    def _sbs1_lines(self, c: FeedConfig, decoder: Sbs1Decoder, lines: list[bytes]) -> None:
        invalid = decoder.counts.invalid
        reports: list[TrackReport] = []
        now = self._received_ms(c.name)
        for line in lines:
            reports.extend(decoder.feed(line, now))
        if decoder.counts.invalid > invalid:
            self._invalid(c.name, decoder.counts.invalid - invalid)
        if reports:
            self._data(c.name)
            self._offer_stream(c, reports)

    async def _read_tcp(self, c: FeedConfig, status: FeedStatus) -> None:
        """AIS (``ais-tcp``) or SBS-1 (``sbs1-tcp``) lines from a TCP server, read as fast as
        they arrive, a chunk at a time, into the pending table."""
        assert c.connect is not None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(c.connect.host, c.connect.port, limit=4 * READ_CHUNK_BYTES),
            UPSTREAM_TIMEOUT_S,
        )
        station = str(c.connect)
        handle: Callable[[list[bytes]], None]
        if c.kind == "sbs1-tcp":
            sbs1 = Sbs1Decoder()

            def handle(lines: list[bytes]) -> None:
                self._sbs1_lines(c, sbs1, lines)

        else:
            ais = AisDecoder()

            def handle(lines: list[bytes]) -> None:
                self._ais_lines(c, ais, [(line, station) for line in lines])

        self._ok(status)
        lines = LineSplitter(MAX_TCP_LINE_BYTES)
        sock = writer.get_extra_info("socket")
        clock = asyncio.get_running_loop().time
        turn = clock()
        try:
            while True:
                chunk = await reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    rest = lines.finish()
                    if rest:
                        handle([rest])
                    raise ConnectionError(f"{c.connect} closed the connection")
                if sock is not None and unread_bytes(sock) > READ_BEHIND_BYTES:
                    self.m_dropped.inc("skipped", chunk.count(b"\n"))
                    lines.resync()
                    await asyncio.sleep(0)
                    continue
                complete = lines.feed(chunk)
                if lines.overlong:
                    self._invalid(c.name, lines.overlong)
                    lines.overlong = 0
                if complete:
                    handle(complete)
                if clock() - turn >= READ_TURN_S:
                    # read() returns without yielding while bytes are buffered: let the loop
                    # serve the clients (and the publisher) at least every READ_TURN_S.
                    await asyncio.sleep(0)
                    turn = clock()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # --- GeoJSON and KML -------------------------------------------------------------------

    async def _read_geo(self, c: FeedConfig) -> bytes:
        """The document of a geojson or kml feed, from its url or path, at most
        ``geo.MAX_DOCUMENT_BYTES``."""
        limit = geo.MAX_DOCUMENT_BYTES
        if c.url is not None:
            timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(c.url) as resp,
            ):
                if resp.status != 200:
                    raise ConnectionError(f"HTTP {resp.status} from {c.url}")
                if (resp.content_length or 0) > limit:
                    raise ValueError(f"document over {limit} bytes")
                data = await resp.content.read(limit + 1)
        else:
            assert c.path is not None
            path = c.path

            def read() -> bytes:
                with path.open("rb") as f:
                    return f.read(limit + 1)

            data = await asyncio.to_thread(read)
        if len(data) > limit:
            raise ValueError(f"document over {limit} bytes")
        return data

    async def _poll_geo(self, c: FeedConfig, status: FeedStatus) -> None:
        """Read the document (once, or every ``interval_s``) and publish its features; a feed
        read once republishes what it read before its items go stale."""
        while True:
            data = await self._read_geo(c)
            try:
                doc = await asyncio.to_thread(geo.parse, c.kind, data)
            except geo.GeoError as exc:
                self.m_invalid.inc(c.name)
                raise ValueError(f"bad {c.kind} document: {exc}") from None
            self._ok(status)
            self._data(c.name)
            if doc.invalid:
                self._invalid(c.name, doc.invalid)
            await self.publish_geo(c, doc.features)
            if not c.once:
                await asyncio.sleep(c.interval_s)
                continue
            while True:
                await asyncio.sleep(c.stale_s / 2)
                await self.publish_geo(c, doc.features)

    async def publish_geo(self, c: FeedConfig, features: list[geo.GeoFeature]) -> None:
        """Publish each feature that is new, changed, or half way to stale; delete (``t-x-d-d``)
        the items of earlier reads that the document no longer has (docs/feeds.md)."""
        name = c.name
        items = self.geo_items[name]
        source = self.sources[name]
        now = self._clock_ms()
        stale_ms = int(c.stale_s * 1000)
        upstream = _upstream(c)
        self.m_reports.inc(name, len(features))
        seen: set[str] = set()
        for i, feature in enumerate(features):
            if i and i % PUBLISH_BATCH == 0:
                await asyncio.sleep(0)
            uid = geo.feature_uid(name, upstream, feature)
            if uid in seen:  # two features with one id: the first one stands
                self._invalid(name, 1)
                continue
            event, banner = self._geo_event(c, feature, uid, now, stale_ms)
            if event is None:  # an unreadable label: the feature is refused (and deleted)
                self.m_refused.inc(name)
                continue
            seen.add(uid)
            mark = geo.fingerprint(event, banner)
            known = items.get(uid)
            if known is not None and known[0] == mark and now - known[2] < stale_ms // 2:
                continue  # unchanged, and far from stale
            if self._router.congested:
                self.m_dropped.inc("congested")
                continue
            result = self._router.publish_checked(event, source)
            if result.event is not None:
                items[uid] = (mark, event.type, now)
                self.m_published.inc(name)
            elif result.refused:
                self.m_refused.inc(name)
        for uid in [u for u in items if u not in seen]:
            if self._router.congested:  # kept: deleted at the next read
                self.m_dropped.inc("congested")
                continue
            _, cot_type, _ = items.pop(uid)
            result = self._router.publish_checked(
                geo.delete_event(uid, cot_type, now, GEO_DELETE_STALE_MS), source
            )
            if result.refused:
                self.m_refused.inc(name)

    def _geo_event(
        self, c: FeedConfig, feature: geo.GeoFeature, uid: str, now: int, stale_ms: int
    ) -> tuple[Event | None, str | None]:
        """The feature's event and the banner of its own label (None: the feed's default), or
        (None, None) when its label property is there but not a label of the policy."""
        props = feature.properties
        extra: list[ET.Element] = []
        banner = props.get(c.label_property) if c.label_property is not None else None
        if banner is not None:
            try:
                label = labels.label_from_banner(
                    self._policy, banner, originator=c.org, created_ms=now
                )
            except labels.LabelError as exc:
                log.info("feed %s: feature %s refused: label %r: %s", c.name, uid, banner, exc)
                return None, None
            extra.append(labels.label_to_seclabel(self._policy, label))
        point_type = c.point_type.replace("?", c.affiliation, 1)
        own_type = props.get(c.type_property) if c.type_property is not None else None
        if own_type is not None and geo.valid_cot_type(own_type):
            point_type = own_type
        callsign = props.get(c.name_property) or feature.name
        event = geo.feature_event(
            feature,
            uid=uid,
            point_type=point_type,
            callsign=callsign[: geo.MAX_NAME_CHARS] if callsign else None,
            now_ms=now,
            stale_ms=stale_ms,
            extra=extra,
        )
        return event, banner


class LineSplitter:
    """Complete lines out of a byte stream cut anywhere; a line longer than ``max_bytes`` is
    skipped up to its end and counted in ``overlong``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._partial = b""
        self._skipping = False  # inside an over-long line: drop bytes up to the next newline
        self.overlong = 0

    def feed(self, data: bytes) -> list[bytes]:
        parts = data.split(b"\n")
        out: list[bytes] = []
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if i == 0:
                if self._skipping:
                    if last == 0:
                        return out
                    self._skipping = False
                    continue
                part = self._partial + part
                self._partial = b""
            if i == last:  # no newline after it (yet)
                if len(part) > self.max_bytes:
                    self.overlong += 1
                    self._skipping = True
                else:
                    self._partial = part
                break
            if len(part) + 1 > self.max_bytes:
                self.overlong += 1
                continue
            out.append(part + b"\n")
        return out

    def resync(self) -> None:
        """Bytes were skipped: drop the partial line, and the next bytes up to a newline."""
        self._partial = b""
        self._skipping = True

    def finish(self) -> bytes:
        """What was left without a newline when the stream ended."""
        rest, self._partial = self._partial, b""
        return rest


def unread_bytes(sock: socket.socket) -> int:
    """Bytes received on ``sock`` that nobody has read yet (FIONREAD); 0 when unknown."""
    try:
        got = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", got)[0])


def _upstream(c: FeedConfig) -> str:
    """Where a feed reads from, for its status."""
    where = c.url or c.path or c.listen or c.connect
    return str(where) if where is not None else "?"
