"""The retry-and-resume engine over a cluster profile: every operation survives a takeover within the budget.

:class:`ResilientClient` runs each operation through :func:`~viewer.pacs.retry.run_with_retry` over the
profile's candidates (virtual IP first, then the members):

- **echo**, **find** (C-FIND), **qido** (QIDO-RS): re-issued whole after a failure (queries are idempotent).
- **retrieve**: the expected instances of each series are listed first (IMAGE-level C-FIND / QIDO-RS); each
  attempt asks only for those not yet held, by SOP Instance UID at IMAGE level (C-GET, C-MOVE) or per
  instance (WADO-RS).  What arrived is already safe: the library stores atomically (no partial file is ever
  visible) and idempotently (a re-sent instance is not duplicated).  C-GET rejects any instance it did not
  ask for (NOT_AUTHORIZED) and reports it.  When a node refuses a method for good (a permanent error), the
  next one the profile allows is tried (C-GET -> C-MOVE -> WADO-RS).  One failing series never stops the
  others; a cluster that stays down past the budget fails the remaining series at once, with the same reason.
- **store** (C-STORE SCU): instances not yet acknowledged are re-sent with the same SOP Instance UID;
  "duplicate" counts as stored.  The instance that was in flight when an association broke may have arrived
  (only the response was lost): before re-sending, an IMAGE-level C-FIND on the node now answering checks.

Waiting: a node that stops sending is noticed by the DIMSE/HTTP *silence* timeout (``timeouts.dimse_s``, reset
by every PDU or chunk); there is no whole-transfer deadline, so a slow moving transfer is never cut.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pydicom

from viewer.errors import MalformedDicomError, MifasError, OperationCancelled, PacsError
from viewer.library.store import Library, is_valid_uid
from viewer.library.writer import GroupWriter
from viewer.pacs.client import plan_study  # the shared study planner (series, then instances)
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.dicomweb import DicomWebClient
from viewer.pacs.dimse import DEFAULT_ASSOCIATIONS, DimseClient, store_succeeded
from viewer.pacs.node import FIND_RESULTS_MAX, Node, Progress, RetrieveResult, Sink
from viewer.pacs.reach import first_accepting, url_address
from viewer.pacs.retry import (
    Attempt,
    AttemptFailed,
    FellBack,
    OnEvent,
    Resumed,
    RetryEvent,
    UnrequestedInstance,
    classify,
    run_with_retry,
)

log = logging.getLogger(__name__)

OPERATION = {"get": "C-GET", "move": "C-MOVE", "wado": "WADO-RS"}
# A node that accepts the association and then aborts every C-GET before sending anything, this many times in a
# row while we keep reaching it, is taken to refuse C-GET from us (Orthanc does so for callers it does not know).
REFUSAL_ABORTS = 3
STORE_BATCH_MAX = 1000  # instances per store() call; callers split larger sends
UNREQUESTED_REPORTED_MAX = 256


@dataclass(frozen=True)
class SeriesOutcome:
    series_uid: str
    expected: int
    held: int  # of the expected, now in the library (or received, without a library)
    error: str = ""  # the reason the series is incomplete; "" when complete
    method: str = ""  # the retrieval method that finished it (or was last tried)

    @property
    def complete(self) -> bool:
        return not self.error and self.held >= self.expected


@dataclass(frozen=True)
class ClusterRetrieveResult:
    """A retrieval over a cluster: the usual counts, plus each series' outcome and anything refused."""

    result: RetrieveResult
    series: tuple[SeriesOutcome, ...]
    unrequested: tuple[str, ...] = ()  # SOP Instance UIDs the PACS sent without being asked (refused)

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.series)

    @property
    def expected(self) -> int:
        return sum(s.expected for s in self.series)

    @property
    def held(self) -> int:
        return sum(s.held for s in self.series)

    def describe(self) -> str:
        text = f"{self.held} of {self.expected} images are here"
        failed = [s for s in self.series if not s.complete]
        if failed:
            text += f"; {len(failed)} series incomplete ({failed[0].error})"
        if self.unrequested:
            text += f"; {len(self.unrequested)} image(s) sent without being asked for were refused"
        return text + "."


@dataclass(frozen=True)
class StoreOutcome:
    """What a C-STORE of many instances achieved: acknowledged by the node, found there after an
    interruption (the response was lost), or refused (UID -> reason)."""

    acknowledged: tuple[str, ...] = ()
    verified: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    error: str = ""  # why the rest was not sent (the budget ran out, ...); "" when all were handled

    @property
    def stored(self) -> tuple[str, ...]:
        return self.acknowledged + self.verified


class _Received:
    """Wraps the sink: records what was stored (thread-safe; C-GET lanes and WADO workers call it)."""

    def __init__(self, sink: Sink, library: Library | None) -> None:
        self._sink = sink
        self._library = library
        self._lock = threading.Lock()
        self.uids: set[str] = set()
        self.new = 0
        self.bytes = 0

    def __call__(self, data: bytes) -> object:
        result = self._sink(data)
        uid = getattr(result, "sop_instance_uid", None) or _sop_instance_uid(data)
        with self._lock:
            if uid not in self.uids:
                self.uids.add(uid)
                self.new += 1
                self.bytes += len(data)
        return result

    def adopt(self, library: Library, study_uid: str) -> None:
        """Count what a group-committed attempt put in the library for this study (the library held none of it
        before: the whole-study attempt runs only then) as received now."""
        for record in library.series(study_uid):
            for instance in library.instances(record.series_uid):
                with self._lock:
                    if instance.sop_instance_uid not in self.uids:
                        self.uids.add(instance.sop_instance_uid)
                        self.new += 1
                        self.bytes += instance.size_bytes

    def held(self, uid: str) -> bool:
        with self._lock:
            if uid in self.uids:
                return True
        return self._library is not None and self._library.has_instance(uid)


def _sop_instance_uid(data: bytes) -> str:
    try:
        return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
    except Exception as exc:
        raise MalformedDicomError("A received image has no readable SOP Instance UID.") from exc


class ResilientClient:
    """Echo, find, retrieve and store against a :class:`ClusterProfile`, retrying and resuming across
    failovers.  `library` is where retrievals go (its ``store_bytes`` is the sink) and what says which
    instances are already here; `on_event` receives the :mod:`viewer.pacs.retry` events (from worker
    threads).  Thread-safe: every call opens its own associations."""

    def __init__(self, profile: ClusterProfile, library: Library | None = None, on_event: OnEvent | None = None,
                 *, associations: int = DEFAULT_ASSOCIATIONS) -> None:
        self.profile = profile
        self.library = library
        self.on_event = on_event
        self.associations = associations

    def close(self) -> None:
        """Nothing is held between calls; here for symmetry with the PacsClient interface."""

    def _run(self, op: Callable[[Attempt[Node]], Any], operation: str, candidates: Sequence[Node],
             cancel: threading.Event | None, on_event: OnEvent | None = None) -> Any:
        if not candidates:
            raise PacsError(f"The cluster '{self.profile.name}' has no address for {operation}.")
        web = operation in ("WADO-RS", "QIDO-RS")
        addresses = [url_address(n.dicomweb_url) if web and n.dicomweb_url else (n.host, n.port)
                     for n in candidates]
        connect_s = min(n.timeouts.connect_s for n in candidates)

        def reachable(prefer_from: int, wait_s: float) -> int | None:
            return first_accepting(addresses, connect_s=connect_s, wait_s=wait_s, prefer_from=prefer_from,
                                   cancel=cancel)

        return run_with_retry(op, self.profile.retry, candidates=candidates, describe=lambda n: n.name,
                              operation=operation, on_event=on_event or self.on_event, cancel=cancel,
                              reachable=reachable)

    # -- echo and queries ----------------------------------------------------------------------------------

    def echo(self, *, cancel: threading.Event | None = None) -> tuple[str, float]:
        """C-ECHO through the cluster; return the name of the node that answered and the round trip (s)."""
        return self._run(lambda a: (a.node.name, DimseClient(a.node).echo()), "C-ECHO",
                         self.profile.candidates(), cancel)

    def find(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = FIND_RESULTS_MAX) -> list[dict[str, str]]:
        """C-FIND (or QIDO-RS when the profile has no DIMSE), re-issued whole after a failure."""
        if "dimse" not in self.profile.transports:
            return self.qido(level, keys, cancel=cancel, limit=limit)
        return self._run(lambda a: DimseClient(a.node).find(level, keys, cancel=cancel, limit=limit), "C-FIND",
                         self.profile.candidates(), cancel)

    def qido(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = FIND_RESULTS_MAX) -> list[dict[str, str]]:
        def op(attempt: Attempt[Node]) -> list[dict[str, str]]:
            with _WebSession(attempt.node) as web:
                return web.qido(level, keys, cancel=cancel, limit=limit)
        return self._run(op, "QIDO-RS", self.profile.web_candidates(), cancel)

    # -- retrieval -----------------------------------------------------------------------------------------

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        *,
        sink: Sink | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> ClusterRetrieveResult:
        """Fetch a study (or one series) into the library (or `sink`), resuming after interruptions.

        Returns per-series outcomes rather than raising for one failed series; raises only for what stops
        everything: cancellation (OperationCancelled), a local problem (LibraryError, e.g. the disk is full),
        or a study the cluster cannot even list within the budget.
        """
        if sink is None:
            if self.library is None:
                raise ValueError("retrieve needs a library or a sink")
            sink = self.library.store_bytes
        if not is_valid_uid(study_uid) or (series_uid is not None and not is_valid_uid(series_uid)):
            raise PacsError("The study or series UID to retrieve is not a valid UID.")
        started = time.monotonic()
        outage: list[float] = []  # when the fast first attempt broke, if it did
        received = _Received(sink, self.library)
        if self._whole_first(study_uid, sink):
            fast = self._whole_attempt(study_uid, series_uid, received, progress, cancel, outage, started)
            if fast is not None:
                return fast
        # After a broken fast attempt the listing is part of resuming the C-GET: its failures are reported as
        # the C-GET's, and the resumption once the missing images flow again (with the counts).
        lister = _Lister(self, "C-GET", cancel) if outage else self
        plans = plan_study(lister, study_uid, series_uid, cancel)
        fast_new = received.new
        total = sum(len(p.ordered) for p in plans)
        unrequested: list[str] = []
        report = _ProgressReport(progress, total, sum(1 for p in plans for u in p.ordered if received.held(u)))
        report.start()
        resumed: list[Resumed] = []

        def first_image_again() -> None:
            """The fast attempt broke and the planned one got through at once (so the retry loop, which saw no
            failure, says nothing): the first image that arrives again is the resumption."""
            if outage and not resumed and self.on_event is not None:
                node = self.profile.candidates()[0].name  # an attempt that got through at once ran there
                self.on_event(Resumed("C-GET", node, time.time(), attempt=2, outage_s=time.monotonic() - outage[0],
                                      done=report.initial, total=report.total))

        report.on_first = first_image_again

        def on_event(event: RetryEvent) -> None:
            if isinstance(event, UnrequestedInstance) and len(unrequested) < UNREQUESTED_REPORTED_MAX:
                unrequested.append(event.sop_instance_uid)
            if isinstance(event, Resumed):
                resumed.append(event)
            if self.on_event is not None:
                self.on_event(event)

        outcomes: list[SeriesOutcome] = []
        down: str = ""  # set when the cluster stayed down past the budget: the other series fail at once
        for plan in plans:
            if cancel is not None and cancel.is_set():
                raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
            if down:
                held = sum(1 for u in plan.ordered if received.held(u))
                outcomes.append(SeriesOutcome(plan.series_uid, len(plan.ordered), held, down))
                continue
            outcome, gave_up = self._retrieve_series(study_uid, plan, received, report, on_event, cancel)
            outcomes.append(outcome)
            if gave_up:
                down = outcome.error
        result = RetrieveResult(completed=received.new, failed=sum(s.expected - s.held for s in outcomes),
                                skipped_already_held=report.initial - fast_new, bytes=received.bytes,
                                seconds=time.monotonic() - started, sop_instance_uids=tuple(sorted(received.uids)))
        return ClusterRetrieveResult(result, tuple(outcomes), tuple(unrequested))

    def _whole_first(self, study_uid: str, sink: Sink) -> bool:
        """Whether to try the fast first attempt: one C-GET of the whole study (or series) with no listing
        first.  Only for a study the library does not hold any of (nothing to resume), into the library."""
        return (self.library is not None and sink == self.library.store_bytes and self.profile.preferred == "get"
                and "dimse" in self.profile.transports and not self.library.series(study_uid))

    def _whole_attempt(self, study_uid: str, series_uid: str | None, received: _Received,
                       progress: Progress | None, cancel: threading.Event | None, outage: list[float],
                       started: float) -> ClusterRetrieveResult | None:
        """One C-GET at STUDY (SERIES) level through the first candidate, as getscu does: no C-FIND before,
        so a healthy cluster costs one round of requests.  Returns the result when the PACS reported every
        sub-operation completed; None when anything went wrong (then the planned, resumable path lists the
        instances and asks only for what is missing; a transient failure is reported as the outage start)."""
        assert self.library is not None
        node = self.profile.candidates()[0]
        try:
            # Group commits (viewer.library.writer): an instance counts, and shows in `progress`, once its batch
            # is durable in the library; get() flushes the writer before it returns or raises.
            with GroupWriter(self.library) as writer:
                result = DimseClient(node, associations=self.associations).get(
                    study_uid, series_uid, sink=writer, progress=progress, cancel=cancel)
        except OperationCancelled:
            raise
        except MifasError as exc:
            received.adopt(self.library, study_uid)
            verdict = classify(exc, progressed=received.new > 0)
            if verdict.kind in ("local", "bug"):
                raise
            if verdict.transient:
                outage.append(time.monotonic())
                if self.on_event is not None:
                    self.on_event(AttemptFailed("C-GET", node.name, time.time(), 1, verdict.kind, verdict.reason,
                                                True, 0.0))
            log.info("whole-study C-GET of %s did not finish (%s); listing and resuming", study_uid, verdict.kind)
            return None
        if result.failed or result.warnings or not result.completed:
            received.adopt(self.library, study_uid)
            return None
        outcomes = []
        for record in self.library.series(study_uid):
            if series_uid is not None and record.series_uid != series_uid:
                continue
            count = len(self.library.instance_uids(record.series_uid))
            outcomes.append(SeriesOutcome(record.series_uid, count, count, "", "get"))
        if not outcomes:
            return None
        return ClusterRetrieveResult(replace(result, seconds=time.monotonic() - started), tuple(outcomes))

    def _retrieve_series(self, study_uid: str, plan: Any, received: _Received, report: _ProgressReport,
                         on_event: OnEvent, cancel: threading.Event | None) -> tuple[SeriesOutcome, bool]:
        """One series, method after method; returns its outcome and whether the cluster stayed down."""
        methods = self.profile.retrievals()
        last_error = ""
        for position, method in enumerate(methods):
            candidates = self.profile.web_candidates() if method == "wado" else self.profile.candidates()
            if not candidates:
                continue
            op = _SeriesAttempt(self, method, study_uid, plan, received, report, on_event, cancel)
            try:
                self._run(op, OPERATION[method], candidates, cancel, on_event)
            except OperationCancelled:
                raise
            except MifasError as exc:
                verdict = classify(exc)
                last_error = str(exc)
                if verdict.kind in ("local", "bug"):
                    raise
                held = sum(1 for u in plan.ordered if received.held(u))
                if verdict.transient:  # gave up within the budget: the cluster is down, not this method
                    return SeriesOutcome(plan.series_uid, len(plan.ordered), held, last_error, method), True
                if position + 1 < len(methods):
                    on_event(FellBack(OPERATION[method], candidates[0].name, time.time(), method,
                                      methods[position + 1], last_error))
                continue
            missing = [u for u in plan.ordered if not received.held(u)]
            error = f"{len(missing)} image(s) were not sent by the PACS" if missing else ""
            return SeriesOutcome(plan.series_uid, len(plan.ordered), len(plan.ordered) - len(missing), error,
                                 method), False
        held = sum(1 for u in plan.ordered if received.held(u))
        return SeriesOutcome(plan.series_uid, len(plan.ordered), held,
                             last_error or "no retrieval method is available", methods[-1] if methods else ""), False

    # -- C-STORE -------------------------------------------------------------------------------------------

    def store(self, instances: Sequence[bytes], *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> StoreOutcome:
        """Send Part 10 files to the cluster with C-STORE, resuming after failovers (see the module docstring).
        Does not raise for the network: the outcome says what is stored and, in ``error``, why not the rest."""
        if len(instances) > STORE_BATCH_MAX:
            raise ValueError(f"store at most {STORE_BATCH_MAX} instances per call")
        if "dimse" not in self.profile.transports:
            raise PacsError(f"The cluster '{self.profile.name}' has no DIMSE transport for C-STORE.")
        items: dict[str, tuple[bytes, str, str]] = {}  # SOP Instance UID -> (data, study, series)
        for data in instances:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            items[str(header.SOPInstanceUID)] = (data, str(header.StudyInstanceUID), str(header.SeriesInstanceUID))
        state = _StoreState(items, progress)
        try:
            self._run(lambda attempt: state.attempt(attempt, cancel), "C-STORE", self.profile.candidates(), cancel)
        except OperationCancelled:
            raise
        except MifasError as exc:
            return state.outcome(str(exc))
        return state.outcome("")


class _Lister:
    """plan_study's client while resuming a retrieval: C-FIND through the engine, reported as `operation`, its
    own Resumed event held back (the retrieval reports the resumption, with the counts)."""

    def __init__(self, client: ResilientClient, operation: str, cancel: threading.Event | None) -> None:
        self.client = client
        self.operation = operation
        self.cancel = cancel

    def _event(self, event: RetryEvent) -> None:
        if not isinstance(event, Resumed) and self.client.on_event is not None:
            self.client.on_event(event)

    def find(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = FIND_RESULTS_MAX) -> list[dict[str, str]]:
        return self.client._run(lambda a: DimseClient(a.node).find(level, keys, cancel=cancel, limit=limit),
                                self.operation, self.client.profile.candidates(), cancel, self._event)


class _ProgressReport:
    """Study-wide progress from per-series work: ``progress(held, total)``, called from worker threads."""

    def __init__(self, progress: Progress | None, total: int, initial: int) -> None:
        self._progress = progress
        self._lock = threading.Lock()
        self.total = total
        self.initial = initial
        self.done = initial
        self.on_first: Callable[[], None] | None = None  # called once, at the first new image

    def start(self) -> None:
        """Report what is already here before anything new arrives (a resumed job starts at its count)."""
        if self._progress is not None:
            self._progress(self.done, self.total)

    def one_more(self) -> None:
        with self._lock:
            self.done += 1
            done = self.done
            first, self.on_first = self.on_first, None
        if first is not None:
            first()
        if self._progress is not None:
            self._progress(done, self.total)


class _SeriesAttempt:
    """One attempt to finish one series with one method on one node: ask only for what is missing."""

    def __init__(self, client: ResilientClient, method: str, study_uid: str, plan: Any, received: _Received,
                 report: _ProgressReport, on_event: OnEvent, cancel: threading.Event | None) -> None:
        self.client = client
        self.method = method
        self.study_uid = study_uid
        self.plan = plan
        self.received = received
        self.report = report
        self.on_event = on_event
        self.cancel = cancel
        self.empty_aborts = 0

    def __call__(self, attempt: Attempt[Node]) -> None:
        # first, middle and last before the others, so that the viewer can show the series early
        ordered = self.plan.first + [u for u in self.plan.ordered if u not in set(self.plan.first)]
        missing: list[str] | None = [u for u in ordered if not self.received.held(u)]
        if not ordered:  # the node lists no instances (some do not answer IMAGE level): the whole series again,
            missing = None  # which the idempotent library makes safe, though not as cheap as a resume
        elif not missing:
            return
        already = len(self.plan.ordered) - len(missing or ())
        node = attempt.node

        def sink(data: bytes) -> object:
            result = self.received(data)
            if not attempt.progressed:
                attempt.progress(already, len(self.plan.ordered))
            if getattr(result, "added", True):
                self.report.one_more()
            return result

        def unrequested(uid: str) -> None:
            self.on_event(UnrequestedInstance(OPERATION[self.method], node.name, time.time(), uid))

        classes = self.plan.sop_class_uids or None
        try:
            if self.method == "get":
                DimseClient(node, associations=self.client.associations).get(
                    self.study_uid, self.plan.series_uid, missing, sink=sink, cancel=self.cancel,
                    sop_class_uids=classes, reject_unrequested=missing is not None, on_unrequested=unrequested)
            elif self.method == "move":
                with DimseClient(node, via="move", storage_port=self.client.profile.move_port,
                                 associations=self.client.associations) as dimse:
                    dimse.move(self.study_uid, self.plan.series_uid, missing, sink=sink, cancel=self.cancel)
            else:
                with _WebSession(node) as web:
                    web.retrieve(self.study_uid, self.plan.series_uid, missing, sink=sink, cancel=self.cancel)
        except MifasError as exc:
            self._note_refusal(exc, attempt)
            raise
        self.empty_aborts = 0

    def _note_refusal(self, exc: MifasError, attempt: Attempt[Node]) -> None:
        """Turn repeated 'association accepted, C-GET aborted before anything arrived' into a refusal."""
        verdict = classify(exc)
        if self.method != "get" or verdict.kind != "aborted" or attempt.progressed:
            self.empty_aborts = 0
            return
        self.empty_aborts += 1
        if self.empty_aborts >= REFUSAL_ABORTS:
            raise PacsError(f"The PACS {attempt.node.describe()} aborted the C-GET {self.empty_aborts} times before "
                            f"sending anything: it seems not to allow C-GET from "
                            f"'{attempt.node.calling_ae}'.") from exc


class _StoreState:
    """What a resumable C-STORE has achieved so far, across attempts."""

    def __init__(self, items: dict[str, tuple[bytes, str, str]], progress: Progress | None = None) -> None:
        self.items = items
        self.progress = progress
        self.acknowledged: list[str] = []
        self.verified: list[str] = []
        self.refused: dict[str, str] = {}
        self.uncertain: str | None = None  # in flight when an association broke: maybe stored

    def _pending(self) -> list[str]:
        done = set(self.acknowledged) | set(self.verified) | set(self.refused)
        return [u for u in self.items if u not in done]

    def attempt(self, attempt: Attempt[Node], cancel: threading.Event | None) -> None:
        node = attempt.node
        dimse = DimseClient(node)
        if self.uncertain is not None:
            uid = self.uncertain
            _, study, series = self.items[uid]
            rows = dimse.find("image", {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                                        "SOPInstanceUID": uid}, cancel=cancel, limit=1)
            attempt.progress(len(self.acknowledged) + len(self.verified), len(self.items))
            self.uncertain = None
            if any(r.get("SOPInstanceUID") == uid for r in rows):
                self.verified.append(uid)
                log.info("C-STORE of %s: the response was lost but the node holds it", uid)
        pending = self._pending()
        if not pending:
            return
        answered: set[str] = set()

        def on_stored(uid: str, code: int) -> None:
            answered.add(uid)
            if not attempt.progressed:
                attempt.progress(len(self.acknowledged) + len(self.verified), len(self.items))
            if store_succeeded(code):
                self.acknowledged.append(uid)
            else:
                self.refused[uid] = f"status 0x{code:04X}"
            if self.progress is not None:
                self.progress(len(self.items) - len(self._pending()), len(self.items))

        try:
            dimse.store([self.items[u][0] for u in pending], on_stored=on_stored, cancel=cancel)
        except MifasError as exc:
            in_flight = next((u for u in pending if u not in answered), None)
            if classify(exc).kind in ("aborted", "timeout") and in_flight is not None:
                self.uncertain = in_flight
            raise

    def outcome(self, error: str) -> StoreOutcome:
        return StoreOutcome(tuple(self.acknowledged), tuple(self.verified), dict(self.refused), error)


class _WebSession:
    """A DICOMweb client for one node, closed on exit."""

    def __init__(self, node: Node) -> None:
        if not node.dicomweb_url:
            raise PacsError(f"No DICOMweb URL is configured for '{node.name}'.")
        self._client = DicomWebClient(node.dicomweb_url, node.timeouts, node=node)

    def __enter__(self) -> DicomWebClient:
        return self._client

    def __exit__(self, *exc: object) -> None:
        self._client.close()


__all__ = ["ClusterRetrieveResult", "ResilientClient", "SeriesOutcome", "StoreOutcome"]
