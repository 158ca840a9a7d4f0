"""A lean C-GET Service Class User (PS3.4 C.4.3) on a raw socket, for the retrieval hot path.

pynetdicom spends about 2.5 ms of Python per received instance (a Dataset per command, an event per PDU, a
reactor that sleeps 1 ms when idle).  Here one thread per association does only what PS3.7/PS3.8 require:

1. TCP connect, A-ASSOCIATE-RQ with the same presentation contexts and SCP/SCU Role Selection items as
   :func:`viewer.pacs.dimse.get_presentation_contexts` (PS3.8 9.3.2, PS3.7 D.3.3.4); A-ASSOCIATE-AC/RJ/A-ABORT.
2. C-GET-RQ (PS3.7 9.1.3): command set in Implicit VR Little Endian, identifier in the negotiated syntax.
3. A receive loop: ``recv_into`` a preallocated buffer, P-DATA-TF split into PDVs (PS3.8 9.3.5, E.2), the
   command and data set fragments reassembled; each C-STORE-RQ is handed to ``sink`` as Part 10 bytes
   (preamble, File Meta Information, data set exactly as received: what pynetdicom's
   ``event.encoded_dataset()`` gives) and answered with a C-STORE-RSP (PS3.7 9.3.1.2) whose status says
   whether the sink took it; C-GET-RSP pending/final (PS3.7 9.3.3.2) carry the sub-operation counts.
4. A-RELEASE (PS3.8 7.2), or A-ABORT on any error; the socket is always closed.

Waiting: ``Timeouts.connect_s`` for TCP, ``acse_s`` for the A-ASSOCIATE-AC and A-RELEASE-RP, and ``dimse_s``
as an *idle* timeout (no byte at all for that long), independent of the optional whole-transfer
``deadline_s``.  Cancelling (a ``threading.Event``) sends a C-CANCEL-RQ (PS3.7 9.3.3.3), keeps storing what
still arrives, and aborts if the peer has not ended the operation within :data:`CANCEL_GRACE_S`.

Limits: a PDU longer than we announced (``MAX_PDU_BYTES``) aborts the association (PS3.8 D.1: the length is
untrusted); a data set longer than ``dataset_bytes_max`` is drained and refused with Out of Resources.

Parallelism: a SOP Instance UID list is split over ``associations`` threads (socket I/O releases the GIL);
the sink must then be thread-safe (``Library.store_bytes`` is).

Into the library: when the sink is a :class:`~viewer.library.writer.GroupWriter`, each instance is submitted
and acknowledged at once and stored by the writer thread in group commits; an instance counts as received
(``sop_instance_uids``, progress) only once committed, and :meth:`FastGetClient.get` flushes the writer before
it returns or raises, so the library says exactly what is held afterwards.  One the writer refuses after the
peer was told "success" is reported in ``failed_sop_instance_uids``.  Two associations are the default: on two
cores a third, or running the sink on ``store_workers`` threads, measured slower (the sink's Python work
then competes with the receiving threads for the GIL); ``store_workers`` is kept for machines with more cores.

Copies: each received byte is copied once by the kernel into the receive buffer and once into the Part 10
bytes (data set fragments are kept as views of the buffer until the instance is complete, see
:class:`_Reader`); nothing is decoded.  The File Meta Information carries pynetdicom's implementation class
UID and version name, so the output is byte-identical to ``DimseClient.get``'s.
"""

from __future__ import annotations

import io
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
from pynetdicom.status import STATUS_FAILURE, code_to_category

from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    LibraryError,
    MifasError,
    NodeUnreachableError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
    StorageFullError,
)
from viewer.library.writer import GroupWriter
from viewer.pacs.dimse import (
    LANE_INSTANCES_MIN,
    DimseStatus,
    describe_status,
    get_presentation_contexts,
    retrieve_identifiers,
)
from viewer.pacs.node import Node, Progress, RetrieveResult, Sink
from viewer.pacs.pdu import (
    DATA_SET_ABSENT,
    MCH_COMMAND,
    MCH_LAST_FRAGMENT,
    PDU_HEADER,
    PDU_HEADER_BYTES,
    PDV_HEADER,
    PDV_HEADER_BYTES,
    PRIORITY_MEDIUM,
    AssociateAccept,
    AssociateRequest,
    CommandField,
    CommandTag,
    PduType,
    ProposedContext,
    ProtocolError,
    decode_associate_ac,
    decode_command,
    encode_abort,
    encode_associate_rq,
    encode_command,
    encode_file_meta,
    encode_p_data,
    encode_release_rq,
)

log = logging.getLogger(__name__)

GET_MODEL = str(StudyRootQueryRetrieveInformationModelGet)
MAX_PDU_BYTES = 4 << 20  # our Maximum Length (PS3.8 D.1); a longer PDU from the peer aborts the association
RECV_BUFFER_BYTES = MAX_PDU_BYTES + PDU_HEADER_BYTES + (1 << 20)  # one whole PDU plus room for large reads
DATASET_BYTES_MAX = 2 << 30  # a larger instance is refused (Out of Resources) and its bytes are discarded
POLL_S = 0.1  # how often a blocked receive checks the cancel event and the deadline
CANCEL_GRACE_S = 5.0  # after a C-CANCEL-RQ the peer has this long to send its final C-GET-RSP
DEFAULT_ASSOCIATIONS = 2
ASSOCIATIONS_MAX = 8
SOCKET_BUFFER_BYTES = 4 << 20
SPARE_BUFFERS_MAX = 2  # receive buffers kept for reuse after a large instance
STORE_QUEUE_BYTES_MAX = 256 << 20  # instances waiting for a store worker (back-pressure beyond this)
DEFAULT_STORE_WORKERS = 0
STORE_WORKERS_MAX = 4
UNEXPECTED_UIDS_MAX = 1000  # unrequested instances remembered for the report
# TCP keepalive while we wait for the peer: a probe after KEEPALIVE_IDLE_S of silence, then every
# KEEPALIVE_INTERVAL_S, the connection declared dead after KEEPALIVE_PROBES unanswered ones.  The peer's kernel
# answers them, so a slow but living PACS is never cut; a host behind a cut link is noticed in about 4 s, and
# after a takeover the first probe reaches the node that now holds the virtual IP, which resets the connection
# at once (it has never heard of it).  Without it a receiving client sends nothing and waits out `dimse_s`.
KEEPALIVE_IDLE_S = 1
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_PROBES = 3
# The same bound while data we sent waits for its ACK (TCP_USER_TIMEOUT): when the link broke under a C-STORE-RSP
# of ours, TCP retransmits with exponential backoff instead of probing, and would notice only after 6 s or more.
UNACKED_MAX_S = 4

_REJECT_REASONS = {  # PS3.8 9.3.4 (Result Source, Reason/Diag.); (1, 3) and (1, 7) are worded in full below
    (1, 2): "the application context name is not supported",
    (2, 2): "it does not support our protocol version",
    (3, 1): "it is busy (temporary congestion); try again later",
    (3, 2): "it has reached its limit of associations; try again later",
}


@dataclass(frozen=True)
class _Unrequested:
    """DimseClient.get's rule for instances not asked for: `allowed` None stores everything."""

    allowed: frozenset[str] | None
    callback: Callable[[str], None] | None


@dataclass
class _Outcome:
    """What one association received and what its final C-GET-RSP said (PS3.4 C.4.3.1.6)."""

    received: int = 0  # C-STORE-RQs whose data set was accepted for storage on this association
    completed: int = 0
    failed: int = 0
    warnings: int = 0
    failed_uids: list[str] = field(default_factory=list)


class _Shared:
    """State shared by the lanes of one retrieval: the stop signal, the first fatal error, the sink and its
    bookkeeping.

    With ``store_workers == 0`` the sink runs on the receiving thread and the C-STORE-RSP status says what it
    did.  With workers, a complete instance is queued (at most :data:`STORE_QUEUE_BYTES_MAX` bytes waiting)
    and acknowledged at once, so writing overlaps the next instance's transfer; an instance the sink then
    refuses is reported in the result (``failed``, ``failed_sop_instance_uids``) instead of to the peer.
    """

    def __init__(self, sink: Sink, progress: Progress | None, expected: int | None,
                 cancel: threading.Event | None, store_workers: int, unrequested: _Unrequested | None = None) -> None:
        self.sink = sink
        self.writer = sink if isinstance(sink, GroupWriter) else None
        self.unrequested = unrequested
        self.progress = progress
        self.expected = expected
        self.cancel = cancel
        self.failed = threading.Event()  # a lane failed: the others cancel
        self.fatal: BaseException | None = None  # a sink error that stops the whole retrieval
        self.lock = threading.Condition()
        self.uids: list[str] = []
        self.bytes = 0
        self.refused_uids: list[str] = []  # refused by the sink after the peer was told "success"
        self.unexpected_uids: list[str] = []  # sent by the peer although not asked for (IMAGE level), refused
        self.peer_total: int | None = None
        self.delivered = False  # an instance reached the sink: falling back to another client would repeat it
        self._queue: deque[tuple[str, bytes]] = deque()
        self._queued_bytes = 0
        self._closing = False
        self._workers = [threading.Thread(target=self._work, name=f"viewer.pacs.fastget.store-{i}", daemon=True)
                         for i in range(store_workers)]
        for worker in self._workers:
            worker.start()

    def should_stop(self) -> bool:
        return self.failed.is_set() or self.fatal is not None or (self.cancel is not None and self.cancel.is_set())

    def refusal_status(self) -> int | None:
        """The C-STORE-RSP status once a fatal sink error stopped the retrieval, else None."""
        if self.fatal is None:
            return None
        return DimseStatus.OUT_OF_RESOURCES if isinstance(self.fatal, StorageFullError) else DimseStatus.UNABLE_TO_PROCESS

    def store(self, uid: str, part10: bytes) -> int:
        """Store one instance (or queue it); the C-STORE-RSP status (PS3.4 B.2.3)."""
        self.delivered = True
        if self.writer is not None:
            return self._submit(uid, part10)
        if not self._workers:
            return self._store_now(uid, part10)
        with self.lock:
            while self._queued_bytes and self._queued_bytes + len(part10) > STORE_QUEUE_BYTES_MAX:
                self.lock.wait(POLL_S)  # back-pressure: the peer waits for our C-STORE-RSP meanwhile
                if self.should_stop():
                    return self.refusal_status() or DimseStatus.OUT_OF_RESOURCES
            self._queue.append((uid, part10))
            self._queued_bytes += len(part10)
            self.lock.notify_all()
        return DimseStatus.SUCCESS

    def check_requested(self, uid: str, lane_uids: frozenset[str] | None) -> int | None:
        """The refusal status for an instance that was not asked for, None when it may be stored."""
        policy = self.unrequested
        if policy is None:  # this client's own rule: at IMAGE level, only what the lane asked for
            if lane_uids is None or uid in lane_uids:
                return None
            log.warning("instance %s refused: it was not asked for", uid)
            self.note_unexpected(uid)
            return DimseStatus.UNABLE_TO_PROCESS
        if policy.allowed is None or uid in policy.allowed:
            return None
        log.warning("instance %s was not asked for: refused", uid)  # DimseClient.get's rule and wording
        self.note_unexpected(uid)
        if policy.callback is not None:
            try:
                policy.callback(uid)
            except Exception:  # a bug in the caller's callback must not break the transfer
                log.exception("on_unrequested callback failed")
        return DimseStatus.NOT_AUTHORIZED

    def _submit(self, uid: str, part10: bytes) -> int:
        """Hand one instance to the group writer; it counts as received once its batch is committed."""
        assert self.writer is not None
        refusal = self.refusal_status()
        if refusal is not None:
            return refusal
        size = len(part10)
        try:
            self.writer.submit(part10, lambda result, error: self._committed(uid, size, error))
        except StorageFullError as exc:
            self.fatal = exc
            return DimseStatus.OUT_OF_RESOURCES
        except LibraryError as exc:
            self.fatal = exc
            return DimseStatus.UNABLE_TO_PROCESS
        return DimseStatus.SUCCESS

    def _committed(self, uid: str, size: int, error: BaseException | None) -> None:
        """Runs on the writer thread when the instance's batch is committed (or the instance refused)."""
        if error is None:
            with self.lock:
                self.uids.append(uid)
                self.bytes += size
                done = len(self.uids)
            self._report(done)
            return
        with self.lock:
            self.refused_uids.append(uid)
        if isinstance(error, MifasError) and not isinstance(error, LibraryError):
            log.warning("instance %s not stored: %s", uid, error)  # unusable; the others may be fine
        elif self.fatal is None:
            self.fatal = error  # the disk is full or the index is unusable: stop, it would repeat

    def note_unexpected(self, uid: str) -> None:
        with self.lock:
            if len(self.unexpected_uids) < UNEXPECTED_UIDS_MAX:
                self.unexpected_uids.append(uid)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self._queue and not self._closing:
                    self.lock.wait()
                if not self._queue:
                    return
                uid, part10 = self._queue.popleft()
            status = self._store_now(uid, part10)
            with self.lock:
                self._queued_bytes -= len(part10)
                if status != DimseStatus.SUCCESS:
                    self.refused_uids.append(uid)
                self.lock.notify_all()

    def close(self) -> None:
        """Let the workers store what is queued, then end them."""
        with self.lock:
            self._closing = True
            self.lock.notify_all()
        for worker in self._workers:
            worker.join()
        if self.writer is not None:
            try:
                self.writer.flush()
            except Exception as exc:  # already reported through the callbacks; keep the first
                if self.fatal is None:
                    self.fatal = exc

    def _store_now(self, uid: str, part10: bytes) -> int:
        refusal = self.refusal_status()
        if refusal is not None:
            return refusal
        try:
            self.sink(part10)
        except StorageFullError as exc:
            self.fatal = exc
            return DimseStatus.OUT_OF_RESOURCES
        except LibraryError as exc:  # cannot write at all (permissions, damaged index): stop, it would repeat
            self.fatal = exc
            return DimseStatus.UNABLE_TO_PROCESS
        except MifasError as exc:  # this instance is unusable; the others may be fine
            log.warning("instance %s not stored: %s", uid, exc)
            return DimseStatus.UNABLE_TO_PROCESS
        except Exception as exc:  # a bug in the sink: stop and re-raise it after the operation
            log.exception("the sink failed on instance %s", uid)
            self.fatal = exc
            return DimseStatus.UNABLE_TO_PROCESS
        with self.lock:
            self.uids.append(uid)
            self.bytes += len(part10)
            done = len(self.uids)
        self._report(done)
        return DimseStatus.SUCCESS

    def _report(self, done: int) -> None:
        if self.progress is None:
            return
        try:
            self.progress(done, self.expected if self.expected is not None else self.peer_total)
        except Exception as exc:  # a bug in the caller's callback: stop, re-raise after the operation
            log.exception("progress callback failed")
            if self.fatal is None:
                self.fatal = exc


class _Reader:
    """Whole PDUs from a socket via reused buffers and large ``recv_into`` calls.

    A PDU body is a view into the current buffer.  The caller may keep views of data set fragments until
    the instance is complete (:meth:`pin`), which saves a copy per fragment: while pinned, the buffer is
    not overwritten; when it runs full, reading continues in a spare one (:meth:`unpin` returns them).
    """

    def __init__(self, sock: socket.socket, idle_s: float, deadline: float | None,
                 on_poll: Callable[[], None] | None = None) -> None:
        self.sock = sock
        self.idle_s = idle_s
        self.deadline = deadline
        self.buf = bytearray(RECV_BUFFER_BYTES)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.last_bytes = time.monotonic()
        self.on_poll = on_poll  # callable run when a receive times out (the cancel logic)
        self.pinned = False
        self._held: list[bytearray] = []  # full buffers still referenced by pinned fragments
        self._spares: list[bytearray] = []

    def pin(self) -> None:
        """The caller keeps views into the current buffer: do not overwrite it."""
        self.pinned = True

    def unpin(self) -> None:
        """The caller dropped its views: every held buffer may be reused."""
        self.pinned = False
        self._spares = (self._spares + self._held)[:SPARE_BUFFERS_MAX]
        self._held = []

    def _make_room(self, need: int) -> None:
        """Move the unread tail to the front of a buffer with room for `need` bytes."""
        tail = self.end - self.start
        if self.pinned:
            self._held.append(self.buf)
            self.buf = self._spares.pop() if self._spares else bytearray(RECV_BUFFER_BYTES)
            fresh = memoryview(self.buf)
            fresh[:tail] = self.view[self.start:self.end]
            self.view = fresh
        else:
            self.buf[:tail] = self.view[self.start:self.end]
        self.start, self.end = 0, tail

    def _fill(self, need: int) -> None:
        """Make `need` bytes available from self.start."""
        if self.start + need > len(self.buf):
            self._make_room(need)
        while self.end - self.start < need:
            try:
                got = self.sock.recv_into(self.view[self.end:])
            except TimeoutError as exc:
                if exc.errno is not None:  # ETIMEDOUT from the kernel: keepalive found the peer gone
                    raise ConnectionResetError("the peer stopped answering TCP keepalive probes") from exc
                self._idle()  # our own POLL_S receive timeout
                continue
            if got == 0:
                raise ConnectionResetError("the peer closed the connection")
            self.end += got
            self.last_bytes = time.monotonic()

    def _idle(self) -> None:
        now = time.monotonic()
        if now - self.last_bytes > self.idle_s:
            raise _IdleTimeout()
        if self.deadline is not None and now > self.deadline:
            raise _DeadlineExceeded()
        if self.on_poll is not None:
            self.on_poll()

    def next_pdu(self) -> tuple[int, memoryview]:
        """The next PDU's type and body; the body is valid until the next call."""
        self._fill(PDU_HEADER_BYTES)
        pdu_type, _, length = PDU_HEADER.unpack_from(self.buf, self.start)
        if length > MAX_PDU_BYTES:
            raise ProtocolError(f"the peer sent a PDU of {length} bytes, more than the {MAX_PDU_BYTES} we accept")
        self._fill(PDU_HEADER_BYTES + length)
        body_start = self.start + PDU_HEADER_BYTES
        self.start = body_start + length
        return pdu_type, self.view[body_start:self.start]


class LeanAssociationFailed(AssociationAbortedError):
    """The peer did not answer our association request in a way this client understands (nothing was sent
    or received yet): ``DimseClient.get`` then falls back to pynetdicom."""


class _IdleTimeout(Exception):
    pass


class _DeadlineExceeded(Exception):
    pass


class _Association:
    """One association of a C-GET: negotiation, one or more C-GET requests, release or abort."""

    def __init__(self, node: Node, sop_class_uids: Collection[str] | None, shared: _Shared,
                 deadline: float | None, dataset_bytes_max: int) -> None:
        self.node = node
        self.shared = shared
        self.dataset_bytes_max = dataset_bytes_max
        self.outcome = _Outcome()
        self.sock: socket.socket | None = None
        self.reader: _Reader | None = None
        self.accept = AssociateAccept()
        self.syntax_by_context: dict[int, str] = {}
        self.msg_id = 0
        self.cancel_deadline: float | None = None
        self.current_msg_id = 0
        self.get_context_id = 0
        self.deadline = deadline
        self.established = False
        self.requested_uids: frozenset[str] | None = None  # IMAGE level: what the current C-GET asked for
        self._request = self._build_request(sop_class_uids)

    # -- negotiation (PS3.8 7.1, 9.3.2) -----------------------------------------------------------------

    def _build_request(self, sop_class_uids: Collection[str] | None) -> AssociateRequest:
        contexts, roles = get_presentation_contexts(sop_class_uids)
        proposed = [ProposedContext(2 * i + 1, str(cx.abstract_syntax), tuple(str(t) for t in cx.transfer_syntax))
                    for i, cx in enumerate(contexts)]
        return AssociateRequest(
            calling_ae=self.node.calling_ae, called_ae=self.node.ae_title, contexts=proposed,
            scp_role_sop_classes=[str(r.sop_class_uid) for r in roles], max_pdu_bytes=MAX_PDU_BYTES,
            implementation_class_uid=str(PYNETDICOM_IMPLEMENTATION_UID),
            implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION,
        )

    def open(self) -> None:
        """Connect and negotiate (PS3.8 7.1); raise the translated reason when that fails."""
        self.sock = self._connect()
        self.reader = _Reader(self.sock, self.node.timeouts.acse_s, self.deadline, self._poll)
        node = self.node
        try:
            self._send(encode_associate_rq(self._request))
            pdu_type, body = self.reader.next_pdu()
            if pdu_type == PduType.A_ASSOCIATE_AC:
                self.accept = decode_associate_ac(body)
        except _IdleTimeout:
            raise PacsTimeoutError(f"The PACS at {node.address} accepted the connection but did not answer the "
                                   f"association request within {node.timeouts.acse_s:g} s.") from None
        except _DeadlineExceeded:
            raise PacsTimeoutError(f"The C-GET from the PACS {node.describe()} did not finish within its "
                                   f"time limit.") from None
        except ProtocolError as exc:
            raise LeanAssociationFailed(
                f"The PACS at {node.address} answered our association request with a broken PDU ({exc}).") from exc
        except OSError as exc:
            raise AssociationAbortedError(
                f"The PACS at {node.address} closed the connection without answering our association request.") from exc
        if pdu_type == PduType.A_ASSOCIATE_RJ:
            raise AssociationRejectedError(self._rejection_message(bytes(body)))
        if pdu_type == PduType.A_ABORT:
            raise AssociationAbortedError(f"The PACS {node.describe()} aborted the association request "
                                          f"(calling AE '{node.calling_ae}').")
        if pdu_type != PduType.A_ASSOCIATE_AC:
            raise LeanAssociationFailed(f"The PACS {node.describe()} answered the association request with a "
                                          f"PDU of type 0x{pdu_type:02X}.")
        self.syntax_by_context = self.accept.accepted
        self.get_context_id = next((cx.context_id for cx in self._request.contexts
                                    if cx.abstract_syntax == GET_MODEL and cx.context_id in self.accept.accepted), 0)
        if not self.get_context_id:
            raise PacsError(f"The PACS {node.describe()} does not offer C-GET (Study Root).")
        self.reader.idle_s = node.timeouts.dimse_s
        self.established = True

    def _connect(self) -> socket.socket:
        node = self.node
        try:
            sock = socket.create_connection((node.host, node.port), timeout=node.timeouts.connect_s)
        except ConnectionRefusedError as exc:
            raise NodeUnreachableError(
                f"The PACS at {node.address} refused the connection (nothing is listening there).") from exc
        except socket.gaierror as exc:
            raise NodeUnreachableError(f"The PACS host name '{node.host}' could not be found.") from exc
        except TimeoutError as exc:
            raise NodeUnreachableError(f"The PACS at {node.address} did not answer within "
                                       f"{node.timeouts.connect_s:g} s (host down or port blocked).") from exc
        except OSError as exc:
            raise NodeUnreachableError(f"The PACS at {node.address} cannot be reached ({exc.strerror or exc}).") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our responses are small; never delay them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        set_keepalive(sock)
        sock.settimeout(POLL_S)
        return sock

    def _send(self, data: bytes) -> None:
        """Send with the DIMSE timeout (receives poll every POLL_S; a send must not give up that fast)."""
        assert self.sock is not None
        self.sock.settimeout(self.node.timeouts.dimse_s)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(POLL_S)

    def _rejection_message(self, body: bytes) -> str:
        """Plain words for an A-ASSOCIATE-RJ (PS3.8 9.3.4), worded as ``DimseClient``'s."""
        node = self.node
        source, reason = (body[2], body[3]) if len(body) >= 4 else (0, 0)
        ours, theirs = node.calling_ae, node.ae_title
        if (source, reason) == (1, 3):
            return (f"The PACS at {node.address} rejected our association: calling AE title '{ours}' is not known "
                    f"to it (called AE '{theirs}').")
        if (source, reason) == (1, 7):
            return (f"The PACS at {node.address} rejected our association: it is not called '{theirs}' "
                    f"(called AE title not recognised; calling AE '{ours}').")
        words = _REJECT_REASONS.get((source, reason), "no reason given")
        return (f"The PACS at {node.address} rejected our association: {words} (calling AE '{ours}', "
                f"called AE '{theirs}').")

    # -- sending ----------------------------------------------------------------------------------------

    def _send_message(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        peer_max = self.accept.peer_max_pdu_bytes
        pdus = encode_p_data(context_id, True, command, peer_max)
        if dataset is not None:
            pdus += encode_p_data(context_id, False, dataset, peer_max)
        self._send(b"".join(pdus))

    def _next_msg_id(self) -> int:
        self.msg_id = self.msg_id % 0xFFFF + 1  # PS3.7 E.1: Message ID is an unsigned 16-bit value
        return self.msg_id

    def send_get(self, identifier: Dataset) -> None:
        """C-GET-RQ (PS3.7 9.3.3.1)."""
        syntax = self.syntax_by_context[self.get_context_id]
        implicit = syntax == ImplicitVRLittleEndian
        payload = encode(identifier, implicit, True)
        if payload is None:
            raise PacsError("The C-GET identifier cannot be encoded.")
        self.current_msg_id = self._next_msg_id()
        command = encode_command({
            CommandTag.AFFECTED_SOP_CLASS_UID: GET_MODEL,
            CommandTag.COMMAND_FIELD: CommandField.C_GET_RQ,
            CommandTag.MESSAGE_ID: self.current_msg_id,
            CommandTag.PRIORITY: PRIORITY_MEDIUM,
            CommandTag.COMMAND_DATA_SET_TYPE: 0x0000,  # any value but DATA_SET_ABSENT: an identifier follows
        })
        self._send_message(self.get_context_id, command, payload)

    def _send_cancel(self) -> None:
        """C-CANCEL-RQ (PS3.7 9.3.3.3)."""
        command = encode_command({
            CommandTag.COMMAND_FIELD: CommandField.C_CANCEL_RQ,
            CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: self.current_msg_id,
            CommandTag.COMMAND_DATA_SET_TYPE: DATA_SET_ABSENT,
        })
        self._send_message(self.get_context_id, command)
        log.info("C-CANCEL sent to %s", self.node.address)

    def _send_store_rsp(self, context_id: int, request: dict[int, int | str], status: int) -> None:
        """C-STORE-RSP (PS3.7 9.3.1.2)."""
        command = encode_command({
            CommandTag.AFFECTED_SOP_CLASS_UID: request.get(CommandTag.AFFECTED_SOP_CLASS_UID, ""),
            CommandTag.COMMAND_FIELD: CommandField.C_STORE_RSP,
            CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: request.get(CommandTag.MESSAGE_ID, 0),
            CommandTag.COMMAND_DATA_SET_TYPE: DATA_SET_ABSENT,
            CommandTag.STATUS: status,
            CommandTag.AFFECTED_SOP_INSTANCE_UID: request.get(CommandTag.AFFECTED_SOP_INSTANCE_UID, ""),
        })
        self._send_message(context_id, command)

    def _poll(self) -> None:
        """Runs whenever a receive waited POLL_S without data: start or enforce a cancellation."""
        now = time.monotonic()
        if self.cancel_deadline is None and self.shared.should_stop() and self.current_msg_id:
            self.cancel_deadline = now + CANCEL_GRACE_S
            try:
                self._send_cancel()
            except OSError:
                log.debug("C-CANCEL not sent", exc_info=True)
        if self.cancel_deadline is not None and now > self.cancel_deadline:
            raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")

    # -- receiving (PS3.8 9.3.5, E.2) -------------------------------------------------------------------

    def run_get(self, identifier: Dataset) -> tuple[dict[int, int | str], Dataset | None]:
        """Send one C-GET-RQ and serve its C-STORE sub-operations until the final C-GET-RSP; return it."""
        assert self.reader is not None
        self.cancel_deadline = None
        self.requested_uids = _listed_uids(identifier)
        self.send_get(identifier)
        reader = self.reader
        command = bytearray()
        fragments: list[memoryview] = []
        dataset_bytes = 0
        request: dict[int, int | str] | None = None
        deadline = self.deadline
        while True:
            if self.shared.should_stop():
                self._poll()
            if deadline is not None and time.monotonic() > deadline:
                raise _DeadlineExceeded()
            pdu_type, body = reader.next_pdu()
            if pdu_type != PduType.P_DATA_TF:
                self._unexpected_pdu(pdu_type, body)
            offset, end = 0, len(body)
            while offset < end:
                if offset + PDV_HEADER_BYTES > end:
                    raise ProtocolError("a PDV header runs past the end of the P-DATA-TF")
                length, context_id, control = PDV_HEADER.unpack_from(body, offset)
                if length < 2 or offset + 4 + length > end:
                    raise ProtocolError("a PDV runs past the end of the P-DATA-TF")
                fragment = body[offset + PDV_HEADER_BYTES:offset + 4 + length]
                offset += 4 + length
                last = bool(control & MCH_LAST_FRAGMENT)
                if control & MCH_COMMAND:
                    command += fragment
                    if len(command) > MAX_PDU_BYTES:
                        raise ProtocolError("the peer sent an oversized command set")
                    if not last:
                        continue
                    request = decode_command(command)
                    command = bytearray()
                    if request.get(CommandTag.COMMAND_DATA_SET_TYPE, DATA_SET_ABSENT) != DATA_SET_ABSENT:
                        continue  # its data set follows
                    final = self._on_message(context_id, request, None)
                    request = None
                else:
                    if request is None:
                        raise ProtocolError("the peer sent a data set before its command")
                    dataset_bytes += len(fragment)
                    if dataset_bytes <= self.dataset_bytes_max:
                        fragments.append(fragment)  # a view: joined once the data set is complete
                        reader.pin()
                    if not last:
                        continue
                    data = fragments if dataset_bytes <= self.dataset_bytes_max else None
                    try:
                        final = self._on_message(context_id, request, data)
                    finally:
                        request, fragments, dataset_bytes = None, [], 0
                        reader.unpin()
                if final is not None:
                    return final

    def _unexpected_pdu(self, pdu_type: int, body: memoryview) -> None:
        if pdu_type == PduType.A_ABORT:
            raise ConnectionAbortedError("the peer aborted the association")
        if pdu_type == PduType.A_RELEASE_RQ:
            raise ConnectionAbortedError("the peer released the association in the middle of the C-GET")
        raise ProtocolError(f"the peer sent an unexpected PDU of type 0x{pdu_type:02X}")

    def _on_message(self, context_id: int, command: dict[int, int | str],
                    data: list[memoryview] | None) -> tuple[dict[int, int | str], Dataset | None] | None:
        field_value = command.get(CommandTag.COMMAND_FIELD)
        if field_value == CommandField.C_STORE_RQ:
            self._on_c_store(context_id, command, data)
            return None
        if field_value == CommandField.C_GET_RSP:
            return self._on_c_get_rsp(command, data)
        raise ProtocolError(f"the peer sent an unexpected DIMSE message (command field 0x{field_value or 0:04X})")

    def _on_c_store(self, context_id: int, request: dict[int, int | str], data: list[memoryview] | None) -> None:
        status = self._store(context_id, request, data)
        self._send_store_rsp(context_id, request, status)

    def _store(self, context_id: int, request: dict[int, int | str], data: list[memoryview] | None) -> int:
        """Build the Part 10 bytes of one instance and store them; the C-STORE-RSP status."""
        uid = str(request.get(CommandTag.AFFECTED_SOP_INSTANCE_UID, ""))
        syntax = self.syntax_by_context.get(context_id)
        refusal = self.shared.refusal_status()
        if refusal is not None:
            return refusal
        if data is None:
            log.warning("instance %s refused: larger than %d bytes", uid, self.dataset_bytes_max)
            return DimseStatus.OUT_OF_RESOURCES
        unrequested = self.shared.check_requested(uid, self.requested_uids)
        if unrequested is not None:
            return unrequested
        if syntax is None:  # a context we did not propose or the peer did not accept
            return DimseStatus.UNABLE_TO_PROCESS
        # PS3.10 7.1 File Meta Information, as pynetdicom's Event.file_meta builds it (same implementation
        # class UID and version name, so the bytes are identical to event.encoded_dataset()).
        meta = encode_file_meta(str(request.get(CommandTag.AFFECTED_SOP_CLASS_UID, "")), uid, syntax,
                                self._request.implementation_class_uid, self._request.implementation_version_name)
        status = self.shared.store(uid, b"".join((meta, *data)))
        if status == DimseStatus.SUCCESS:
            self.outcome.received += 1
        return status

    def _on_c_get_rsp(self, command: dict[int, int | str],
                      data: list[memoryview] | None) -> tuple[dict[int, int | str], Dataset | None] | None:
        status = int(command.get(CommandTag.STATUS, DimseStatus.UNABLE_TO_PROCESS))
        if status == DimseStatus.PENDING:
            counts = [command.get(t) for t in (CommandTag.NUMBER_OF_REMAINING_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_COMPLETED_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_FAILED_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_WARNING_SUBOPERATIONS)]
            if all(isinstance(c, int) for c in counts):
                self.shared.peer_total = sum(int(c) for c in counts)
            return None
        identifier = None
        if data:
            syntax = self.syntax_by_context.get(self.get_context_id, ImplicitVRLittleEndian)
            try:
                identifier = decode(io.BytesIO(b"".join(data)), syntax == ImplicitVRLittleEndian, True)
            except Exception:  # a broken Failed SOP Instance UID List must not hide the status
                log.debug("undecodable C-GET-RSP identifier", exc_info=True)
        return command, identifier

    # -- ending -----------------------------------------------------------------------------------------

    def release(self) -> None:
        """A-RELEASE-RQ, then wait up to acse_s for the A-RELEASE-RP (PS3.8 7.2); abort if none comes."""
        if self.sock is None or self.reader is None:
            return
        try:
            self._send(encode_release_rq())
            self.reader.idle_s = self.node.timeouts.acse_s
            self.reader.on_poll = None
            while True:
                pdu_type, _ = self.reader.next_pdu()
                if pdu_type in (PduType.A_RELEASE_RP, PduType.A_ABORT):
                    self.established = False
                    break
        except (OSError, _IdleTimeout, _DeadlineExceeded, ProtocolError):
            log.debug("release of the association to %s failed; aborting", self.node.address, exc_info=True)
            self.abort()

    def abort(self) -> None:
        """A-ABORT (PS3.8 7.3.1), best effort, once the association exists; close() follows."""
        if self.sock is not None and self.established:
            self.established = False
            try:
                self.sock.sendall(encode_abort())
            except OSError:
                pass

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class FastGetClient:
    """C-GET for one node with the lean SCU; the same contract as ``DimseClient.get``.

    `associations` parallel associations share a SOP Instance UID list (a STUDY or SERIES request runs on
    one); `store_workers` > 0 runs the sink off the receiving thread (see :class:`_Shared`).  With more than
    one of either, the sink must be thread-safe (``Library.store_bytes`` is).
    """

    def __init__(self, node: Node, *, associations: int = DEFAULT_ASSOCIATIONS,
                 store_workers: int = DEFAULT_STORE_WORKERS, dataset_bytes_max: int = DATASET_BYTES_MAX,
                 lane_instances_min: int | None = None) -> None:
        if not 1 <= associations <= ASSOCIATIONS_MAX:
            raise PacsError(f"The number of parallel associations must be 1-{ASSOCIATIONS_MAX}, not {associations}.")
        if not 0 <= store_workers <= STORE_WORKERS_MAX:
            raise PacsError(f"The number of store workers must be 0-{STORE_WORKERS_MAX}, not {store_workers}.")
        self.node = node
        self.associations = associations
        self.store_workers = store_workers
        self.dataset_bytes_max = dataset_bytes_max
        self.lane_instances_min = lane_instances_min  # None: this module's LANE_INSTANCES_MIN

    def get(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
        deadline_s: float | None = None,
        reject_unrequested: bool | None = None,
        on_unrequested: Callable[[str], None] | None = None,
    ) -> RetrieveResult:
        """Retrieve a study, a series, or listed instances of one series (IMAGE level, spread over up to
        ``associations`` parallel associations); every instance goes to `sink` as Part 10 bytes.
        `deadline_s` bounds the whole transfer; the node's ``dimse_s`` bounds silence only.

        Instances not asked for: by default (``reject_unrequested=None``) an IMAGE-level request refuses what
        its lane did not list (UNABLE_TO_PROCESS).  ``True`` / ``False`` give ``DimseClient.get``'s rule: refuse
        what is not in `sop_instance_uids` with NOT_AUTHORIZED and tell `on_unrequested`, or store everything.
        """
        if reject_unrequested and sop_instance_uids is None:
            raise ValueError("reject_unrequested needs a list of SOP Instance UIDs")
        unrequested = None
        if reject_unrequested is not None:
            allowed = frozenset(sop_instance_uids) if reject_unrequested and sop_instance_uids is not None else None
            unrequested = _Unrequested(allowed, on_unrequested)
        identifiers = [retrieve_identifiers(study_uid, series_uid, uids) for uids in self._lanes(sop_instance_uids)]
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The operation was cancelled.")
        expected = len(set(sop_instance_uids)) if sop_instance_uids is not None else None
        started = time.monotonic()
        deadline = started + deadline_s if deadline_s is not None else None
        shared = _Shared(sink, progress, expected, cancel, self.store_workers, unrequested)
        try:
            outcomes = self._run_lanes(identifiers, shared, sop_class_uids, deadline)
        except LeanAssociationFailed as exc:
            if shared.delivered:  # another lane got instances: no fallback, which would repeat them
                raise AssociationAbortedError(str(exc)) from exc
            raise
        finally:
            shared.close()  # what was acknowledged is stored, even when the retrieval failed
        if shared.unexpected_uids:
            log.warning("%s sent %d instance(s) that were not asked for; they were refused",
                        self.node.describe(), len(shared.unexpected_uids))
        if shared.fatal is not None:
            raise shared.fatal
        return _result(outcomes, shared, time.monotonic() - started)

    def _run_lanes(self, identifiers: list[list[Dataset]], shared: _Shared,
                   sop_class_uids: Collection[str] | None, deadline: float | None) -> list[_Outcome]:
        def run(lane: list[Dataset]) -> _Outcome:
            try:
                return self._run_lane(lane, shared, sop_class_uids, deadline)
            except BaseException:
                shared.failed.set()  # the other lanes send C-CANCEL and stop
                raise

        if len(identifiers) == 1:
            return [run(identifiers[0])]
        with ThreadPoolExecutor(len(identifiers), thread_name_prefix="viewer.pacs.fastget") as pool:
            futures = [pool.submit(run, lane) for lane in identifiers]
            errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:  # the error that explains the others (they were stopped because of it)
            raise next((e for e in errors if not isinstance(e, OperationCancelled)), errors[0])
        return [f.result() for f in futures]

    def _lanes(self, sop_instance_uids: Sequence[str] | None) -> list[list[str] | None]:
        """Split a UID list over the associations, interleaved so every part of a series fills in at once."""
        if sop_instance_uids is None:
            return [None]
        uids = list(dict.fromkeys(sop_instance_uids))
        per_lane = self.lane_instances_min if self.lane_instances_min is not None else LANE_INSTANCES_MIN
        count = max(1, min(self.associations, len(uids) // max(1, per_lane)))
        return [uids[i::count] for i in range(count)]

    def _run_lane(self, identifiers: list[Dataset], shared: _Shared, sop_class_uids: Collection[str] | None,
                  deadline: float | None) -> _Outcome:
        assoc = _Association(self.node, sop_class_uids, shared, deadline, self.dataset_bytes_max)
        try:
            assoc.open()
            for identifier in identifiers:
                if shared.should_stop():
                    raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
                received_before = assoc.outcome.received
                command, response_identifier = self._get_one(assoc, identifier)
                self._final(assoc, identifier, command, response_identifier, received_before)
            assoc.release()
            return assoc.outcome
        except BaseException:
            assoc.abort()
            raise
        finally:
            assoc.close()

    def _get_one(self, assoc: _Association,
                 identifier: Dataset) -> tuple[dict[int, int | str], Dataset | None]:
        node = self.node
        received_before = assoc.outcome.received

        def hint() -> str:  # an abort before the first instance is how Orthanc refuses C-GET from unknown callers
            if assoc.outcome.received > received_before:
                return ""
            return f" (it may not allow C-GET from our AE title '{node.calling_ae}')"

        try:
            return assoc.run_get(identifier)
        except _IdleTimeout:
            raise PacsTimeoutError(f"The PACS {node.describe()} stopped answering: nothing received for "
                                   f"{node.timeouts.dimse_s:g} s during the C-GET.") from None
        except _DeadlineExceeded:
            raise PacsTimeoutError(f"The C-GET from the PACS {node.describe()} did not finish within its "
                                   f"time limit.") from None
        except ConnectionAbortedError as exc:
            raise AssociationAbortedError(
                f"The PACS {node.describe()} aborted the association during the C-GET{hint()}.") from exc
        except ProtocolError as exc:
            raise AssociationAbortedError(
                f"The PACS {node.describe()} broke the DICOM protocol during the C-GET: {exc}.") from exc
        except OSError as exc:
            if isinstance(exc.__cause__, TimeoutError):  # keepalive or unacknowledged data: the peer is gone
                raise AssociationAbortedError(
                    f"The PACS {node.describe()} stopped answering at the network level during the C-GET "
                    f"(the server or the network to it is down).") from exc
            raise AssociationAbortedError(
                f"The PACS {node.describe()} closed the connection during the C-GET{hint()}.") from exc

    def _final(self, assoc: _Association, identifier: Dataset, command: dict[int, int | str],
               response_identifier: Dataset | None, received_before: int) -> None:
        """Add up the final C-GET-RSP (PS3.4 C.4.3.1.6) and raise for a cancel or failure status."""
        outcome = assoc.outcome
        received = outcome.received - received_before
        completed = command.get(CommandTag.NUMBER_OF_COMPLETED_SUBOPERATIONS)
        failed = command.get(CommandTag.NUMBER_OF_FAILED_SUBOPERATIONS)
        warnings = command.get(CommandTag.NUMBER_OF_WARNING_SUBOPERATIONS)
        # The final response carries the counts; when a peer leaves them out, count ourselves.
        outcome.completed += completed if isinstance(completed, int) else received
        outcome.warnings += warnings if isinstance(warnings, int) else 0
        requested = _count_uids(identifier)
        if isinstance(failed, int):
            outcome.failed += failed
        elif requested is not None:
            outcome.failed += max(requested - received, 0)
        if response_identifier is not None and "FailedSOPInstanceUIDList" in response_identifier:
            value = response_identifier.FailedSOPInstanceUIDList
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            outcome.failed_uids += [str(v) for v in values if v]
        if assoc.shared.fatal is not None:
            raise assoc.shared.fatal
        code = int(command.get(CommandTag.STATUS, DimseStatus.UNABLE_TO_PROCESS))
        if code == DimseStatus.CANCEL:
            if assoc.cancel_deadline is not None:
                raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
            raise PacsStatusError(f"The PACS {self.node.describe()} cancelled the C-GET.", code)
        if code_to_category(code) == STATUS_FAILURE:
            raise PacsStatusError(
                f"The PACS {self.node.describe()} could not complete the C-GET: {describe_status(code)}.", code)


def _listed_uids(identifier: Dataset) -> frozenset[str] | None:
    """The SOP Instance UIDs an IMAGE-level identifier asks for (None at STUDY and SERIES level)."""
    if identifier.QueryRetrieveLevel != "IMAGE":
        return None
    value = identifier.SOPInstanceUID
    values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return frozenset(str(v) for v in values)


def _count_uids(identifier: Dataset) -> int | None:
    if identifier.QueryRetrieveLevel != "IMAGE":
        return None
    value = identifier.SOPInstanceUID
    return len(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else 1


def _result(outcomes: list[_Outcome], shared: _Shared, seconds: float) -> RetrieveResult:
    refused_late = len(shared.refused_uids)  # acknowledged to the peer, then refused by a store worker
    return RetrieveResult(
        completed=max(sum(o.completed for o in outcomes) - refused_late, 0),
        failed=sum(o.failed for o in outcomes) + refused_late,
        warnings=sum(o.warnings for o in outcomes),
        bytes=shared.bytes,
        seconds=seconds,
        sop_instance_uids=tuple(shared.uids),
        failed_sop_instance_uids=tuple(u for o in outcomes for u in o.failed_uids) + tuple(shared.refused_uids),
    )


def set_keepalive(sock: socket.socket) -> None:
    """Fast TCP keepalive and a bound on unacknowledged data (see KEEPALIVE_IDLE_S, UNACKED_MAX_S); where the
    platform lacks the per-socket knobs, plain keepalive."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", UNACKED_MAX_S * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
