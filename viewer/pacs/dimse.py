"""DIMSE transport (PS3.7): C-ECHO and C-MOVE as a Service Class User with pynetdicom, and C-GET, C-FIND and
C-STORE through the lean SCUs of :mod:`viewer.pacs.fastget`, :mod:`viewer.pacs.fastfind` and
:mod:`viewer.pacs.faststore`.

Every operation opens its own association(s), does its work and releases them.  pynetdicom's results and
exceptions are translated here, once, into :mod:`viewer.errors` types whose message names the node and says
what happened in plain words.

Waiting (see :class:`~viewer.pacs.node.Timeouts`): pynetdicom's own DIMSE timeout counts whole messages, which
would cut a large instance arriving slowly.  We switch it off and run a :class:`_Watchdog` beside each
operation instead; it aborts the association when *no PDU at all* arrived for ``dimse_s`` seconds, and it
sends the C-CANCEL (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3) when the caller's cancel event is set, aborting if the
peer does not end the operation within :data:`CANCEL_GRACE_S`.

Retrieval offers each instance, as the Part 10 bytes the peer sent, to the retrieval's
:class:`~viewer.pacs.sink.InstanceSink`, which accepts only what was asked for.  C-MOVE destinations are
received by our :class:`~viewer.pacs.storage_scp.StorageScp`, only from the node asked.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from viewer.errors import (
    AssociationAbortedError,
    MifasError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
)
from viewer.imports import need
from viewer.limits import FIND_RESULTS_MAX
from viewer.pacs.association import MAX_PDU_BYTES, rejection_error, unreachable_error
from viewer.pacs.contexts import UNCOMPRESSED_SYNTAXES
from viewer.pacs.fastfind import FastFindClient
from viewer.pacs.faststore import FastStoreClient
from viewer.pacs.node import (
    DEFAULT_STORAGE_PORT,
    Matches,
    Node,
    Progress,
    RetrieveResult,
    Sink,
    validate_ae_title,
)
from viewer.pacs.query import Identifier, retrieve_identifiers
from viewer.pacs.sink import InstanceSink
from viewer.pacs.status import CANCEL, FAILURE, PENDING, WARNING, DimseStatus, category, describe_status
from viewer.pacs.storage_scp import DEFAULT_STORAGE_ADDRESS, Activity, Peers, StorageScp

if TYPE_CHECKING:
    from pydicom.dataset import Dataset
    from pynetdicom.association import Association
    from pynetdicom.presentation import PresentationContext

# pydicom and pynetdicom are imported by the operations that use them (C-ECHO, C-MOVE), not here: the
# lean C-GET, C-FIND and C-STORE need neither, so ``mifas-pacs get`` and ``send`` do not pay for their import (about 0.3 s).

log = logging.getLogger(__name__)

# -- limits -------------------------------------------------------------------------------------------------

STORE_INSTANCES_MAX = 10_000  # per store() call (one association)
CANCEL_GRACE_S = 5.0  # after a C-CANCEL the peer has this long to send its final response, then we abort
WATCHDOG_POLL_S = 0.05
# Parallel associations for a listed retrieval.  Two overlap one association's waits; on 2 cores more gain
# nothing (the receiving Python is then CPU-bound).
DEFAULT_ASSOCIATIONS = 2
ASSOCIATIONS_MAX = 8
LANE_INSTANCES_MIN = 32  # fewer instances than this per lane are not worth another association
CANCELLED = "The retrieval was cancelled; the images already received were kept."


def keep_patient_data_out_of_logs() -> None:
    """Stop pynetdicom from logging every query and response identifier (patient names, IDs, birth dates) at
    INFO level.  Process-wide: the entry points (``mifas-pacs``, ``mifas-viewer``) call it at start, and every
    association of ours through pynetdicom (:func:`_connect`, the Storage SCP) again once pynetdicom is imported
    (the lean transports do not import it at all)."""
    if "pynetdicom" not in sys.modules:
        return
    need("pynetdicom")
    from pynetdicom import _config as pynetdicom_config

    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False


# -- association plumbing -----------------------------------------------------------------------------------


def _unreachable(node: Node) -> PacsError:
    """Say why the TCP connection failed.  pynetdicom only logs the socket error, so we try once more ourselves
    (the same timeout) to learn it."""
    try:
        with socket.create_connection((node.host, node.port), timeout=node.timeouts.connect_s):
            pass
    except OSError as exc:
        return unreachable_error(node, exc)
    return unreachable_error(node, OSError("the connection failed, but works now; try again"))


class _Connection:
    """One established association, its message IDs and the activity clock the watchdog reads."""

    def __init__(self, node: Node, assoc: Association, activity: Activity) -> None:
        self.node = node
        self.assoc = assoc
        self.activity = activity
        self._msg_id = 0

    def next_msg_id(self) -> int:
        self._msg_id = self._msg_id % 0xFFFF + 1  # PS3.7 E.1: Message ID is an unsigned 16-bit value
        return self._msg_id

    def close(self) -> None:
        assoc = self.assoc
        if not assoc.is_established:
            return
        try:
            assoc.release()  # bounded by acse_timeout
        except Exception:  # releasing is best effort: the work is done, the peer may already be gone
            log.debug("association release failed; aborting", exc_info=True)
            assoc.abort()


def _connect(
    node: Node,
    contexts: list[PresentationContext],
    *,
    ext_neg: list[Any] | None = None,
    handlers: list[tuple[Any, Callable[..., Any]]] | None = None,
    activity: Activity | None = None,
) -> _Connection:
    """Open an association to `node` proposing `contexts`, or raise the translated reason it failed."""
    need("pynetdicom")
    from pynetdicom import AE, evt

    keep_patient_data_out_of_logs()
    activity = activity or Activity()
    connected = threading.Event()
    ae = AE(ae_title=node.calling_ae)
    ae.connection_timeout = node.timeouts.connect_s
    ae.acse_timeout = node.timeouts.acse_s
    ae.network_timeout = node.timeouts.network_s
    ae.dimse_timeout = None  # replaced by the PDU-silence watchdog; see the module docstring
    evt_handlers = [
        (evt.EVT_CONN_OPEN, lambda event: connected.set()),
        (evt.EVT_PDU_RECV, activity.touch),
        *(handlers or []),
    ]
    tls_args = None
    if node.tls is not None:
        from viewer.pacs.tls import client_context, server_hostname

        tls_args = (client_context(node.tls), server_hostname(node))
    started = time.monotonic()
    try:
        assoc = ae.associate(
            node.host, node.port, contexts=contexts, ae_title=node.ae_title, max_pdu=MAX_PDU_BYTES,
            ext_neg=ext_neg, evt_handlers=evt_handlers, tls_args=tls_args,
        )
    except (ValueError, TypeError) as exc:  # pynetdicom validates its arguments: a bad value of ours
        raise PacsError(f"Cannot open an association to {node.describe()}: {exc}") from exc
    except OSError as exc:  # the host name does not resolve (pynetdicom resolves before connecting)
        raise _unreachable(node) from exc
    if assoc.is_established:
        log.debug("association to %s established (%d contexts accepted)", node.address,
                  len(assoc.accepted_contexts))
        return _Connection(node, assoc, activity)
    if assoc.is_rejected:
        primitive = assoc.acceptor.primitive
        raise rejection_error(node, getattr(primitive, "result", None), getattr(primitive, "result_source", None),
                              getattr(primitive, "diagnostic", None))
    if node.tls is not None and activity.pdus == 0:  # pynetdicom only logs why TLS failed: handshake once more
        from viewer.pacs.tls import probe

        reason = probe(node)
        if reason is not None:
            raise reason
    if not connected.is_set():
        raise _unreachable(node)
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        raise PacsError(f"The PACS {node.describe()} accepted none of the services we asked for.")
    if activity.pdus == 0 and time.monotonic() - started >= node.timeouts.acse_s:
        raise PacsTimeoutError(
            f"The PACS at {node.address} accepted the connection but did not answer the association request "
            f"within {node.timeouts.acse_s:g} s.")
    if activity.pdus == 0:
        raise AssociationAbortedError(
            f"The PACS at {node.address} closed the connection without answering our association request.")
    raise AssociationAbortedError(
        f"The PACS {node.describe()} aborted the association request (calling AE '{node.calling_ae}').")


class _Watchdog:
    """Runs beside one DIMSE operation: aborts on ``silence_s`` without a PDU, sends C-CANCEL on `stop`."""

    def __init__(
        self,
        conn: _Connection,
        silence_s: float,
        stop: Callable[[], bool],
        send_cancel: Callable[[], None],
    ) -> None:
        self._conn = conn
        self._silence_s = silence_s
        self._stop_requested = stop
        self._send_cancel = send_cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer.pacs.watchdog", daemon=True)
        self.cancel_sent = False
        self.fired: str | None = None  # "timeout" or "cancel" when the watchdog aborted the association

    def __enter__(self) -> _Watchdog:
        self._conn.activity.touch()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        cancel_deadline = 0.0
        while not self._done.wait(WATCHDOG_POLL_S):
            now = time.monotonic()
            if not self.cancel_sent and self._stop_requested():
                self.cancel_sent = True
                cancel_deadline = now + CANCEL_GRACE_S
                try:
                    self._send_cancel()
                    log.info("C-CANCEL sent to %s", self._conn.node.address)
                except Exception:  # the association ended meanwhile: nothing left to cancel
                    log.debug("C-CANCEL not sent", exc_info=True)
            if self.cancel_sent and now > cancel_deadline:
                self._abort("cancel")
                return
            if now - self._conn.activity.last > self._silence_s:
                self._abort("timeout")
                return

    def _abort(self, reason: str) -> None:
        self.fired = reason
        log.info("aborting the association to %s (%s)", self._conn.node.address, reason)
        try:
            self._conn.assoc.abort()
        finally:
            # Wake the operation waiting for the next message (pynetdicom does not after a local abort).
            self._conn.assoc.dimse.msg_queue.put((None, None))


class DimseClient:
    """A DIMSE Service Class User for one node: C-ECHO, C-FIND, C-STORE, C-GET, C-MOVE (PS3.4 Annexes A-C).

    ``via`` selects what :meth:`retrieve` uses: ``"get"`` (C-GET, the instances come back on our association)
    or ``"move"`` (C-MOVE to our own AE title, received by a :class:`StorageScp` on ``storage_port``; the PACS
    must list our AE title with this host and port).  `move_peers` are who may send us instances during a
    C-MOVE besides this node (a cluster's virtual IP and members).  A retrieval of listed instances runs on up
    to ``associations`` parallel associations.  Thread-safe: each call opens its own associations; C-MOVEs
    share the client's Storage SCP and take turns.  Call :meth:`close` (or use ``with``) to stop that SCP.
    """

    def __init__(
        self,
        node: Node,
        *,
        via: str = "get",
        storage_port: int = DEFAULT_STORAGE_PORT,
        storage_address: str = DEFAULT_STORAGE_ADDRESS,
        associations: int = DEFAULT_ASSOCIATIONS,
        move_peers: Sequence[Node] = (),
    ) -> None:
        if via not in ("get", "move"):
            raise ValueError(f"via must be 'get' or 'move', not {via!r}")
        if not 1 <= associations <= ASSOCIATIONS_MAX:
            raise ValueError(f"associations must be between 1 and {ASSOCIATIONS_MAX}")
        self.associations = associations
        self._scp: StorageScp | None = None
        self._move_lock = threading.Lock()
        self.node = node
        self.via = via
        self.storage_port = storage_port
        self.storage_address = storage_address
        self.move_peers = tuple(move_peers)

    def __repr__(self) -> str:
        return f"DimseClient({self.node.describe()}, via={self.via!r})"

    def close(self) -> None:
        """Stop the Storage SCP a C-MOVE started (every operation closes its own association)."""
        scp, self._scp = self._scp, None
        if scp is not None:
            scp.stop()

    def __enter__(self) -> DimseClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- C-ECHO (PS3.7 9.1.5) ---------------------------------------------------------------------------

    def echo(self) -> float:
        """Verify the node answers DICOM; return the C-ECHO round trip in seconds (association excluded)."""
        need("pynetdicom")
        from pynetdicom.presentation import build_context
        from pynetdicom.sop_class import Verification

        conn = _connect(self.node, [build_context(Verification)])
        try:
            with _Watchdog(conn, self.node.timeouts.dimse_s, lambda: False, lambda: None) as dog:
                started = time.perf_counter()
                status = conn.assoc.send_c_echo(msg_id=conn.next_msg_id())
                elapsed = time.perf_counter() - started
            if "Status" not in status:
                raise self._ended(conn, dog, "C-ECHO")
            if status.Status != DimseStatus.SUCCESS:
                raise PacsStatusError(
                    f"The PACS {self.node.describe()} answered the C-ECHO: {describe_status(status.Status)}.",
                    status.Status)
            return elapsed
        finally:
            conn.close()

    # -- C-FIND (PS3.4 C.4.1) ---------------------------------------------------------------------------

    def find(
        self,
        level: str,
        keys: Mapping[str, str] | None = None,
        *,
        cancel: threading.Event | None = None,
        limit: int = FIND_RESULTS_MAX,
    ) -> Matches:
        """Query the node; return one ``{keyword: text}`` dict per match (at most `limit`; then C-CANCEL, and the
        result's ``truncated`` says so).  The lean C-FIND of :mod:`viewer.pacs.fastfind`.

        Study Root model, Patient Root for level ``"patient"``.  `keys` are DICOM keywords with matching values;
        each level also asks for :data:`DEFAULT_RETURN_KEYS`.  Names and IDs in the results are patient data:
        never log them.
        """
        return FastFindClient(self.node).find(level, keys, cancel=cancel, limit=limit)

    # -- C-STORE as SCU (PS3.4 B.2) ----------------------------------------------------------------------

    def store(
        self,
        instances: Sequence[bytes],
        *,
        on_stored: Callable[[str, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, int]:
        """Send Part 10 files to the node with C-STORE on one association (the lean SCU of
        :mod:`viewer.pacs.faststore`: each data set is sent as stored in its file, nothing is decoded); return
        ``{SOP Instance UID: status}`` for every instance that got an answer, in order.

        ``on_stored(uid, status)`` is called as each answer arrives, so that a caller whose association breaks
        knows which instances were acknowledged.  Success, the warnings (PS3.4 B.2.3) and Duplicate SOP
        Instance (0x0111) mean the node holds the instance.  A failure status is returned, not raised: it
        concerns that instance only; an instance whose SOP class and transfer syntax the node refused during
        negotiation is not sent and gets SOP Class Not Supported (0x0122).  A file that is not Part 10 with SOP
        Class, SOP Instance UID and transfer syntax in its File Meta Information raises MalformedDicomError
        before anything is sent.  Association failures raise the translated error.
        """
        if len(instances) > STORE_INSTANCES_MAX:
            raise ValueError(f"at most {STORE_INSTANCES_MAX} instances per store() call")
        return FastStoreClient(self.node).store(instances, on_stored=on_stored, cancel=cancel)

    # -- C-GET (PS3.4 C.4.3) ----------------------------------------------------------------------------

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
    ) -> RetrieveResult:
        """Retrieve a study, a series, or listed instances of one series with C-GET (the lean SCU of
        :mod:`viewer.pacs.fastget`).  `sop_class_uids` (the SOP classes expected) lets us offer every compressed
        transfer syntax for each, so the peer needs not transcode.  An instance not asked for is refused
        (Not Authorized) and reported in ``unrequested_sop_instance_uids``.  Cancelling keeps what arrived."""
        from viewer.pacs.fastget import FastGetClient  # it builds on this module's identifiers and limits

        lean = FastGetClient(self.node, associations=self.associations, lane_instances_min=LANE_INSTANCES_MIN)
        return lean.get(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress, cancel=cancel,
                        sop_class_uids=sop_class_uids)

    # -- C-MOVE (PS3.4 C.4.2) ---------------------------------------------------------------------------

    def move(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink | InstanceSink,
        destination_ae: str | None = None,
        storage_port: int | None = None,
        storage_address: str | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RetrieveResult:
        """Retrieve with C-MOVE to `destination_ae` (default: our calling AE title), receiving the instances
        with our own :class:`StorageScp` on `storage_port` for the duration.  The PACS sends them over its
        own association(s) to the host and port it has configured for that AE title; only this node (and
        ``move_peers``) may, and only what was asked for is kept."""
        need("pynetdicom")
        from pynetdicom.presentation import build_context
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

        destination = validate_ae_title(destination_ae or self.node.calling_ae, "move destination AE title")
        port = self.storage_port if storage_port is None else storage_port
        address = storage_address or self.storage_address
        model = StudyRootQueryRetrieveInformationModelMove
        nodes = (self.node, *self.move_peers)
        peers = Peers.of((n.ae_title for n in nodes), (n.host for n in nodes))
        instance_sink = InstanceSink.wrap(sink, wanted=sop_instance_uids, study_uid=study_uid, series_uid=series_uid,
                                          progress=progress)
        with self._move_lock:  # one C-MOVE at a time per client: they share the Storage SCP
            scp = self._storage_scp(destination, port, address)

            # The instances arrive on the SCP's associations: their PDUs count as the peer's activity too.
            def connect() -> _Connection:
                return _connect(self.node, [build_context(model, list(UNCOMPRESSED_SYNTAXES))], activity=scp.activity)

            def send(conn: _Connection, identifier: Identifier, msg_id: int) -> Iterator[Any]:
                return conn.assoc.send_c_move(identifier.to_dataset(), destination, model, msg_id=msg_id)

            hint = (f"; check that it knows '{destination}' as a C-MOVE destination at this computer's address, "
                    f"port {scp.port}")
            with scp.receiving(instance_sink, peers):
                return self._move(model, study_uid, series_uid, sop_instance_uids, instance_sink, cancel, connect,
                                  send, hint)

    def _storage_scp(self, ae_title: str, port: int, address: str) -> StorageScp:
        """The Storage SCP for our C-MOVEs, started on first use and kept until close()."""
        scp = self._scp
        if (scp is not None and (scp.ae_title, scp.address, scp.tls) == (ae_title, address, self.node.tls)
                and port in (0, scp.port)):
            return scp
        self.close()
        self._scp = StorageScp(ae_title, port, address, self.node.timeouts.network_s, tls=self.node.tls).start()
        return self._scp

    # -- the transport-neutral interface (viewer.pacs.client.PacsClient) -------------------------------

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink | InstanceSink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
    ) -> RetrieveResult:
        if self.via == "move":
            return self.move(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress, cancel=cancel)
        return self.get(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress, cancel=cancel,
                        sop_class_uids=sop_class_uids)

    # -- C-MOVE's requests --------------------------------------------------------------------------------

    def _lanes(self, sop_instance_uids: Sequence[str] | None) -> list[list[str] | None]:
        """Split a SOP Instance UID list over up to ``associations`` parallel associations (interleaved, so
        that every part of a series fills in at once); a study or series request runs on one."""
        if sop_instance_uids is None:
            return [None]
        uids = list(dict.fromkeys(sop_instance_uids))
        count = max(1, min(self.associations, len(uids) // LANE_INSTANCES_MIN))
        return [uids[i::count] for i in range(count)]

    def _move(
        self,
        model: str,
        study_uid: str,
        series_uid: str | None,
        sop_instance_uids: Sequence[str] | None,
        sink: InstanceSink,
        cancel: threading.Event | None,
        connect: Callable[[], _Connection],
        send: Callable[[_Connection, Identifier, int], Iterator[Any]],
        failure_hint: str,
    ) -> RetrieveResult:
        """Run a C-MOVE over one or more lanes (associations), each with its own identifiers."""
        lanes = [retrieve_identifiers(study_uid, series_uid, uids) for uids in self._lanes(sop_instance_uids)]
        counts = _MoveCounts()
        lane_failed = threading.Event()  # one lane failed: the others stop (C-CANCEL) and we raise its error
        _check_cancel(cancel)
        mark = sink.mark()
        started = time.monotonic()

        def stop() -> bool:
            return sink.fatal is not None or lane_failed.is_set() or (cancel is not None and cancel.is_set())

        def run_lane(identifiers: list[Identifier]) -> None:
            conn = connect()
            try:
                for identifier in identifiers:
                    if sink.fatal is not None:
                        raise sink.fatal
                    if stop():  # cancelled, or another lane failed (its error is the one raised)
                        raise OperationCancelled(CANCELLED)
                    self._move_one(conn, model, sink, counts, stop, identifier,
                                   lambda msg_id, ds=identifier: send(conn, ds, msg_id), failure_hint)
            except BaseException:
                lane_failed.set()
                raise
            finally:
                conn.close()

        try:
            if len(lanes) == 1:
                run_lane(lanes[0])
            else:
                errors: list[BaseException] = []
                with ThreadPoolExecutor(len(lanes), thread_name_prefix="viewer.pacs.lane") as pool:
                    for future in [pool.submit(run_lane, lane) for lane in lanes]:
                        error = future.exception()
                        if error is not None:
                            errors.append(error)
                if errors:
                    raise next((e for e in errors if not isinstance(e, OperationCancelled)), errors[0])
        finally:
            sink.flush()
        if sink.fatal is not None:
            raise sink.fatal
        return sink.result(mark, time.monotonic() - started, completed=counts.completed, failed=counts.failed,
                           warnings=counts.warnings, failed_uids=counts.failed_uids)

    def _send(self, service: str, send: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        try:
            return send()
        except ValueError as exc:  # pynetdicom: no accepted presentation context for the model
            raise PacsError(f"The PACS {self.node.describe()} does not offer {service} (Study Root).") from exc
        except RuntimeError as exc:  # the association ended before the request could be sent
            raise AssociationAbortedError(
                f"The association with the PACS {self.node.describe()} ended before the {service}.") from exc

    def _move_one(
        self,
        conn: _Connection,
        model: str,
        sink: InstanceSink,
        counts: _MoveCounts,
        stop: Callable[[], bool],
        identifier: Identifier,
        send: Callable[[int], Iterator[Any]],
        failure_hint: str,
    ) -> None:
        """One C-MOVE request and its responses (PS3.4 C.4.2.3)."""
        msg_id = conn.next_msg_id()
        stored_before = sink.mark().stored

        def send_cancel() -> None:
            conn.assoc.send_c_cancel(msg_id, query_model=model)

        final: tuple[Dataset, Dataset | None] | None = None
        with _Watchdog(conn, self.node.timeouts.dimse_s, stop, send_cancel) as dog:
            for status, response_identifier in self._send("C-MOVE", lambda: send(msg_id)):
                if "Status" not in status:
                    break
                if category(status.Status) == PENDING:
                    _note_pending(sink, status)
                    continue
                final = (status, response_identifier)
        if sink.fatal is not None:
            raise sink.fatal
        if final is None:
            raise self._ended(conn, dog, "C-MOVE", nothing_yet=sink.mark().stored == stored_before)
        status, response_identifier = final
        counts.add(status, response_identifier, _count_uids(identifier), sink.mark().stored - stored_before)
        code = status.Status
        if code == DimseStatus.CANCEL or category(code) == CANCEL:
            if dog.cancel_sent:
                raise OperationCancelled(CANCELLED)
            raise PacsStatusError(f"The PACS {self.node.describe()} cancelled the C-MOVE.", code)
        if category(code) == FAILURE:
            hint = failure_hint if sink.mark().stored == stored_before else ""
            raise PacsStatusError(
                f"The PACS {self.node.describe()} could not complete the C-MOVE: {describe_status(code)}{hint}.",
                code)
        if category(code) == WARNING:
            log.info("C-MOVE ended with %s", describe_status(code))

    def _ended(self, conn: _Connection, dog: _Watchdog, service: str, nothing_yet: bool = False) -> MifasError:
        """The error for an operation that ended without a final response."""
        if dog.fired == "cancel":
            return OperationCancelled(f"The {service} was cancelled; what had arrived was kept.")
        if dog.fired == "timeout":
            return PacsTimeoutError(
                f"The PACS {self.node.describe()} stopped answering: nothing received for "
                f"{self.node.timeouts.dimse_s:g} s during the {service}.")
        hint = ""
        if nothing_yet:
            hint = (f" (it may not allow {service} from our AE title '{self.node.calling_ae}': check that the PACS "
                    f"lists it)")
        if conn.assoc.acse.is_aborted("a-p-abort"):
            return AssociationAbortedError(
                f"The PACS {self.node.describe()} closed the connection during the {service}{hint}.")
        return AssociationAbortedError(f"The PACS {self.node.describe()} aborted the association during the {service}{hint}.")


class _MoveCounts:
    """The sub-operation counts of a C-MOVE's final responses (PS3.4 C.4.2.1.6), added up over its lanes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = self.failed = self.warnings = 0
        self.failed_uids: list[str] = []

    def add(self, status: Dataset, identifier: Dataset | None, requested: int | None, received: int) -> None:
        """Add up one request's final response; `received` is what the sink stored for it.  When a peer leaves
        the counts out, count ourselves."""
        completed = status.get("NumberOfCompletedSuboperations")
        failed = status.get("NumberOfFailedSuboperations")
        warnings = status.get("NumberOfWarningSuboperations")
        failed_uids: list[str] = []
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            failed_uids = [str(v) for v in values if v]
        with self._lock:  # lanes finish concurrently
            self.completed += completed if isinstance(completed, int) else received
            self.warnings += warnings if isinstance(warnings, int) else 0
            if isinstance(failed, int):
                self.failed += failed
            elif requested is not None:
                self.failed += max(requested - received, 0)
            self.failed_uids += failed_uids


def _note_pending(sink: InstanceSink, status: Dataset) -> None:
    counts = [status.get(k) for k in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                                      "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")]
    if all(isinstance(c, int) for c in counts):
        sink.note_total(sum(counts))


def _count_uids(identifier: Identifier) -> int | None:
    if identifier.QueryRetrieveLevel != "IMAGE":
        return None
    value = identifier.SOPInstanceUID
    return len(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else 1


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The operation was cancelled.")
