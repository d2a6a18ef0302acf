"""Missions (TAK Data Sync): named, labelled workspaces that clients subscribe to.

The behaviour follows TAK Server as ATAK's Data Sync and iTAK use it (shared/reference/
tak-missions.md, with the TAK source each rule comes from). This module is the router's mission
side: it holds every mission in memory (loaded from a
:class:`~liaison.storage.missions.MissionStore` at start, each change written back in order by
:meth:`Missions.run`), decides roles from mission tokens, and hands out mission content only
through the router:

- items, changes and the mission itself are released to a caller by ``Router.filter_records``
  and ``Router.release_many`` (the access decision on each one's own label and groups, and a
  ``release`` record per item handed to another organisation), so an item the caller may not see
  is absent from every answer, exactly like one that is not in the mission;
- CoT sent with ``<marti><dest mission="NAME"/></marti>`` is routed by the router to the
  mission's live subscribers (:meth:`Missions.recipients`), then kept as a mission item with an
  ``ADD_CONTENT`` change and announced by a ``t-x-m-c`` notice (:meth:`Missions.accepted`);
- notices go through ``Router.deliver_to_clients`` with the label of the item they describe.

The HTTP side reaches this object through ``query.Query.missions``; ``api/missions.py`` renders.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import hashlib
import hmac
import itertools
import json
import logging
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from liaison.errors import PeerError, StorageError, UnreadableRecord
from liaison.gate import content_hash
from liaison.metrics import Metrics
from liaison.model import labels
from liaison.model.event import Event
from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol import cot_xml, mission_share
from liaison.protocol import mission_roles as mr
from liaison.protocol.mission_roles import (
    DEFAULT_ROLE,
    DELETE,
    OWNER,
    PERMISSIONS,
    READ,
    READONLY,
    WRITE,
    has,
)
from liaison.router import (
    AcceptedEvent,
    Router,
    Source,
    Subscriber,
    stored_event,
)
from liaison.storage.base import StoredEvent
from liaison.storage.files import FileRecord
from liaison.storage.missions import (
    InvitationRecord,
    LogEntryRecord,
    MissionChangeRecord,
    MissionContent,
    MissionData,
    MissionItem,
    MissionRecord,
    MissionStore,
    MissionWrite,
    SubscriptionRecord,
)

log = logging.getLogger(__name__)

# Missions one server holds. Each costs its items and changes in memory; a thousand is far above
# what an exercise uses, and bounds what a client creating missions in a loop can make us keep.
MAX_MISSIONS = 1_000
# Map items in one mission: TAK Server's missionUidLimit default (CoreConfig.xsd, queue).
MAX_MISSION_ITEMS = 8_192
# Changes kept in memory per mission (the oldest go first; the store keeps them all until the
# mission is deleted). Ten changes for each of 5,000 items.
MAX_MISSION_CHANGES = 50_000
# Stored subscriptions per mission: every device of a large exercise, with room.
MAX_SUBSCRIPTIONS = 10_000
# Writes waiting for the mission store. Past it a write is dropped, logged and counted: the
# mission in memory stays right until a restart. Ten thousand is minutes of a busy mission.
MAX_PENDING_WRITES = 10_000
# A request admitted below MAX_PENDING_WRITES queues all its writes (a PUT contents of 8,192 uids
# makes two each); past this hard bound a write is dropped, logged and counted (``queue_full``).
MAX_QUEUED_WRITES = 3 * MAX_PENDING_WRITES
# Seconds a REST write refused with 503 (store busy) tells the client to wait (Retry-After).
STORE_BUSY_RETRY_S = 1
# Events (mission items and t-x-m-c notices) sent to one device that reconnects, over all its
# missions: the most recent changes first kept; the rest stays readable with /changes.
MAX_CATCHUP_EVENTS = 1_000
# Mission-level notices (t-x-m-n, -d, -r, -i) remembered for devices that are away (in memory):
# the most recent this many; a returning device is sent at most MAX_CATCHUP_NOTICES of them,
# and the server remembers when at most MAX_AWAY_DEVICES devices left (the oldest forgotten).
MAX_NOTICE_LOG = 1_000
MAX_CATCHUP_NOTICES = 100
MAX_AWAY_DEVICES = 10_000
# Standing invitations per mission.
MAX_INVITATIONS = 10_000
# A write the store refused is tried again, never dropped while the server runs: first after
# WRITE_RETRY_MIN_S, doubling up to WRITE_RETRY_MAX_S. At shutdown each gets CLOSE_WRITE_ATTEMPTS.
# The writer takes up to this many waiting writes at a time and writes them in one store
# transaction (one SQLite commit instead of one per write).
MAX_WRITE_BATCH = 1_000
WRITE_RETRY_MIN_S = 0.1
WRITE_RETRY_MAX_S = 5.0
CLOSE_WRITE_ATTEMPTS = 3
# In a cluster (docs/deployment.md "Missions and files"): what this node has changed and sent,
# waiting for its writes to reach the shared database before the other nodes are told (missions
# and log ids touched, notices sent). Past it the oldest is dropped, logged and counted.
MAX_UNSHARED = 3 * MAX_PENDING_WRITES
# Times a mission another node changed is read again when this node queued a write meanwhile
# (the read could miss it); then it is left as held and named for a later read (apply_shared).
RELOAD_ATTEMPTS = 3
# Files in one mission: TAK Server's missionContentLimit default (CoreConfig.xsd, queue).
MAX_MISSION_CONTENTS = 4_096
# Keywords on a mission or on one of its files, and characters in one keyword.
MAX_KEYWORDS = 64
MAX_KEYWORD_CHARS = 256
# Characters in a mission name, description, chat room or tool.
MAX_NAME_CHARS = 256
MAX_TEXT_CHARS = 4096
# A mission notice is stale 20 s after it is sent (TSc DistributedSubscriptionManager
# createMissionMessage; tak-missions.md 7.3).
NOTICE_STALE_MS = 20_000
# Steps of a mission package import taken between two turns of the event loop: an item costs
# 3 to 5 ms on a loaded machine, so the loop waits about 0.1 s at most per chunk (docs/
# performance.md "Mission package import").
PACKAGE_CHUNK = 20
# Seconds an import waits between chunks for a busy mission store before answering 503.
PACKAGE_STORE_WAIT_S = 10.0
# Log entries one server keeps (all missions together); past it a post is refused (403). A
# hundred thousand is years of an exercise's journal.
MAX_LOG_ENTRIES = 100_000
# Characters in one log entry's content, and missions, hashes or keywords one entry names.
MAX_LOG_CONTENT_CHARS = 64 * 1024
MAX_LOG_NAMES = 64

# Roles and their permissions: liaison.protocol.mission_roles (tak-missions.md 3.1).

# Change types (TS takserver-common remote/sync/MissionChangeType.java).
CREATE_MISSION, ADD_CONTENT, REMOVE_CONTENT = "CREATE_MISSION", "ADD_CONTENT", "REMOVE_CONTENT"


class MissionError(Exception):
    """A mission request refused: ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        # The refusal's short code for liaison_mission_refused_total (None: from the status).
        self.reason = reason


def role_json(role: str) -> dict[str, object]:
    """TSpl sync/model/MissionRole.java as JSON."""
    return {"type": role, "permissions": list(PERMISSIONS.get(role, ()))}


# --- times (tak-missions.md 2.4) ---------------------------------------------------------------


def padded_time(ms: int) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`` (TSpl Constants.COT_DATE_FORMAT_PAD_MILLIS)."""
    return cot_xml.format_time(ms)


def unpadded_time(ms: int) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.S'Z'`` with Java's ``S``: the millisecond count unpadded, so 5 ms
    prints ``.5`` (TSpl Constants.COT_DATE_FORMAT)."""
    text = cot_xml.format_time(ms - ms % 1000)
    return f"{text[:-5]}.{ms % 1000}Z"


# --- tokens (tak-missions.md 3.3: HS256 JWT, TSw MissionTokenUtils.java) ------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, *, kind: str, mission: MissionRecord, now_ms: int) -> str:
    """A mission token as TAK issues them: HS256, ``sub`` the token type, the id again under the
    type's name, ``MISSION_NAME`` and ``MISSION_GUID``, no expiry."""
    jti = str(uuid.uuid4())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {
        "jti": jti,
        "iat": now_ms // 1000,
        "sub": kind,
        "iss": "Liaison",
        kind: jti,
        "MISSION_NAME": mission.name,
        "MISSION_GUID": mission.guid,
    }
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def token_claims(secret: bytes, token: str) -> dict[str, object] | None:
    """The claims of a token signed with ``secret``; None for anything else."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_TEXT_CHARS:
        return None
    try:
        expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, _unb64(parts[2])):
            return None
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


# --- details of a uid (TSpl sync/model/UidDetails.java) ----------------------------------------


def uid_details(event: Event) -> dict[str, object]:
    details: dict[str, object] = {
        "type": event.type,
        "location": {"lat": event.lat, "lon": event.lon},
    }
    if event.callsign:
        details["callsign"] = event.callsign
    if event.detail is not None:
        color = event.detail.find("color")
        if color is not None and color.get("argb"):
            details["color"] = color.get("argb")
        icon = event.detail.find("usericon")
        if icon is not None and icon.get("iconsetpath"):
            details["iconsetPath"] = icon.get("iconsetpath")
    return details


@dataclass(frozen=True, slots=True)
class _SentNotice:
    """A mission-level notice as sent, kept for devices that were away (MAX_NOTICE_LOG)."""

    n: int  # its number, in sending order
    record: MissionRecord  # the mission as it was then
    event_type: str
    mission_type: str
    author_uid: str | None
    token: str | None
    role: str | None
    # Who it was for: ("all", "") every device that may see the mission but the author's;
    # ("device", "uid\nuser") one device of one user; (invitation type, invitee).
    to: tuple[str, str]


@dataclass(slots=True)
class _Mission:
    record: MissionRecord
    items: dict[str, MissionItem] = field(default_factory=dict)
    changes: collections.deque[MissionChangeRecord] = field(
        default_factory=lambda: collections.deque(maxlen=MAX_MISSION_CHANGES)
    )
    subs: dict[str, SubscriptionRecord] = field(default_factory=dict)
    contents: dict[str, MissionContent] = field(default_factory=dict)  # by hash
    # Bumped whenever an item or file joins or leaves (what squashing reads besides changes).
    members_version: int = 0
    # The squash of every change: (last seq, change count, members_version) and the list.
    squashed: tuple[tuple[int, int, int], list[MissionChangeRecord]] | None = None
    invites: dict[tuple[str, str], InvitationRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MissionFedChange:
    """A change made on this server that TAK federation v2 carries as ROL
    (``federation/mission_rol.py``): ``kind`` is ``create``, ``delete``, ``ADD_CONTENT`` or
    ``REMOVE_CONTENT``; ``change`` is the content change (None for create and delete)."""

    kind: str
    record: MissionRecord
    change: MissionChangeRecord | None = None


# Callbacks told of each local mission change (the federation's ROL sender); a few at most.
MAX_FEDERATION_HOOKS = 8


class Missions:
    """Every mission, in memory, written through to a MissionStore; the router's mission side."""

    def __init__(
        self,
        *,
        router: Router,
        store: MissionStore,
        metrics: Metrics,
        clock_ms: Callable[[], int],
        strict_membership: bool = True,
        chat_host: str | None = None,
    ) -> None:
        self._router = router
        # TAK's input takServerHost (tak-missions.md 7.1 rule 4): set, a chat sent to a mission
        # reaches its subscribers in the mission's chat room; config key missions.chat_host.
        self._chat_host = chat_host or None
        # TAK's network@MissionStrictUidMissionMembership, default true (tak-missions.md 7.1):
        # an item's uid stays in its mission; config key missions.strict_membership.
        self._strict = strict_membership
        self._homes: dict[str, set[str]] = {}  # item uid -> the missions that keep it
        self._store = store
        self._clock_ms = clock_ms
        self._missions: dict[str, _Mission] = {}
        self._logs: dict[str, LogEntryRecord] = {}  # mission log entries by id
        self._secret = b""
        self._seq = 0
        # With a store that several processes share (PostgreSQL), this process's node number:
        # change numbers then carry it in their low NODE_BITS bits (_next_seq).
        self._node: int | None = None
        self._node_bits = 0
        # Cluster sharing (cluster/missions_share.py): told, after each written batch, which
        # missions and log entries it touched and which notices were sent meanwhile.
        self.share: Callable[[mission_share.MissionShare], None] | None = None
        self._queued = 0  # writes queued so far (positions in the write order)
        self._written = 0  # writes done (or given up) so far
        # (position, what): a mission name ("m"), a log id ("l") or a notice ("n").
        self._unshared: collections.deque[tuple[int, str, object]] = collections.deque()
        self._digests: dict[int, str] = {}  # release digests by change seq (CHANGE_DIGEST_CACHE)
        self._sent_notices: collections.deque[_SentNotice] = collections.deque(
            maxlen=MAX_NOTICE_LOG
        )
        self._notice_n = 0
        self._left: dict[tuple[str, str], int] = {}  # (device uid, user) -> notice n on leaving
        # The API's JSON renderings of changes, by (mission name, guid, seq): kept here so that
        # they live and die with this service (api/missions.py RENDERED_CHANGE_CACHE bounds it).
        self.rendered_changes: dict[tuple[str, str, int], str] = {}
        self._writes: collections.deque[MissionWrite] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._drain_lock = asyncio.Lock()  # one drainer at a time: a write runs once
        # Told of every change made here (not of those a partner made): federation ROL.
        self.federation_hooks: list[Callable[[MissionFedChange], None]] = []
        # The batch the store is writing and how many queued writes it holds (see _drain).
        self._inflight: tuple[asyncio.Future[None], int] | None = None
        self.m_refused = metrics.counter(
            "liaison_mission_refused_total", "Mission requests and mission CoT refused", "reason"
        )
        self.m_changes = metrics.counter(
            "liaison_mission_changes_total", "Mission changes recorded", "type"
        )
        self.m_write_failed = metrics.counter(
            "liaison_mission_writes_failed_total",
            "Mission changes not written to the mission store",
            "reason",
        )
        self.m_write_batches = metrics.counter(
            "liaison_mission_write_batches_total",
            "Batches of mission changes written to the mission store (one transaction each)",
        )
        metrics.gauge("liaison_missions", "Missions held", lambda: len(self._missions))
        self.m_notices = metrics.counter(
            "liaison_mission_notices_total", "Mission notices sent (t-x-m-n/d/i/r)", "type"
        )
        self.m_share_dropped = metrics.counter(
            "liaison_mission_share_dropped_total",
            "Mission changes and notices not told to the other nodes (too many waiting)",
        )
        self.m_share_refused = metrics.counter(
            "liaison_mission_share_refused_total",
            "Mission notices, and missions changed, from other nodes refused (not well formed)",
        )
        self.m_catchup = metrics.counter(
            "liaison_mission_catchup_total", "Events sent to reconnecting subscribers", "what"
        )

    # --- lifetime -------------------------------------------------------------------------

    async def load(self) -> int:
        """Read every mission back from the store (at start). Returns how many."""
        self._secret = await self._store.token_secret()
        node_number = getattr(self._store, "node_number", None)
        if node_number is not None:
            from liaison.storage.postgresql_missions import NODE_BITS

            self._node, self._node_bits = await node_number(), NODE_BITS
        data = await self._store.load()
        for rec in data.missions:
            self._missions[rec.name] = _Mission(rec)
        for item in data.items:
            m = self._missions.get(item.mission)
            if m is not None:
                m.items[item.uid] = item
                self._homes.setdefault(item.uid, set()).add(item.mission)
        for change in data.changes:
            m = self._missions.get(change.mission)
            if m is not None:
                m.changes.append(change)
            self._seq = max(self._seq, change.seq)
        for sub in data.subscriptions:
            m = self._missions.get(sub.mission)
            if m is not None:
                m.subs[sub.client_uid] = sub
        for content in data.contents:
            m = self._missions.get(content.mission)
            if m is not None:
                m.contents[content.hash] = content
        self._logs.update((e.id, e) for e in await self._store.load_logs())
        for inv in await self._store.load_invitations():
            m = self._missions.get(inv.mission)
            if m is not None:
                m.invites[(inv.type, inv.invitee)] = inv
        return len(self._missions)

    async def run(self) -> None:
        """Write queued changes to the store, in order, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def flush(self) -> None:
        """Wait until every queued change is written."""
        await self._drain()

    async def close(self) -> None:
        await self._drain(final=True)
        await self._store.close()

    async def _drain(self, *, final: bool = False) -> None:
        """Write the queued changes in order, up to MAX_WRITE_BATCH of them at a time in one
        store transaction (all or none). A batch the store refuses stays at the head and is
        tried again after a growing delay (an accepted change is not dropped); at shutdown
        (``final``) it gets CLOSE_WRITE_ATTEMPTS, then what still waits is given up, logged and
        counted (``lost_at_shutdown``)."""
        async with self._drain_lock:
            delay, attempts = WRITE_RETRY_MIN_S, 0
            while self._writes:
                self._idle.clear()
                # Only this drainer removes from the head; _write appends meanwhile. A batch
                # handed to the store by a drainer that was cancelled meanwhile (run() at
                # shutdown) goes on in the store's thread: it is awaited here, not written again
                # (its changes would be written twice, and the store refuses a change's seq
                # twice) nor dropped.
                if self._inflight is None:
                    batch = list(itertools.islice(self._writes, MAX_WRITE_BATCH))
                    task: asyncio.Future[None] = asyncio.ensure_future(
                        self._store.write_batch(batch)
                    )
                    self._inflight = (task, len(batch))
                task, size = self._inflight
                try:
                    await asyncio.shield(task)
                except asyncio.CancelledError:
                    raise  # this drainer is cancelled; the write goes on (self._inflight)
                except StorageError as exc:
                    self._inflight = None
                    self.m_write_failed.inc("storage")
                    attempts += 1
                    if final and attempts >= CLOSE_WRITE_ATTEMPTS:
                        # The store is down at shutdown: what waits cannot be written now.
                        lost = len(self._writes)
                        self._writes.clear()
                        self._written += lost
                        self.m_write_failed.inc("lost_at_shutdown", lost)
                        log.error("mission store: %d changes lost at shutdown: %s", lost, exc)
                        break
                    log.error("mission store: write failed, retrying in %.1f s: %s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, WRITE_RETRY_MAX_S)
                    continue
                except BaseException:
                    self._inflight = None
                    raise
                self._inflight = None
                for _ in range(size):
                    self._writes.popleft()
                self._written += size
                self._share_written()
                self.m_write_batches.inc()
                delay, attempts = WRITE_RETRY_MIN_S, 0
            self._idle.set()

    def _write(self, job: MissionWrite) -> None:
        if len(self._writes) >= MAX_QUEUED_WRITES:
            self.m_write_failed.inc("queue_full")
            log.error("mission store: %d writes waiting, one dropped", len(self._writes))
            return
        self._writes.append(job)
        self._queued += 1
        if self.share is not None:
            arg = job.args[0]  # a record, or the mission name / log id the write names
            if job.op in ("put_log", "delete_log"):
                self._unshare("l", arg if isinstance(arg, str) else arg.id)
            elif isinstance(arg, str):
                self._unshare("m", arg)
            else:
                self._unshare("m", arg.name if isinstance(arg, MissionRecord) else arg.mission)
        self._wake.set()

    # --- several nodes (docs/deployment.md "Missions and files") ------------------------------

    def _next_seq(self) -> int:
        """The next change number: one more than the last one seen (here or from another node,
        a Lamport clock), with this node's number in the low bits when the store is shared, so
        two nodes never give the same number."""
        if self._node is None:
            self._seq += 1
        else:
            self._seq = (((self._seq >> self._node_bits) + 1) << self._node_bits) | self._node
        return self._seq

    def _unshare(self, kind: str, what: object) -> None:
        if len(self._unshared) >= MAX_UNSHARED:
            self._unshared.popleft()
            self.m_share_dropped.inc()
            log.error("missions: %d changes wait for the cluster, oldest not shared", MAX_UNSHARED)
        self._unshared.append((self._queued, kind, what))

    def _deliver(
        self,
        event: Event,
        *,
        sender_groups: frozenset[str],
        label: str | None,
        clients: frozenset[tuple[str, str]],
        path: str,
        xml: bytes | None = None,
        share: bool = True,
        to: tuple[str, str] | None = None,
    ) -> int:
        """Hand a notice or brokered item to the connected clients named, and, in a cluster
        (unless ``share`` is False), to the other nodes for theirs (after the writes queued
        before it are in the database). ``to`` names clients by what each node finds among its
        own connected clients (:meth:`local_clients`), for notices that go to every connected
        device or to an invitee's."""
        sent = self._router.deliver_to_clients(
            event,
            sender_groups=sender_groups,
            label=self._router.load_label(label),
            clients=clients,
            path=path,
        )
        if self.share is not None and share and (clients or to is not None):
            body = xml if xml is not None else event.xml or cot_xml.render_xml(event)
            self._unshare(
                "n", mission_share.SharedNotice(body, sender_groups, label, clients, path, to)
            )
            if self._written >= self._queued:
                self._share_written()  # no write before it waits: told now
        return sent

    def _share_written(self) -> None:
        """Tell the other nodes what the writes done so far touched, and the notices sent up to
        them (in order: their own reads then see what the notice is about)."""
        if self.share is None or not self._unshared:
            return
        names: dict[str, None] = {}
        logs: dict[str, None] = {}
        notices: list[mission_share.SharedNotice] = []
        while self._unshared and self._unshared[0][0] <= self._written:
            _, kind, what = self._unshared.popleft()
            if kind == "m":
                names[str(what)] = None
            elif kind == "l":
                logs[str(what)] = None
            elif isinstance(what, mission_share.SharedNotice):
                notices.append(what)
        if names or logs or notices:
            self.share(
                mission_share.MissionShare(
                    node="", missions=tuple(names), logs=tuple(logs), notices=tuple(notices)
                )
            )

    async def apply_shared(self, missions: Sequence[str], logs: Sequence[str]) -> list[str]:
        """Another node changed ``missions`` and ``logs`` in the shared store: read them back
        (a mission gone there is gone here). Returns the missions not read back because this
        node kept queueing writes meanwhile (RELOAD_ATTEMPTS reads each): to be tried later."""
        load_mission = getattr(self._store, "load_mission", None)
        load_logs = getattr(self._store, "load_log_entries", None)
        if load_mission is None or load_logs is None:
            return []
        unsettled: list[str] = []
        for name in missions:
            for _ in range(RELOAD_ATTEMPTS):
                await self.flush()  # what this node wrote is in the read
                before = self._queued
                try:
                    got = await load_mission(name, MAX_MISSION_CHANGES)
                except UnreadableRecord as exc:
                    # Read again it would say the same: refused, this node keeps what it holds.
                    self.m_share_refused.inc()
                    log.error("mission %r changed by another node not read: %s", name, exc)
                    break
                if self._queued == before:
                    # Nothing queued here since the flush: the read holds all of this node's
                    # writes too, so it replaces what this node held.
                    self._replace_mission(name, got)
                    break
            else:
                unsettled.append(name)
        if logs:
            for entry_id, entry in (await load_logs(list(logs))).items():
                if entry is None:
                    self._logs.pop(entry_id, None)
                else:
                    self._logs[entry_id] = entry
        return unsettled

    def _replace_mission(
        self, name: str, got: tuple[MissionData, list[InvitationRecord]] | None
    ) -> None:
        old = self._missions.pop(name, None)
        if old is not None:
            for uid in old.items:
                homes = self._homes.get(uid)
                if homes is not None:
                    homes.discard(name)
                    if not homes:
                        del self._homes[uid]
        if got is None:
            return
        data, invites = got
        m = _Mission(data.missions[0])
        for item in data.items:
            m.items[item.uid] = item
            self._homes.setdefault(item.uid, set()).add(name)
        for change in data.changes:
            m.changes.append(change)
            self._seq = max(self._seq, change.seq)
        m.subs.update((s.client_uid, s) for s in data.subscriptions)
        m.contents.update((c.hash, c) for c in data.contents)
        m.invites.update(((i.type, i.invitee), i) for i in invites)
        self._missions[name] = m

    def local_clients(self, to: tuple[str, str]) -> frozenset[tuple[str, str]]:
        """The connected clients here, as (client uid, user), that a notice ``to`` names:
        ``("all", uid)`` every device but ``uid`` (``""``: every device); ``("clientUid", uid)``,
        ``("callsign", callsign)``, ``("userName", user)`` an invitee's devices (TSw
        MissionServiceDefaultImpl: an invitation reaches the devices it names)."""
        kind, who = to
        found: set[tuple[str, str]] = set()
        for s in self._router.subscribers:
            if not s.client_uid:
                continue
            if (
                (kind == "all" and s.client_uid != who)
                or (kind == "clientUid" and s.client_uid == who)
                or (kind == "callsign" and s.callsign == who)
                or (kind == "userName" and s.principal.name == who)
            ):
                found.add((s.client_uid, s.principal.name))
        return frozenset(found)

    def deliver_shared(self, notice: mission_share.SharedNotice) -> int:
        """A notice another node sent: to the clients named that are connected here."""
        try:
            event = cot_xml.parse_event(notice.xml)
        except PeerError as exc:
            self.m_share_refused.inc()
            log.warning("mission notice from another node refused: %s", exc)
            return 0
        clients = notice.clients
        if notice.to is not None:
            clients |= self.local_clients(notice.to)
        return self._router.deliver_to_clients(
            event,
            sender_groups=notice.sender_groups,
            label=self._router.load_label(notice.label),
            clients=clients,
            path=notice.path,
        )

    # --- roles ----------------------------------------------------------------------------

    def _role(self, m: _Mission, token: str | None) -> str | None:
        """The caller's role for a request (TSw MissionServiceDefaultImpl getRoleForRequest;
        tak-missions.md 3.2): a valid SUBSCRIPTION token of this mission gives its stored role,
        an ACCESS token the default role; without one, no role on a password-protected or
        invite-only mission, else the mission's default role (public missions: no token)."""
        rec = m.record
        return mr.resolve_role(
            self._token_role(m, token),
            default_role=rec.default_role,
            password_protected=bool(rec.password_hash),
            invite_only=rec.invite_only,
        )

    def _require(self, m: _Mission, token: str | None, permission: str) -> str:
        role = self._role(m, token)
        if role is None or not has(role, permission):
            self.m_refused.inc("permission")
            raise MissionError(403, f"{permission} is required")
        return role

    # --- what a caller may see ------------------------------------------------------------

    def _mission_permitted(self, viewer: Principal, rec: MissionRecord) -> bool:
        """Whether ``viewer`` may see the mission at all: its groups and its own label (no
        record: metadata, as file listings)."""
        return self._router.permits(viewer, sender_groups=rec.groups, label=rec.label)

    def _find(self, viewer: Principal, name: str) -> _Mission:
        """The mission, or MissionError 404 when it does not exist or ``viewer`` may not see it
        (the two are indistinguishable)."""
        m = self._missions.get(name)
        if m is None or not self._mission_permitted(viewer, m.record):
            raise MissionError(404, "mission not found")
        return m

    def _release_mission(self, viewer: Principal, recs: list[MissionRecord]) -> list[MissionRecord]:
        """The missions released to ``viewer`` (decision and release records)."""
        ok = self._router.release_many(
            viewer,
            [(r.guid, "mission", r.groups, r.label, content_hash(r.name.encode())) for r in recs],
            path="mission",
        )
        return [r for r, keep in zip(recs, ok, strict=True) if keep]

    def list_for(
        self,
        viewer: Principal,
        *,
        tool: str = "public",
        password_protected: bool = False,
        default_role: bool = False,
    ) -> list[MissionRecord]:
        """``GET /missions``: the missions of ``tool`` the caller may see, oldest first. Invite-only
        missions are never listed; password-protected ones only with ``password_protected``,
        those whose default role is not MISSION_SUBSCRIBER only with ``default_role`` (TSw
        MissionRepository; tak-missions.md 5.1, trap 7)."""
        recs = [
            m.record
            for m in self._missions.values()
            if m.record.tool == tool
            and self._listed(m.record, password_protected, default_role)
            and self._mission_permitted(viewer, m.record)
        ]
        recs.sort(key=lambda r: (r.create_time, r.name))
        return self._release_mission(viewer, recs)

    def get(self, viewer: Principal, name: str) -> MissionRecord:
        m = self._find(viewer, name)
        if not self._release_mission(viewer, [m.record]):
            raise MissionError(503, "the audit log cannot be written")
        return m.record

    def items(self, viewer: Principal, name: str, *, path: str = "mission") -> list[MissionItem]:
        """The mission's map items ``viewer`` may see (each released through the router)."""
        m = self._find(viewer, name)
        items = sorted(m.items.values(), key=lambda i: (i.timestamp, i.uid))
        allowed = self._router.filter_records(viewer, [i.event for i in items], path=path)
        keep = {id(e) for e in allowed}
        return [i for i in items if id(i.event) in keep]

    def changes(
        self,
        viewer: Principal,
        name: str,
        *,
        since: int | None = None,
        until: int | None = None,
        squashed: bool = True,
    ) -> list[MissionChangeRecord]:
        """The mission's changes ``viewer`` may see, oldest first (:meth:`select_changes`, then
        :meth:`release_changes`). Changes about an item are shown only to who may see that item,
        so neither the list nor its length betrays what the caller may not see."""
        rec, found = self.select_changes(viewer, name, since=since, until=until, squashed=squashed)
        return self.release_changes(viewer, rec, found)

    def select_changes(
        self,
        viewer: Principal,
        name: str,
        *,
        since: int | None = None,
        until: int | None = None,
        squashed: bool = True,
    ) -> tuple[MissionRecord, list[MissionChangeRecord]]:
        """The mission (404 unless ``viewer`` may see it) and its changes in the time range,
        oldest first, NOT yet released: hand them to :meth:`release_changes` (in one go or in
        parts) before showing any. Squashed as TSw MissionChangeRepository does (tak-missions.md
        5.2): the create since the last create, and per (item, creator) one ``ADD_CONTENT`` for
        items still in the mission or one ``REMOVE_CONTENT`` for the rest. The squash of the
        whole list is kept until a change is recorded or an item or file joins or leaves."""
        m = self._find(viewer, name)
        found = [
            c
            for c in m.changes
            if (since is None or c.timestamp >= since) and (until is None or c.timestamp <= until)
        ]
        if not squashed:
            return m.record, found
        if len(found) == len(m.changes):  # the whole list: its squash may be kept
            key = (m.changes[-1].seq if m.changes else 0, len(m.changes), m.members_version)
            if m.squashed is None or m.squashed[0] != key:
                m.squashed = (key, _squash(m, found))
            return m.record, list(m.squashed[1])
        return m.record, _squash(m, found)

    def release_changes(
        self, viewer: Principal, rec: MissionRecord, found: Sequence[MissionChangeRecord]
    ) -> list[MissionChangeRecord]:
        """The changes of ``found`` that ``viewer`` may see: the router's decision on each, and
        a release record for each handed to a viewer of another organisation (none shown when
        the records cannot be written)."""
        ok = self._router.release_many(
            viewer,
            [
                (
                    c.content_uid or resource_hash(c) or rec.guid,
                    c.type,
                    c.sender_groups or rec.groups,
                    c.label if c.content_uid or c.resource else rec.label,
                    self._change_digest(c),
                )
                for c in found
            ],
            path="mission",
        )
        return [c for c, keep in zip(found, ok, strict=True) if keep]

    def _change_digest(self, c: MissionChangeRecord) -> str:
        """The SHA-256 a change's release record carries (of ``seq:details``), kept by seq."""
        digest = self._digests.get(c.seq)
        if digest is None:
            digest = content_hash(f"{c.seq}:{c.details or ''}".encode())
            if len(self._digests) >= CHANGE_DIGEST_CACHE:
                del self._digests[next(iter(self._digests))]  # the oldest kept
            self._digests[c.seq] = digest
        return digest

    def role_of(self, viewer: Principal, name: str, token: str | None) -> str | None:
        return self._role(self._find(viewer, name), token)

    # --- changes made by a caller ---------------------------------------------------------

    def create(
        self,
        viewer: Principal,
        name: str,
        *,
        creator_uid: str,
        groups: Iterable[str],
        tool: str,
        description: str | None,
        chat_room: str | None,
        token: str | None,
        classification: str | None = None,
        password_hash: str = "",
        invite_only: bool = False,
        default_role: str = DEFAULT_ROLE,
    ) -> tuple[MissionRecord, str | None]:
        """``PUT /missions/{name}``: create (returns the owner's token) or update (None).

        The mission's groups are those asked for that the caller holds (``__ANON__`` alone means
        the caller's groups, TSw MissionApi createMission). With labels on, its label is the
        ``classification`` banner the caller claims, or the caller's listener default label,
        under the ingest rules (``Router.label_claimed``); it decides who may see the mission
        at all. Items keep their own labels."""
        now = self._clock_ms()
        existing = self._missions.get(name)
        if existing is not None:
            if not self._mission_permitted(viewer, existing.record):
                # A name taken by a mission the caller may not see: refused without saying so.
                self.m_refused.inc("name_taken")
                raise MissionError(403, "this mission name cannot be used")
            self._require(existing, token, WRITE)
            self._admit()
            rec = replace(
                existing.record,
                description=existing.record.description if description is None else description,
                chat_room=existing.record.chat_room if chat_room is None else chat_room,
                last_edited=now,
            )
            existing.record = rec
            self._write(MissionWrite("put_mission", (rec,)))
            self._broadcast(existing, "t-x-m-c-m", creator_uid)
            return rec, None
        self._admit()
        if not mr.is_role(default_role):
            raise MissionError(400, f"{default_role} is not a mission role")
        if len(self._missions) >= MAX_MISSIONS:
            self.m_refused.inc("too_many_missions")
            raise MissionError(403, f"this server holds {MAX_MISSIONS} missions already")
        asked = {g for g in groups if g}
        chosen = frozenset(asked & viewer.in_groups)
        if not asked or asked == {"__ANON__"} or not chosen:
            chosen = viewer.in_groups
        if not chosen:
            self.m_refused.inc("no_groups")
            raise MissionError(403, "a user without groups cannot create a mission")
        label_json, reasons = self._router.label_claimed(viewer, classification, path="mission")
        if reasons:
            self.m_refused.inc("label")
            raise MissionError(403, f"no label for this mission: {', '.join(reasons)}")
        rec = MissionRecord(
            name=name,
            guid=str(uuid.uuid4()),
            creator=viewer.name,
            creator_uid=creator_uid,
            groups=chosen,
            label=label_json,
            tool=tool,
            description=description or "",
            chat_room=chat_room or "",
            create_time=now,
            last_edited=now,
            password_hash=password_hash,
            invite_only=invite_only,
            default_role=default_role,
        )
        m = _Mission(rec)
        self._missions[name] = m
        self._write(MissionWrite("put_mission", (rec,)))
        self._change(m, CREATE_MISSION, creator_uid, None, None)
        owner = self._subscribe(m, viewer, creator_uid, OWNER) if creator_uid else None
        if not invite_only:
            # t-x-m-n to every connected device that may see the mission but its creator's
            # (tak-missions.md 7.3); an invite-only mission is announced to no one.
            self._announce(rec, "t-x-m-n", "CREATE", creator_uid)
        return rec, owner.token if owner is not None else None

    def delete(self, viewer: Principal, name: str, token: str | None) -> MissionRecord:
        """``DELETE /missions/{name}``: the owner's role (its token) is required."""
        m = self._find(viewer, name)
        self._require(m, token, DELETE)
        self._admit()
        self._remove(m)
        self._tell_federation(MissionFedChange("delete", m.record))
        return m.record

    def subscribe(
        self,
        viewer: Principal,
        name: str,
        client_uid: str,
        token: str | None,
        *,
        password_ok: bool | None = None,
    ) -> SubscriptionRecord:
        """``PUT /missions/{name}/subscription?uid=``: store (or reactivate) the subscription of
        ``client_uid``; a token's role is kept, the role only rises (TSw
        MissionServiceDefaultImpl missionSubscribe). ``password_ok``: None when no ``password``
        was given, else whether it matched (checked by the caller off the event loop)."""
        m = self._find(viewer, name)
        self._admit()
        role = self._subscribe_role(m, viewer, client_uid, token, password_ok)
        if not has(role, READ):
            self.m_refused.inc("permission")
            raise MissionError(403, f"{READ} is required")
        sub = self._subscribe(m, viewer, client_uid, role)
        self._invitations_used(m, viewer, client_uid)
        return sub

    def _subscribe(
        self, m: _Mission, viewer: Principal, client_uid: str, role: str
    ) -> SubscriptionRecord:
        now = self._clock_ms()
        old = m.subs.get(client_uid)
        if old is not None and old.username != viewer.name:
            # A device uid another user subscribed: never hand over their token or role.
            self.m_refused.inc("uid_taken")
            raise MissionError(403, "this device uid is subscribed by another user")
        if old is not None:
            best = mr.higher(role, old.role)
            sub = replace(old, active=True, role=best, username=viewer.name)
        else:
            if len(m.subs) >= MAX_SUBSCRIPTIONS:
                self.m_refused.inc("too_many_subscriptions")
                raise MissionError(403, "this mission has too many subscriptions")
            token = make_token(self._secret, kind="SUBSCRIPTION", mission=m.record, now_ms=now)
            sub = SubscriptionRecord(
                mission=m.record.name,
                client_uid=client_uid,
                username=viewer.name,
                role=role,
                token=token,
                create_time=now,
            )
        m.subs[client_uid] = sub
        self._write(MissionWrite("put_subscription", (sub,)))
        return sub

    def unsubscribe(
        self,
        viewer: Principal,
        name: str,
        client_uid: str,
        *,
        disconnect_only: bool = True,
        token: str | None = None,
    ) -> None:
        """``DELETE /missions/{name}/subscription?uid=``: by default only stops live delivery and
        keeps the stored subscription and its role (TSc DistributedSubscriptionManager
        missionUnsubscribe); ``disconnectOnly=false`` forgets it (a token is still accepted only
        while its subscription is stored). Needs MISSION_READ (TSw MissionApi
        deleteMissionSubscription: on a password-protected mission, the subscription's token)."""
        m = self._find(viewer, name)
        self._require(m, token, READ)
        sub = m.subs.get(client_uid)
        if sub is None or sub.username != viewer.name:
            return
        self._admit()
        if disconnect_only:
            kept = replace(sub, active=False)
            m.subs[client_uid] = kept
            self._write(MissionWrite("put_subscription", (kept,)))
        else:
            del m.subs[client_uid]
            gone = replace(sub, active=False, token="", role=READONLY)
            self._write(MissionWrite("put_subscription", (gone,)))

    def subscription(self, viewer: Principal, name: str, client_uid: str) -> SubscriptionRecord:
        m = self._find(viewer, name)
        sub = m.subs.get(client_uid)
        if sub is None or sub.username != viewer.name:
            raise MissionError(404, "no subscription")
        return sub

    def add_uids(
        self,
        viewer: Principal,
        name: str,
        uids: Iterable[str],
        *,
        creator_uid: str,
        token: str | None,
    ) -> list[str]:
        """``PUT /missions/{name}/contents`` with ``uids``: each uid's latest CoT the caller may
        see is brokered into the mission as if it had been sent there (TSw
        MissionServiceDefaultImpl brokerMissionUids: delivered to the live subscribers, an
        ``ADD_CONTENT`` and a ``t-x-m-c``). Returns the uids not found (or not visible)."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        missing: list[str] = []
        for uid in uids:
            entry = self._router.entry_for(viewer, uid)
            if entry is None:
                missing.append(uid)
                continue
            label_json = labels.label_to_json(entry.label) if entry.label is not None else None
            if self._elsewhere(uid, name):
                missing.append(uid)  # strict membership: it stays in its mission
                continue
            if not self._may_replace(m, uid, entry.label):
                missing.append(uid)
                continue
            sender = Principal(name=viewer.name, in_groups=entry.sender_groups)
            event = entry.event
            xml = event.xml if event.xml is not None else cot_xml.render_xml(event)
            stored = stored_event(event, sender, self._clock_ms(), xml, label_json)
            if not self._add_item(m, event, stored, creator_uid):
                missing.append(uid)
                continue
            self._deliver(
                event,
                sender_groups=entry.sender_groups,
                label=label_json,
                clients=self._live(m) - {(creator_uid, viewer.name)},
                path="mission",
                xml=xml,
            )
        return missing

    def remove_uid(
        self, viewer: Principal, name: str, uid: str, *, creator_uid: str, token: str | None
    ) -> bool:
        """``DELETE /missions/{name}/contents?uid=``: ``REMOVE_CONTENT`` and a ``t-x-m-c``.
        False when the item is not in the mission or the caller may not see it."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        item = m.items.get(uid)
        if item is None or not self._router.permits(
            viewer, sender_groups=item.event.sender_groups, label=item.event.label
        ):
            return False
        del m.items[uid]
        m.members_version += 1
        self._unhome(uid, name)
        self._write(MissionWrite("remove_item", (name, uid)))
        details = self._details_of(item.event)
        self._change(
            m, REMOVE_CONTENT, creator_uid, item.event, json.dumps(details) if details else None
        )
        return True

    # --- the router's side ----------------------------------------------------------------

    def _live(self, m: _Mission) -> frozenset[tuple[str, str]]:
        """The live subscribers: (client uid, user name) of each active subscription. Delivery
        goes only to a connected device of the user who subscribed it."""
        return frozenset((s.client_uid, s.username) for s in m.subs.values() if s.active)

    def _writer_sub(self, m: _Mission, source: Source) -> SubscriptionRecord | None:
        """The subscription the sender writes with: its client uid's, else one of its user's
        (TSc StreamingEndpointRewriteFilter: by client uid and username, or certificate name)."""
        client_uid: str | None = getattr(source, "client_uid", None)
        if client_uid is not None:
            sub = m.subs.get(client_uid)
            if sub is not None and sub.username == source.principal.name:
                return sub
        name = source.principal.name
        return next((s for s in m.subs.values() if s.username == name), None)

    def delivered_form(self, event: Event, mission: str) -> Event:
        """The form of ``event`` (dests removed) the mission's subscribers get: with
        ``chat_host`` set, a GeoChat's room ids become the mission's chat room
        ``<chat_host>-8443-ssl-<name>`` (tak-missions.md 7.1 rule 4); otherwise unchanged, as
        TAK delivers it to inputs without ``takServerHost`` (its default). The kept item is
        the event as sent."""
        if self._chat_host is None:
            return event
        return mr.chat_in_mission_room(event, mr.mission_chat_room(self._chat_host, mission))

    def membership_refusal(self, event: Event) -> str | None:
        """Strict membership (tak-missions.md 7.1 and trap 10; TSc
        StrictUidMissionMemebershipFilter): once a uid is an item of a mission, an event with
        that uid that does not name that mission in a ``dest`` is dropped whole, neither kept
        nor delivered to anyone. Returns the refusal reason, or None to go on."""
        if not self._strict:
            return None
        homes = self._homes.get(event.uid)
        if not homes or any(d.mission in homes for d in event.dests if d.mission):
            return None
        self.m_refused.inc("strict_membership")
        log.info("event %s dropped: an item of a mission, sent without its mission", event.uid)
        return "mission_membership"

    def _elsewhere(self, uid: str, mission: str) -> bool:
        """Strict membership: ``uid`` is an item of other missions and not of ``mission``, so it
        cannot join it (tak-missions.md 7.1). Counted as ``strict_membership``."""
        homes = self._homes.get(uid)
        if not self._strict or not homes or mission in homes:
            return False
        self.m_refused.inc("strict_membership")
        return True

    def _unhome(self, uid: str, mission: str) -> None:
        homes = self._homes.get(uid)
        if homes is not None:
            homes.discard(mission)
            if not homes:
                del self._homes[uid]

    def recipients(
        self, mission: str, source: Source, uid: str | None = None
    ) -> frozenset[tuple[str, str]] | None:
        """The router asks who gets an event sent to ``mission``: its live subscribers, when
        the sender holds a subscription with MISSION_WRITE (tak-missions.md 7.1, rule 1);
        otherwise None and the mission target is ignored (trap 9). With strict membership an
        event whose ``uid`` is an item of other missions is not taken into this one."""
        m = self._missions.get(mission)
        if m is None:
            self.m_refused.inc("unknown_mission")
            return None
        if uid is not None and self._elsewhere(uid, mission):
            return None
        if self._store_busy():
            # Back-pressure: the event is not sent to the mission nor kept (no silent loss:
            # counted, logged); its other destinations route as usual.
            self.m_refused.inc("store_busy")
            log.warning("mission store busy: an event of %s not taken", source.principal.name)
            return None
        if source.principal.kind is PrincipalKind.FEDERATE:
            return self._federated_recipients(m, source)
        if isinstance(source, _PackageSource):
            # A mission package import (REST), whose MISSION_WRITE on this mission was checked:
            # every live subscriber but the caller's device (TAK submits the package's CoT with
            # the creator uid as its client uid: SubmissionService submitMissionPackageCotAtTime).
            if source.mission != mission:
                return None
            return self._live(m) - {(source.creator_uid, source.principal.name)}
        sub = self._writer_sub(m, source)
        if sub is None or not has(sub.role, WRITE):
            self.m_refused.inc("not_subscribed")
            return None
        return self._live(m)

    def target_stands(self, mission: str, source: Source, uid: str | None = None) -> bool:
        """Whether an event of ``source`` sent to ``mission`` goes to it, as :meth:`recipients`
        decides on the node that accepted it (the mission is known, the sender holds a
        subscription with MISSION_WRITE or is a partner that federates it, strict membership),
        without counting and without the store's back-pressure (which is the accepting
        node's). The partner links of a cluster ask it (federation/links_missions.py)."""
        m = self._missions.get(mission)
        if m is None:
            return False
        homes = self._homes.get(uid) if uid is not None else None
        if self._strict and homes and mission not in homes:
            return False
        if source.principal.kind is PrincipalKind.FEDERATE:
            return _federates(source, mission)
        sub = self._writer_sub(m, source)
        return sub is not None and has(sub.role, WRITE)

    def accepted(self, accepted: AcceptedEvent) -> None:
        """An event sent to missions was accepted and delivered: keep it as each mission's item
        (stripped of its ``marti``), record ``ADD_CONTENT`` and send ``t-x-m-c``."""
        event = accepted.event
        sender = accepted.source.principal
        stripped = event.without_dests()
        label_json = labels.label_to_json(accepted.label) if accepted.label is not None else None
        homes = frozenset(self._homes.get(event.uid, ()))  # before this event
        for name in {d.mission for d in event.dests if d.mission}:
            m = self._missions.get(name)
            if m is None:
                continue
            if self._strict and homes and name not in homes:
                continue  # strict membership: refused and counted by recipients()
            federated = _federates(accepted.source, name)
            package = accepted.source if isinstance(accepted.source, _PackageSource) else None
            if package is not None:
                if package.mission != name:
                    continue
                sub = None
            else:
                sub = None if federated else self._writer_sub(m, accepted.source)
                if not federated and (sub is None or not has(sub.role, WRITE)):
                    continue
            if self._store_busy():
                continue  # (store busy: refused and counted by recipients())
            xml = cot_xml.render_xml(stripped)
            stored = stored_event(stripped, sender, self._clock_ms(), xml, label_json)
            creator = (
                package.creator_uid
                if package is not None
                else sub.client_uid
                if sub is not None
                else sender.name
            )
            self._add_item(m, stripped, stored, creator, federated=federated)

    def prior_label(self, mission: str, uid: str) -> labels.Label | None:
        """The label of the item ``uid`` that ``mission`` keeps (the router applies the ingest
        rules to an event that would replace it); None when it keeps none or labels are off."""
        m = self._missions.get(mission)
        item = m.items.get(uid) if m is not None else None
        if item is None or item.event.label is None:
            return None
        return self._router.load_label(item.event.label)

    def _add_item(
        self,
        m: _Mission,
        event: Event,
        stored: StoredEvent,
        creator_uid: str,
        *,
        federated: bool = False,
    ) -> bool:
        if event.uid not in m.items and len(m.items) >= MAX_MISSION_ITEMS:
            self.m_refused.inc("too_many_items")
            log.warning(
                "mission %s holds %d items: %s not added",
                m.record.name,
                MAX_MISSION_ITEMS,
                event.uid,
            )
            return False
        item = MissionItem(
            mission=m.record.name,
            uid=event.uid,
            creator_uid=creator_uid,
            timestamp=self._clock_ms(),
            event=stored,
            keywords=old.keywords if (old := m.items.get(event.uid)) is not None else (),
        )
        m.items[event.uid] = item
        m.members_version += 1
        self._homes.setdefault(event.uid, set()).add(m.record.name)
        self._write(MissionWrite("put_item", (item,)))
        self._change(
            m, ADD_CONTENT, creator_uid, stored, json.dumps(uid_details(event)), federated=federated
        )
        return True

    @staticmethod
    def _details_of(stored: StoredEvent) -> dict[str, object] | None:
        try:
            return uid_details(cot_xml.parse_event(stored.xml))
        except PeerError:
            return None

    def _change(
        self,
        m: _Mission,
        type_: str,
        creator_uid: str,
        item: StoredEvent | None,
        details: str | None,
        *,
        federated: bool = False,
    ) -> None:
        self._next_seq()
        change = MissionChangeRecord(
            mission=m.record.name,
            type=type_,
            creator_uid=creator_uid,
            timestamp=self._clock_ms(),
            content_uid=item.uid if item is not None else None,
            sender_groups=item.sender_groups if item is not None else frozenset(),
            label=item.label if item is not None else None,
            details=details,
            seq=self._seq,
            federated=federated,
        )
        m.changes.append(change)
        self._write(MissionWrite("add_change", (change,)))
        self.m_changes.inc(type_)
        if not federated and type_ in (CREATE_MISSION, ADD_CONTENT, REMOVE_CONTENT):
            kind = "create" if type_ == CREATE_MISSION else type_
            self._tell_federation(MissionFedChange(kind, m.record, change))
        if item is not None:
            self._notify(m, change)

    def _notify(self, m: _Mission, change: MissionChangeRecord) -> None:
        """``t-x-m-c`` to every live subscriber, the author included, that may see the item the
        change is about (TSc DistributedSubscriptionManager createMissionChangeMessage)."""
        xml = change_notice(m.record, change, self._clock_ms())
        try:
            notice = cot_xml.parse_event(xml)
        except PeerError as exc:  # our own rendering: a bug, not input
            log.error("mission notice for %s not built: %s", m.record.name, exc)
            return
        self._deliver(
            notice,
            sender_groups=change.sender_groups or m.record.groups,
            label=change.label,
            clients=self._live(m),
            path="mission-notice",
            xml=xml,
        )

    # ==== Files, keywords and metadata in missions (issue 13; tak-missions.md 4.3, 5.2, 5.4,
    # 7.3). Everything in this block reaches callers through the router, like the items. ====

    def name_for_guid(self, viewer: Principal, guid: str) -> str:
        """The name of the mission with this guid (the ``/guid/`` twins, tak-missions.md 6), or
        MissionError 404 when none exists or ``viewer`` may not see it."""
        for m in self._missions.values():
            if m.record.guid == guid and self._mission_permitted(viewer, m.record):
                return m.record.name
        raise MissionError(404, "mission not found")

    def contents(self, viewer: Principal, name: str) -> list[MissionContent]:
        """The mission's files ``viewer`` may see, oldest first, each released through the
        router on the file's own groups and label (``release_many``, path ``mission``)."""
        m = self._find(viewer, name)
        found = sorted(m.contents.values(), key=lambda c: (c.timestamp, c.hash))
        ok = self._router.release_many(
            viewer,
            [(c.file_uid, c.mime, c.uploader_groups, c.label, c.hash) for c in found],
            path="mission",
        )
        return [c for c, keep in zip(found, ok, strict=True) if keep]

    def add_files(
        self,
        viewer: Principal,
        name: str,
        records: Sequence[FileRecord],
        *,
        creator_uid: str,
        token: str | None,
    ) -> None:
        """``PUT /missions/{name}/contents`` with ``hashes``: each file (already uploaded and
        visible to the caller: the caller passes the record it may see) joins the mission with
        the record's groups and label, an ``ADD_CONTENT`` change whose ``contentResource`` is
        the file, and a ``t-x-m-c`` (TSw MissionServiceDefaultImpl addMissionContentImpl)."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        for rec in records:
            if rec.hash not in m.contents and len(m.contents) >= MAX_MISSION_CONTENTS:
                self.m_refused.inc("too_many_contents")
                raise MissionError(403, f"a mission holds at most {MAX_MISSION_CONTENTS} files")
            old = m.contents.get(rec.hash)
            content = MissionContent(
                mission=name,
                hash=rec.hash,
                file_uid=rec.uid,
                name=rec.name,
                mime=rec.mime,
                size=rec.size,
                file_keywords=rec.keywords,
                tool=rec.tool,
                file_creator_uid=rec.creator_uid,
                submitter=rec.uploader,
                submitted=rec.submitted,
                uploader_groups=rec.uploader_groups,
                label=rec.label,
                creator_uid=creator_uid,
                timestamp=self._clock_ms(),
                keywords=old.keywords if old is not None else (),
            )
            m.contents[rec.hash] = content
            m.members_version += 1
            self._write(MissionWrite("put_content", (content,)))
            self._file_change(m, ADD_CONTENT, creator_uid, content)

    def remove_file(
        self, viewer: Principal, name: str, hash: str, *, creator_uid: str, token: str | None
    ) -> bool:
        """``DELETE /missions/{name}/contents?hash=``: ``REMOVE_CONTENT`` and a ``t-x-m-c``.
        False when the file is not in the mission or the caller may not see it."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        content = m.contents.get(hash)
        if content is None or not self._content_permitted(viewer, content):
            return False
        del m.contents[hash]
        m.members_version += 1
        self._write(MissionWrite("remove_content", (name, hash)))
        self._file_change(m, REMOVE_CONTENT, creator_uid, content)
        return True

    def set_content_keywords(
        self,
        viewer: Principal,
        name: str,
        hash: str,
        keywords: Sequence[str],
        *,
        creator_uid: str,
        token: str | None,
    ) -> bool:
        """``PUT`` (or, with no keywords, ``DELETE``) ``/missions/{name}/content/{hash}/keywords``:
        the file's keywords in this mission, and a ``t-x-m-c-k-c`` to the live subscribers who
        may see the file. False when the file is not in the mission or not visible."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        content = m.contents.get(hash)
        if content is None or not self._content_permitted(viewer, content):
            return False
        kept = replace(content, keywords=tuple(keywords))
        m.contents[hash] = kept
        self._write(MissionWrite("put_content", (kept,)))
        self._send_notice(
            mission_notice(m.record, "t-x-m-c-k-c", creator_uid, self._clock_ms()),
            sender_groups=kept.uploader_groups,
            label=kept.label,
            clients=self._live(m),
        )
        return True

    def set_uid_keywords(
        self,
        viewer: Principal,
        name: str,
        uid: str,
        keywords: Sequence[str],
        *,
        creator_uid: str,
        token: str | None,
    ) -> bool:
        """``PUT`` (or, with no keywords, ``DELETE``) ``/missions/{name}/uid/{uid}/keywords``:
        the item's keywords in this mission, and a ``t-x-m-c-k-u`` to the live subscribers who
        may see the item. False when the item is not in the mission or not visible."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        item = m.items.get(uid)
        if item is None or not self._router.permits(
            viewer, sender_groups=item.event.sender_groups, label=item.event.label
        ):
            return False
        kept = replace(item, keywords=tuple(keywords))
        m.items[uid] = kept
        self._write(MissionWrite("put_item", (kept,)))
        self._send_notice(
            mission_notice(m.record, "t-x-m-c-k-u", creator_uid, self._clock_ms()),
            sender_groups=item.event.sender_groups,
            label=item.event.label,
            clients=self._live(m),
        )
        return True

    def set_keywords(
        self,
        viewer: Principal,
        name: str,
        keywords: Sequence[str] | None,
        *,
        remove: str | None = None,
        creator_uid: str,
        token: str | None,
    ) -> MissionRecord:
        """The mission's keywords: ``PUT .../keywords`` replaces them all and broadcasts
        ``t-x-m-c-k`` (tak-missions.md 5.4, 7.3); ``DELETE .../keywords`` (``keywords`` None,
        ``remove`` None) clears them, ``DELETE .../keywords/{keyword}`` removes one."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        if keywords is not None:
            chosen = tuple(dict.fromkeys(keywords))
        elif remove is not None:
            chosen = tuple(k for k in m.record.keywords if k != remove)
        else:
            chosen = ()
        rec = replace(m.record, keywords=chosen, last_edited=self._clock_ms())
        m.record = rec
        self._write(MissionWrite("put_mission", (rec,)))
        if keywords is not None:
            self._broadcast(m, "t-x-m-c-k", creator_uid)
        return rec

    def item_for(self, viewer: Principal, uid: str) -> StoredEvent | None:
        """The CoT of the mission item ``uid`` in a mission ``viewer`` may see, if ``viewer``
        may see the item itself (``GET /Marti/api/cot/xml/{uid}`` for items kept only in a
        mission), released through ``Router.filter_records`` (path ``cot-xml``). The newest
        when several missions keep it."""
        found = [
            m.items[uid].event
            for m in self._missions.values()
            if uid in m.items and self._mission_permitted(viewer, m.record)
        ]
        found.sort(key=lambda e: e.time, reverse=True)
        for stored in found:
            allowed = self._router.filter_records(viewer, [stored], path="cot-xml")
            if allowed:
                return allowed[0]
        return None

    def _content_permitted(self, viewer: Principal, content: MissionContent) -> bool:
        return self._router.permits(
            viewer, sender_groups=content.uploader_groups, label=content.label
        )

    def _file_change(
        self, m: _Mission, type_: str, creator_uid: str, content: MissionContent
    ) -> None:
        """Record a file change (with the file's groups and label, so it is shown only to who
        may see the file) and send its ``t-x-m-c``."""
        self._next_seq()
        change = MissionChangeRecord(
            mission=m.record.name,
            type=type_,
            creator_uid=creator_uid,
            timestamp=self._clock_ms(),
            sender_groups=content.uploader_groups,
            label=content.label,
            seq=self._seq,
            resource=json.dumps(resource_json(content), separators=(",", ":")),
            content_hash=content.hash,
        )
        m.changes.append(change)
        self._write(MissionWrite("add_change", (change,)))
        self.m_changes.inc(type_)
        self._notify(m, change)

    def _broadcast(self, m: _Mission, type_: str, author_uid: str) -> None:
        """A mission-wide notice (``t-x-m-c-k``, ``t-x-m-c-m``) to every connected client that
        may see the mission (TAK broadcasts them by group overlap, tak-missions.md 7.3; here the
        router's decision on the mission's groups and label)."""
        to = ("all", "")
        self._send_notice(
            mission_notice(m.record, type_, author_uid, self._clock_ms()),
            sender_groups=m.record.groups,
            label=m.record.label,
            clients=self.local_clients(to),
            to=to,
        )

    def _send_notice(
        self,
        xml: bytes,
        *,
        sender_groups: frozenset[str],
        label: str | None,
        clients: frozenset[tuple[str, str]],
        to: tuple[str, str] | None = None,
    ) -> None:
        try:
            notice = cot_xml.parse_event(xml)
        except PeerError as exc:  # our own rendering: a bug, not input
            log.error("mission notice not built: %s", exc)
            return
        self._deliver(
            notice,
            sender_groups=sender_groups,
            label=label,
            clients=clients,
            path="mission-notice",
            xml=xml,
            to=to,
        )

    # ==== Mission packages: ``PUT /missions/{name}/contents/missionpackage`` (TSw MissionApi
    # addMissionPackage; MissionServiceDefaultImpl addMissionPackage; SubmissionService
    # submitMissionPackageCotAtTime). The CoT events of the package go through the router's
    # ingest rules as if sent to the mission; its files were stored by the HTTP side. ====

    def require_write(self, viewer: Principal, name: str, token: str | None) -> None:
        """404 when the mission is missing or hidden, 403 unless the caller's role
        (tak-missions.md 3.2) holds MISSION_WRITE."""
        self._require(self._find(viewer, name), token, WRITE)

    def package_refusals(
        self, viewer: Principal, name: str, events: Sequence[Event], hashes: Iterable[str]
    ) -> list[str]:
        """Why importing these events (each already carrying only a ``dest`` for this mission,
        :func:`package_event`) and files (by hash) into ``name`` would be refused, one text per
        refused part; empty when all would be taken. Decides only: nothing is kept, recorded or
        counted. Each event meets the rules an event sent on the stream to the mission meets:
        strict membership and the router's ingest rules (``Router.ingest_outcome``: its own
        label or the caller's default, nothing above the caller's clearance, the rules on
        changing an item the mission or the picture already holds)."""
        m = self._find(viewer, name)
        refused: list[str] = []
        new_uids: set[str] = set()
        for event in events:
            homes = self._homes.get(event.uid)
            if self._strict and homes and name not in homes:
                refused.append(f"{event.uid}: mission_membership")
                continue
            outcome = self._router.ingest_outcome(event, viewer)
            if outcome is not None and outcome.event is None:
                refused.append(f"{event.uid}: {','.join(outcome.reasons) or 'rejected'}")
                continue
            if event.uid not in m.items:
                new_uids.add(event.uid)
        if len(m.items) + len(new_uids) > MAX_MISSION_ITEMS:
            refused.append(f"too_many_items: a mission holds at most {MAX_MISSION_ITEMS} items")
        new_files = {h for h in hashes if h not in m.contents}
        if len(m.contents) + len(new_files) > MAX_MISSION_CONTENTS:
            refused.append(
                f"too_many_contents: a mission holds at most {MAX_MISSION_CONTENTS} files"
            )
        return refused

    async def import_package(
        self,
        viewer: Principal,
        name: str,
        ops: Sequence[PackageOp],
        *,
        creator_uid: str,
        token: str | None,
    ) -> int:
        """Take a checked package into the mission, all or nothing as far as the rules go: the
        caller must hold MISSION_WRITE and :meth:`package_refusals` must find nothing in its
        events and files (else MissionError 403 and nothing is kept). Then, in order: each
        event is published as one sent to the mission on the stream (:meth:`_take_package_event`;
        it reaches the live subscribers who may see it except the caller's device
        ``creator_uid``); each file record joins the mission as ``PUT .../contents`` with
        ``hashes`` adds it; each removal (offline changes) is done as ``DELETE .../contents``
        does it, skipped when the item or file is not there or not visible. TAK submits the
        package's CoT with the caller's groups and the creator uid as its client uid and adds
        each other file to Enterprise Sync and to the mission (MissionServiceDefaultImpl
        addMissionPackage). The steps are taken PACKAGE_CHUNK at a time, the event loop
        running other work (stream delivery) between chunks; each item meets the ingest rules
        again when it is published, and MISSION_WRITE is checked again before each chunk (a
        caller who lost it meanwhile is refused, 403, with the earlier chunks taken). Returns
        the number of items taken."""
        m = self._find(viewer, name)
        self._require(m, token, WRITE)
        self._admit()
        events = [op.event for op in ops if op.event is not None]
        hashes = [op.record.hash for op in ops if op.record is not None]
        refused = self.package_refusals(viewer, name, events, hashes)
        if refused:
            # Counted by the HTTP side's refusal (``package_refused``).
            log.info(
                "mission %s: package from %s refused: %s", name, viewer.name, "; ".join(refused)
            )
            raise MissionError(
                403, "package refused: " + "; ".join(refused[:10]), reason="package_refused"
            )
        source = _PackageSource(viewer, name, creator_uid)
        taken = 0
        for i, op in enumerate(ops):
            if i and i % PACKAGE_CHUNK == 0:
                await self._package_pause()
                m = self._find(viewer, name)
                self._require(m, token, WRITE)
            if op.record is not None:
                self.add_files(viewer, name, [op.record], creator_uid=creator_uid, token=token)
            elif op.remove_uid is not None:
                self.remove_uid(viewer, name, op.remove_uid, creator_uid=creator_uid, token=token)
            elif op.remove_hash is not None:
                self.remove_file(viewer, name, op.remove_hash, creator_uid=creator_uid, token=token)
            elif op.event is not None and self._take_package_event(source, op.event):
                taken += 1
        return taken

    async def _package_pause(self) -> None:
        """Between two chunks of an import: let the loop run, and while MAX_PENDING_WRITES
        writes wait for the store, wait for the writer (the stream would otherwise find the
        store busy and drop mission CoT), at most PACKAGE_STORE_WAIT_S; then MissionError 503
        (the chunks before are taken)."""
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PACKAGE_STORE_WAIT_S
        while self._store_busy():
            if loop.time() >= deadline:
                self.m_refused.inc("store_busy")
                raise MissionError(503, "the mission store is busy, try again")
            await asyncio.sleep(0.05)

    def _take_package_event(self, source: _PackageSource, event: Event) -> bool:
        """One item of a package, published as the event sent to the mission on the stream is
        (``Router.publish_checked``: the ingest rules and label, the stored copy, delivery to
        the mission's live subscribers and federated partners, then :meth:`accepted` keeps it
        as an item with its ``ADD_CONTENT`` and ``t-x-m-c``)."""
        published = self._router.publish_checked(event, source)
        if published.event is not None:
            return True
        # Only when the audit log failed since the check (the event is held and published when
        # it recovers, into the mission) or a rule changed meanwhile.
        self.m_refused.inc("package_item")
        log.warning(
            "mission %s: package item %s not taken now: %s",
            source.mission,
            event.uid,
            ",".join(published.refused) or "audit log unavailable",
        )
        return False

    def offline_conflicts(
        self, viewer: Principal, name: str, pending: Sequence[OfflineChange]
    ) -> list[int]:
        """The offline changes of a package (its ``changes.json``) that conflict with what the
        mission recorded, by index (TSw MissionServiceDefaultImpl hasConflicts): a change made
        before the mission was created; a change of a uid (compared ignoring case) after which
        the mission recorded a change of that uid; a change of a file after which the mission
        recorded a change of a file of that name (ignoring case). Only the recorded changes
        ``viewer`` may see are compared: a change hidden from it conflicts with nothing."""
        m = self._find(viewer, name)
        latest_uid: dict[str, int] = {}
        latest_name: dict[str, int] = {}
        for c in m.changes:
            if not self._router.permits(viewer, sender_groups=c.sender_groups, label=c.label):
                continue
            if c.content_uid is not None:
                key = c.content_uid.lower()
                latest_uid[key] = max(latest_uid.get(key, c.timestamp), c.timestamp)
            if c.resource:
                try:
                    file_name = json.loads(c.resource).get("name")
                except (ValueError, AttributeError):
                    file_name = None
                if isinstance(file_name, str):
                    key = file_name.lower()
                    latest_name[key] = max(latest_name.get(key, c.timestamp), c.timestamp)
        conflicts: list[int] = []
        for i, p in enumerate(pending):
            if p.timestamp < m.record.create_time:
                conflicts.append(i)
            elif p.content_uid is not None:
                if p.timestamp < latest_uid.get(p.content_uid.lower(), p.timestamp):
                    conflicts.append(i)
            elif p.resource_name is not None and p.timestamp < latest_name.get(
                p.resource_name.lower(), p.timestamp
            ):
                conflicts.append(i)
        return conflicts

    # ==== end of files, keywords and metadata ====
    # --- log entries (tak-missions.md 4.5 LogEntry, 5.4; TSw MissionApi postLogEntry,
    # updateLogEntry, getLogEntry; MissionServiceDefaultImpl addUpdateLogEntry) --------------

    def _log_visible(self, viewer: Principal, entry: LogEntryRecord) -> bool:
        return self._router.permits(viewer, sender_groups=entry.sender_groups, label=entry.label)

    def _release_logs(
        self, viewer: Principal, entries: list[LogEntryRecord]
    ) -> list[LogEntryRecord]:
        """The entries released to ``viewer`` (the decision on each entry's own label and its
        poster's groups, and a ``release`` record for another organisation)."""
        ok = self._router.release_many(
            viewer,
            [
                (
                    e.id,
                    "mission-log",
                    e.sender_groups,
                    e.label,
                    e.sha256 or content_hash(e.content.encode("utf-8")),
                )
                for e in entries
            ],
            path="mission-log",
        )
        return [e for e, keep in zip(entries, ok, strict=True) if keep]

    def visible_log_missions(self, viewer: Principal, entry: LogEntryRecord) -> list[str]:
        """The entry's mission names ``viewer`` may see (the others are not named to them)."""
        return [
            n
            for n in entry.mission_names
            if n in self._missions and self._mission_permitted(viewer, self._missions[n].record)
        ]

    def post_log(
        self,
        viewer: Principal,
        *,
        entry_id: str | None,
        content: str,
        creator_uid: str,
        mission_names: Iterable[str],
        dtg: int | None,
        entry_uid: str | None,
        content_hashes: Iterable[str],
        keywords: Iterable[str],
        token: str | None,
        classification: str | None,
    ) -> LogEntryRecord:
        """``POST /missions/logs/entries`` (``entry_id`` None: a new entry) or ``PUT`` (update
        the entry ``entry_id``). Needs MISSION_WRITE on every mission named (and, to update,
        on every mission the entry named before, which the caller must be able to see). The
        entry's label is the ``classification`` banner the poster claims or their listener
        default, under the ingest rules; it is written with the poster's groups. A
        ``t-x-m-c-l`` goes to the live subscribers of each mission who may see the entry."""
        if len(content) > MAX_LOG_CONTENT_CHARS:
            raise MissionError(400, f"content is longer than {MAX_LOG_CONTENT_CHARS} characters")
        names = list(dict.fromkeys(mission_names))
        if not names or len(names) > MAX_LOG_NAMES:
            raise MissionError(400, f"missionNames must name 1 to {MAX_LOG_NAMES} missions")
        self._admit()
        old: LogEntryRecord | None = None
        if entry_id is not None:
            old = self._logs.get(entry_id)
            if old is None or not self._log_visible(viewer, old):
                raise MissionError(404, "no such log entry")
            for name in old.mission_names:
                if name in self._missions and name not in names:
                    self._require(self._find(viewer, name), token, WRITE)
        elif len(self._logs) >= MAX_LOG_ENTRIES:
            self.m_refused.inc("too_many_logs")
            raise MissionError(403, f"this server holds {MAX_LOG_ENTRIES} log entries already")
        found = [self._find(viewer, n) for n in names]
        for m in found:
            self._require(m, token, WRITE)
        label_json, reasons = self._router.label_claimed(
            viewer,
            classification,
            path="mission-log",
            prior=old.label if old is not None else None,
        )
        if reasons:
            self.m_refused.inc("label")
            raise MissionError(403, f"no label for this log entry: {', '.join(reasons)}")
        now = self._clock_ms()
        entry = LogEntryRecord(
            id=entry_id if entry_id is not None else str(uuid.uuid4()),
            content=content,
            creator_uid=creator_uid,
            entry_uid=entry_uid,
            mission_names=tuple(names),
            servertime=now,
            dtg=dtg if dtg is not None else now,
            created=old.created if old is not None else now,
            content_hashes=tuple(content_hashes),
            keywords=tuple(keywords),
            creator=viewer.name,
            sender_groups=viewer.in_groups,
            label=label_json,
            sha256=content_hash(content.encode("utf-8")),
        )
        self._logs[entry.id] = entry
        self._write_log(entry)
        for m in found:
            self._notify_log(m, entry)
        return entry

    def logs(
        self,
        viewer: Principal,
        name: str,
        *,
        since: int | None = None,
        until: int | None = None,
    ) -> list[LogEntryRecord]:
        """``GET /missions/{name}/log``: the mission's entries ``viewer`` may see, oldest
        ``servertime`` first, within [since, until]."""
        m = self._find(viewer, name)
        found = sorted(
            (
                e
                for e in self._logs.values()
                if m.record.name in e.mission_names
                and (since is None or e.servertime >= since)
                and (until is None or e.servertime <= until)
            ),
            key=lambda e: (e.servertime, e.id),
        )
        return self._release_logs(viewer, found)

    def log_entry(self, viewer: Principal, entry_id: str) -> LogEntryRecord:
        """``GET /missions/logs/entries/{id}``: 404 unless ``viewer`` may see the entry and one
        of its missions."""
        entry = self._logs.get(entry_id)
        if entry is None or not self.visible_log_missions(viewer, entry):
            raise MissionError(404, "no such log entry")
        if not self._release_logs(viewer, [entry]):
            raise MissionError(404, "no such log entry")
        return entry

    def delete_log(self, viewer: Principal, entry_id: str, token: str | None) -> LogEntryRecord:
        """``DELETE /missions/logs/entries/{id}``: MISSION_WRITE on each of its missions that
        still exists; 404 when the caller may not see the entry or any of its missions."""
        entry = self._logs.get(entry_id)
        if (
            entry is None
            or not self._log_visible(viewer, entry)
            or not self.visible_log_missions(viewer, entry)
        ):
            raise MissionError(404, "no such log entry")
        for name in entry.mission_names:
            if name in self._missions:
                self._require(self._find(viewer, name), token, WRITE)
        if not self._may_change(viewer, entry):
            self.m_refused.inc("other_org_item")
            raise MissionError(403, "only the organisation that labelled it may delete it")
        self._admit()
        del self._logs[entry_id]
        self._write_log_deleted(entry_id)
        return entry

    def _may_change(self, viewer: Principal, entry: LogEntryRecord) -> bool:
        """The ingest rule on changing a stored item (labels.check_ingest ``other_org_item``):
        only the organisation that originated its label, unless ``gate.partner_updates``."""
        gate = self._router.gate
        label = self._router.load_label(entry.label)
        if gate is None or label is None:
            return True
        return label.originator == viewer.org or gate.config.partner_updates

    def _remove(self, m: _Mission) -> None:
        """Delete mission ``m``: its items leave it, the store and its logs forget it, and its
        subscribers are told (``t-x-m-d``). Shared by ``DELETE /missions/{name}`` and a
        partner's ``delete mission`` (ROL)."""
        name = m.record.name
        del self._missions[name]
        for uid in m.items:
            self._unhome(uid, name)
        self._write(MissionWrite("delete_mission", (name,)))
        self._forget_logs(name)
        self.m_changes.inc("DELETE_MISSION")
        self._announce(m.record, "t-x-m-d", "DELETE", None)

    def _forget_logs(self, mission: str) -> None:
        """A deleted mission leaves its entries: an entry naming no other mission goes."""
        for entry in [e for e in self._logs.values() if mission in e.mission_names]:
            rest = tuple(n for n in entry.mission_names if n != mission)
            if rest:
                self._logs[entry.id] = replace(entry, mission_names=rest)
                self._write_log(self._logs[entry.id])
            else:
                del self._logs[entry.id]
                self._write_log_deleted(entry.id)

    def _write_log(self, entry: LogEntryRecord) -> None:
        self._write(MissionWrite("put_log", (entry,)))

    def _write_log_deleted(self, entry_id: str) -> None:
        self._write(MissionWrite("delete_log", (entry_id,)))

    def _notify_log(self, m: _Mission, entry: LogEntryRecord) -> None:
        """``t-x-m-c-l`` to every live subscriber of ``m`` that may see the entry."""
        xml = log_notice(m.record, entry, self._clock_ms())
        try:
            notice = cot_xml.parse_event(xml)
        except PeerError as exc:  # our own rendering: a bug, not input
            log.error("mission log notice for %s not built: %s", m.record.name, exc)
            return
        self._deliver(
            notice,
            sender_groups=entry.sender_groups,
            label=entry.label,
            clients=self._live(m),
            path="mission-notice",
            xml=xml,
        )

    # --- missions across the native partner link (docs/protocol.md "Missions across the link")

    def _federated_recipients(
        self, m: _Mission, source: Source
    ) -> frozenset[tuple[str, str]] | None:
        """An item a partner sent to ``m``: its live subscribers when the link's ``missions``
        key federates it (the partner's guard and our inbound validator passed it already, and
        the router's decision still applies per subscriber); otherwise ignored and counted."""
        if not _federates(source, m.record.name):
            self.m_refused.inc("mission_not_federated")
            return None
        return self._live(m)

    # --- TAK federation ROL (federation/mission_rol.py) -------------------------------------

    def _tell_federation(self, change: MissionFedChange) -> None:
        for hook in self.federation_hooks:
            try:
                hook(change)
            except Exception:  # a sender's fault never undoes the local change
                log.exception("mission %s: federation hook failed", change.record.name)

    def add_federation_hook(self, hook: Callable[[MissionFedChange], None]) -> None:
        if len(self.federation_hooks) >= MAX_FEDERATION_HOOKS:
            raise ValueError("too many federation hooks")
        self.federation_hooks.append(hook)

    def remove_federation_hook(self, hook: Callable[[MissionFedChange], None]) -> None:
        if hook in self.federation_hooks:
            self.federation_hooks.remove(hook)

    def federation_may_name(self, name: str, peer: Principal) -> bool:
        """Whether a partner link's principal may see the mission ``name`` (its groups and its
        own label): the router names a mission to a partner only then."""
        m = self._missions.get(name)
        if m is not None and self._mission_permitted(peer, m.record):
            return True
        self.m_refused.inc("mission_not_released")
        return False

    def mission_record(self, name: str) -> MissionRecord | None:
        """The mission's record, unchecked (the federation decides what it may release)."""
        m = self._missions.get(name)
        return m.record if m is not None else None

    def federated_create(
        self,
        peer: Principal,
        name: str,
        *,
        creator_uid: str,
        tool: str,
        description: str,
        chat_room: str,
        label_json: str | None,
        groups: frozenset[str] | None = None,
    ) -> MissionRecord | None:
        """A partner's ``create mission`` (ROL): a mission of that name, owned by no local
        user, in ``groups`` (default: the peer's IN groups) and labelled ``label_json``
        (already judged by the ingest rules). None when the name exists (it is left as it is)
        or no mission can be made."""
        groups = peer.in_groups if groups is None else groups
        if name in self._missions or len(name) > MAX_NAME_CHARS:
            return None
        if len(self._missions) >= MAX_MISSIONS or self._store_busy() or not groups:
            self.m_refused.inc("federated_create")
            return None
        now = self._clock_ms()
        rec = MissionRecord(
            name=name,
            guid=str(uuid.uuid4()),
            creator=peer.name,
            creator_uid=creator_uid[:MAX_NAME_CHARS],
            groups=groups,
            label=label_json,
            tool=tool[:MAX_NAME_CHARS] or "public",
            description=description[:MAX_TEXT_CHARS],
            chat_room=chat_room[:MAX_NAME_CHARS],
            create_time=now,
            last_edited=now,
        )
        m = _Mission(rec)
        self._missions[name] = m
        self._write(MissionWrite("put_mission", (rec,)))
        self._change(m, CREATE_MISSION, creator_uid, None, None, federated=True)
        self._announce(rec, "t-x-m-n", "CREATE", creator_uid)
        return rec

    def federated_delete(self, peer: Principal, name: str) -> bool:
        """A partner's ``delete mission`` (ROL): only a mission that partner created here
        (``federated_create``) is deleted; False otherwise."""
        m = self._missions.get(name)
        if m is None or m.record.creator != peer.name or self._store_busy():
            return False
        self._remove(m)
        return True

    def federated_has(self, name: str, uid: str) -> bool:
        """Whether ``name`` keeps the item ``uid`` (a partner's ``ADD_CONTENT`` names items
        that crossed as mission CoT, which put them there)."""
        m = self._missions.get(name)
        return m is not None and uid in m.items

    def federated_remove(self, peer: Principal, name: str, uid: str, creator_uid: str) -> bool:
        """A partner's ``REMOVE_CONTENT`` (ROL): only an item that partner added (its
        ``creatorUid`` is the partner's principal) leaves the mission; False otherwise."""
        m = self._missions.get(name)
        item = m.items.get(uid) if m is not None else None
        if m is None or item is None or item.creator_uid != peer.name or self._store_busy():
            return False
        del m.items[uid]
        m.members_version += 1
        self._unhome(uid, name)
        self._write(MissionWrite("remove_item", (name, uid)))
        details = self._details_of(item.event)
        self._change(
            m,
            REMOVE_CONTENT,
            creator_uid or peer.name,
            item.event,
            json.dumps(details) if details else None,
            federated=True,
        )
        return True

    # --- roles, invitations, passwords, notices, catch-up (tak-missions.md 3, 5.3, 5.4, 7.3) ---

    def _claims(self, m: _Mission, token: str | None) -> dict[str, object] | None:
        """The claims of ``token`` when it is ours and names this mission (name and guid: a
        token of a deleted mission does not open a new one of the same name)."""
        if not token:
            return None
        claims = token_claims(self._secret, token)
        if (
            claims is None
            or claims.get("MISSION_NAME") != m.record.name
            or claims.get("MISSION_GUID") != m.record.guid
        ):
            return None
        return claims

    def _token_role(self, m: _Mission, token: str | None) -> str | None:
        """The role a token gives on any route (TSw MissionServiceDefaultImpl getRoleFromToken):
        SUBSCRIPTION the role stored with the subscription holding it, ACCESS the mission's
        default role. INVITATION tokens count only when subscribing."""
        claims = self._claims(m, token)
        if claims is None or token is None:
            return None
        kind = claims.get("sub")
        if kind == mr.SUBSCRIPTION_TOKEN:
            for sub in m.subs.values():
                if sub.token and hmac.compare_digest(sub.token, token):
                    return sub.role
        elif kind == mr.ACCESS_TOKEN:
            return m.record.default_role
        return None

    def _subscribe_role(
        self,
        m: _Mission,
        viewer: Principal,
        client_uid: str,
        token: str | None,
        password_ok: bool | None,
    ) -> str:
        """The role a subscribe gives (TSw MissionApi createMissionSubscription; tak-missions.md
        5.3): a stray password is 403 (trap 3); a valid token gives its role (an INVITATION
        token its invitation's); else a password-protected mission needs the right password and
        an invite-only one a standing ``userName`` invitation of the caller; else the default
        role."""
        rec = m.record
        if password_ok is not None and not rec.password_hash:
            self.m_refused.inc("password")
            raise MissionError(403, "this mission has no password")
        claims = self._claims(m, token)
        if claims is not None and token is not None and claims.get("sub") == mr.INVITATION_TOKEN:
            for inv in m.invites.values():
                if hmac.compare_digest(inv.token, token):
                    return inv.role
        role = self._token_role(m, token)
        if role is not None:
            return role
        if rec.password_hash and password_ok is not True:
            self.m_refused.inc("password")
            raise MissionError(403, "the mission password is wrong or missing")
        if rec.invite_only:
            standing = m.invites.get(("userName", viewer.name))
            if standing is None:
                self.m_refused.inc("invite_only")
                raise MissionError(403, "this mission is by invitation only")
            return standing.role
        return rec.default_role

    def _invitations_used(self, m: _Mission, viewer: Principal, client_uid: str) -> None:
        """Subscribing deletes the pending invitations of the device's uid and callsign (TSw
        MissionServiceDefaultImpl missionSubscribe)."""
        callsigns = {
            s.callsign
            for s in self._router.subscribers
            if s.client_uid == client_uid and s.principal.name == viewer.name and s.callsign
        }
        keys = [("clientUid", client_uid), *(("callsign", c) for c in callsigns)]
        for key in keys:
            if m.invites.pop(key, None) is not None:
                kind, invitee = key
                self._write(MissionWrite("delete_invitation", (m.record.name, kind, invitee)))

    def _store_busy(self) -> bool:
        return len(self._writes) >= MAX_PENDING_WRITES

    def _admit(self) -> None:
        """Back-pressure for a REST write: with MAX_PENDING_WRITES writes waiting for the store,
        the request is refused (503, Retry-After) before it changes anything."""
        if self._store_busy():
            self.m_refused.inc("store_busy")
            raise MissionError(503, "the mission store is busy, try again")

    def _may_replace(self, m: _Mission, uid: str, label: labels.Label | None) -> bool:
        """Whether a brokered uid (PUT contents) may replace the item ``m`` keeps under ``uid``:
        only with the same label (a relabel goes through the stream's ingest rules)."""
        item = m.items.get(uid)
        if item is None or self._router.load_label(item.event.label) == label:
            return True
        self.m_refused.inc("label")
        log.info("mission %s: %s not replaced by a version of another label", m.record.name, uid)
        return False

    def _listed(self, rec: MissionRecord, password_protected: bool, default_role: bool) -> bool:
        if rec.invite_only:
            return False
        if rec.password_hash and not password_protected:
            return False
        return default_role or rec.default_role == DEFAULT_ROLE

    def require_read(self, viewer: Principal, name: str, token: str | None) -> None:
        """403 unless the caller's role (tak-missions.md 3.2) holds MISSION_READ."""
        self._require(self._find(viewer, name), token, READ)

    def password_hash_of(self, viewer: Principal, name: str) -> str:
        """The mission's password hash ("" when it has none), for the HTTP side to verify a
        ``password`` off the event loop."""
        return self._find(viewer, name).record.password_hash

    def access_token(self, viewer: Principal, name: str) -> str:
        """An ACCESS token (the default role), after a correct password (tak-missions.md 3.3)."""
        m = self._find(viewer, name)
        return make_token(
            self._secret, kind=mr.ACCESS_TOKEN, mission=m.record, now_ms=self._clock_ms()
        )

    def set_password(
        self, viewer: Principal, name: str, token: str | None, password_hash: str
    ) -> MissionRecord:
        """``PUT``/``DELETE /missions/{name}/password``: needs MISSION_SET_PASSWORD; ``""``
        removes the password."""
        m = self._find(viewer, name)
        self._require(m, token, mr.SET_PASSWORD)
        self._admit()
        rec = replace(m.record, password_hash=password_hash, last_edited=self._clock_ms())
        m.record = rec
        self._write(MissionWrite("put_mission", (rec,)))
        return rec

    def subscriptions(
        self, viewer: Principal, name: str, token: str | None
    ) -> list[SubscriptionRecord]:
        """``GET .../subscriptions`` and ``.../subscriptions/roles`` (MISSION_READ): the stored
        subscriptions the caller may know of: its own, and those of devices whose position the
        router lets it see (a subscriber hidden from it is absent, not counted)."""
        m = self._find(viewer, name)
        self._require(m, token, READ)
        return self._known_subscriptions(viewer, m)

    def _known_subscriptions(self, viewer: Principal, m: _Mission) -> list[SubscriptionRecord]:
        subs = sorted(m.subs.values(), key=lambda s: (s.create_time, s.client_uid))
        return [
            s
            for s in subs
            if s.username == viewer.name or self._router.entry_for(viewer, s.client_uid) is not None
        ]

    def all_subscriptions(self, viewer: Principal) -> list[tuple[str, SubscriptionRecord]]:
        """``GET /missions/all/subscriptions`` (TSw MissionApi getAllMissionSubscriptions, for
        TAK's admins: every stored subscription as mission name and client uid). This server
        has no such admin: each caller gets what it could learn mission by mission: for every
        mission released to it whose role without a token holds MISSION_READ (not a
        password-protected or invite-only one), the subscriptions :meth:`subscriptions`
        answers. Missions in creation order."""
        recs = sorted(
            (
                m.record
                for m in self._missions.values()
                if self._mission_permitted(viewer, m.record)
                and (role := self._role(m, None)) is not None
                and has(role, READ)
            ),
            key=lambda r: (r.create_time, r.name),
        )
        return [
            (rec.name, s)
            for rec in self._release_mission(viewer, recs)
            for s in self._known_subscriptions(viewer, self._missions[rec.name])
        ]

    def set_role(
        self,
        viewer: Principal,
        name: str,
        token: str | None,
        *,
        role: str,
        client_uid: str | None = None,
        username: str | None = None,
    ) -> list[SubscriptionRecord]:
        """``PUT /missions/{name}/role?clientUid=|username=&role=`` (MISSION_SET_ROLE, TSw
        MissionApi setMissionRole): the role of that device's (or user's) subscriptions, with a
        ``t-x-m-r`` to each (tak-missions.md 5.3, 7.3)."""
        m = self._find(viewer, name)
        caller = self._require(m, token, mr.SET_ROLE)
        self._check_assignment(m, caller, role)
        self._admit()
        targets = [
            s
            for s in m.subs.values()
            if (client_uid is not None and s.client_uid == client_uid)
            or (username is not None and s.username == username)
        ]
        if not targets:
            raise MissionError(400, "no subscription of that client or user")
        changed: list[SubscriptionRecord] = []
        for old in targets:
            new = replace(old, role=role)
            m.subs[new.client_uid] = new
            self._write(MissionWrite("put_subscription", (new,)))
            changed.append(new)
            self._remember_notice(
                m.record,
                "t-x-m-r",
                "INVITE",
                None,
                None,
                role,
                ("device", f"{new.client_uid}\n{new.username}"),
            )
            self._send_mission_notice(
                m.record,
                frozenset({(new.client_uid, new.username)}),
                event_type="t-x-m-r",
                mission_type="INVITE",  # sic: TAK's role-change notice (trap 8)
                author_uid=None,
                role=role,
            )
        return changed

    def set_roles(
        self, viewer: Principal, name: str, token: str | None, roles: list[tuple[str, str]]
    ) -> None:
        """``POST /missions/{name}/subscription`` with ``[{clientUid, role}]`` (TSw MissionApi
        setSubscriptionRole): all are checked first (each device must hold a subscription, each
        role be one the caller may give), then each is set as by :meth:`set_role`."""
        m = self._find(viewer, name)
        caller = self._require(m, token, mr.SET_ROLE)
        for client_uid, role in roles:
            self._check_assignment(m, caller, role)
            if client_uid not in m.subs:
                raise MissionError(400, f"no subscription of {client_uid}")
        self._admit()
        for client_uid, role in roles:
            self.set_role(viewer, name, token, role=role, client_uid=client_uid)

    def _check_assignment(self, m: _Mission, caller: str | None, granted: str) -> None:
        why = mr.assignment_refusal(
            caller,
            granted,
            default_role=m.record.default_role,
            password_protected=bool(m.record.password_hash),
        )
        if why is not None:
            self.m_refused.inc("role")
            raise MissionError(400 if not mr.is_role(granted) else 403, why)

    def invite(
        self,
        viewer: Principal,
        name: str,
        token: str | None,
        *,
        type_: str,
        invitee: str,
        creator_uid: str,
        role: str | None,
    ) -> InvitationRecord:
        """``PUT /missions/{name}/invite/{type}/{invitee}`` (TSw MissionApi inviteToMission): a
        standing invitation with an INVITATION token; the caller must hold every permission of
        the role it grants. A ``t-x-m-i`` goes to the invitee's connected devices (``clientUid``,
        ``callsign`` and ``userName`` resolve to them) that may see the mission."""
        if type_ not in mr.INVITATION_TYPES:
            raise MissionError(
                400, f"invitation type must be one of {', '.join(mr.INVITATION_TYPES)}"
            )
        m = self._find(viewer, name)
        granted = role or m.record.default_role
        self._check_assignment(m, self._role(m, token), granted)
        self._admit()
        if (type_, invitee) not in m.invites and len(m.invites) >= MAX_INVITATIONS:
            self.m_refused.inc("too_many_invitations")
            raise MissionError(403, "this mission has too many invitations")
        now = self._clock_ms()
        inv = InvitationRecord(
            mission=m.record.name,
            type=type_,
            invitee=invitee,
            creator_uid=creator_uid,
            create_time=now,
            role=granted,
            token=make_token(self._secret, kind=mr.INVITATION_TOKEN, mission=m.record, now_ms=now),
        )
        m.invites[(type_, invitee)] = inv
        self._write(MissionWrite("put_invitation", (inv,)))
        to = (type_, invitee)
        clients = self.local_clients(to)
        if type_ in ("clientUid", "callsign", "userName"):  # the others reach no device
            self._remember_notice(
                m.record, "t-x-m-i", "INVITE", creator_uid, inv.token, granted, (type_, invitee)
            )
        self._send_mission_notice(
            m.record,
            clients,
            event_type="t-x-m-i",
            mission_type="INVITE",
            author_uid=creator_uid,
            token=inv.token,
            role=granted,
            to=to if type_ in ("clientUid", "callsign", "userName") else None,
        )
        return inv

    def invite_many(
        self,
        viewer: Principal,
        name: str,
        token: str | None,
        wanted: list[tuple[str, str, str | None]],
        *,
        creator_uid: str,
    ) -> None:
        """``POST /missions/{name}/invite``: (type, invitee, role) each as :meth:`invite`, all
        checked (type, role the caller may give, room) before any is made."""
        m = self._find(viewer, name)
        caller = self._role(m, token)
        new = {(t, i) for t, i, _ in wanted} - m.invites.keys()
        for type_, _, role in wanted:
            if type_ not in mr.INVITATION_TYPES:
                raise MissionError(400, f"invitation type must be one of {mr.INVITATION_TYPES}")
            self._check_assignment(m, caller, role or m.record.default_role)
        if len(m.invites) + len(new) > MAX_INVITATIONS:
            self.m_refused.inc("too_many_invitations")
            raise MissionError(403, "this mission has too many invitations")
        self._admit()
        for type_, invitee, role in wanted:
            self.invite(
                viewer,
                name,
                token,
                type_=type_,
                invitee=invitee,
                creator_uid=creator_uid,
                role=role,
            )

    def uninvite(
        self, viewer: Principal, name: str, token: str | None, *, type_: str, invitee: str
    ) -> None:
        """``DELETE /missions/{name}/invite/{type}/{invitee}``: the caller must be able to have
        granted the invitation's role (as for inviting)."""
        m = self._find(viewer, name)
        inv = m.invites.get((type_, invitee))
        if inv is None:
            return
        caller = self._role(m, token)
        if not set(PERMISSIONS[inv.role]) <= set(PERMISSIONS.get(caller or "", ())):
            self.m_refused.inc("role")
            raise MissionError(403, f"withdrawing a {inv.role} invitation needs its permissions")
        self._admit()
        del m.invites[(type_, invitee)]
        self._write(MissionWrite("delete_invitation", (m.record.name, type_, invitee)))

    def invitations(
        self, viewer: Principal, name: str, token: str | None
    ) -> list[InvitationRecord]:
        """``GET /missions/{name}/invitations`` (MISSION_READ). A caller whose role may set roles
        (the owner) sees every invitation; any other only those addressed to it (its user name,
        its groups, the uids and callsigns of its connected devices): who else was invited is
        not shown to a reader of another organisation."""
        m = self._find(viewer, name)
        role = self._require(m, token, READ)
        found = sorted(m.invites.values(), key=lambda i: (i.create_time, i.type, i.invitee))
        if has(role, mr.SET_ROLE):
            return found
        mine = {("userName", viewer.name)}
        mine |= {("group", g) for g in viewer.in_groups | viewer.out_groups}
        for s in self._router.subscribers:
            if s.principal.name == viewer.name:
                mine |= {("clientUid", s.client_uid or ""), ("callsign", s.callsign or "")}
        return [i for i in found if (i.type, i.invitee) in mine]

    def invited_missions(self, viewer: Principal, client_uid: str | None) -> list[str]:
        """``GET /missions/all/invitations?clientUid=``: the names of the missions the caller
        may see that hold an invitation for that device uid, the caller's user name, the
        callsign of the caller's connected device of that uid, or one of the caller's groups."""
        return [rec.name for rec, _ in self._invited(viewer, client_uid)]

    def invitations_for(
        self, viewer: Principal, client_uid: str
    ) -> list[tuple[MissionRecord, InvitationRecord]]:
        """``GET /missions/invitations?clientUid=`` (TSw getAllMissionInvitationsWithPasswords,
        tak-missions.md 5.4): the standing invitations addressed to the caller (as for
        :meth:`invited_missions`), with their mission, in the missions the caller may see;
        missions in creation order, each one's invitations oldest first."""
        return [(rec, inv) for rec, invs in self._invited(viewer, client_uid) for inv in invs]

    def _invited(
        self, viewer: Principal, client_uid: str | None
    ) -> list[tuple[MissionRecord, list[InvitationRecord]]]:
        """The missions released to the caller that hold invitations for it, with those."""
        callsigns = {
            s.callsign
            for s in self._router.subscribers
            if s.client_uid == client_uid and s.principal.name == viewer.name and s.callsign
        }
        keys = {("userName", viewer.name)}
        keys |= {("group", g) for g in viewer.in_groups | viewer.out_groups}
        keys |= {("callsign", c) for c in callsigns if c}
        if client_uid:
            keys.add(("clientUid", client_uid))
        found = {
            m.record.name: [inv for key, inv in m.invites.items() if key in keys]
            for m in self._missions.values()
            if keys & m.invites.keys() and self._mission_permitted(viewer, m.record)
        }
        recs = sorted(
            (self._missions[n].record for n in found), key=lambda r: (r.create_time, r.name)
        )
        return [
            (r, sorted(found[r.name], key=lambda i: (i.create_time, i.type, i.invitee)))
            for r in self._release_mission(viewer, recs)
        ]

    def _announce(
        self, rec: MissionRecord, event_type: str, mission_type: str, author_uid: str | None
    ) -> None:
        """``t-x-m-n`` / ``t-x-m-d`` to every connected device (but the author's) that may see
        the mission (TSc DistributedSubscriptionManager submitBroadcastMissionAnnouncementCot:
        by group overlap; here the router's decision on the mission's groups and label)."""
        to = ("all", author_uid or "")
        self._remember_notice(rec, event_type, mission_type, author_uid, None, None, ("all", ""))
        self._send_mission_notice(
            rec,
            self.local_clients(to),
            event_type=event_type,
            mission_type=mission_type,
            author_uid=author_uid,
            to=to,
        )

    def _remember_notice(
        self,
        rec: MissionRecord,
        event_type: str,
        mission_type: str,
        author_uid: str | None,
        token: str | None,
        role: str | None,
        to: tuple[str, str],
    ) -> None:
        self._notice_n += 1
        self._sent_notices.append(
            _SentNotice(self._notice_n, rec, event_type, mission_type, author_uid, token, role, to)
        )

    def _send_mission_notice(
        self,
        rec: MissionRecord,
        clients: frozenset[tuple[str, str]],
        *,
        event_type: str,
        mission_type: str,
        author_uid: str | None,
        token: str | None = None,
        role: str | None = None,
        share: bool = True,
        to: tuple[str, str] | None = None,
    ) -> int:
        if not clients and (to is None or self.share is None):
            return 0
        xml = mr.mission_notice(
            event_type=event_type,
            mission_type=mission_type,
            name=rec.name,
            guid=rec.guid,
            tool=rec.tool,
            author_uid=author_uid,
            now_ms=self._clock_ms(),
            uid=str(uuid.uuid4()),
            token=token,
            role=role,
        )
        try:
            notice = cot_xml.parse_event(xml)
        except PeerError as exc:  # our own rendering: a bug, not input
            log.error("mission notice for %s not built: %s", rec.name, exc)
            return 0
        self.m_notices.inc(event_type)
        return self._deliver(
            notice,
            sender_groups=rec.groups,
            label=rec.label,
            clients=frozenset(clients),
            path="mission-notice",
            xml=xml,
            share=share,
            to=to,
        )

    def disconnected(self, sub: Subscriber) -> None:
        """A stream client left: remember, for each active subscription of its device uid and
        user, the change sequence number it had reached (what it misses is sent on return)."""
        uid, user = sub.client_uid, sub.principal.name
        if not uid:
            return
        if not any(
            o.client_uid == uid and o.principal.name == user for o in self._router.subscribers
        ):
            # Where the mission-level notices stood (for the catch-up of t-x-m-n/-d/-r/-i).
            self._left.pop((uid, user), None)
            if len(self._left) >= MAX_AWAY_DEVICES:
                del self._left[next(iter(self._left))]  # the device away longest
            self._left[(uid, user)] = self._notice_n
        held = [
            m
            for m in self._missions.values()
            if (s := m.subs.get(uid)) is not None
            and s.username == user
            and s.active
            and s.away_seq < 0
        ]
        if not held or any(
            o.client_uid == uid and o.principal.name == user for o in self._router.subscribers
        ):
            return  # nothing to remember, or another stream of the same device is connected
        for m in held:
            away = replace(m.subs[uid], away_seq=self._seq)
            m.subs[uid] = away
            self._write(MissionWrite("put_subscription", (away,)))

    def connected(self, sub: Subscriber) -> int:
        """A stream client made itself known (its client uid): send it, for each mission it
        holds an active subscription of, what changed while it was away — each changed item's
        current CoT and a ``t-x-m-c`` per change, released through the router for it like live
        delivery — at most MAX_CATCHUP_EVENTS in all (the most recent). Returns the events
        delivered."""
        uid, user = sub.client_uid, sub.principal.name
        if not uid:
            return 0
        left = self._left.pop((uid, user), None)
        if left is not None:
            self._catch_up_notices(sub, uid, user, left)
        budget, sent = MAX_CATCHUP_EVENTS, 0
        for m in list(self._missions.values()):
            s = m.subs.get(uid)
            if s is None or s.username != user or s.away_seq < 0:
                continue
            back = replace(s, away_seq=-1)
            m.subs[uid] = back
            self._write(MissionWrite("put_subscription", (back,)))
            if not s.active:
                continue
            missed = [
                c
                for c in m.changes
                if c.seq > s.away_seq and (c.content_uid is not None or c.content_hash is not None)
            ]
            chosen: list[tuple[MissionChangeRecord, bool]] = []
            seen: set[str] = set()
            for c in reversed(missed):
                with_item = (
                    c.type == ADD_CONTENT and c.content_uid in m.items and c.content_uid not in seen
                )
                need = 2 if with_item else 1
                if need > budget:
                    self.m_catchup.inc("truncated")
                    log.info(
                        "catch-up of %s on %s cut at %d events",
                        uid,
                        m.record.name,
                        MAX_CATCHUP_EVENTS,
                    )
                    budget = 0
                    break
                budget -= need
                if c.content_uid is not None:
                    seen.add(c.content_uid)
                chosen.append((c, with_item))
            series: list[tuple[Event, frozenset[str], labels.Label | None, str]] = []
            for c, with_item in reversed(chosen):
                item = m.items.get(c.content_uid or "") if with_item else None
                try:
                    if item is not None:
                        series.append(
                            (
                                cot_xml.parse_event(item.event.xml),
                                item.event.sender_groups,
                                self._router.load_label(item.event.label),
                                "mission",
                            )
                        )
                    notice = change_notice(m.record, c, self._clock_ms())
                    series.append(
                        (
                            cot_xml.parse_event(notice),
                            c.sender_groups or m.record.groups,
                            self._router.load_label(c.label),
                            "mission-notice",
                        )
                    )
                except PeerError as exc:  # stored and rendered by us: a bug, not input
                    log.error("catch-up of %s on %s: %s", uid, m.record.name, exc)
            n = self._router.deliver_series_to(sub, series)
            self.m_catchup.inc("event", n)
            sent += n
            if budget == 0:
                break
        return sent

    def _catch_up_notices(self, sub: Subscriber, uid: str, user: str, left: int) -> int:
        """The mission-level notices sent since the device left (notice number ``left``) that
        were for it, again, oldest first, each through the router's decision for it now: at
        most MAX_CATCHUP_NOTICES (the most recent). An invitation is sent again only while it
        stands. Returns the notices delivered."""

        def for_it(n: _SentNotice) -> bool:
            kind, who = n.to
            if kind == "all":
                return uid != n.author_uid
            if kind == "device":
                return who == f"{uid}\n{user}"
            m = self._missions.get(n.record.name)
            if m is None or m.record.guid != n.record.guid or (kind, who) not in m.invites:
                return False  # the mission or the invitation is gone: its token is void
            return (
                (kind == "clientUid" and who == uid)
                or (kind == "callsign" and who == sub.callsign)
                or (kind == "userName" and who == user)
            )

        missed = [n for n in self._sent_notices if n.n > left and for_it(n)]
        if len(missed) > MAX_CATCHUP_NOTICES:
            self.m_catchup.inc("truncated")
            log.info("notice catch-up of %s cut at %d notices", uid, MAX_CATCHUP_NOTICES)
            missed = missed[-MAX_CATCHUP_NOTICES:]
        sent = 0
        for n in missed:
            sent += self._send_mission_notice(
                n.record,
                frozenset({(uid, user)}),
                event_type=n.event_type,
                mission_type=n.mission_type,
                author_uid=n.author_uid,
                token=n.token,
                role=n.role,
                share=False,  # for a device connected here
            )
        self.m_catchup.inc("notice", sent)
        return sent


def _federates(source: Source, mission: str) -> bool:
    """Whether ``source`` is a partner link that federates ``mission`` (its ``missions`` key)."""
    if source.principal.kind is not PrincipalKind.FEDERATE:
        return False
    federates: Callable[[str], bool] | None = getattr(source, "federates_mission", None)
    return federates is not None and federates(mission)


def log_notice(rec: MissionRecord, entry: LogEntryRecord, now_ms: int) -> bytes:
    """A ``t-x-m-c-l`` event for a log entry added or updated (tak-missions.md 7.3: the notice
    template, ``mission type="CHANGE"``); it names the mission, not the entry's text: a client
    reads the entries with ``GET /missions/{name}/log``."""
    attr = cot_xml.escape_attribute
    t = cot_xml.format_time(now_ms)
    stale = cot_xml.format_time(now_ms + NOTICE_STALE_MS)
    return (
        f'<event version="2.0" uid="{uuid.uuid4()}" type="t-x-m-c-l" how="h-g-i-g-o"'
        f' time="{t}" start="{t}" stale="{stale}">'
        '<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<mission type="CHANGE" tool="{attr(rec.tool)}" name="{attr(rec.name)}"'
        f' guid="{attr(rec.guid)}" authorUid="{attr(entry.creator_uid)}"/>'
        "</detail></event>"
    ).encode()


def change_notice(rec: MissionRecord, change: MissionChangeRecord, now_ms: int) -> bytes:
    """A ``t-x-m-c`` event for one change (tak-missions.md 7.3: how ``h-g-i-g-o``, stale
    now + 20 s, the null-island point, ``MissionChange`` as child elements with an unpadded
    timestamp and ``details`` scalars as attributes)."""
    esc, attr = cot_xml.escape_text, cot_xml.escape_attribute
    t = cot_xml.format_time(now_ms)
    stale = cot_xml.format_time(now_ms + NOTICE_STALE_MS)
    parts = [
        f'<event version="2.0" uid="{uuid.uuid4()}" type="t-x-m-c" how="h-g-i-g-o"'
        f' time="{t}" start="{t}" stale="{stale}">'
        '<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<mission type="CHANGE" tool="{attr(rec.tool)}" name="{attr(rec.name)}"'
        f' guid="{attr(rec.guid)}" authorUid="{attr(change.creator_uid)}">'
        "<MissionChanges><MissionChange>"
    ]
    if change.resource:
        parts.append(resource_xml(json.loads(change.resource)))
    if change.content_uid is not None:
        parts.append(f"<contentUid>{esc(change.content_uid)}</contentUid>")
    parts.append(
        f"<creatorUid>{esc(change.creator_uid)}</creatorUid>"
        f"<isFederatedChange>{'true' if change.federated else 'false'}</isFederatedChange>"
        f"<missionName>{esc(rec.name)}</missionName>"
        f"<missionGuid>{esc(rec.guid)}</missionGuid>"
        f"<timestamp>{unpadded_time(change.timestamp)}</timestamp>"
        f"<type>{esc(change.type)}</type>"
    )
    if change.details:
        d = json.loads(change.details)
        loc = d.pop("location", None)
        attrs = "".join(f' {k}="{attr(str(v))}"' for k, v in d.items())
        inner = ""
        if isinstance(loc, dict):
            inner = (
                f'<location lat="{cot_xml.format_double(float(loc["lat"]))}"'
                f' lon="{cot_xml.format_double(float(loc["lon"]))}"/>'
            )
        parts.append(f"<details{attrs}>{inner}</details>")
    parts.append("</MissionChange></MissionChanges></mission></detail></event>")
    return "".join(parts).encode("utf-8")


# ==== Files, keywords and metadata in missions: their JSON and XML (tak-missions.md 4.3, 7.3) ====


def resource_json(c: MissionContent) -> dict[str, object]:
    """TSpl sync/model/Resource.java as JSON: the file of a mission entry or file change
    (``submissionTime`` in the unpadded form, tak-missions.md 2.4). The groups the file was
    written into are left out: they name other organisations' groups."""
    body: dict[str, object] = {
        "filename": c.name,
        "keywords": list(c.file_keywords),
        "mimeType": c.mime,
        "name": c.name,
        "submissionTime": unpadded_time(c.submitted),
        "submitter": c.submitter,
        "uid": c.file_uid,
        "hash": c.hash,
        "size": c.size,
        "tool": c.tool,
        "expiration": -1,
    }
    if c.file_creator_uid:
        body["creatorUid"] = c.file_creator_uid
    return body


def _squash(m: _Mission, found: Iterable[MissionChangeRecord]) -> list[MissionChangeRecord]:
    """Squash ``found`` (oldest first) against the mission's present items and files."""
    found = list(found)
    latest: dict[tuple[str | None, str, str], MissionChangeRecord] = {}
    creates = [c for c in found if c.type == CREATE_MISSION][-1:]
    for c in found:
        if c.type in (ADD_CONTENT, REMOVE_CONTENT):
            key = c.content_uid if c.content_uid is not None else resource_hash(c)
            held = m.items if c.content_uid is not None else m.contents
            wanted = ADD_CONTENT if key in held else REMOVE_CONTENT
            if c.type == wanted:
                latest[(key, c.creator_uid, c.type)] = c
    return sorted([*creates, *latest.values()], key=lambda c: c.seq)


# Release-record digests of changes kept (a recorded change never changes; its seq is unique on
# this server): computing them was a quarter of a /changes call. 64-character hex each.
CHANGE_DIGEST_CACHE = 100_000


def resource_hash(change: MissionChangeRecord) -> str | None:
    """The hash of the file a change is about (None for other changes)."""
    return change.content_hash


def resource_xml(resource: dict[str, object]) -> str:
    """``contentResource`` inside an XML ``MissionChange``: the Resource's fields as child
    elements (TSpl Resource.java JAXB; tak-missions.md 7.3), keywords repeated."""
    esc = cot_xml.escape_text
    parts = ["<contentResource>"]
    for key in sorted(resource):
        value = resource[key]
        if isinstance(value, list):
            parts.extend(f"<{key}>{esc(str(v))}</{key}>" for v in value)
        else:
            parts.append(f"<{key}>{esc(str(value))}</{key}>")
    parts.append("</contentResource>")
    return "".join(parts)


def mission_notice(rec: MissionRecord, type_: str, author_uid: str, now_ms: int) -> bytes:
    """A mission-wide ``t-x-m-c-*`` notice without a change list (keywords ``t-x-m-c-k``,
    content keywords ``t-x-m-c-k-c``, metadata ``t-x-m-c-m``): the template of
    tak-missions.md 7.3 (how ``h-g-i-g-o``, stale now + 20 s, the null-island point) with
    ``<mission type="CHANGE" tool name guid authorUid/>``."""
    attr = cot_xml.escape_attribute
    t = cot_xml.format_time(now_ms)
    stale = cot_xml.format_time(now_ms + NOTICE_STALE_MS)
    return (
        f'<event version="2.0" uid="{uuid.uuid4()}" type="{attr(type_)}" how="h-g-i-g-o"'
        f' time="{t}" start="{t}" stale="{stale}">'
        '<point lat="0" lon="0" hae="0" ce="9999999" le="9999999"/><detail>'
        f'<mission type="CHANGE" tool="{attr(rec.tool)}" name="{attr(rec.name)}"'
        f' guid="{attr(rec.guid)}" authorUid="{attr(author_uid)}"/>'
        "</detail></event>"
    ).encode()


@dataclass(frozen=True, slots=True)
class _PackageSource:
    """The caller of a mission package import as the source of its events: no stream
    connection; :meth:`Missions.recipients` and :meth:`Missions.accepted` take its events into
    ``mission`` (whose MISSION_WRITE was checked) only, created by ``creator_uid``."""

    principal: Principal
    mission: str
    creator_uid: str


def package_event(event: Event, mission: str) -> Event:
    """``event`` from a mission package as it is submitted to ``mission``: every ``marti/dest``
    removed and one ``dest mission`` for this mission put in (TAK removes the event's mission
    dests and inserts its own, and removes ``_flow-tags_``: SubmissionService
    submitMissionPackageCotAtTime; the other dests are removed here too, as an import is not a
    message to anyone). Raises PeerError if the result is not an acceptable event."""
    stripped = event.without_dests()
    detail = copy.deepcopy(stripped.detail) if stripped.detail is not None else None
    if detail is None:
        detail = ET.Element("detail")
    for tags in detail.findall("_flow-tags_"):
        detail.remove(tags)
    marti = detail.find("marti")
    if marti is None:
        marti = ET.SubElement(detail, "marti")
    ET.SubElement(marti, "dest", {"mission": mission})
    return cot_xml.parse_event(cot_xml.render_xml(replace(stripped, detail=detail, xml=None)))


@dataclass(frozen=True, slots=True)
class PackageOp:
    """One step of a mission package import (:meth:`Missions.import_package`): exactly one
    field set."""

    event: Event | None = None  # an item (from :func:`package_event`)
    record: FileRecord | None = None  # a stored file that joins the mission
    remove_uid: str | None = None  # an offline REMOVE_CONTENT of an item
    remove_hash: str | None = None  # an offline REMOVE_CONTENT of a file


@dataclass(frozen=True, slots=True, kw_only=True)
class OfflineChange:
    """One change of a package's ``changes.json`` (ATAK's offline changes; TSw
    MissionServiceDefaultImpl addMissionPackage reads its ``missionChanges``)."""

    type: str  # ADD_CONTENT or REMOVE_CONTENT
    timestamp: int  # ms since the epoch, when the device made it
    content_uid: str | None = None  # an item change
    resource_name: str | None = None  # a file change: the file's name
    resource_hash: str | None = None  # and its hash, when given
