"""The C-GET Service Class User (PS3.4 C.4.3) on a lean association (:mod:`viewer.pacs.association`): the
only C-GET the viewer has.

pynetdicom spends about 2.5 ms of Python per received instance (a Dataset per command, an event per PDU, a
reactor that sleeps 1 ms when idle).  Here one thread per association does only what PS3.7/PS3.8 require:

1. A-ASSOCIATE-RQ with the presentation contexts and SCP/SCU Role Selection items of
   :func:`viewer.pacs.contexts.get_presentation_contexts` (PS3.8 9.3.2, PS3.7 D.3.3.4).
2. C-GET-RQ (PS3.7 9.1.3): command set in Implicit VR Little Endian, identifier in the negotiated syntax.
3. Each C-STORE-RQ sub-operation becomes Part 10 bytes (preamble, File Meta Information, data set exactly as
   received) offered to the retrieval's :class:`~viewer.pacs.sink.InstanceSink`, which accepts or refuses it;
   its answer is the C-STORE-RSP status (PS3.7 9.3.1.2).  C-GET-RSP pending/final (PS3.7 9.3.3.2) carry the
   sub-operation counts.
4. A-RELEASE, or A-ABORT on any error.

Cancelling (a ``threading.Event``) sends a C-CANCEL-RQ (PS3.7 9.3.3.3), keeps offering what still arrives, and
aborts if the peer has not ended the operation within :data:`CANCEL_GRACE_S`.  A data set longer than
``dataset_bytes_max`` is drained and refused with Out of Resources.

Parallelism: a SOP Instance UID list is split over ``associations`` threads (socket I/O releases the GIL).
Two are the default: on two cores a third measured slower (the sink's Python work then competes with the
receiving threads for the GIL).

Into the library: with a :class:`~viewer.library.writer.GroupWriter` behind the sink, each instance is
acknowledged at once and stored in group commits; it counts as received (``sop_instance_uids``, progress) only
once committed, and :meth:`FastGetClient.get` flushes before it returns or raises, so the library says exactly
what is held afterwards.  The File Meta Information carries pynetdicom's implementation class UID and version
name, as pynetdicom's ``event.encoded_dataset()`` would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from viewer.errors import OperationCancelled, PacsError, PacsStatusError
from viewer.limits import DATASET_BYTES_MAX
from viewer.pacs.association import DeadlineExceeded, IdleTimeout, LeanAssociation
from viewer.pacs.contexts import STUDY_ROOT_GET, ImplicitVRLittleEndian, get_presentation_contexts
from viewer.pacs.dimse import LANE_INSTANCES_MIN
from viewer.pacs.fastfind import identifier_dict
from viewer.pacs.node import Node, Progress, RetrieveResult, Sink
from viewer.pacs.pdu import (
    DATA_SET_ABSENT,
    PRIORITY_MEDIUM,
    CommandField,
    CommandTag,
    ProtocolError,
    encode_command,
    encode_file_meta,
)
from viewer.pacs.query import Identifier, retrieve_identifiers
from viewer.pacs.sink import TOO_LARGE, InstanceSink
from viewer.pacs.status import FAILURE, PENDING, DimseStatus, category, describe_status

log = logging.getLogger(__name__)

GET_MODEL = STUDY_ROOT_GET
CANCEL_GRACE_S = 5.0  # after a C-CANCEL-RQ the peer has this long to send its final C-GET-RSP
DEFAULT_ASSOCIATIONS = 2
ASSOCIATIONS_MAX = 8
CANCELLED = "The retrieval was cancelled; the images already received were kept."


@dataclass
class _Outcome:
    """What one association's final C-GET-RSPs said (PS3.4 C.4.3.1.6)."""

    offered: int = 0  # C-STORE-RQs whose data set the sink accepted on this association
    completed: int = 0
    failed: int = 0
    warnings: int = 0
    failed_uids: list[str] = field(default_factory=list)


class _Lanes:
    """What the lanes of one retrieval share: the sink, the caller's cancel, and 'one lane failed: stop'."""

    def __init__(self, sink: InstanceSink, cancel: threading.Event | None) -> None:
        self.sink = sink
        self.cancel = cancel
        self.failed = threading.Event()

    def should_stop(self) -> bool:
        return self.failed.is_set() or self.sink.fatal is not None or (self.cancel is not None and self.cancel.is_set())


class _GetAssociation(LeanAssociation):
    """One association of a C-GET: one or more C-GET requests and their C-STORE sub-operations."""

    service = "C-GET"

    def __init__(self, node: Node, sop_class_uids: Collection[str] | None, lanes: _Lanes,
                 deadline: float | None, dataset_bytes_max: int) -> None:
        contexts, scp_role_sop_classes = get_presentation_contexts(sop_class_uids)
        super().__init__(node, contexts, scp_role_sop_classes, deadline)
        self.lanes = lanes
        self.dataset_bytes_max = dataset_bytes_max
        self.outcome = _Outcome()
        self.get_context_id = 0
        self.current_msg_id = 0
        self.cancel_deadline: float | None = None

    def open(self) -> None:
        super().open()
        self.get_context_id = self.accepted_context(GET_MODEL)
        if not self.get_context_id:
            raise PacsError(f"The PACS {self.node.describe()} does not offer C-GET (Study Root).")

    def send_get(self, identifier: Identifier) -> None:
        """C-GET-RQ (PS3.7 9.3.3.1)."""
        syntax = self.syntax_by_context[self.get_context_id]
        payload = identifier.encode(syntax == ImplicitVRLittleEndian)
        self.current_msg_id = self.next_msg_id()
        command = encode_command({
            CommandTag.AFFECTED_SOP_CLASS_UID: GET_MODEL,
            CommandTag.COMMAND_FIELD: CommandField.C_GET_RQ,
            CommandTag.MESSAGE_ID: self.current_msg_id,
            CommandTag.PRIORITY: PRIORITY_MEDIUM,
            CommandTag.COMMAND_DATA_SET_TYPE: 0x0000,  # any value but DATA_SET_ABSENT: an identifier follows
        })
        self.send_message(self.get_context_id, command, payload)

    def _send_cancel(self) -> None:
        """C-CANCEL-RQ (PS3.7 9.3.3.3)."""
        command = encode_command({
            CommandTag.COMMAND_FIELD: CommandField.C_CANCEL_RQ,
            CommandTag.MESSAGE_ID_BEING_RESPONDED_TO: self.current_msg_id,
            CommandTag.COMMAND_DATA_SET_TYPE: DATA_SET_ABSENT,
        })
        self.send_message(self.get_context_id, command)
        log.info("C-CANCEL sent to %s", self.node.address)

    def poll(self) -> None:
        """Start or enforce a cancellation (the caller's, or another lane failed)."""
        now = time.monotonic()
        if self.cancel_deadline is None and self.lanes.should_stop() and self.current_msg_id:
            self.cancel_deadline = now + CANCEL_GRACE_S
            try:
                self._send_cancel()
            except OSError:
                log.debug("C-CANCEL not sent", exc_info=True)
        if self.cancel_deadline is not None and now > self.cancel_deadline:
            raise OperationCancelled(CANCELLED)

    def run_get(self, identifier: Identifier) -> tuple[dict[int, int | str], dict[str, str] | None]:
        """Send one C-GET-RQ and serve its C-STORE sub-operations until the final C-GET-RSP; return it."""
        self.cancel_deadline = None
        self.send_get(identifier)
        return self.receive()  # type: ignore[return-value]

    def on_message(self, context_id: int, command: dict[int, int | str], data: list[memoryview] | None,
                   dataset_bytes: int) -> object:
        if self.lanes.should_stop():
            self.poll()
        field_value = command.get(CommandTag.COMMAND_FIELD)
        if field_value == CommandField.C_STORE_RQ:
            status = self._offer(context_id, command, data, dataset_bytes)
            self._send_store_rsp(context_id, command, status)
            return None
        if field_value == CommandField.C_GET_RSP:
            return self._on_c_get_rsp(command, data)
        raise ProtocolError(f"the peer sent an unexpected DIMSE message (command field 0x{field_value or 0:04X})")

    def _offer(self, context_id: int, request: dict[int, int | str], data: list[memoryview] | None,
               dataset_bytes: int) -> int:
        """Build the Part 10 bytes of one instance and offer them to the sink; the C-STORE-RSP status."""
        sink = self.lanes.sink
        uid = str(request.get(CommandTag.AFFECTED_SOP_INSTANCE_UID, ""))
        stopped = sink.refusal_status()
        if stopped is not None:
            return stopped
        if data is None:
            return sink.refuse(uid, TOO_LARGE) if dataset_bytes else DimseStatus.UNABLE_TO_PROCESS
        syntax = self.syntax_by_context.get(context_id)
        if syntax is None:  # a context we did not propose or the peer did not accept
            return DimseStatus.UNABLE_TO_PROCESS
        # PS3.10 7.1 File Meta Information, as pynetdicom's Event.file_meta builds it.
        meta = encode_file_meta(str(request.get(CommandTag.AFFECTED_SOP_CLASS_UID, "")), uid, syntax,
                                self.request.implementation_class_uid, self.request.implementation_version_name)
        status = sink.offer(b"".join((meta, *data)), uid)
        if status == DimseStatus.SUCCESS:
            self.outcome.offered += 1
        return status

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
        self.send_message(context_id, command)

    def _on_c_get_rsp(self, command: dict[int, int | str],
                      data: list[memoryview] | None) -> tuple[dict[int, int | str], dict[str, str] | None] | None:
        status = int(command.get(CommandTag.STATUS, DimseStatus.UNABLE_TO_PROCESS))
        if category(status) == PENDING:
            counts = [command.get(t) for t in (CommandTag.NUMBER_OF_REMAINING_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_COMPLETED_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_FAILED_SUBOPERATIONS,
                                               CommandTag.NUMBER_OF_WARNING_SUBOPERATIONS)]
            if all(isinstance(c, int) for c in counts):
                self.lanes.sink.note_total(sum(int(c) for c in counts))  # type: ignore[arg-type]
            return None
        identifier = None
        if data:
            syntax = self.syntax_by_context.get(self.get_context_id, ImplicitVRLittleEndian)
            try:
                identifier = identifier_dict(b"".join(data), syntax == ImplicitVRLittleEndian)
            except Exception:  # a broken Failed SOP Instance UID List must not hide the status
                log.debug("undecodable C-GET-RSP identifier", exc_info=True)
        return command, identifier


class FastGetClient:
    """C-GET for one node.  `associations` parallel associations share a SOP Instance UID list (a STUDY or SERIES
    request runs on one); the sink must then be thread-safe (an InstanceSink is)."""

    def __init__(self, node: Node, *, associations: int = DEFAULT_ASSOCIATIONS,
                 dataset_bytes_max: int = DATASET_BYTES_MAX, lane_instances_min: int | None = None) -> None:
        if not 1 <= associations <= ASSOCIATIONS_MAX:
            raise PacsError(f"The number of parallel associations must be 1-{ASSOCIATIONS_MAX}, not {associations}.")
        self.node = node
        self.associations = associations
        self.dataset_bytes_max = dataset_bytes_max
        self.lane_instances_min = lane_instances_min  # None: viewer.pacs.dimse.LANE_INSTANCES_MIN

    def get(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink | InstanceSink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
        deadline_s: float | None = None,
    ) -> RetrieveResult:
        """Retrieve a study, a series, or listed instances of one series (IMAGE level, spread over up to
        ``associations`` parallel associations).  Every instance is offered to `sink` (a plain callable is
        wrapped in an :class:`InstanceSink` that accepts only what was asked for, of this study and series).
        `deadline_s` bounds the whole transfer; the node's ``dimse_s`` bounds silence only."""
        identifiers = [retrieve_identifiers(study_uid, series_uid, uids) for uids in self._lanes(sop_instance_uids)]
        if cancel is not None and cancel.is_set():
            raise OperationCancelled("The operation was cancelled.")
        instance_sink = InstanceSink.wrap(sink, wanted=sop_instance_uids, study_uid=study_uid, series_uid=series_uid,
                                          progress=progress)
        mark = instance_sink.mark()
        started = time.monotonic()
        deadline = started + deadline_s if deadline_s is not None else None
        lanes = _Lanes(instance_sink, cancel)
        try:
            outcomes = self._run_lanes(identifiers, lanes, sop_class_uids, deadline)
        finally:
            instance_sink.flush()  # what was acknowledged is stored, even when the retrieval failed
        if instance_sink.fatal is not None:
            raise instance_sink.fatal
        return instance_sink.result(mark, time.monotonic() - started,
                                    completed=sum(o.completed for o in outcomes),
                                    failed=sum(o.failed for o in outcomes),
                                    warnings=sum(o.warnings for o in outcomes),
                                    failed_uids=[u for o in outcomes for u in o.failed_uids])

    def _run_lanes(self, identifiers: list[list[Identifier]], lanes: _Lanes,
                   sop_class_uids: Collection[str] | None, deadline: float | None) -> list[_Outcome]:
        def run(lane: list[Identifier]) -> _Outcome:
            try:
                return self._run_lane(lane, lanes, sop_class_uids, deadline)
            except BaseException:
                lanes.failed.set()  # the other lanes send C-CANCEL and stop
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

    def _run_lane(self, identifiers: list[Identifier], lanes: _Lanes, sop_class_uids: Collection[str] | None,
                  deadline: float | None) -> _Outcome:
        assoc = _GetAssociation(self.node, sop_class_uids, lanes, deadline, self.dataset_bytes_max)
        try:
            assoc.open()
            for identifier in identifiers:
                if lanes.should_stop():
                    if lanes.sink.fatal is not None:
                        raise lanes.sink.fatal
                    raise OperationCancelled(CANCELLED)
                offered_before = assoc.outcome.offered
                try:
                    command, response_identifier = assoc.run_get(identifier)
                except (OSError, ProtocolError, IdleTimeout, DeadlineExceeded) as exc:
                    if lanes.sink.fatal is not None:
                        raise lanes.sink.fatal from exc
                    raise assoc.translate(exc, nothing_yet=assoc.outcome.offered == offered_before) from exc
                self._final(assoc, identifier, command, response_identifier, offered_before)
            assoc.release()
            return assoc.outcome
        except BaseException:
            assoc.abort()
            raise
        finally:
            assoc.close()

    def _final(self, assoc: _GetAssociation, identifier: Identifier, command: dict[int, int | str],
               response_identifier: dict[str, str] | None, offered_before: int) -> None:
        """Add up the final C-GET-RSP (PS3.4 C.4.3.1.6) and raise for a cancel or failure status."""
        outcome = assoc.outcome
        offered = outcome.offered - offered_before
        completed = command.get(CommandTag.NUMBER_OF_COMPLETED_SUBOPERATIONS)
        failed = command.get(CommandTag.NUMBER_OF_FAILED_SUBOPERATIONS)
        warnings = command.get(CommandTag.NUMBER_OF_WARNING_SUBOPERATIONS)
        # The final response carries the counts; when a peer leaves them out, count ourselves.
        outcome.completed += completed if isinstance(completed, int) else offered
        outcome.warnings += warnings if isinstance(warnings, int) else 0
        requested = count_uids(identifier)
        if isinstance(failed, int):
            outcome.failed += failed
        elif requested is not None:
            outcome.failed += max(requested - offered, 0)
        if response_identifier is not None and response_identifier.get("FailedSOPInstanceUIDList"):
            outcome.failed_uids += [v for v in response_identifier["FailedSOPInstanceUIDList"].split("\\") if v]
        if assoc.lanes.sink.fatal is not None:
            raise assoc.lanes.sink.fatal
        code = int(command.get(CommandTag.STATUS, DimseStatus.UNABLE_TO_PROCESS))
        if code == DimseStatus.CANCEL:
            if assoc.cancel_deadline is not None:
                raise OperationCancelled(CANCELLED)
            raise PacsStatusError(f"The PACS {self.node.describe()} cancelled the C-GET.", code)
        if category(code) == FAILURE:
            raise PacsStatusError(
                f"The PACS {self.node.describe()} could not complete the C-GET: {describe_status(code)}.", code)


def count_uids(identifier: Identifier) -> int | None:
    """How many SOP Instance UIDs an IMAGE-level identifier lists (None at STUDY and SERIES level)."""
    if identifier.QueryRetrieveLevel != "IMAGE":
        return None
    value = identifier.SOPInstanceUID
    return len(value) if isinstance(value, list) else 1
