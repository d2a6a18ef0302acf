"""The federation links: dial or accept partners over mutual TLS and move guarded events both ways.

One :class:`PeerLink` per configured peer is, towards the router,

* a Subscriber (``principal``, ``client_uid``, ``callsign``, ``deliver``) whose principal is a
  FEDERATE with the peer's organisation and its **release ceiling** as authorizations, so the
  router's own decision filters first; ``deliver`` never blocks: it queues the event, and once
  per loop turn the batch goes through the guard, the audit log (one ``append_many``, written
  before anything is released) and into the persistent outbox;
* a Source (``link.source``) whose principal carries what the peer may **originate**: accepted
  inbound events are published with it, so they pass the same gate as everything else.

The connection (:meth:`PeerLink.serve`): TLS 1.2+ with certificates both ways; the peer's
certificate must chain to the CA configured for that peer *and* have the configured SHA-256
fingerprint. Then HELLO both ways (protocol version, server id, label policy id/version/digest:
any mismatch refuses the link with a logged reason and an ERROR frame), RESUME both ways, and
EVENT/ACK/HEARTBEAT. The sender keeps at most ``window`` events unacknowledged, re-checks each
row against the guard just before writing it, and resumes from the peer's last applied sequence
number after any reconnect or restart; the receiver drops what it already applied.

:class:`Federation` owns every link, the listener and the status file in one TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography import x509

from liaison import audit as audit_mod
from liaison.errors import PeerError, PkiError, StorageError
from liaison.federation.config import DEFAULT_STABLE_S, Address, FederationConfig, PeerConfig
from liaison.federation.guard import Accepted, Denial, InboundValidator, OutboundGuard, Release
from liaison.federation.outbox import Outbox, QueuedRelease, outbox_path
from liaison.federation.status import FederationStatus, LinkState, PeerStatus, status_path
from liaison.identity.listeners import Listener
from liaison.identity.tls import client_ssl_context, peer_identity
from liaison.metrics import Metrics
from liaison.model.event import Dest, Event
from liaison.model.labels import AuthSet, Policy
from liaison.model.principal import Principal, PrincipalKind
from liaison.protocol import federation as wire
from liaison.router import Outgoing, Router

log = logging.getLogger(__name__)

# Bytes read from the socket per call.
READ_CHUNK = 64 * 1024

# Seconds a dial (TCP connect plus TLS handshake) may take.
CONNECT_TIMEOUT_S = 15.0

# Seconds to wait for a closing TLS connection to finish its goodbye.
CLOSE_TIMEOUT_S = 2.0

# Events waiting for the guard in memory (deliver -> next loop turn). Past this, a flush runs at
# once inside deliver, so a burst never holds more than this many unguarded events.
# Clients of a peer remembered for directed messages (a partner with more than this many
# devices has the oldest forgotten, and messages to them are counted as unrouted).
MAX_REMOTE_CLIENTS = 20_000
MAX_UNFLUSHED = 1000


class AuditSink(Protocol):
    """What the link needs of the audit log (``liaison.audit.AuditLog`` fits)."""

    def append_many(
        self, entries: Sequence[tuple[str, Mapping[str, object]]]
    ) -> Sequence[object]: ...


# The listener name federation principals carry: the gate's [gate.listeners.federation] ceiling
# and default apply to what peers send (docs/labels.md); a default label is never used, since
# unlabelled events from a peer are refused before they reach the router.
LISTENER = Listener.FEDERATION


class GateLike(Protocol):
    """The server's label gate: writes audit records, False when the log cannot be written."""

    def record(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> bool: ...


class GateAudit:
    """An AuditSink over the gate, so the link shares the server's one audit log (and its
    recovery after a failure) instead of holding the log object itself."""

    def __init__(self, gate: GateLike) -> None:
        self._gate = gate

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, object]]]) -> Sequence[object]:
        if not self._gate.record(entries):
            raise StorageError("the audit log cannot be written")
        return ()


# Called with ("out" | "in", plaintext bytes) for every chunk written to or read from a peer;
# tests use it to look at exactly what crossed the link.
Tap = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``base * 2**(failures-1)`` capped at ``cap``, minus up to ``jitter``
    of it at random (DESIGN.md convention 11). Pure given its random source."""

    base: float
    cap: float
    jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        # Exponent bounded so a long outage cannot overflow the float.
        raw = min(self.cap, self.base * 2.0 ** min(failures - 1, 62))
        return raw * (1.0 - self.jitter * self.rng.random())


def certificate_sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class LinkRefused(Exception):
    """The peer is not who it must be, or does not enforce our policy; the link must not start."""


def _federate(peer: PeerConfig, auths: AuthSet) -> Principal:
    return Principal(
        name=f"federation:{peer.name}",
        kind=PrincipalKind.FEDERATE,
        in_groups=peer.in_groups,
        out_groups=peer.out_groups,
        org=peer.originate_org,
        auths=auths,
        listener=LISTENER,
    )


class _InboundSource:
    """The Source the router sees for events a peer sends us."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    @property
    def principal(self) -> Principal:
        return self._principal


class PeerLink:
    """Everything about one peer: router subscriber, guard, outbox, status and connection."""

    def __init__(
        self,
        *,
        fed: FederationConfig,
        peer: PeerConfig,
        policy: Policy,
        router: Router,
        audit: AuditSink,
        outbox: Outbox,
        status: PeerStatus,
        clock_ms: Callable[[], int],
        tap: Tap | None = None,
    ) -> None:
        self.fed = fed
        self.peer = peer
        self.policy = policy
        self._router = router
        self._audit = audit
        self.outbox = outbox
        self.status = status
        self._clock_ms = clock_ms
        self._tap = tap
        known = outbox.meta("peer_server_id")
        self.guard = OutboundGuard(
            policy=policy, peer=peer, server_id=fed.server_id, peer_server_id=known
        )
        status.peer_server_id = known
        self._principal = _federate(peer, peer.release_ceiling)
        self.source = _InboundSource(_federate(peer, peer.originate_ceiling))
        self._send_denials: list[Denial] = []
        self.client_uid: str | None = None
        self.callsign: str | None = None
        self._pending: list[Event] = []
        self._flush_handle: asyncio.Handle | None = None
        self._publishing: Event | None = None
        # Uids and callsigns of the peer's own clients, oldest first (bounded).
        self._remote_uids: dict[str, None] = {}
        self._remote_callsigns: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._connection: asyncio.Task[None] | None = None
        self._sync_status()

    # --- Subscriber ---------------------------------------------------------------------------

    @property
    def principal(self) -> Principal:
        return self._principal

    def serves(self, dest: Dest) -> bool:
        """Whether a ``marti/dest`` names a client of this peer (learned from the position
        reports it sent us), so the router hands directed messages for it to this link."""
        return (dest.uid is not None and dest.uid in self._remote_uids) or (
            dest.callsign is not None and dest.callsign in self._remote_callsigns
        )

    def _learn(self, event: Event) -> None:
        if not event.is_contact:
            return
        for known, value in (
            (self._remote_uids, event.uid),
            (self._remote_callsigns, event.callsign),
        ):
            if value is None:
                continue
            known.pop(value, None)
            known[value] = None
            while len(known) > MAX_REMOTE_CLIENTS:
                del known[next(iter(known))]

    def deliver(self, out: Outgoing) -> None:
        """Queue one event the router offers this peer. Never blocks, never raises."""
        event = out.event
        if event is self._publishing:
            return  # our own inbound event, offered back to us: never a candidate
        self._pending.append(event)
        if len(self._pending) >= MAX_UNFLUSHED:
            self.flush()
            return
        if self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_soon(self.flush)

    def flush(self) -> None:
        """Guard, audit and queue everything delivered since the last flush."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        events, self._pending = self._pending, []
        if not events:
            return
        verdicts = [self.guard.check(e) for e in events]
        records: list[tuple[str, Mapping[str, object]]] = []
        releases: list[Release] = []
        denials = 0
        peer = self.peer
        for v in verdicts:
            if isinstance(v, Release):
                releases.append(v)
                # Every release to a partner is recorded, whatever the organisations: it leaves
                # this server (docs/labels.md section 5, the release record).
                records.append(
                    audit_mod.release_record(
                        path="federation",
                        uid=v.uid,
                        type=v.type,
                        label_id=v.label_id,
                        originator=v.originator,
                        to_org=peer.originate_org,
                        recipients=[self._principal.name],
                        sha256=v.sha256,
                        peer=peer.name,
                        priority=v.priority,
                        removed=v.removed,
                    )
                )
            else:
                denials += 1
                records.append(self._denial_record(v))
        try:
            self._audit.append_many(records)
        except (StorageError, OSError) as exc:
            # Fail closed (labels.md 7e point 6): no audit record, no release.
            log.error(
                "federation %s: audit log failed, %d events not released: %s",
                self.peer.name,
                len(events),
                exc,
            )
            self.status.bump("audit_failures", len(events))
            return
        now = self._clock_ms()
        before = self.outbox.coalesced
        try:
            self.outbox.put_many(
                [
                    QueuedRelease(
                        payload=r.payload,
                        sha256=r.sha256,
                        label_id=r.label_id,
                        uid=r.uid,
                        type=r.type,
                        priority=r.priority,
                        coalesce_key=r.coalesce_key,
                        queued_ms=now,
                    )
                    for r in releases
                ]
            )
        except StorageError as exc:
            log.error(
                "federation %s: outbox write failed, %d releases lost: %s",
                self.peer.name,
                len(releases),
                exc,
            )
            return
        self.status.bump("releases", len(releases))
        self.status.bump("denials", denials)
        self.status.bump("coalesced", self.outbox.coalesced - before)
        self._sync_status()
        if releases:
            self._wake.set()

    def _sync_status(self) -> None:
        s, o = self.status, self.outbox
        s.backlog, s.last_seq, s.last_acked, s.last_applied = (
            o.backlog,
            o.last_seq,
            o.last_acked,
            o.last_applied,
        )

    # --- the connection -------------------------------------------------------------------------

    def _hello(self) -> wire.Hello:
        return wire.Hello(
            versions=wire.SUPPORTED_VERSIONS,
            server_id=self.fed.server_id,
            policy_id=self.policy.id,
            policy_version=self.policy.version,
            policy_digest=self.policy.digest,
        )

    def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self._tap is not None:
            self._tap("out", data)
        writer.write(data)

    def _denial_record(self, d: Denial) -> tuple[str, dict[str, object]]:
        return audit_mod.deny_record(
            path="federation",
            uid=d.uid,
            type=d.type,
            label_id=d.label_id,
            reasons=d.reasons,
            recipients=[self._principal.name],
            peer=self.peer.name,
            stage=d.stage,
            mismatch=d.stage in ("recheck", "send"),
        )

    def refused(self, reasons: tuple[str, ...]) -> None:
        """The router refused this peer an event (its label is above the release ceiling, or
        outside its REL or handling): a ``deny`` record naming ``federation:<peer>`` was written,
        so it is counted with the guard's own denials."""
        self.status.bump("denials")

    def _peer_link_record(self, event: str, **extra: object) -> None:
        fields: dict[str, object] = {"peer": self.peer.name, "event": event}
        fields.update({k: v for k, v in extra.items() if v is not None})
        with contextlib.suppress(StorageError, OSError, ValueError):
            self._audit.append_many([(audit_mod.Kind.PEER_LINK.value, fields)])

    def refuse(self, reason: str) -> None:
        """Record a refused connection: status, audit and one clear log line."""
        log.warning("federation %s: link refused: %s", self.peer.name, reason)
        self.status.bump("refusals")
        self.status.set_state(LinkState.REFUSED, self._clock_ms(), reason)
        self._peer_link_record("refused", reason=reason)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Run one authenticated connection until it ends. Raises LinkRefused or PeerError."""
        current = asyncio.current_task()
        old = self._connection
        if old is not None and old is not current and not old.done():
            log.info("federation %s: a new connection replaces the current one", self.peer.name)
            old.cancel()
        self._connection = current
        proto = wire.LinkProtocol(self._hello())
        self.status.set_state(LinkState.HANDSHAKE, self._clock_ms())
        self._write(writer, proto.hello())
        try:
            async with asyncio.TaskGroup() as tg:
                await self._read_loop(reader, writer, proto, tg)
                raise _ConnectionEnded
        except BaseExceptionGroup as group:
            # The first real failure of the reader, sender or heartbeat ends the connection.
            failure = _first_failure(group)
            if failure is not None:
                raise failure from None
        finally:
            if self._connection is current:
                self._connection = None
            if self.status.state in (LinkState.UP, LinkState.HANDSHAKE):
                self.status.set_state(LinkState.DOWN, self._clock_ms())
            self._sync_status()
            await _close(writer)

    async def _read_loop(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        proto: wire.LinkProtocol,
        tg: asyncio.TaskGroup,
    ) -> None:
        idle = self.fed.idle_timeout_s
        validator: InboundValidator | None = None
        while True:
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
                # arrives as the read completes, and a lost cancellation never ends the link.
                async with asyncio.timeout(idle):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                raise PeerError(f"nothing heard for {idle:.0f} s", reason="idle_timeout") from None
            if not data:
                log.info("federation %s: connection closed by the peer", self.peer.name)
                return
            if self._tap is not None:
                self._tap("in", data)
            messages = proto.receive_data(data)
            while messages:
                events: list[wire.EventMsg] = []
                for msg in messages:
                    if isinstance(msg, wire.EventMsg):
                        events.append(msg)
                        continue
                    if events:
                        assert validator is not None
                        self._apply(events, validator, writer)
                        events = []
                    match msg:
                        case wire.Hello():
                            validator = self._on_hello(msg, proto, writer)
                        case wire.Resume():
                            self._on_resume(msg.last_applied, writer, tg)
                        case wire.Ack():
                            self._on_ack(msg.seq)
                        case wire.Heartbeat():
                            pass
                        case wire.ErrorMsg():
                            raise LinkRefused(f"peer ended the link: {msg.code}: {msg.message}")
                if events:
                    assert validator is not None
                    self._apply(events, validator, writer)
                messages = proto.more()

    def _on_hello(
        self, hello: wire.Hello, proto: wire.LinkProtocol, writer: asyncio.StreamWriter
    ) -> InboundValidator:
        problem = wire.check_hello(proto.local, hello)
        if problem is not None:
            code, text = problem
            self._write(writer, wire.encode(wire.ErrorMsg(code=code.value, message=text)))
            raise LinkRefused(text)
        if hello.server_id != self.guard.peer_server_id:
            if self.guard.peer_server_id is not None:
                log.warning(
                    "federation %s: peer server id changed from %s to %s",
                    self.peer.name,
                    self.guard.peer_server_id,
                    hello.server_id,
                )
            self.flush()  # events delivered so far were decided with the old id
            self.outbox.set_meta("peer_server_id", hello.server_id)
            self.guard = self.guard.with_peer_server_id(hello.server_id)
            self.status.peer_server_id = hello.server_id
        self._write(writer, proto.accept_hello(self.outbox.last_applied))
        return InboundValidator(
            policy=self.policy,
            peer=self.peer,
            server_id=self.fed.server_id,
            peer_server_id=hello.server_id,
        )

    def _on_resume(
        self, last_applied: int, writer: asyncio.StreamWriter, tg: asyncio.TaskGroup
    ) -> None:
        acked = self.outbox.start_connection(last_applied)
        self.status.bump("acked", acked)
        self.status.bump("connects")
        self.status.set_state(LinkState.UP, self._clock_ms())
        self.status.last_error = None
        self._sync_status()
        log.info(
            "federation %s: link up with %s (resuming after %d, %d queued)",
            self.peer.name,
            self.guard.peer_server_id,
            last_applied,
            self.outbox.backlog,
        )
        self._peer_link_record("up", peer_server_id=self.guard.peer_server_id)
        tg.create_task(self._send_loop(writer), name=f"fed-send-{self.peer.name}")
        tg.create_task(self._heartbeat_loop(writer), name=f"fed-heartbeat-{self.peer.name}")

    def _on_ack(self, seq: int) -> None:
        if seq > self.outbox.last_seq:
            raise PeerError(f"ACK {seq} for a sequence number never sent", reason="bad_ack")
        self.status.bump("acked", self.outbox.ack(seq))
        self._sync_status()
        self._wake.set()

    def _apply(
        self,
        events: list[wire.EventMsg],
        validator: InboundValidator,
        writer: asyncio.StreamWriter,
    ) -> None:
        """Validate, audit and route a batch of received events, then acknowledge them."""
        outbox = self.outbox
        fresh = [m for m in events if not outbox.is_duplicate(m.seq)]
        self.status.bump("received", len(events))
        self.status.bump("duplicates", len(events) - len(fresh))
        results = [(m, validator.check(m.payload)) for m in fresh]
        records: list[tuple[str, Mapping[str, object]]] = []
        for m, r in results:
            fields: dict[str, object] = {
                "path": "federation",
                "peer": self.peer.name,
                "seq": m.seq,
                "sha256": r.sha256,
            }
            if isinstance(r, Accepted):
                fields.update(
                    uid=r.event.uid,
                    type=r.event.type,
                    label_id=r.label.label_id,
                    origin=r.provenance.origin,
                    hops=r.provenance.hops,
                )
                records.append((audit_mod.Kind.INGEST.value, fields))
            else:
                for k, v in (("uid", r.uid), ("type", r.type), ("label_id", r.label_id)):
                    if v is not None:
                        fields[k] = v
                fields["reasons"] = list(r.reasons)
                records.append((audit_mod.Kind.INGEST_REJECT.value, fields))
        if records:
            # The audit log must hold the ingest before the event is routed; if it cannot be
            # written, nothing is applied or acknowledged and the peer will send it again.
            try:
                self._audit.append_many(records)
            except (StorageError, OSError) as exc:
                raise PeerError(f"audit log failed: {exc}", reason="audit_failed") from exc
        accepted = 0
        for _m, r in results:
            if isinstance(r, Accepted):
                accepted += 1
                self._publishing = r.event
                self._learn(r.event)
                try:
                    self._router.publish(r.event, self.source)
                finally:
                    self._publishing = None
        self.status.bump("accepted", accepted)
        self.status.bump("rejections", len(results) - accepted)
        top = events[-1].seq
        outbox.record_applied(top)
        self._sync_status()
        self._write(writer, wire.encode(wire.Ack(seq=max(top, outbox.last_applied))))

    def _send_check(self, payload: bytes, label_id: str, uid: str, type: str) -> bool:
        problems = self.guard.recheck(payload, label_id=label_id, uid=uid, type=type)
        if not problems:
            return True
        self._send_denials.append(
            Denial(reasons=problems, stage="send", uid=uid, type=type, label_id=label_id)
        )
        return False

    async def _send_loop(self, writer: asyncio.StreamWriter) -> None:
        window = self.fed.window
        outbox = self.outbox
        while True:
            room = window - outbox.in_flight
            if room <= 0 or outbox.backlog - outbox.in_flight <= 0:
                # Nothing to send, or the window is full: an ACK or a new release wakes us.
                self._wake.clear()
                await self._wake.wait()
                continue
            self._send_denials = []
            rows = outbox.take(room, check=self._send_check)
            if self._send_denials:
                with contextlib.suppress(StorageError, OSError):
                    self._audit.append_many([self._denial_record(d) for d in self._send_denials])
                self.status.bump("denials", len(self._send_denials))
            if not rows:
                self._sync_status()
                if not self._send_denials:
                    self._wake.clear()
                    await self._wake.wait()
                await asyncio.sleep(0)
                continue
            data = b"".join(wire.encode_event(r.seq, r.priority, r.payload) for r in rows)
            self._write(writer, data)
            self.status.bump("sent", len(rows))
            self._sync_status()
            await writer.drain()

    async def _heartbeat_loop(self, writer: asyncio.StreamWriter) -> None:
        while True:
            await asyncio.sleep(self.fed.heartbeat_s)
            self._write(writer, wire.encode(wire.Heartbeat(time_ms=self._clock_ms())))
            await writer.drain()


class _ConnectionEnded(Exception):
    """Raised inside a connection's TaskGroup to stop its sender and heartbeat."""


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_failure(exc)
            if inner is not None:
                return inner
        elif not isinstance(exc, _ConnectionEnded):
            return exc
    return None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    # Cancellation is never swallowed here (DESIGN.md convention 8): a shutdown must end us.
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()


# --- TLS ------------------------------------------------------------------------------------------


def _load_ca(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read the peer CA {path}: {exc}") from exc


def dial_context(peer: PeerConfig, cert: Path, key: Path) -> ssl.SSLContext:
    """Client context: our server certificate, trusting only this peer's CA.

    Host names are not checked: the peer is pinned by its certificate's fingerprint, which is
    stronger, and partners are often dialled by address.
    """
    return client_ssl_context(peer.ca_file, cert, key, check_hostname=False)


def accept_context(peers: Sequence[PeerConfig], cert: Path, key: Path) -> ssl.SSLContext:
    """Server context for the federation listener: trusts the CAs of the peers that dial us."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
        ctx.verify_mode = ssl.CERT_REQUIRED
        for p in peers:
            ctx.load_verify_locations(cafile=p.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot set up the federation listener's TLS: {exc}") from exc
    return ctx


def verify_peer_certificate(peer: PeerConfig, der: bytes | None) -> str | None:
    """Why this certificate is not the peer's (None when it is): fingerprint AND its CA."""
    if der is None:
        return "no client certificate"
    fp = certificate_sha256(der)
    if fp != peer.fingerprint:
        return f"certificate fingerprint {fp} is not the configured {peer.fingerprint}"
    try:
        ident = peer_identity(der, issuers=_load_ca(peer.ca_file))
    except PkiError as exc:
        return str(exc)
    if ident.issuer_fingerprint_sha256 is None:
        return f"certificate is not issued by the CA configured for {peer.name}"
    return None


# --- the whole federation ----------------------------------------------------------------------


class Federation:
    """Every peer link, the federation listener and the status file, owned by one TaskGroup.

    ``await start()`` opens the outboxes, attaches the links to the router and binds the
    listener (bind first, then serve); ``await run()`` dials, serves and writes the status until
    cancelled; leaving it detaches the links and closes the outboxes (what is queued stays).
    """

    def __init__(
        self,
        *,
        config: FederationConfig,
        policy: Policy,
        router: Router,
        audit: AuditSink,
        data_dir: Path,
        server_cert: Path,
        server_key: Path,
        clock_ms: Callable[[], int],
        metrics: Metrics | None = None,
        durable: bool = True,
        tap: Tap | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.policy = policy
        self._router = router
        self._audit = audit
        self.data_dir = data_dir
        self._cert = server_cert
        self._key = server_key
        self._clock_ms = clock_ms
        self._durable = durable
        self._tap = tap
        self._rng = rng or random.Random()
        self.status = FederationStatus(config.server_id, metrics)
        self.links: dict[str, PeerLink] = {}
        self.listener: asyncio.Server | None = None
        self.bound: Address | None = None
        self._sessions: dict[asyncio.Task[object], asyncio.StreamWriter] = {}

    async def start(self) -> Address | None:
        for peer in self.config.peers:
            outbox = Outbox.open(outbox_path(self.data_dir, peer.name), durable=self._durable)
            status = self.status.add(peer.name, str(peer.dial) if peer.dial else None)
            link = PeerLink(
                fed=self.config,
                peer=peer,
                policy=self.policy,
                router=self._router,
                audit=self._audit,
                outbox=outbox,
                status=status,
                clock_ms=self._clock_ms,
                tap=self._tap,
            )
            self.links[peer.name] = link
            self._router.attach(link)
        accepting = [p for p in self.config.peers if p.dial is None]
        listen = self.config.listen
        if accepting and listen is not None:
            ctx = accept_context(accepting, self._cert, self._key)
            self.listener = await asyncio.start_server(
                self._on_accept,
                host=listen.host,
                port=listen.port,
                ssl=ctx,
                ssl_handshake_timeout=CONNECT_TIMEOUT_S,
            )
            port = int(self.listener.sockets[0].getsockname()[1])
            self.bound = Address(listen.host, port)
            log.info("federation: listening on %s", self.bound)
        return self.bound

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                for link in self.links.values():
                    if link.peer.dial is not None:
                        tg.create_task(self._dial_loop(link), name=f"fed-dial-{link.peer.name}")
                tg.create_task(self._status_loop(), name="fed-status")
        finally:
            await self.close()

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        # Accepted connections run in tasks the asyncio server made: end them by aborting their
        # transports (their reads fail and they return), never by cancelling someone else's task.
        for writer in list(self._sessions.values()):
            writer.transport.abort()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=CLOSE_TIMEOUT_S)
        for link in self.links.values():
            self._router.detach(link)
            link.flush()
            link.outbox.close()
        self.links.clear()
        self.write_status()

    def write_status(self) -> None:
        with contextlib.suppress(OSError):
            self.status.write(status_path(self.data_dir), self._clock_ms())

    async def _status_loop(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(self.config.status_interval_s)

    async def _dial_loop(self, link: PeerLink) -> None:
        peer = link.peer
        assert peer.dial is not None
        backoff = Backoff(
            self.config.backoff_base_s,
            self.config.backoff_cap_s,
            self.config.backoff_jitter,
            self._rng,
        )
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            await self._dial_once(link, peer.dial)
            # A link that stayed up for a while starts the backoff again (DESIGN.md 11).
            if loop.time() - started >= DEFAULT_STABLE_S:
                failures = 0
            failures += 1
            delay = backoff.delay(failures)
            log.info("federation %s: reconnecting in %.1f s", peer.name, delay)
            await asyncio.sleep(delay)

    async def _dial_once(self, link: PeerLink, address: Address) -> None:
        peer = link.peer
        status = link.status
        status.set_state(LinkState.CONNECTING, self._clock_ms())
        try:
            ctx = dial_context(peer, self._cert, self._key)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(address.host, address.port, ssl=ctx)
        except (OSError, TimeoutError, ssl.SSLError, PkiError) as exc:
            reason = f"cannot connect to {address}: {exc or type(exc).__name__}"
            if isinstance(exc, ssl.SSLCertVerificationError):
                link.refuse(f"{address}: certificate not trusted: {exc.verify_message}")
            else:
                log.info("federation %s: %s", peer.name, reason)
                status.set_state(LinkState.DOWN, self._clock_ms(), reason)
            return
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        problem = verify_peer_certificate(peer, der)
        if problem is not None:
            link.refuse(f"{address}: {problem}")
            await _close(writer)
            return
        await self._run_session(link, reader, writer)

    async def _run_session(
        self, link: PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions[task] = writer
        try:
            await link.serve(reader, writer)
        except LinkRefused as exc:
            link.refuse(str(exc))
        except PeerError as exc:
            log.warning("federation %s: link closed (%s): %s", link.peer.name, exc.reason, exc)
            link.status.set_state(LinkState.DOWN, self._clock_ms(), f"{exc.reason}: {exc}")
        except (OSError, ssl.SSLError) as exc:
            log.info("federation %s: connection lost: %s", link.peer.name, exc)
            link.status.set_state(LinkState.DOWN, self._clock_ms(), f"connection lost: {exc}")
        finally:
            self._sessions.pop(task, None)

    async def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        peername = writer.get_extra_info("peername")
        fp = certificate_sha256(der) if der is not None else None
        link = next(
            (
                lk
                for lk in self.links.values()
                if lk.peer.dial is None and lk.peer.fingerprint == fp
            ),
            None,
        )
        if link is None:
            log.warning(
                "federation: refused a connection from %s: certificate %s is no accepted peer's",
                peername,
                fp,
            )
            await _close(writer)
            return
        problem = verify_peer_certificate(link.peer, der)
        if problem is not None:
            link.refuse(f"{peername}: {problem}")
            await _close(writer)
            return
        await self._run_session(link, reader, writer)
