"""A lean DICOM association on a raw socket (PS3.8): what the lean C-GET (:mod:`viewer.pacs.fastget`) and the
lean C-FIND (:mod:`viewer.pacs.fastfind`) share.

1. TCP connect with fast keepalive and a bound on unacknowledged data (a cut link or a moved virtual IP is
   noticed in seconds, not after the DIMSE silence timeout); A-ASSOCIATE-RQ with the caller's presentation
   contexts and SCP/SCU Role Selection items (PS3.8 9.3.2, PS3.7 D.3.3.4); A-ASSOCIATE-AC/RJ/A-ABORT.
2. Messages: command sets in Implicit VR Little Endian, data sets in the negotiated syntax, split into P-DATA-TF
   PDUs that fit the peer's maximum (PS3.8 9.3.5); :meth:`LeanAssociation.receive` reassembles the peer's
   commands and data sets from PDVs (PS3.8 E.2) into :meth:`LeanAssociation.on_message` calls.
3. A-RELEASE (PS3.8 7.2), or A-ABORT on any error; the socket is always closed.

Waiting: ``Timeouts.connect_s`` for TCP, ``acse_s`` for the A-ASSOCIATE-AC and A-RELEASE-RP, ``dimse_s`` as an
*idle* timeout (no byte at all for that long), an optional whole-transfer deadline, and :meth:`poll` every
:data:`POLL_S` while nothing arrives (a subclass starts or enforces a C-CANCEL there).

Limits (the length fields of a PDU are untrusted, PS3.8 D.1): a PDU longer than we announced
(:data:`MAX_PDU_BYTES`) or a command set longer than that aborts the association; a data set longer than the
subclass's ``dataset_bytes_max`` (PDV headers counted) is drained without being kept and handed on as ``None``,
and one longer than :data:`DRAIN_FACTOR` times that aborts the association.

Copies: each received byte is copied once by the kernel into the receive buffer; data set fragments are kept as
views of the buffer until the data set is complete (:class:`PduReader`), then joined once by the receiver.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    NodeUnreachableError,
    PacsError,
    PacsTimeoutError,
)
from viewer.limits import MAX_PDU_BYTES, PROGRESS_BYTES
from viewer.pacs.node import Node
from viewer.pacs.pdu import (
    DATA_SET_ABSENT,
    MCH_COMMAND,
    MCH_LAST_FRAGMENT,
    PDU_HEADER,
    PDU_HEADER_BYTES,
    PDV_HEADER,
    PDV_HEADER_BYTES,
    AssociateAccept,
    AssociateRequest,
    CommandTag,
    PduType,
    ProposedContext,
    ProtocolError,
    decode_associate_ac,
    decode_command,
    encode_abort,
    encode_associate_rq,
    encode_p_data,
    encode_release_rq,
)

log = logging.getLogger(__name__)

RECV_BUFFER_BYTES = MAX_PDU_BYTES + PDU_HEADER_BYTES + (1 << 20)  # one whole PDU plus room for large reads
POLL_S = 0.1  # how often a blocked receive checks the cancel event and the deadline
SOCKET_BUFFER_BYTES = 4 << 20
SPARE_BUFFERS_MAX = 2  # receive buffers kept for reuse after a large data set
# A data set over the subclass's limit is drained (refused, the association goes on) up to this many times the
# limit; a peer still sending then is not sending DICOM we can use, and the association is aborted.
DRAIN_FACTOR = 4
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
# pynetdicom's (PS3.7 D.3.3.2), so that the files of the lean transports match those of the C-MOVE Storage SCP
# (pynetdicom's) byte for byte; written out so that the lean transports do not import pynetdicom (~0.3 s with
# pydicom).  tests/pacs/test_fastget.py checks them against the installed pynetdicom.
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"
IMPLEMENTATION_VERSION_NAME = "PYNETDICOM_304"

# PS3.8 9.3.4 (Result Source, Reason/Diag.) -> (words, transient).  (1, 3) and (1, 7) are worded in full below.
# "rejected-transient" reasons (PS3.8 9.3.4: result 2) are worth another try; permanent ones are not.
_REJECT_REASONS = {
    (1, 2): "the application context name is not supported",
    (2, 2): "it does not support our protocol version",
    (3, 1): "it is busy (temporary congestion); try again later",
    (3, 2): "it has reached its limit of associations; try again later",
}
REJECTED_TRANSIENT = 2  # PS3.8 9.3.4 Result field


def rejection_error(node: Node, result: int | None, source: int | None, reason: int | None) -> AssociationRejectedError:
    """The error for an A-ASSOCIATE-RJ (PS3.8 9.3.4) in plain words; transient when the peer said so."""
    ours, theirs = node.calling_ae, node.ae_title
    if (source, reason) == (1, 3):
        text = (f"The PACS at {node.address} rejected our association: calling AE title '{ours}' is not known to it "
                f"(called AE '{theirs}').")
    elif (source, reason) == (1, 7):
        text = (f"The PACS at {node.address} rejected our association: it is not called '{theirs}' "
                f"(called AE title not recognised; calling AE '{ours}').")
    else:
        words = _REJECT_REASONS.get((source, reason), "no reason given")  # type: ignore[arg-type]
        text = (f"The PACS at {node.address} rejected our association: {words} (calling AE '{ours}', "
                f"called AE '{theirs}').")
    return AssociationRejectedError(text, transient=result == REJECTED_TRANSIENT)


def unreachable_error(node: Node, exc: OSError) -> NodeUnreachableError:
    """Why a TCP connection to `node` failed, in plain words."""
    if isinstance(exc, ConnectionRefusedError):
        return NodeUnreachableError(f"The PACS at {node.address} refused the connection (nothing is listening there).")
    if isinstance(exc, socket.gaierror):
        return NodeUnreachableError(f"The PACS host name '{node.host}' could not be found.")
    if isinstance(exc, TimeoutError):
        return NodeUnreachableError(f"The PACS at {node.address} did not answer within {node.timeouts.connect_s:g} s "
                                    "(host down or port blocked).")
    return NodeUnreachableError(f"The PACS at {node.address} cannot be reached ({exc.strerror or exc}).")


def set_keepalive(sock: socket.socket) -> None:
    """Fast TCP keepalive and a bound on unacknowledged data (see KEEPALIVE_IDLE_S, UNACKED_MAX_S); where the
    platform lacks the per-socket knobs, plain keepalive."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL_S),
                        ("TCP_KEEPCNT", KEEPALIVE_PROBES), ("TCP_USER_TIMEOUT", UNACKED_MAX_S * 1000)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


class IdleTimeout(Exception):
    """Nothing arrived for the idle timeout."""


class DeadlineExceeded(Exception):
    """The whole-transfer deadline passed."""


class PduReader:
    """Whole PDUs from a socket via reused buffers and large ``recv_into`` calls.

    A PDU body is a view into the current buffer.  The caller may keep views of data set fragments until
    the data set is complete (:meth:`pin`), which saves a copy per fragment: while pinned, the buffer is
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
        self.last_bytes = time.monotonic()  # the last progress: a whole PDU, or PROGRESS_BYTES of one
        self._unmarked = 0  # bytes received since then
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
            self._unmarked += got
            if self._unmarked >= PROGRESS_BYTES:
                self._progress()

    def _progress(self) -> None:
        self.last_bytes = time.monotonic()
        self._unmarked = 0

    def _idle(self) -> None:
        now = time.monotonic()
        if now - self.last_bytes > self.idle_s:
            raise IdleTimeout()
        if self.deadline is not None and now > self.deadline:
            raise DeadlineExceeded()
        if self.on_poll is not None:
            self.on_poll()

    def next_pdu(self) -> tuple[int, memoryview]:
        """The next PDU's type and body; the body is valid until the next call."""
        self._fill(PDU_HEADER_BYTES)
        pdu_type, _, length = PDU_HEADER.unpack_from(self.buf, self.start)
        if length > MAX_PDU_BYTES:
            raise ProtocolError(f"the peer sent a PDU of {length} bytes, more than the {MAX_PDU_BYTES} we accept")
        self._fill(PDU_HEADER_BYTES + length)
        self._progress()
        body_start = self.start + PDU_HEADER_BYTES
        self.start = body_start + length
        return pdu_type, self.view[body_start:self.start]


Message = tuple[int, dict[int, int | str], list[memoryview] | None]
"""(presentation context ID, command elements, data set fragments or None when absent or over the limit)."""


class LeanAssociation:
    """One association: negotiation, messages both ways, release or abort.  Subclasses handle the messages
    (:meth:`on_message`) and may act on silence (:meth:`poll`)."""

    service = "DIMSE"  # how messages name the operation ("C-GET", "C-FIND")
    dataset_bytes_max = 1 << 20

    def __init__(self, node: Node, contexts: list[ProposedContext], scp_role_sop_classes: list[str],
                 deadline: float | None = None) -> None:
        self.node = node
        self.deadline = deadline
        self.sock: socket.socket | None = None
        self.reader: PduReader | None = None
        self.accept = AssociateAccept()
        self.syntax_by_context: dict[int, str] = {}
        self.msg_id = 0
        self.established = False
        self.request = AssociateRequest(
            calling_ae=node.calling_ae, called_ae=node.ae_title, contexts=contexts,
            scp_role_sop_classes=scp_role_sop_classes, max_pdu_bytes=MAX_PDU_BYTES,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
        )

    # -- negotiation (PS3.8 7.1, 9.3.2) -------------------------------------------------------------------

    def open(self) -> None:
        """Connect and negotiate (PS3.8 7.1); raise the translated reason when that fails."""
        self.sock = self._connect()
        self.reader = PduReader(self.sock, self.node.timeouts.acse_s, self.deadline, self.poll)
        node = self.node
        try:
            self.send(encode_associate_rq(self.request))
            pdu_type, body = self.reader.next_pdu()
            if pdu_type == PduType.A_ASSOCIATE_AC:
                self.accept = decode_associate_ac(body)
        except IdleTimeout:
            raise PacsTimeoutError(f"The PACS at {node.address} accepted the connection but did not answer the "
                                   f"association request within {node.timeouts.acse_s:g} s.") from None
        except DeadlineExceeded:
            raise PacsTimeoutError(f"The {self.service} from the PACS {node.describe()} did not finish within its "
                                   f"time limit.") from None
        except ProtocolError as exc:
            raise AssociationAbortedError(
                f"The PACS at {node.address} answered our association request with a broken PDU ({exc}).") from exc
        except OSError as exc:
            if node.tls is not None:  # a TLS 1.3 PACS refuses our certificate after the handshake, i.e. here
                from viewer.pacs.tls import after_handshake_error

                raise after_handshake_error(node, exc, self.sock) from exc
            raise AssociationAbortedError(
                f"The PACS at {node.address} closed the connection without answering our association request.") from exc
        if pdu_type == PduType.A_ASSOCIATE_RJ:
            raw = bytes(body)
            result, source, reason = (raw[1], raw[2], raw[3]) if len(raw) >= 4 else (None, None, None)
            raise rejection_error(node, result, source, reason)
        if pdu_type == PduType.A_ABORT:
            raise AssociationAbortedError(f"The PACS {node.describe()} aborted the association request "
                                          f"(calling AE '{node.calling_ae}').")
        if pdu_type != PduType.A_ASSOCIATE_AC:
            raise AssociationAbortedError(f"The PACS {node.describe()} answered the association request with a "
                                          f"PDU of type 0x{pdu_type:02X}.")
        self.syntax_by_context = self.accept.accepted
        self.reader.idle_s = node.timeouts.dimse_s
        self.established = True

    def accepted_context(self, abstract_syntax: str) -> int:
        """The ID of an accepted context for `abstract_syntax`, 0 when the peer accepted none."""
        return next((cx.context_id for cx in self.request.contexts
                     if cx.abstract_syntax == abstract_syntax and cx.context_id in self.accept.accepted), 0)

    def _connect(self) -> socket.socket:
        node = self.node
        try:
            sock = socket.create_connection((node.host, node.port), timeout=node.timeouts.connect_s)
        except OSError as exc:
            raise unreachable_error(node, exc) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # our messages are small; never delay them
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)
        set_keepalive(sock)
        if node.tls is not None:
            from viewer.pacs.tls import wrap

            sock = wrap(sock, node)  # closes the socket and raises the reason when the handshake fails
        sock.settimeout(POLL_S)
        return sock

    # -- sending ------------------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Send with the DIMSE timeout (receives poll every POLL_S; a send must not give up that fast)."""
        assert self.sock is not None
        self.sock.settimeout(self.node.timeouts.dimse_s)
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(POLL_S)

    def send_message(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        peer_max = self.accept.peer_max_pdu_bytes
        pdus = encode_p_data(context_id, True, command, peer_max)
        if dataset is not None:
            pdus += encode_p_data(context_id, False, dataset, peer_max)
        self.send(b"".join(pdus))

    def next_msg_id(self) -> int:
        self.msg_id = self.msg_id % 0xFFFF + 1  # PS3.7 E.1: Message ID is an unsigned 16-bit value
        return self.msg_id

    # -- receiving (PS3.8 9.3.5, E.2) ---------------------------------------------------------------------

    def poll(self) -> None:
        """Runs whenever a receive waited POLL_S without data (a subclass starts or enforces a C-CANCEL)."""

    def on_message(self, context_id: int, command: dict[int, int | str], data: list[memoryview] | None,
                   dataset_bytes: int) -> object:
        """One complete message; a result other than None ends :meth:`receive` with it."""
        raise NotImplementedError

    def receive(self) -> object:
        """Read messages until :meth:`on_message` returns something; return that."""
        assert self.reader is not None
        reader = self.reader
        command = bytearray()
        fragments: list[memoryview] = []
        dataset_bytes = 0
        request: dict[int, int | str] | None = None
        deadline = self.deadline
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded()
            pdu_type, body = reader.next_pdu()
            if pdu_type != PduType.P_DATA_TF:
                self._unexpected_pdu(pdu_type)
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
                result: object = None
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
                    result = self.on_message(context_id, request, None, 0)
                    request = None
                else:
                    if request is None:
                        raise ProtocolError("the peer sent a data set before its command")
                    # PDV headers count too, so that endless empty fragments reach the limit as well.
                    dataset_bytes += len(fragment) + PDV_HEADER_BYTES
                    if dataset_bytes <= self.dataset_bytes_max:
                        fragments.append(fragment)  # a view: joined once the data set is complete
                        reader.pin()
                    elif fragments:  # over the limit: keep nothing of it, drain the rest
                        fragments = []
                        reader.unpin()
                    if dataset_bytes > DRAIN_FACTOR * self.dataset_bytes_max:
                        raise ProtocolError(f"the peer sent a data set of more than {DRAIN_FACTOR} times the "
                                            f"{self.dataset_bytes_max} bytes we accept")
                    if not last:
                        continue
                    data = fragments if dataset_bytes <= self.dataset_bytes_max else None
                    try:
                        result = self.on_message(context_id, request, data, dataset_bytes)
                    finally:
                        request, fragments, dataset_bytes = None, [], 0
                        reader.unpin()
                if result is not None:
                    return result

    def _unexpected_pdu(self, pdu_type: int) -> None:
        if pdu_type == PduType.A_ABORT:
            raise ConnectionAbortedError("the peer aborted the association")
        if pdu_type == PduType.A_RELEASE_RQ:
            raise ConnectionAbortedError(f"the peer released the association in the middle of the {self.service}")
        raise ProtocolError(f"the peer sent an unexpected PDU of type 0x{pdu_type:02X}")

    def translate(self, exc: BaseException, nothing_yet: bool) -> PacsError:
        """The error a failure of the operation means for the user.  `nothing_yet`: the peer had answered
        nothing; an abort then is how Orthanc refuses callers it does not know, so the hint says so."""
        node, service = self.node, self.service
        hint = (f" (it may not allow {service} from our AE title '{node.calling_ae}': check that the PACS lists it)"
                if nothing_yet else "")
        if isinstance(exc, IdleTimeout):
            return PacsTimeoutError(f"The PACS {node.describe()} stopped answering: nothing received for "
                                    f"{node.timeouts.dimse_s:g} s during the {service}.")
        if isinstance(exc, DeadlineExceeded):
            return PacsTimeoutError(f"The {service} from the PACS {node.describe()} did not finish within its "
                                    f"time limit.")
        if isinstance(exc, ConnectionAbortedError):
            return AssociationAbortedError(f"The PACS {node.describe()} aborted the association during the "
                                           f"{service}{hint}.")
        if isinstance(exc, ProtocolError):
            return AssociationAbortedError(f"The PACS {node.describe()} broke the DICOM protocol during the "
                                           f"{service}: {exc}.")
        if isinstance(exc, OSError) and isinstance(exc.__cause__, TimeoutError):
            return AssociationAbortedError(
                f"The PACS {node.describe()} stopped answering at the network level during the {service} "
                f"(the server or the network to it is down).")
        return AssociationAbortedError(f"The PACS {node.describe()} closed the connection during the {service}{hint}.")

    # -- ending -------------------------------------------------------------------------------------------

    def release(self) -> None:
        """A-RELEASE-RQ, then wait up to acse_s for the A-RELEASE-RP (PS3.8 7.2); abort if none comes."""
        if self.sock is None or self.reader is None:
            return
        try:
            self.send(encode_release_rq())
            self.reader.idle_s = self.node.timeouts.acse_s
            self.reader.on_poll = None
            while True:
                pdu_type, _ = self.reader.next_pdu()
                if pdu_type in (PduType.A_RELEASE_RP, PduType.A_ABORT):
                    self.established = False
                    break
        except (OSError, IdleTimeout, DeadlineExceeded, ProtocolError):
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
