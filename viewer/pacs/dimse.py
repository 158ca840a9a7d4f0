"""DIMSE transport (PS3.7) with pynetdicom: C-ECHO, C-FIND, C-GET and C-MOVE as a Service Class User.

Every operation opens its own association(s), does its work and releases them.  pynetdicom's results and
exceptions are translated here, once, into :mod:`viewer.errors` types whose message names the node and says
what happened in plain words.

Waiting (see :class:`~viewer.pacs.node.Timeouts`): pynetdicom's own DIMSE timeout counts whole messages, which
would cut a large instance arriving slowly.  We switch it off and run a :class:`_Watchdog` beside each
operation instead; it aborts the association when *no PDU at all* arrived for ``dimse_s`` seconds, and it
sends the C-CANCEL (PS3.7 9.3.2.3, 9.3.3.3, 9.3.4.3) when the caller's cancel event is set, aborting if the
peer does not end the operation within :data:`CANCEL_GRACE_S`.

Retrieval hands each instance to ``sink`` as the Part 10 bytes the peer sent (``event.encoded_dataset()``):
nothing is decoded or re-encoded on the way, which keeps the C-STORE handler cheap.  C-GET offers a
presentation context per (SOP class, compressed transfer syntax) so that the peer sends what it stores
(:func:`get_presentation_contexts`).  A listed retrieval is spread over a few parallel associations;
C-MOVE destinations are received by our :class:`StorageScp`.
"""

from __future__ import annotations

import io
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from enum import IntEnum
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom import sop_class as _sop_class
from pynetdicom.association import Association
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    build_context,
    build_role,
)
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.status import (
    STATUS_CANCEL,
    STATUS_FAILURE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WARNING,
    code_to_category,
)
from pynetdicom.transport import ThreadedAssociationServer

from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    LibraryError,
    MalformedDicomError,
    MifasError,
    NodeUnreachableError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
    StorageFullError,
)
from viewer.library.store import is_valid_uid
from viewer.pacs.node import (
    DEFAULT_RETURN_KEYS,
    DEFAULT_STORAGE_PORT,
    FIND_RESULTS_LIMIT_MAX,
    FIND_RESULTS_MAX,
    Node,
    Progress,
    RetrieveResult,
    Sink,
    check_level,
    validate_ae_title,
    validate_port,
)

log = logging.getLogger(__name__)

# -- limits -------------------------------------------------------------------------------------------------

# Largest PDU we accept (PS3.8 D.1 Maximum Length Notification).  0 would mean "unlimited"; a bound keeps one
# PDU's buffer modest.  Large PDUs let a sender use few of them (DCMTK-based senders such as Orthanc fragment
# at their own buffer size anyway, about 100 KiB).
MAX_PDU_BYTES = 4 << 20
# PS3.8 9.3.2.2: presentation context IDs are the odd numbers 1-255, so at most 128 per association.
PRESENTATION_CONTEXTS_MAX = 128
# SOP Instance UIDs in one IMAGE-level C-GET/C-MOVE identifier (UID list matching, PS3.4 C.2.2.2.2);
# longer lists are sent as several requests on the same association.
SOP_UIDS_PER_REQUEST_MAX = 256
STORE_INSTANCES_MAX = 10_000  # per store() call (one association); each is decoded only when it is sent
CANCEL_GRACE_S = 5.0  # after a C-CANCEL the peer has this long to send its final response, then we abort
WATCHDOG_POLL_S = 0.05
# Parallel associations for a listed retrieval.  pynetdicom's reactor polls with 1 ms sleeps, so a single
# association spends much of a C-GET waiting; a second overlaps that (measured on 2 cores: 197 CT instances
# in 0.53-0.63 s instead of 0.81-0.84 s).  More gain nothing there: pynetdicom is then CPU-bound (the GIL).
DEFAULT_ASSOCIATIONS = 2
ASSOCIATIONS_MAX = 8
LANE_INSTANCES_MIN = 32  # fewer instances than this per lane are not worth another association
DEFAULT_STORAGE_ADDRESS = "0.0.0.0"
SCP_POLL_S = 0.05  # how often the Storage SCP's accept loop checks for stop()


class DimseStatus(IntEnum):
    """Status codes we act on (PS3.7 Annex C; service-specific meanings from PS3.4 B.2.3 and C.4)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00  # C-FIND/C-GET/C-MOVE: matches or sub-operations are continuing
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01  # C-FIND: some optional keys were not supported
    CANCEL = 0xFE00  # the operation was terminated by a C-CANCEL
    SUB_OPERATIONS_WARNING = 0xB000  # C-GET/C-MOVE: done, one or more sub-operations failed or warned
    OUT_OF_RESOURCES = 0xA700  # C-STORE: refused, out of resources (our answer when the disk is full)
    OUT_OF_RESOURCES_MATCHES = 0xA701  # C-GET/C-MOVE: unable to calculate the number of matches
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-GET/C-MOVE: unable to perform sub-operations
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000  # Q/R: unable to process; C-STORE: cannot understand (C000-CFFF)
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124  # C-STORE: refused (our answer to an instance that was not asked for)
    DUPLICATE_SOP_INSTANCE = 0x0111  # C-STORE: the peer already holds this SOP Instance UID


_STATUS_WORDS = {
    DimseStatus.CANCEL: "the operation was cancelled",
    DimseStatus.OUT_OF_RESOURCES: "it is out of resources",
    DimseStatus.OUT_OF_RESOURCES_MATCHES: "it is out of resources (cannot count the matches)",
    DimseStatus.OUT_OF_RESOURCES_SUB_OPERATIONS: "it is out of resources (cannot send the images)",
    DimseStatus.MOVE_DESTINATION_UNKNOWN: "it does not know the move destination",
    DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "it did not understand the request",
    DimseStatus.UNABLE_TO_PROCESS: "it was unable to process the request",
    DimseStatus.SOP_CLASS_NOT_SUPPORTED: "it does not support this service",
    DimseStatus.NOT_AUTHORIZED: "it refused the request (not authorised)",
    DimseStatus.DUPLICATE_SOP_INSTANCE: "it already holds this image",
}


def keep_patient_data_out_of_logs() -> None:
    """Stop pynetdicom from logging every query and response identifier (patient names, IDs, birth dates) at
    INFO level.  Process-wide, so the entry points (``mifas-pacs``, ``mifas-viewer``) call it once at start."""
    pynetdicom_config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom_config.LOG_RESPONSE_IDENTIFIERS = False


def describe_status(code: int) -> str:
    """Plain words for a DIMSE status code, with the code in hex for the IT person."""
    words = _STATUS_WORDS.get(code)  # type: ignore[call-overload]
    if words is None:
        category = code_to_category(code).lower()
        words = {"failure": "it reported a failure", "warning": "it reported a warning"}.get(category, category)
    return f"{words} (status 0x{code:04X})"


# -- transfer syntaxes and presentation contexts ------------------------------------------------------------

UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Every compressed syntax MIFAS Viewer decodes (pylibjpeg, pylibjpeg-libjpeg/-openjpeg/-rle, zlib), most common
# first: when the context budget runs short, the rare ones are dropped first.
COMPRESSED_SYNTAXES: tuple[str, ...] = (
    JPEGLosslessSV1,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEG2000,
    RLELossless,
    JPEGLSLossless,
    JPEGExtended12Bit,
    JPEGLSNearLossless,
    JPEGLossless,
    DeflatedExplicitVRLittleEndian,
)
# What our Storage SCP (C-MOVE destination) accepts: anything we can decode, as the sender prefers it.
SCP_TRANSFER_SYNTAXES: tuple[str, ...] = (*UNCOMPRESSED_SYNTAXES, *COMPRESSED_SYNTAXES, ExplicitVRBigEndian)


def _uid(name: str) -> str:
    return str(getattr(_sop_class, name))


# Storage SOP classes offered in a C-GET when the caller does not say which the study holds, in priority order:
# the first ones get every compressed syntax while the context budget lasts, the rest uncompressed only.
DEFAULT_GET_SOP_CLASSES: tuple[str, ...] = tuple(_uid(n) for n in (
    "CTImageStorage", "MRImageStorage", "UltrasoundImageStorage", "UltrasoundMultiFrameImageStorage",
    "ComputedRadiographyImageStorage", "DigitalXRayImageStorageForPresentation",
    "DigitalMammographyXRayImageStorageForPresentation", "XRayAngiographicImageStorage",
    "SecondaryCaptureImageStorage", "EnhancedCTImageStorage", "EnhancedMRImageStorage",
    "PositronEmissionTomographyImageStorage", "NuclearMedicineImageStorage", "XRayRadiofluoroscopicImageStorage",
    "EnhancedXAImageStorage", "EnhancedXRFImageStorage", "EnhancedPETImageStorage",
    "LegacyConvertedEnhancedCTImageStorage", "LegacyConvertedEnhancedMRImageStorage",
    "LegacyConvertedEnhancedPETImageStorage", "EnhancedMRColorImageStorage",
    "DigitalXRayImageStorageForProcessing", "DigitalMammographyXRayImageStorageForProcessing",
    "DigitalIntraOralXRayImageStorageForPresentation", "BreastTomosynthesisImageStorage",
    "XRay3DAngiographicImageStorage", "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
    "MultiFrameGrayscaleWordSecondaryCaptureImageStorage", "MultiFrameTrueColorSecondaryCaptureImageStorage",
    "MultiFrameSingleBitSecondaryCaptureImageStorage", "VLPhotographicImageStorage", "VLEndoscopicImageStorage",
    "VLMicroscopicImageStorage", "OphthalmicPhotography8BitImageStorage", "RTImageStorage", "RTDoseStorage",
    "SegmentationStorage", "RTStructureSetStorage", "RTPlanStorage", "RTIonPlanStorage",
    "SpatialRegistrationStorage", "GrayscaleSoftcopyPresentationStateStorage",
    "KeyObjectSelectionDocumentStorage", "BasicTextSRStorage", "EnhancedSRStorage", "ComprehensiveSRStorage",
    "EncapsulatedPDFStorage", "RawDataStorage",
))
# SOP classes without pixel data never need a compressed syntax.
_NO_PIXEL_SOP_CLASSES = frozenset(_uid(n) for n in (
    "RTStructureSetStorage", "RTPlanStorage", "RTIonPlanStorage", "SpatialRegistrationStorage",
    "GrayscaleSoftcopyPresentationStateStorage", "KeyObjectSelectionDocumentStorage", "BasicTextSRStorage",
    "EnhancedSRStorage", "ComprehensiveSRStorage", "EncapsulatedPDFStorage", "RawDataStorage",
))


def get_presentation_contexts(
    sop_class_uids: Collection[str] | None = None,
) -> tuple[list[PresentationContext], list[Any]]:
    """Presentation contexts and SCP/SCU role items (PS3.7 D.3.3.4) for a C-GET association.

    C-GET brings the instances back as C-STORE sub-operations on our own association, so we must propose, in
    the SCP role, a context for every storage SOP class we want (PS3.4 C.4.3.1).  A peer picks *one* transfer
    syntax per context, by its own preference; Orthanc then sends each instance on a context whose syntax equals
    the one it stored, transcoding only when there is none.  So every (SOP class, compressed syntax) pair gets
    a context of its own, and the uncompressed syntaxes share one.  With 128 contexts per association that
    covers about eleven SOP classes fully: pass the classes the study holds (from an IMAGE-level C-FIND) to
    fit them; without a list, :data:`DEFAULT_GET_SOP_CLASSES` is offered, compressed syntaxes for the first.
    """
    classes = list(dict.fromkeys(str(u) for u in (sop_class_uids or DEFAULT_GET_SOP_CLASSES) if is_valid_uid(str(u))))
    budget = PRESENTATION_CONTEXTS_MAX - 1  # one is the C-GET information model
    if len(classes) > budget:
        log.warning("C-GET offers only the first %d of %d SOP classes", budget, len(classes))
        classes = classes[:budget]
    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet, list(UNCOMPRESSED_SYNTAXES))]
    contexts += [build_context(uid, list(UNCOMPRESSED_SYNTAXES)) for uid in classes]
    budget -= len(classes)
    for uid in classes:
        if uid in _NO_PIXEL_SOP_CLASSES:
            continue
        for syntax in COMPRESSED_SYNTAXES[:budget]:
            contexts.append(build_context(uid, [syntax]))
        budget -= min(budget, len(COMPRESSED_SYNTAXES))
        if budget <= 0:
            break
    roles = [build_role(uid, scp_role=True) for uid in classes]
    return contexts, roles


def storage_scp_contexts(extra_sop_class_uids: Iterable[str] = ()) -> list[PresentationContext]:
    """What our Storage SCP supports: every storage SOP class pynetdicom knows plus `extra_sop_class_uids`,
    each with every transfer syntax we can decode (the sender chooses)."""
    uids = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    uids += [str(u) for u in extra_sop_class_uids if is_valid_uid(str(u))]
    contexts = [build_context(uid, list(SCP_TRANSFER_SYNTAXES)) for uid in dict.fromkeys(uids)]
    contexts.append(build_context(Verification))
    return contexts


# -- query keys ---------------------------------------------------------------------------------------------

_LEVEL_NAMES = {"patient": "PATIENT", "study": "STUDY", "series": "SERIES", "image": "IMAGE"}

# Elements of a C-FIND response that describe the response rather than the match.
_NOT_RESULTS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


def query_identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    """A C-FIND identifier: the level's default return keys (universal matching) plus the caller's `keys`
    (DICOM keywords; values use the PS3.4 C.2.2.2 matching rules: ``*``/``?`` wildcards, ``A-B`` ranges,
    backslash-separated UID lists)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = _LEVEL_NAMES[check_level(level)]
    for keyword in DEFAULT_RETURN_KEYS[level]:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        if tag_for_keyword(keyword) is None:
            raise PacsError(f"'{keyword}' is not a DICOM keyword (write e.g. PatientName=DOE*).")
        if dictionary_VR(keyword) == "SQ":
            raise PacsError(f"'{keyword}' is a sequence; sequence matching is not supported.")
        if not isinstance(value, str):
            raise PacsError(f"The value for '{keyword}' must be text.")
        setattr(ds, keyword, value)
    return ds


def identifier_to_dict(ds: Dataset) -> dict[str, str]:
    """A C-FIND response identifier as ``{keyword: text}``; multiple values are joined with a backslash."""
    result: dict[str, str] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_RESULTS or elem.VR == "SQ":
            continue
        try:
            value = elem.value
        except Exception:  # a value pydicom cannot convert: leave it out rather than fail the whole query
            continue
        if value is None:
            result[keyword] = ""
        elif isinstance(value, (bytes, bytearray)):
            continue
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            result[keyword] = "\\".join("" if v is None else str(v) for v in value)
        else:
            result[keyword] = str(value)
    return result


def retrieve_identifiers(
    study_uid: str, series_uid: str | None = None, sop_instance_uids: Sequence[str] | None = None
) -> list[Dataset]:
    """C-GET/C-MOVE identifiers (PS3.4 C.4.2.1.4, Study Root): one STUDY or SERIES level identifier, or IMAGE
    level identifiers listing at most :data:`SOP_UIDS_PER_REQUEST_MAX` SOP Instance UIDs each."""
    for label, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid {label}.")
    if sop_instance_uids is None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
        ds.StudyInstanceUID = study_uid
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        return [ds]
    if not series_uid:
        raise PacsError("Retrieving single images needs the Series Instance UID of their series.")
    uids = list(dict.fromkeys(sop_instance_uids))
    for uid in uids:
        if not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid SOP Instance UID.")
    identifiers = []
    for start in range(0, len(uids), SOP_UIDS_PER_REQUEST_MAX):
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        chunk = uids[start:start + SOP_UIDS_PER_REQUEST_MAX]
        ds.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
        identifiers.append(ds)
    return identifiers


# -- association plumbing -----------------------------------------------------------------------------------


class _Activity:
    """When the peer last sent us anything (a PDU on any association of the operation), and how many PDUs."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.pdus = 0

    def touch(self, event: Any = None) -> None:
        """EVT_PDU_RECV handler (with an event), or a restart of the clock (without)."""
        self.last = time.monotonic()
        if event is not None:
            self.pdus += 1


_REJECT_REASONS = {  # PS3.8 9.3.4, (Result Source, Reason/Diag.)
    (1, 2): "the application context name is not supported",
    (2, 2): "it does not support our protocol version",
    (3, 1): "it is busy (temporary congestion); try again later",
    (3, 2): "it has reached its limit of associations; try again later",
}


def _rejection_message(node: Node, primitive: Any) -> str:
    source = getattr(primitive, "result_source", None)
    diagnostic = getattr(primitive, "diagnostic", None)
    ours, theirs = node.calling_ae, node.ae_title
    if (source, diagnostic) == (1, 3):
        return (f"The PACS at {node.address} rejected our association: calling AE title '{ours}' is not known to it "
                f"(called AE '{theirs}').")
    if (source, diagnostic) == (1, 7):
        return (f"The PACS at {node.address} rejected our association: it is not called '{theirs}' "
                f"(called AE title not recognised; calling AE '{ours}').")
    reason = _REJECT_REASONS.get((source, diagnostic), "no reason given")
    return (f"The PACS at {node.address} rejected our association: {reason} (calling AE '{ours}', "
            f"called AE '{theirs}').")


def _unreachable(node: Node) -> PacsError:
    """Say why the TCP connection failed.  pynetdicom only logs the socket error, so we try once more ourselves
    (the same timeout) to learn it."""
    timeout_s = node.timeouts.connect_s
    try:
        with socket.create_connection((node.host, node.port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        return NodeUnreachableError(
            f"The PACS at {node.address} refused the connection (nothing is listening there).")
    except socket.gaierror:
        return NodeUnreachableError(f"The PACS host name '{node.host}' could not be found.")
    except TimeoutError:
        return NodeUnreachableError(
            f"The PACS at {node.address} did not answer within {timeout_s:g} s (host down or port blocked).")
    except OSError as exc:
        return NodeUnreachableError(f"The PACS at {node.address} cannot be reached ({exc.strerror or exc}).")
    return NodeUnreachableError(f"The connection to the PACS at {node.address} failed (it works now; try again).")


class _Connection:
    """One established association, its message IDs and the activity clock the watchdog reads."""

    def __init__(self, node: Node, assoc: Association, activity: _Activity) -> None:
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
    activity: _Activity | None = None,
) -> _Connection:
    """Open an association to `node` proposing `contexts`, or raise the translated reason it failed."""
    activity = activity or _Activity()
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
    started = time.monotonic()
    try:
        assoc = ae.associate(
            node.host, node.port, contexts=contexts, ae_title=node.ae_title, max_pdu=MAX_PDU_BYTES,
            ext_neg=ext_neg, evt_handlers=evt_handlers,
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
        raise AssociationRejectedError(_rejection_message(node, assoc.acceptor.primitive))
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


class _Tally:
    """Counts one retrieval and runs the C-STORE handler: hands each instance to the sink, answers a status."""

    def __init__(self, sink: Sink, progress: Progress | None, expected: int | None,
                 allowed: Collection[str] | None = None,
                 on_unrequested: Callable[[str], None] | None = None) -> None:
        self._sink = sink
        self._progress = progress
        self._lock = threading.Lock()
        self.expected = expected
        # With `allowed`, an instance whose SOP Instance UID is not listed is refused (NOT_AUTHORIZED) and
        # reported to `on_unrequested`, never stored.
        self._allowed = frozenset(allowed) if allowed is not None else None
        self._on_unrequested = on_unrequested
        self.unrequested: list[str] = []
        self.uids: list[str] = []
        self.bytes = 0
        self.rejected = 0
        self.fatal: BaseException | None = None  # stops the retrieval; re-raised when it has ended
        self.completed = self.failed = self.warnings = 0
        self.failed_uids: list[str] = []
        self.peer_total: int | None = None
        self._by_association: dict[int, int] = {}  # id(association) -> instances stored from it

    # runs in the association's thread (C-GET: the caller's; C-MOVE: the SCP's)
    def on_c_store(self, event: Any) -> int:
        if self.fatal is not None:
            return DimseStatus.OUT_OF_RESOURCES if isinstance(self.fatal, StorageFullError) else DimseStatus.UNABLE_TO_PROCESS
        uid = str(event.request.AffectedSOPInstanceUID or "")
        if self._allowed is not None and uid not in self._allowed:
            log.warning("instance %s was not asked for: refused", uid)
            with self._lock:
                if len(self.unrequested) < SOP_UIDS_PER_REQUEST_MAX:
                    self.unrequested.append(uid)
            if self._on_unrequested is not None:
                try:
                    self._on_unrequested(uid)
                except Exception:  # a bug in the caller's callback must not break the transfer
                    log.exception("on_unrequested callback failed")
            return DimseStatus.NOT_AUTHORIZED
        try:
            data = event.encoded_dataset(include_meta=True)
            self._sink(data)
        except StorageFullError as exc:
            self.fatal = exc
            return DimseStatus.OUT_OF_RESOURCES
        except LibraryError as exc:  # cannot write at all (permissions, damaged index): stop, it would repeat
            self.fatal = exc
            return DimseStatus.UNABLE_TO_PROCESS
        except MifasError as exc:  # this instance is unusable; the others may be fine
            log.warning("instance %s not stored: %s", uid, exc)
            with self._lock:
                self.rejected += 1
            return DimseStatus.UNABLE_TO_PROCESS
        except Exception as exc:  # a bug in the sink: stop and re-raise it after the operation
            log.exception("the sink failed on instance %s", uid)
            self.fatal = exc
            return DimseStatus.UNABLE_TO_PROCESS
        with self._lock:
            self.uids.append(uid)
            self.bytes += len(data)
            self._by_association[id(event.assoc)] = self._by_association.get(id(event.assoc), 0) + 1
            done = len(self.uids)
        self._report(done)
        return DimseStatus.SUCCESS

    def _report(self, done: int) -> None:
        if self._progress is None:
            return
        total = self.expected if self.expected is not None else self.peer_total
        try:
            self._progress(done, total)
        except Exception as exc:  # a bug in the caller's callback
            log.exception("progress callback failed")
            if self.fatal is None:
                self.fatal = exc

    def on_pending(self, status: Dataset) -> None:
        counts = [status.get(k) for k in ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                                          "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")]
        if all(isinstance(c, int) for c in counts):
            self.peer_total = sum(counts)

    def on_final(self, status: Dataset, identifier: Dataset | None, requested: int | None, received: int) -> None:
        """Add up one request's final response; `received` is what our handler stored for it."""
        completed = status.get("NumberOfCompletedSuboperations")
        failed = status.get("NumberOfFailedSuboperations")
        warnings = status.get("NumberOfWarningSuboperations")
        failed_uids: list[str] = []
        if identifier is not None and "FailedSOPInstanceUIDList" in identifier:
            value = identifier.FailedSOPInstanceUIDList
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            failed_uids = [str(v) for v in values if v][:SOP_UIDS_PER_REQUEST_MAX]
        with self._lock:  # lanes finish concurrently
            # PS3.4 C.4.2.1.6 / C.4.3.1.6: the final response carries the counts; when a peer leaves them out,
            # count ourselves.
            self.completed += completed if isinstance(completed, int) else received
            self.warnings += warnings if isinstance(warnings, int) else 0
            if isinstance(failed, int):
                self.failed += failed
            elif requested is not None:
                self.failed += max(requested - received, 0)
            self.failed_uids += failed_uids

    def received(self, assoc: Association | None = None) -> int:
        """Instances stored so far, in all or from one association (a C-GET lane's)."""
        with self._lock:
            return len(self.uids) if assoc is None else self._by_association.get(id(assoc), 0)

    def result(self, seconds: float) -> RetrieveResult:
        return RetrieveResult(
            completed=self.completed, failed=self.failed, warnings=self.warnings, bytes=self.bytes,
            seconds=seconds, sop_instance_uids=tuple(self.uids), failed_sop_instance_uids=tuple(self.failed_uids),
        )


class StorageScp:
    """Our Storage SCP (PS3.4 B.2.2), the destination of our C-MOVEs; start()/stop() or a context manager.

    Binds `address`:`port` (``0.0.0.0`` = every interface; the PACS must reach it and list our AE title with
    this port).  Instances arriving while a retrieval is attached (:meth:`receiving`) go to that retrieval;
    any other C-STORE is refused with Out of Resources.  A DimseClient keeps it listening between its
    retrievals and stops it on close().
    """

    def __init__(self, ae_title: str, port: int, address: str = DEFAULT_STORAGE_ADDRESS,
                 network_timeout_s: float = 60.0) -> None:
        self.ae_title = validate_ae_title(ae_title, "storage AE title")
        self.port = validate_port(port) if port else 0  # 0: the OS picks one (see .port after start())
        self.address = address
        self.activity = _Activity()
        self._network_timeout_s = network_timeout_s
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._tally: _Tally | None = None
        self._lock = threading.Lock()

    def start(self) -> StorageScp:
        if self._server is not None:
            return self
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = storage_scp_contexts()
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.network_timeout = self._network_timeout_s
        ae.acse_timeout = self._network_timeout_s
        ae.dimse_timeout = self._network_timeout_s
        try:
            server = ae.make_server(
                (self.address, self.port), server_class=ThreadedAssociationServer,
                evt_handlers=[(evt.EVT_C_STORE, self._on_c_store), (evt.EVT_PDU_RECV, self.activity.touch)],
            )
        except OSError as exc:
            raise PacsError(
                f"Cannot receive images on {self.address}:{self.port}: {exc.strerror or exc} "
                "(is another program using that port?).") from exc
        # Our own serving thread (not ae.start_server) so that the poll interval, and with it stop(), is short.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": SCP_POLL_S},
                                        name="viewer.pacs.storage-scp", daemon=True)
        self._thread.start()
        self._server = server
        self.port = server.server_address[1]
        log.debug("storage SCP %s listening on %s:%d", self.ae_title, self.address, self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        # socketserver's shutdown: pynetdicom's override also unregisters from ae.start_server's list,
        # which this server was never put on.
        socketserver.BaseServer.shutdown(server)
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> StorageScp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @contextmanager
    def receiving(self, tally: _Tally) -> Iterator[None]:
        with self._lock:
            if self._tally is not None:
                raise RuntimeError("this Storage SCP already serves a retrieval")
            self._tally = tally
        try:
            yield
        finally:
            with self._lock:
                self._tally = None

    def _on_c_store(self, event: Any) -> int:
        tally = self._tally
        if tally is None:
            log.warning("C-STORE of %s refused: no retrieval is running", event.request.AffectedSOPInstanceUID)
            return DimseStatus.OUT_OF_RESOURCES
        return tally.on_c_store(event)


# -- the client ---------------------------------------------------------------------------------------------


class DimseClient:
    """A DIMSE Service Class User for one node: C-ECHO, C-FIND, C-GET, C-MOVE (PS3.4 Annexes A and C).

    ``via`` selects what :meth:`retrieve` uses: ``"get"`` (C-GET, the instances come back on our association)
    or ``"move"`` (C-MOVE to our own AE title, received by a :class:`StorageScp` on ``storage_port``; the PACS
    must list our AE title with this host and port).  A retrieval of listed instances runs on up to
    ``associations`` parallel associations, so the sink must be thread-safe (``Library.store_bytes`` is).
    Thread-safe: each call opens its own associations; C-MOVEs share the client's Storage SCP and take turns.
    Call :meth:`close` (or use ``with``) to stop that SCP.
    """

    def __init__(
        self,
        node: Node,
        *,
        via: str = "get",
        storage_port: int = DEFAULT_STORAGE_PORT,
        storage_address: str = DEFAULT_STORAGE_ADDRESS,
        associations: int = DEFAULT_ASSOCIATIONS,
        lean_get: bool = True,
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
        self.lean_get = lean_get

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
    ) -> list[dict[str, str]]:
        """Query the node; return one ``{keyword: text}`` dict per match (at most `limit`; then C-CANCEL).

        Study Root model, Patient Root for level ``"patient"``.  `keys` are DICOM keywords with matching values;
        each level also asks for :data:`DEFAULT_RETURN_KEYS`.  Names and IDs in the results are patient data:
        never log them.
        """
        if not 1 <= limit <= FIND_RESULTS_LIMIT_MAX:
            raise ValueError(f"limit must be between 1 and {FIND_RESULTS_LIMIT_MAX}")
        identifier = query_identifier(level, keys or {})
        model = PatientRootQueryRetrieveInformationModelFind if level == "patient" else StudyRootQueryRetrieveInformationModelFind
        _check_cancel(cancel)
        results: list[dict[str, str]] = []
        conn = _connect(self.node, [build_context(model, list(UNCOMPRESSED_SYNTAXES))])
        try:
            msg_id = conn.next_msg_id()
            truncated = threading.Event()

            def stop() -> bool:
                return truncated.is_set() or (cancel is not None and cancel.is_set())

            def send_cancel() -> None:
                conn.assoc.send_c_cancel(msg_id, query_model=model)

            final: Dataset | None = None
            with _Watchdog(conn, self.node.timeouts.dimse_s, stop, send_cancel) as dog:
                responses = self._send("C-FIND", lambda: conn.assoc.send_c_find(identifier, model, msg_id=msg_id))
                for status, match in responses:
                    if "Status" not in status:
                        break
                    if code_to_category(status.Status) == STATUS_PENDING:
                        if match is not None and not truncated.is_set():
                            results.append(identifier_to_dict(match))
                            if len(results) >= limit:
                                truncated.set()
                        continue
                    final = status
            user_cancelled = cancel is not None and cancel.is_set()
            if final is None:
                if dog.fired == "cancel" and truncated.is_set() and not user_cancelled:
                    return results  # the peer ignored our C-CANCEL after the limit: we have what we wanted
                raise self._ended(conn, dog, "C-FIND")
            code = final.Status
            if user_cancelled and code == DimseStatus.CANCEL:
                raise OperationCancelled("The search was cancelled.")
            if code_to_category(code) == STATUS_FAILURE:
                raise PacsStatusError(f"The PACS {self.node.describe()} could not run the search: "
                                      f"{describe_status(code)}.", code)
            if truncated.is_set():
                log.info("C-FIND stopped at the limit of %d matches", limit)
            return results
        finally:
            conn.close()

    # -- C-STORE as SCU (PS3.4 B.2) ----------------------------------------------------------------------

    def store(
        self,
        instances: Sequence[bytes],
        *,
        on_stored: Callable[[str, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, int]:
        """Send Part 10 files to the node with C-STORE on one association; return ``{SOP Instance UID: status}``
        for every instance that got an answer, in order.

        ``on_stored(uid, status)`` is called as each answer arrives, so that a caller whose association breaks
        knows which instances were acknowledged.  Success, the warnings (PS3.4 B.2.3) and Duplicate SOP
        Instance (0x0111) mean the node holds the instance.  A failure status is returned, not raised: it
        concerns that instance only.  Association failures raise the translated error.
        """
        if len(instances) > STORE_INSTANCES_MAX:
            raise ValueError(f"at most {STORE_INSTANCES_MAX} instances per store() call")
        pairs: dict[tuple[str, str], None] = {}  # (SOP class, transfer syntax): one context each
        for data in instances:  # headers only: every file is checked before anything is sent
            header = _part10_dataset(data, stop_before_pixels=True)
            pairs[(str(header.SOPClassUID), str(header.file_meta.TransferSyntaxUID))] = None
        if not instances:
            return {}
        if len(pairs) > PRESENTATION_CONTEXTS_MAX:
            raise PacsError(f"Too many kinds of images ({len(pairs)}) for one association; send fewer at once.")
        contexts = [build_context(sop_class, [syntax]) for sop_class, syntax in pairs]
        _check_cancel(cancel)
        answers: dict[str, int] = {}
        conn = _connect(self.node, contexts)
        try:
            for data in instances:
                _check_cancel(cancel)
                ds = _part10_dataset(data)  # decoded one at a time, sent as it was encoded (same transfer syntax)
                uid = str(ds.SOPInstanceUID)
                with _Watchdog(conn, self.node.timeouts.dimse_s, lambda: False, lambda: None) as dog:
                    response: Dataset = self._send(  # type: ignore[assignment]  # one response, not an iterator
                        "C-STORE", lambda ds=ds: conn.assoc.send_c_store(ds, msg_id=conn.next_msg_id()))
                if "Status" not in response:
                    raise self._ended(conn, dog, "C-STORE")
                code = int(response.Status)
                answers[uid] = code
                if code_to_category(code) == STATUS_FAILURE and code != DimseStatus.DUPLICATE_SOP_INSTANCE:
                    log.warning("C-STORE of %s refused: %s", uid, describe_status(code))
                if on_stored is not None:
                    on_stored(uid, code)
            return answers
        finally:
            conn.close()

    # -- C-GET (PS3.4 C.4.3) ----------------------------------------------------------------------------

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
        reject_unrequested: bool = False,
        on_unrequested: Callable[[str], None] | None = None,
    ) -> RetrieveResult:
        """Retrieve a study, a series, or listed instances of one series with C-GET; each instance goes to
        `sink` as the Part 10 bytes received, by the lean SCU of :mod:`viewer.pacs.fastget` (the same
        contract, about 4x less CPU per instance; a :class:`~viewer.library.writer.GroupWriter` sink gets group
        commits), or by pynetdicom when ``lean_get`` is off or the peer does not take our lean association
        request.  `sop_class_uids` (the SOP classes expected) lets us offer
        every compressed transfer syntax for each, so the peer needs not transcode (see
        :func:`get_presentation_contexts`).  Cancelling keeps what the sink already has.

        With `reject_unrequested` and a list of `sop_instance_uids`, an instance the peer sends that is not
        on the list is refused with NOT_AUTHORIZED (PS3.7 C.5) and its UID handed to `on_unrequested`.
        """
        if reject_unrequested and sop_instance_uids is None:
            raise ValueError("reject_unrequested needs a list of SOP Instance UIDs")
        if self.lean_get:
            from viewer.pacs.fastget import FastGetClient, LeanAssociationFailed  # it builds on this module

            lean = FastGetClient(self.node, associations=self.associations, lane_instances_min=LANE_INSTANCES_MIN)
            try:
                return lean.get(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress,
                                cancel=cancel, sop_class_uids=sop_class_uids, reject_unrequested=reject_unrequested,
                                on_unrequested=on_unrequested)
            except LeanAssociationFailed as exc:
                log.info("lean C-GET association with %s failed (%s); using pynetdicom", self.node.describe(), exc)
        allowed = set(sop_instance_uids) if reject_unrequested and sop_instance_uids is not None else None
        contexts, roles = get_presentation_contexts(sop_class_uids)
        model = StudyRootQueryRetrieveInformationModelGet

        def connect(tally: _Tally) -> _Connection:
            return _connect(self.node, contexts, ext_neg=roles, handlers=[(evt.EVT_C_STORE, tally.on_c_store)])

        def send(conn: _Connection, identifier: Dataset, msg_id: int) -> Iterator[Any]:
            return conn.assoc.send_c_get(identifier, model, msg_id=msg_id)

        return self._retrieve("C-GET", model, study_uid, series_uid, sop_instance_uids, sink, progress, cancel,
                              connect, send, allowed=allowed, on_unrequested=on_unrequested)

    # -- C-MOVE (PS3.4 C.4.2) ---------------------------------------------------------------------------

    def move(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink,
        destination_ae: str | None = None,
        storage_port: int | None = None,
        storage_address: str | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RetrieveResult:
        """Retrieve with C-MOVE to `destination_ae` (default: our calling AE title), receiving the instances
        with our own :class:`StorageScp` on `storage_port` for the duration.  The PACS sends them over its
        own association(s) to the host and port it has configured for that AE title."""
        destination = validate_ae_title(destination_ae or self.node.calling_ae, "move destination AE title")
        port = self.storage_port if storage_port is None else storage_port
        address = storage_address or self.storage_address
        model = StudyRootQueryRetrieveInformationModelMove
        with self._move_lock:  # one C-MOVE at a time per client: they share the Storage SCP
            scp = self._storage_scp(destination, port, address)

            # The instances arrive on the SCP's associations: their PDUs count as the peer's activity too.
            def connect(tally: _Tally) -> _Connection:
                return _connect(self.node, [build_context(model, list(UNCOMPRESSED_SYNTAXES))], activity=scp.activity)

            def send(conn: _Connection, identifier: Dataset, msg_id: int) -> Iterator[Any]:
                return conn.assoc.send_c_move(identifier, destination, model, msg_id=msg_id)

            hint = (f"; check that it knows '{destination}' as a C-MOVE destination at this computer's address, "
                    f"port {scp.port}")
            return self._retrieve("C-MOVE", model, study_uid, series_uid, sop_instance_uids, sink, progress, cancel,
                                  connect, send, around=scp.receiving, failure_hint=hint)

    def _storage_scp(self, ae_title: str, port: int, address: str) -> StorageScp:
        """The Storage SCP for our C-MOVEs, started on first use and kept until close()."""
        scp = self._scp
        if scp is not None and (scp.ae_title, scp.address) == (ae_title, address) and port in (0, scp.port):
            return scp
        self.close()
        self._scp = StorageScp(ae_title, port, address, self.node.timeouts.network_s).start()
        return self._scp

    # -- the transport-neutral interface (viewer.pacs.client.PacsClient) -------------------------------

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        sop_instance_uids: Sequence[str] | None = None,
        *,
        sink: Sink,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
        sop_class_uids: Collection[str] | None = None,
    ) -> RetrieveResult:
        if self.via == "move":
            return self.move(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress, cancel=cancel)
        return self.get(study_uid, series_uid, sop_instance_uids, sink=sink, progress=progress, cancel=cancel,
                        sop_class_uids=sop_class_uids)

    # -- shared -----------------------------------------------------------------------------------------

    def _lanes(self, sop_instance_uids: Sequence[str] | None) -> list[list[str] | None]:
        """Split a SOP Instance UID list over up to ``associations`` parallel associations (interleaved, so
        that every part of a series fills in at once); a study or series request runs on one."""
        if sop_instance_uids is None:
            return [None]
        uids = list(dict.fromkeys(sop_instance_uids))
        count = max(1, min(self.associations, len(uids) // LANE_INSTANCES_MIN))
        return [uids[i::count] for i in range(count)]

    def _retrieve(
        self,
        service: str,
        model: str,
        study_uid: str,
        series_uid: str | None,
        sop_instance_uids: Sequence[str] | None,
        sink: Sink,
        progress: Progress | None,
        cancel: threading.Event | None,
        connect: Callable[[_Tally], _Connection],
        send: Callable[[_Connection, Dataset, int], Iterator[Any]],
        around: Callable[[_Tally], Any] | None = None,
        failure_hint: str = "",
        allowed: Collection[str] | None = None,
        on_unrequested: Callable[[str], None] | None = None,
    ) -> RetrieveResult:
        """Run a C-GET or C-MOVE over one or more lanes (associations), each with its own identifiers."""
        lanes = [retrieve_identifiers(study_uid, series_uid, uids) for uids in self._lanes(sop_instance_uids)]
        expected = len(set(sop_instance_uids)) if sop_instance_uids is not None else None
        tally = _Tally(sink, progress, expected, allowed, on_unrequested)
        lane_failed = threading.Event()  # one lane failed: the others stop (C-CANCEL) and we raise its error
        _check_cancel(cancel)
        started = time.monotonic()

        def stop() -> bool:
            return tally.fatal is not None or lane_failed.is_set() or (cancel is not None and cancel.is_set())

        def run_lane(identifiers: list[Dataset]) -> None:
            conn = connect(tally)
            try:
                for identifier in identifiers:
                    if tally.fatal is not None:
                        raise tally.fatal
                    if stop():  # cancelled, or another lane failed (its error is the one raised)
                        raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
                    self._retrieve_one(conn, service, model, tally, stop, identifier,
                                       lambda msg_id, ds=identifier: send(conn, ds, msg_id), failure_hint)
            except BaseException:
                lane_failed.set()
                raise
            finally:
                conn.close()

        with around(tally) if around is not None else _no_scp():
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
                    raise _most_telling(errors)
        if tally.fatal is not None:
            raise tally.fatal
        return tally.result(time.monotonic() - started)

    def _send(self, service: str, send: Callable[[], Iterator[Any]]) -> Iterator[Any]:
        try:
            return send()
        except ValueError as exc:  # pynetdicom: no accepted presentation context for the model
            raise PacsError(f"The PACS {self.node.describe()} does not offer {service} (Study Root).") from exc
        except RuntimeError as exc:  # the association ended before the request could be sent
            raise AssociationAbortedError(
                f"The association with the PACS {self.node.describe()} ended before the {service}.") from exc

    def _retrieve_one(
        self,
        conn: _Connection,
        service: str,
        model: str,
        tally: _Tally,
        stop: Callable[[], bool],
        identifier: Dataset,
        send: Callable[[int], Iterator[Any]],
        failure_hint: str = "",
    ) -> None:
        """One C-GET/C-MOVE request and its responses (PS3.4 C.4.2.3 / C.4.3.3)."""
        msg_id = conn.next_msg_id()
        # C-GET instances arrive on this lane's association; C-MOVE's on the Storage SCP's, for all lanes.
        scope = conn.assoc if service == "C-GET" else None
        received_before = tally.received(scope)

        def send_cancel() -> None:
            conn.assoc.send_c_cancel(msg_id, query_model=model)

        final: tuple[Dataset, Dataset | None] | None = None
        with _Watchdog(conn, self.node.timeouts.dimse_s, stop, send_cancel) as dog:
            for status, response_identifier in self._send(service, lambda: send(msg_id)):
                if "Status" not in status:
                    break
                if code_to_category(status.Status) == STATUS_PENDING:
                    tally.on_pending(status)
                    continue
                final = (status, response_identifier)
        if tally.fatal is not None:
            raise tally.fatal
        if final is None:
            raise self._ended(conn, dog, service, nothing_yet=tally.received() == 0)
        status, response_identifier = final
        tally.on_final(status, response_identifier, _count_uids(identifier), tally.received(scope) - received_before)
        code = status.Status
        category = code_to_category(code)
        if code == DimseStatus.CANCEL or category == STATUS_CANCEL:
            if dog.cancel_sent:
                raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
            raise PacsStatusError(f"The PACS {self.node.describe()} cancelled the {service}.", code)
        if category == STATUS_FAILURE:
            hint = failure_hint if tally.received(scope) == received_before else ""
            raise PacsStatusError(
                f"The PACS {self.node.describe()} could not complete the {service}: {describe_status(code)}{hint}.",
                code)
        if category == STATUS_WARNING:
            log.info("%s ended with %s", service, describe_status(code))

    def _ended(self, conn: _Connection, dog: _Watchdog, service: str, nothing_yet: bool = False) -> MifasError:
        """The error for an operation that ended without a final response."""
        if dog.fired == "cancel":
            return OperationCancelled(f"The {service} was cancelled; what had arrived was kept.")
        if dog.fired == "timeout":
            return PacsTimeoutError(
                f"The PACS {self.node.describe()} stopped answering: nothing received for "
                f"{self.node.timeouts.dimse_s:g} s during the {service}.")
        hint = ""
        if nothing_yet and service in ("C-GET", "C-MOVE"):
            hint = f" (it may not allow {service} from our AE title '{self.node.calling_ae}')"
        if conn.assoc.acse.is_aborted("a-p-abort"):
            return AssociationAbortedError(
                f"The PACS {self.node.describe()} closed the connection during the {service}{hint}.")
        return AssociationAbortedError(f"The PACS {self.node.describe()} aborted the association during the {service}{hint}.")


def _most_telling(errors: list[BaseException]) -> BaseException:
    """Of the errors of parallel lanes, the one that explains the others (they were stopped because of it)."""
    for error in errors:
        if not isinstance(error, OperationCancelled):
            return error
    return errors[0]


@contextmanager
def _no_scp() -> Iterator[None]:
    yield


def _count_uids(identifier: Dataset) -> int | None:
    if identifier.QueryRetrieveLevel != "IMAGE":
        return None
    value = identifier.SOPInstanceUID
    return len(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else 1


def store_succeeded(code: int) -> bool:
    """Whether a C-STORE status means the peer now holds the instance (success, a warning, or duplicate)."""
    return code == DimseStatus.DUPLICATE_SOP_INSTANCE or code_to_category(code) in (STATUS_SUCCESS, STATUS_WARNING)


def _part10_dataset(data: bytes, stop_before_pixels: bool = False) -> Dataset:
    """Decode one Part 10 file for sending; a file we cannot send raises MalformedDicomError."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
        _ = ds.file_meta.TransferSyntaxUID, ds.SOPClassUID, ds.SOPInstanceUID
    except Exception as exc:
        raise MalformedDicomError(f"The image cannot be sent: it is not a readable DICOM file ({type(exc).__name__}).") from exc
    if not is_valid_uid(str(ds.SOPInstanceUID)):
        raise MalformedDicomError("The image cannot be sent: its SOP Instance UID is not valid.")
    return ds


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The operation was cancelled.")
