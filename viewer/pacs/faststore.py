"""The C-STORE Service Class User (PS3.4 B.2, PS3.7 9.1.1 / 9.3.1) on a lean association
(:mod:`viewer.pacs.association`): what :meth:`viewer.pacs.dimse.DimseClient.store` sends with.

pynetdicom decodes each file into a Dataset, re-encodes it, and moves every PDU through its reactor thread (an
event per PDU, a 1 ms sleep when idle); against a PACS with a 16 KiB maximum PDU that is most of the time of a
send.  Here one thread does what PS3.7/PS3.8 require:

1. Each Part 10 file is read only as far as its File Meta Information (:func:`read_part10`): SOP Class and
   Instance UID, transfer syntax and where the data set starts.  Nothing is decoded.
2. A-ASSOCIATE-RQ with one presentation context per (SOP class, transfer syntax) pair, that syntax alone
   (PS3.8 9.3.2.2).  A pair the peer does not accept makes only its instances refused, with SOP Class Not
   Supported (0x0122); they are not sent.
3. Per instance, C-STORE-RQ (PS3.7 9.3.1.1: Affected SOP Class/Instance UID, Message ID, Priority medium,
   Command Data Set Type "present") and the data set exactly as it is stored in the file (the bytes after the
   File Meta Information, in the file's transfer syntax; a deflated one as it is), in P-DATA-TF PDUs that fit
   the peer's maximum PDU length; then wait for its C-STORE-RSP (PS3.7 9.3.1.2) and hand its status to
   ``on_stored(uid, status)`` before the next instance goes out.
4. A-RELEASE, or A-ABORT on any error.

Waiting: the node's ``dimse_s`` bounds silence (nothing received for that long after a request went out) and
each send; ``acse_s`` the negotiation and the release.  A broken association raises what the lean C-GET raises
(:meth:`~viewer.pacs.association.LeanAssociation.translate`: AssociationAbortedError, PacsTimeoutError), so
:func:`viewer.pacs.retry.classify` calls it "aborted" or "timeout" and the resumable send checks the instance
that was in flight (:mod:`viewer.pacs.resume`).  The caller's cancel event is looked at between instances and
while waiting for an answer (then the association is aborted: that instance may or may not be held).
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from viewer.errors import MalformedDicomError, OperationCancelled, PacsError
from viewer.library.store import is_valid_uid
from viewer.pacs.association import DeadlineExceeded, IdleTimeout, LeanAssociation
from viewer.pacs.contexts import PRESENTATION_CONTEXTS_MAX
from viewer.pacs.node import Node
from viewer.pacs.pdu import (
    PRIORITY_MEDIUM,
    CommandField,
    CommandTag,
    ProposedContext,
    ProtocolError,
    encode_command,
    encode_p_data,
)
from viewer.pacs.status import FAILURE, DimseStatus, category, describe_status

log = logging.getLogger(__name__)

DATA_SET_PRESENT = 0x0000  # (0000,0800): any value but 0x0101 says a data set follows (PS3.7 E.1-1)
RESPONSE_BYTES_MAX = 1 << 16  # a C-STORE-RSP carries no data set; anything a peer attaches is drained
CANCELLED = "The operation was cancelled."

_PREAMBLE_BYTES = 128
_MAGIC = b"DICM"
_META_GROUP = 0x0002
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<L")
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_MEDIA_SOP_CLASS = 0x0002
_MEDIA_SOP_INSTANCE = 0x0003
_TRANSFER_SYNTAX = 0x0010


@dataclass(frozen=True)
class Part10:
    """What sending one Part 10 file needs; the data set is ``data[offset:]``, untouched."""

    data: bytes
    offset: int
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def _unreadable(why: str) -> MalformedDicomError:
    return MalformedDicomError(f"The image cannot be sent: it is not a readable DICOM file ({why}).")


def read_part10(data: bytes) -> Part10:
    """The File Meta Information (PS3.10 7.1: Explicit VR Little Endian, group 0002) of a Part 10 file and where
    its data set starts; a file we cannot send raises MalformedDicomError."""
    if len(data) < _PREAMBLE_BYTES + 4 or data[_PREAMBLE_BYTES:_PREAMBLE_BYTES + 4] != _MAGIC:
        raise _unreadable("no DICM prefix")
    offset, end = _PREAMBLE_BYTES + 4, len(data)
    values: dict[int, str] = {}
    while offset + 8 <= end:
        group, element, vr, length = _EXPLICIT_SHORT.unpack_from(data, offset)
        if group != _META_GROUP:
            break
        offset += 8
        if vr in _LONG_VRS:
            if offset + 4 > end:
                raise _unreadable("truncated file meta information")
            length = _LONG_LENGTH.unpack_from(data, offset)[0]
            offset += 4
        if offset + length > end:
            raise _unreadable("truncated file meta information")
        if element in (_MEDIA_SOP_CLASS, _MEDIA_SOP_INSTANCE, _TRANSFER_SYNTAX):
            values[element] = data[offset:offset + length].rstrip(b"\x00 ").decode("ascii", "replace")
        offset += length
    missing = [name for element, name in ((_MEDIA_SOP_CLASS, "SOP class"), (_MEDIA_SOP_INSTANCE, "SOP instance"),
                                          (_TRANSFER_SYNTAX, "transfer syntax")) if not values.get(element)]
    if missing:
        raise _unreadable("no " + ", ".join(missing) + " in its file meta information")
    if offset >= end:
        raise _unreadable("no data set")
    for element in (_MEDIA_SOP_CLASS, _MEDIA_SOP_INSTANCE, _TRANSFER_SYNTAX):
        if not is_valid_uid(values[element]):
            what = "SOP Instance UID" if element == _MEDIA_SOP_INSTANCE else "file meta information"
            raise MalformedDicomError(f"The image cannot be sent: its {what} is not valid.")
    return Part10(data, offset, values[_MEDIA_SOP_CLASS], values[_MEDIA_SOP_INSTANCE], values[_TRANSFER_SYNTAX])


class _StoreAssociation(LeanAssociation):
    """One association, many C-STOREs, one at a time."""

    service = "C-STORE"
    dataset_bytes_max = RESPONSE_BYTES_MAX

    def __init__(self, node: Node, pairs: Sequence[tuple[str, str]], cancel: threading.Event | None) -> None:
        contexts = [ProposedContext(2 * i + 1, sop_class, (syntax,)) for i, (sop_class, syntax) in enumerate(pairs)]
        super().__init__(node, contexts, [])
        self.cancel = cancel
        self.context_of: dict[tuple[str, str], int] = {}
        self.pending_msg_id = 0

    def open(self) -> None:
        super().open()
        for cx in self.request.contexts:
            if self.accept.accepted.get(cx.context_id) == cx.transfer_syntaxes[0]:
                self.context_of[(cx.abstract_syntax, cx.transfer_syntaxes[0])] = cx.context_id

    def poll(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise OperationCancelled(CANCELLED)

    def send_data(self, data: bytes) -> None:
        """Send with the DIMSE timeout; a send that cannot go on for that long is silence too."""
        try:
            self.send(data)
        except TimeoutError as exc:
            if exc.errno is None:  # our socket timeout, not the kernel's ETIMEDOUT
                raise IdleTimeout() from exc
            raise

    def store(self, instance: Part10, context_id: int) -> int:
        """C-STORE-RQ and its data set; the status of the C-STORE-RSP."""
        self.pending_msg_id = self.next_msg_id()
        command = encode_command({
            CommandTag.AFFECTED_SOP_CLASS_UID: instance.sop_class_uid,
            CommandTag.COMMAND_FIELD: CommandField.C_STORE_RQ,
            CommandTag.MESSAGE_ID: self.pending_msg_id,
            CommandTag.PRIORITY: PRIORITY_MEDIUM,
            CommandTag.COMMAND_DATA_SET_TYPE: DATA_SET_PRESENT,
            CommandTag.AFFECTED_SOP_INSTANCE_UID: instance.sop_instance_uid,
        })
        peer_max = self.accept.peer_max_pdu_bytes
        dataset = memoryview(instance.data)[instance.offset:]
        pdus = encode_p_data(context_id, True, command, peer_max)
        pdus += encode_p_data(context_id, False, dataset, peer_max)  # type: ignore[arg-type]  # slices of a view
        self.send_data(b"".join(pdus))
        assert self.reader is not None
        self.reader._progress()  # the silence timeout counts from the end of our request
        response = self.receive()
        assert isinstance(response, dict)
        status = response.get(CommandTag.STATUS)
        if not isinstance(status, int):
            raise ProtocolError("the peer sent a C-STORE-RSP without a status")
        return status

    def on_message(self, context_id: int, command: dict[int, int | str], data: list[memoryview] | None,
                   dataset_bytes: int) -> object:
        field_value = command.get(CommandTag.COMMAND_FIELD)
        if field_value != CommandField.C_STORE_RSP:
            raise ProtocolError(f"the peer sent an unexpected DIMSE message (command field 0x{field_value or 0:04X})")
        answered = command.get(CommandTag.MESSAGE_ID_BEING_RESPONDED_TO)
        if answered is not None and answered != self.pending_msg_id:
            raise ProtocolError(f"the peer answered message {answered}, not {self.pending_msg_id}")
        return command


class FastStoreClient:
    """C-STORE of Part 10 files to one node, on one association per :meth:`store` call."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def store(
        self,
        instances: Sequence[bytes],
        *,
        on_stored: Callable[[str, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, int]:
        """Send the files in order; ``{SOP Instance UID: status}`` for every instance that got an answer (see
        :meth:`viewer.pacs.dimse.DimseClient.store`).  Every file's meta information is read before the
        association opens, so a file we cannot send is refused before anything is sent."""
        parts = [read_part10(data) for data in instances]
        if not parts:
            return {}
        pairs = list(dict.fromkeys((p.sop_class_uid, p.transfer_syntax_uid) for p in parts))
        if len(pairs) > PRESENTATION_CONTEXTS_MAX:
            raise PacsError(f"Too many kinds of images ({len(pairs)}) for one association; send fewer at once.")
        _check_cancel(cancel)
        assoc = _StoreAssociation(self.node, pairs, cancel)
        answers: dict[str, int] = {}
        try:
            assoc.open()
            for part in parts:
                _check_cancel(cancel)
                uid = part.sop_instance_uid
                context_id = assoc.context_of.get((part.sop_class_uid, part.transfer_syntax_uid))
                if context_id is None:
                    # the node refused this kind of image when the association was negotiated: this one only
                    log.warning("C-STORE of %s not sent: the node does not accept its SOP class", uid)
                    code = int(DimseStatus.SOP_CLASS_NOT_SUPPORTED)
                else:
                    try:
                        code = assoc.store(part, context_id)
                    except (OSError, ProtocolError, IdleTimeout, DeadlineExceeded) as exc:
                        raise assoc.translate(exc, nothing_yet=not answers) from exc
                    if category(code) == FAILURE and code != DimseStatus.DUPLICATE_SOP_INSTANCE:
                        log.warning("C-STORE of %s refused: %s", uid, describe_status(code))
                answers[uid] = code
                if on_stored is not None:
                    on_stored(uid, code)
            assoc.release()
            return answers
        except BaseException:
            assoc.abort()
            raise
        finally:
            assoc.close()


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled(CANCELLED)
