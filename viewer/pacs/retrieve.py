"""The one retrieval engine: every study the viewer, ``mifas-pacs get`` or a resumed job fetches comes this way.

A source is a :class:`~viewer.pacs.cluster.ClusterProfile`: a cluster's virtual IP and members, or a single node
as a cluster of one (:meth:`ClusterProfile.of_node`).  One retrieval::

    plan      what the study holds: the series (C-FIND / QIDO-RS at SERIES level), then each series' instances
              (IMAGE level), through the retry loop; minus what the destination already holds
    fetch     what is missing, by SOP Instance UID: the first, middle and last instance of every series before
              the rest, so each series can be shown early; C-GET -> C-MOVE -> WADO-RS as the profile allows
    retry     run_with_retry over the source's candidates (viewer.pacs.retry): a broken attempt is followed by
              one that asks only for what is still missing; a method the node refuses for good falls back to
              the next; one failing series never stops the others
    accept    one InstanceSink (viewer.pacs.sink) for the whole retrieval, on every transport: only what was
              asked for, well formed, of this study; refusals are reported (UnrequestedInstance events)
    store     group commit into the library (viewer.library.writer.GroupWriter), always; or a caller's sink
              (``mifas-pacs get --out``)

When the source lists no instances (some PACS do not answer IMAGE-level queries), the study (or series) is
fetched whole, still accepted only when it belongs to it.  Persisting a retrieval as a job that resumes after a
restart is :mod:`viewer.library.jobs`' part (``run_job``), for every source alike.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from viewer.errors import MifasError, OperationCancelled, PacsError
from viewer.library.store import Library, is_valid_uid
from viewer.library.writer import GroupWriter
from viewer.limits import INSTANCES_PER_SERIES_MAX, SERIES_PER_STUDY_MAX
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.coalloc import CoAllocation, Source, SourceShare
from viewer.pacs.node import AnyEvent, Node, Progress, RetrieveResult, Sink
from viewer.pacs.retry import (
    Attempt,
    AttemptFailed,
    FellBack,
    OnEvent,
    RetryEvent,
    SourcesServed,
    UnrequestedInstance,
    classify,
)
from viewer.pacs.sink import REFUSED_LISTED_MAX, UNASKED, InstanceSink, Refusal

log = logging.getLogger(__name__)

OPERATION = {"get": "C-GET", "move": "C-MOVE", "wado": "WADO-RS"}
# A node that accepts the association and then aborts every C-GET before sending anything, this many times in a
# row while we keep reaching it, is taken to refuse C-GET from us (Orthanc does so for callers it does not know).
REFUSAL_ABORTS = 3
# A first pass that will be done within this long at the rate it shows gets no help with the first, middle and
# last images (another association beside it, on two cores, costs more than it brings).
FIRSTS_WORTH_S = 1.0


@dataclass(frozen=True)
class SeriesPlan:
    """What one series holds, by SOP Instance UID in Instance Number order, and which to fetch first."""

    series_uid: str
    ordered: tuple[str, ...]
    sop_class_uids: frozenset[str]
    first: tuple[str, ...]  # first, middle and last


@dataclass(frozen=True)
class SeriesOutcome:
    series_uid: str
    expected: int
    held: int  # of the expected, now at the destination
    error: str = ""  # the reason the series is incomplete; "" when complete
    method: str = ""  # the retrieval method that finished it (or was last tried)

    @property
    def complete(self) -> bool:
        return not self.error and self.held >= self.expected


@dataclass(frozen=True)
class RetrievalResult:
    """A retrieval: the usual counts, each series' outcome, and what was refused."""

    result: RetrieveResult
    series: tuple[SeriesOutcome, ...]
    unrequested: tuple[str, ...] = ()  # SOP Instance UIDs sent without being asked for (refused)
    sources: tuple[SourceShare, ...] = ()  # a co-allocated retrieval: what each source delivered

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
        details = []
        if self.result.completed:
            details.append(f"{self.result.completed} received")
        if self.result.skipped_already_held:
            details.append(f"{self.result.skipped_already_held} already in the library")
        if details:
            text += f" ({', '.join(details)})"
        failed = [s for s in self.series if not s.complete]
        if failed:
            text += f"; {len(failed)} series incomplete ({failed[0].error})"
        if self.unrequested:
            text += f"; {len(self.unrequested)} image(s) sent without being asked for were refused"
        if len(self.sources) > 1:
            text += "; served by " + ", ".join(f"{s.name} ({s.instances})" for s in self.sources)
        return text + "."


def first_middle_last(count: int) -> list[int]:
    """Indexes of the images a viewer shows first: first, middle, last (no repeats)."""
    return list(dict.fromkeys(i for i in (0, count // 2, count - 1) if count > 0))


def _instance_key(item: Mapping[str, str]) -> tuple[int, int, str]:
    text = item.get("InstanceNumber", "").strip()
    try:
        return (0, int(float(text)), item.get("SOPInstanceUID", ""))
    except (ValueError, OverflowError):  # empty, text, NaN, infinity: after the numbered ones
        return (1, 0, item.get("SOPInstanceUID", ""))


Find = Callable[..., list[dict[str, str]]]


def plan_study(find: Find, study_uid: str, series_uid: str | None, cancel: threading.Event | None,
               sop_class_uids: frozenset[str] = frozenset()) -> list[SeriesPlan]:
    """List each series' instances (IMAGE-level query, hierarchical: series first, PS3.4 C.4.1.3.1).
    `find(level, keys, cancel=..., limit=...)` is a C-FIND or QIDO-RS, usually through the retry loop.

    `sop_class_uids`: the study's SOP classes (SOP Classes in Study), which every series' plan then offers.
    Without them each instance's SOP Class UID is listed, which costs the PACS more: Orthanc 1.10 reads every
    instance from its storage for it (+45 ms for 200 instances, on the core that is sending the images)."""
    if series_uid:
        series_uids = [series_uid]
    else:
        rows = find("series", {"StudyInstanceUID": study_uid}, cancel=cancel, limit=SERIES_PER_STUDY_MAX)
        _bounded(rows, "series of the study")
        series_uids = list(dict.fromkeys(r["SeriesInstanceUID"] for r in rows
                                         if is_valid_uid(r.get("SeriesInstanceUID"))))
        if not series_uids:
            raise PacsError(f"The PACS lists no study {study_uid} (no series found).")
    plans = []
    for uid in series_uids:
        keys = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid, "InstanceNumber": ""}
        if not sop_class_uids:
            keys["SOPClassUID"] = ""
        rows = find("image", keys, cancel=cancel, limit=INSTANCES_PER_SERIES_MAX)
        _bounded(rows, "images of a series")
        rows = [r for r in rows if is_valid_uid(r.get("SOPInstanceUID"))]
        rows.sort(key=_instance_key)
        ordered = tuple(dict.fromkeys(r["SOPInstanceUID"] for r in rows))
        classes = sop_class_uids or frozenset(r["SOPClassUID"] for r in rows if is_valid_uid(r.get("SOPClassUID")))
        plans.append(SeriesPlan(uid, ordered, classes, tuple(ordered[i] for i in first_middle_last(len(ordered)))))
    return plans


def _bounded(rows: list[dict[str, str]], what: str) -> None:
    """A planning query the PACS flooded past its limit: say so rather than plan on a part of the study."""
    if getattr(rows, "truncated", False):
        raise PacsError(f"The PACS answered the listing of the {what} with more matches than the limit "
                        f"({len(rows)}); the retrieval was not started.")


class Retrieval:
    """One retrieval of a study (or one series) from `profile` into `library` (group commits) or `sink`.

    `held(uid)` says what the destination already has (default: the library's index).  `progress(done, total)`
    counts instances at the destination out of those the study holds; `on_event` receives the retry events and
    the refusals (from worker threads).  Use :func:`retrieve`.
    """

    def __init__(self, profile: ClusterProfile, *, library: Library | None = None, sink: Sink | None = None,
                 held: Callable[[str], bool] | None = None, progress: Progress | None = None,
                 on_event: OnEvent | None = None, cancel: threading.Event | None = None,
                 associations: int | None = None) -> None:
        if (library is None) == (sink is None):
            raise ValueError("a retrieval goes into a library or a sink")
        self.profile = profile
        self.library = library
        self.sink = sink
        self.held = held or (library.has_instance if library is not None else (lambda uid: False))
        self.progress = progress
        self.on_event = on_event
        self.cancel = cancel
        self.associations = associations
        self._node = ""  # the candidate of the attempt now running (for refusal events)
        self._attempt: Attempt[Node] | None = None
        self._refused: dict[str, None] = {}  # refused as not asked for, in order, once each
        self._method = ""
        self._initial = 0  # instances held before this retrieval, of the study's `_total` (None: not listed)
        self._total: int | None = None

    # -- the whole retrieval -------------------------------------------------------------------------------

    def run(self, study_uid: str, series_uid: str | None = None) -> RetrievalResult:
        if not is_valid_uid(study_uid) or (series_uid is not None and not is_valid_uid(series_uid)):
            raise PacsError("The study or series UID to retrieve is not a valid UID.")
        from viewer.pacs.resume import ResilientClient  # the retry loop over the candidates, for queries too

        self._client = ResilientClient(self.profile, on_event=self.on_event)
        started = time.monotonic()
        writer = GroupWriter(self.library) if self.library is not None else None
        store: Sink | GroupWriter = writer if writer is not None else self.sink  # type: ignore[assignment]
        try:
            sink = InstanceSink(store, study_uid=study_uid,
                                series_uids=None if series_uid is None else (series_uid,), progress=self._report,
                                on_refused=self._refusal)
            first = None
            classes = self._study_sop_classes(study_uid)
            if self._fresh(study_uid):
                sink.await_plan()
                first = _FirstPass(self, study_uid, series_uid, sink, classes)
            try:
                plans = plan_study(self._client.find, study_uid, series_uid, self.cancel, classes)
            except BaseException:
                if first is not None:
                    sink.abandon()  # first: the pass may wait for the writer, which holds until then
                    first.stop()
                raise
            if not any(p.ordered for p in plans):
                log.info("no instances listed for study %s; retrieving it whole", study_uid)
                sink.expect(None, None)
                if first is not None and first.finish():
                    return self._whole_result(study_uid, series_uid, sink, started, "", "get")
                return self._whole(study_uid, series_uid, sink, started)
            return self._planned(study_uid, plans, sink, started, first)
        finally:
            if writer is not None:
                writer.close()

    def _study_sop_classes(self, study_uid: str) -> frozenset[str]:
        """The SOP classes the study holds (a STUDY-level query, a few milliseconds), so that each C-GET offers
        every compressed syntax for each and the PACS sends each instance as stored, and the listing needs not
        ask every instance's class; empty when not answered (the listing asks then)."""
        def quiet(event: RetryEvent) -> None:  # a PACS that refuses this optional query is no news
            if not (isinstance(event, AttemptFailed) and not event.transient):
                self._emit(event)

        try:
            # limit 2, not 1: the one match does not reach the limit, so no C-CANCEL follows it
            rows = self._client.find("study", {"StudyInstanceUID": study_uid, "SOPClassesInStudy": ""},
                                     cancel=self.cancel, limit=2, on_event=quiet)
        except MifasError as exc:
            verdict = classify(exc)
            if verdict.transient or verdict.kind in ("local", "bug", "cancelled"):
                raise  # the source is down past the budget (or we must stop): the listing would fail alike
            log.info("SOP classes in study not answered (%s); the first pass offers the common ones", verdict.kind)
            return frozenset()
        text = rows[0].get("SOPClassesInStudy", "") if rows else ""
        return frozenset(u for u in text.split("\\") if is_valid_uid(u))

    def _fresh(self, study_uid: str) -> bool:
        """Whether to ask for the whole study at once while it is being listed (:class:`_FirstPass`): the
        library holds none of it, C-GET comes first, and there is one source."""
        return (self.library is not None and not self.library.series(study_uid)
                and self.profile.retrievals()[:1] == ("get",) and len(self.profile.sources()) < 2)

    def _planned(self, study_uid: str, plans: list[SeriesPlan], sink: InstanceSink, started: float,
                 first: _FirstPass | None) -> RetrievalResult:
        planned = {u for p in plans for u in p.ordered}
        held_before = set() if first is not None else {u for u in planned if self.held(u)}
        total = len(planned)
        initial = len(held_before)
        log.info("study %s from %s: %d instance(s) in %d series, %d already here", study_uid, self.profile.name,
                 total, len(plans), initial)
        self._initial, self._total = initial, total
        sink.expect(planned - held_before, {p.series_uid for p in plans})
        self._report(sink.stored_count(), None)
        outage: float | None = None
        if first is not None:
            # what the pass has staged counts: nothing is published (stored) before the plan
            if first.running and first.seconds_left(sink.accepted_count(), total) > FIRSTS_WORTH_S:
                self._fetch_firsts(study_uid, plans, sink)  # the viewer can show every series early
            first.finish()
            outage = first.outage_started
        outcomes: dict[str, SeriesOutcome] = {}
        pending = [p for p in plans if any(u not in held_before and not sink.held(u) for u in p.ordered)]
        shares: tuple[SourceShare, ...] = ()
        if len(self.profile.sources()) > 1 and pending:
            shares = self._coallocate(study_uid, pending, sink, held_before)
            pending = [p for p in pending if any(u not in held_before and not sink.held(u) for u in p.ordered)]
        errors: dict[str, str] = {}
        methods = self.profile.retrievals()
        method = ""
        for position, method in enumerate(methods):
            if not pending:
                break
            candidates = self.profile.web_candidates() if method == "wado" else self.profile.candidates()
            if not candidates:
                continue
            attempt_errors: dict[str, str] = {}
            fetch = _Fetch(self, method, study_uid, pending, sink, held_before, attempt_errors)
            try:
                self._client.run(fetch, OPERATION[method], candidates, self.cancel, outage_started=outage)
            except OperationCancelled:
                raise
            except MifasError as exc:
                verdict = classify(exc)
                if verdict.kind in ("local", "bug"):
                    raise
                if verdict.transient:  # gave up within the budget: the source is down, not this method
                    for plan in pending:
                        errors[plan.series_uid] = str(exc)
                    pending = []
                    break
                for plan in pending:
                    errors[plan.series_uid] = str(exc)
                if position + 1 < len(methods):
                    self._emit(FellBack(OPERATION[method], candidates[0].name, time.time(), method,
                                        methods[position + 1], str(exc)))
                continue
            still = []
            for plan in pending:
                missing = [u for u in plan.ordered if u not in held_before and not sink.held(u)]
                if not missing:
                    errors.pop(plan.series_uid, None)
                    outcomes[plan.series_uid] = SeriesOutcome(plan.series_uid, len(plan.ordered),
                                                              len(plan.ordered), "", method)
                elif plan.series_uid in attempt_errors:  # refused for good with this method: try the next
                    errors[plan.series_uid] = attempt_errors[plan.series_uid]
                    still.append(plan)
                else:
                    errors[plan.series_uid] = f"{len(missing)} image(s) were not sent by the PACS"
            pending = still
            outage = None
        sink.flush()
        for plan in plans:
            if plan.series_uid in outcomes:
                continue
            held = sum(1 for u in plan.ordered if u in held_before or sink.held(u))
            error = errors.get(plan.series_uid, "") if held < len(plan.ordered) else ""
            if held < len(plan.ordered) and not error:
                error = "no retrieval method is available"
            outcomes[plan.series_uid] = SeriesOutcome(plan.series_uid, len(plan.ordered), held, error, method)
        result = sink.total(time.monotonic() - started)
        result = dataclasses.replace(result, skipped_already_held=initial,
                                     failed=sum(o.expected - o.held for o in outcomes.values()))
        log.info("study %s: %d received, %d already here, %d missing, %d refused, %d second copies dropped",
                 study_uid, result.completed, initial, result.failed, sink.refused_count, sink.duplicates)
        return RetrievalResult(result, tuple(outcomes[p.series_uid] for p in plans), tuple(self._refused), shares)

    def _whole(self, study_uid: str, series_uid: str | None, sink: InstanceSink, started: float) -> RetrievalResult:
        """The study or series in one request per attempt (the source lists no instances), scope-checked."""
        self._initial, self._total = 0, None
        method = self.profile.retrievals()[0]
        candidates = self.profile.web_candidates() if method == "wado" else self.profile.candidates()

        def op(attempt: Attempt[Node]) -> None:
            self._begin(attempt, method)
            client = self._transport(method, attempt.node)
            try:
                client.retrieve(study_uid, series_uid, sink=sink, cancel=self.cancel)
            finally:
                client.close()

        error = ""
        try:
            self._client.run(op, OPERATION[method], candidates, self.cancel)
        except OperationCancelled:
            raise
        except MifasError as exc:
            if classify(exc).kind in ("local", "bug"):
                raise
            error = str(exc)
        return self._whole_result(study_uid, series_uid, sink, started, error, method)

    def _whole_result(self, study_uid: str, series_uid: str | None, sink: InstanceSink, started: float, error: str,
                      method: str) -> RetrievalResult:
        sink.flush()
        stored = sink.total(time.monotonic() - started)
        by_series: dict[str, int] = {}
        if self.library is not None:
            for record in self.library.series(study_uid):
                if series_uid is None or record.series_uid == series_uid:
                    by_series[record.series_uid] = len(self.library.instance_uids(record.series_uid))
        else:
            by_series[series_uid or study_uid] = len(stored.sop_instance_uids)
        outcomes = tuple(SeriesOutcome(uid, count, count, error, method) for uid, count in by_series.items())
        if not outcomes:
            outcomes = (SeriesOutcome(series_uid or study_uid, 0, 0, error or "the PACS sent no images", method),)
        return RetrievalResult(stored, outcomes, tuple(self._refused))

    def _fetch_firsts(self, study_uid: str, plans: list[SeriesPlan], sink: InstanceSink) -> None:
        """The first, middle and last instance of every series that has not arrived yet, on an association of
        their own beside the first pass (best effort: what fails here the retry loop fetches)."""
        client = self._transport("get", self.profile.candidates()[0])
        try:
            for plan in plans:
                missing = [u for u in plan.first if not sink.held(u)]
                if missing:
                    client.retrieve(study_uid, plan.series_uid, missing, sink=sink, cancel=self.cancel,
                                    sop_class_uids=plan.sop_class_uids or None)
        except OperationCancelled:
            raise
        except MifasError as exc:
            log.info("first, middle and last beside the first pass: %s", type(exc).__name__)
        finally:
            client.close()

    def _coallocate(self, study_uid: str, plans: list[SeriesPlan], sink: InstanceSink,
                    held_before: set[str]) -> tuple[SourceShare, ...]:
        """Fetch from every source of the profile at once (viewer.pacs.coalloc); what it leaves missing (every
        source failed) goes through the ordinary retry loop afterwards."""
        sources = [Source(node.name, node, method) for node, method in self.profile.sources()]
        queue = [(p.series_uid, u) for p in plans for u in p.first if u not in held_before]
        queue += [(p.series_uid, u) for p in plans for u in p.ordered if u not in p.first and u not in held_before]
        classes = {p.series_uid: p.sop_class_uids for p in plans}
        self._method = "coalloc"
        log.info("study %s: co-allocated from %d sources", study_uid, len(sources))
        co = CoAllocation(study_uid, queue, sources, sink, lambda source: self._transport(source.method, source.node),
                          lambda series_uid: classes.get(series_uid, frozenset()), on_event=self._emit,
                          cancel=self.cancel)
        shares = tuple(co.run())
        self._emit(SourcesServed("co-allocated retrieval", self.profile.name, time.time(),
                                 tuple((s.name, s.instances) for s in shares)))
        return shares

    # -- pieces ---------------------------------------------------------------------------------------------

    def _transport(self, method: str, node: Node):  # type: ignore[no-untyped-def]
        """The transport for one attempt on `node`: C-GET, C-MOVE (our Storage SCP admits only the source's
        addresses) or WADO-RS."""
        from viewer.pacs.client import open_client  # the transports import the sink, the sink not them

        peers = self.profile.candidates() if method == "move" else ()
        return open_client(node, method, move_port=self.profile.move_port, associations=self.associations,
                           move_peers=peers)

    def _report(self, stored: int, _total: int | None) -> None:
        """The sink's progress: ``progress(done, total)`` for the caller; the first image stored by an attempt
        tells the retry loop it got through (ending an outage, announcing the resumption)."""
        attempt = self._attempt
        if stored and attempt is not None and not attempt.progressed:
            attempt.progress(self._initial + stored - 1, self._total)
        if self.progress is not None:
            self.progress(self._initial + stored, self._total)

    def _begin(self, attempt: Attempt[Node], method: str) -> None:
        self._attempt = attempt
        self._node = attempt.node.name
        self._method = method

    def _refusal(self, refusal: Refusal) -> None:
        """An instance the sink refused as not asked for, or sent by a stranger: reported once per UID."""
        uid = refusal.sop_instance_uid
        if refusal.reason not in UNASKED or uid in self._refused or len(self._refused) >= REFUSED_LISTED_MAX:
            return
        self._refused[uid] = None
        self._emit(UnrequestedInstance(OPERATION.get(self._method, "retrieval"), self._node, time.time(), uid))

    def _emit(self, event: object) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)  # type: ignore[arg-type]
            except Exception:  # an observer's bug must not break the transfer
                log.exception("retrieval event observer failed")


class _FirstPass:
    """A study the library holds none of is asked for whole at once, as getscu does, while the engine lists it:
    the listing (about as long as DCMTK's findscu) then costs no time.  Its SOP classes are asked for first
    (SOPClassesInStudy), so the PACS sends each instance as stored.  Until the plan arrives, what comes
    (scope-checked: this study, this series) is staged on disk but not published; then what the plan lists is
    published and the rest withdrawn and refused (:meth:`InstanceSink.expect`); once the plan is there, the
    first, middle and last of each series come beside this pass (:meth:`Retrieval._fetch_firsts`).  When it breaks, the planned loop resumes with what is missing,
    and its budget counts from the break."""

    def __init__(self, retrieval: Retrieval, study_uid: str, series_uid: str | None, sink: InstanceSink,
                 sop_class_uids: frozenset[str]) -> None:
        self.retrieval = retrieval
        self.sop_class_uids = sop_class_uids
        self.node = retrieval.profile.candidates()[0]
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.result: RetrieveResult | None = None
        self.outage_started: float | None = None
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(study_uid, series_uid, sink),
                                        name="viewer.pacs.first-pass", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def seconds_left(self, done: int, total: int) -> float:
        """How long the pass will still take at the rate it has shown (infinite before its first instance)."""
        elapsed = time.monotonic() - self.started
        if done <= 0 or elapsed <= 0:
            return float("inf")
        return max(total - done, 0) / (done / elapsed)

    def _run(self, study_uid: str, series_uid: str | None, sink: InstanceSink) -> None:
        client = self.retrieval._transport("get", self.node)
        try:
            cancel = AnyEvent(self.retrieval.cancel, self.stopping)
            self.result = client.retrieve(study_uid, series_uid, sink=sink, cancel=cancel,  # type: ignore[arg-type]
                                          sop_class_uids=self.sop_class_uids or None)
        except BaseException as exc:  # noqa: BLE001 - judged by finish(), on the retrieval's thread
            self.error = exc
        finally:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join()

    def finish(self) -> bool:
        """Wait for the pass; True when the PACS sent the whole study without a failure.  A break that another
        try may mend is reported (AttemptFailed) and becomes the start of an outage; a local problem or a
        cancellation is raised."""
        self._thread.join()
        error = self.error
        if error is None:
            result = self.result
            return result is not None and not result.failed and not result.warnings and result.completed > 0
        if isinstance(error, OperationCancelled) and not self.stopping.is_set():
            raise error
        verdict = classify(error)
        if verdict.kind in ("local", "bug"):
            raise error
        if verdict.transient:
            self.outage_started = time.monotonic()
            self.retrieval._emit(AttemptFailed("C-GET", self.node.name, time.time(), 1, verdict.kind, verdict.reason,
                                               True, 0.0))
        log.info("whole-study first pass did not finish (%s); resuming with the plan", verdict.kind)
        return False


class _Fetch:
    """One attempt of one method on one candidate: ask only for what is still missing, first/middle/last of
    every series before the rest.  A permanent refusal of one series is noted and the others go on."""

    def __init__(self, retrieval: Retrieval, method: str, study_uid: str, plans: list[SeriesPlan],
                 sink: InstanceSink, held_before: set[str], errors: dict[str, str]) -> None:
        self.retrieval = retrieval
        self.method = method
        self.study_uid = study_uid
        self.plans = plans
        self.sink = sink
        self.held_before = held_before
        self.errors = errors
        self.empty_aborts = 0

    def _missing(self, uids: tuple[str, ...]) -> list[str]:
        return [u for u in uids if u not in self.held_before and not self.sink.held(u)]

    def requests(self) -> list[tuple[SeriesPlan, list[str]]]:
        firsts = [(p, self._missing(p.first)) for p in self.plans]
        rests = [(p, self._missing(tuple(u for u in p.ordered if u not in p.first))) for p in self.plans]
        return [(p, uids) for p, uids in (*firsts, *rests) if uids and p.series_uid not in self.errors]

    def __call__(self, attempt: Attempt[Node]) -> None:
        retrieval = self.retrieval
        retrieval._begin(attempt, self.method)
        requests = self.requests()
        if not requests:
            return
        client = retrieval._transport(self.method, attempt.node)
        try:
            for plan, uids in requests:
                if retrieval.cancel is not None and retrieval.cancel.is_set():
                    raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
                uids = self._missing(tuple(uids))  # another copy (a lane, a redundant source) may have come
                if not uids:
                    continue
                try:
                    client.retrieve(self.study_uid, plan.series_uid, uids, sink=self.sink, cancel=retrieval.cancel,
                                    sop_class_uids=plan.sop_class_uids or None)
                except MifasError as exc:
                    verdict = classify(exc, progressed=attempt.progressed)
                    self._note_refusal(verdict.kind, attempt, exc)
                    if verdict.transient or verdict.kind in ("local", "bug", "cancelled", "config"):
                        raise
                    self.errors[plan.series_uid] = str(exc)  # refused for good: the other series go on
                    retrieval._emit(AttemptFailed(OPERATION[self.method], attempt.node.name, time.time(),
                                                  attempt.number, verdict.kind, verdict.reason, False, None))
                else:
                    self.empty_aborts = 0
        finally:
            client.close()

    def _note_refusal(self, kind: str, attempt: Attempt[Node], exc: MifasError) -> None:
        """Turn repeated 'association accepted, C-GET aborted before anything arrived' into a refusal."""
        if self.method != "get" or kind != "aborted" or attempt.progressed:
            self.empty_aborts = 0
            return
        self.empty_aborts += 1
        if self.empty_aborts >= REFUSAL_ABORTS:
            raise PacsError(f"The PACS {attempt.node.describe()} aborted the C-GET {self.empty_aborts} times before "
                            f"sending anything: it seems not to allow C-GET from "
                            f"'{attempt.node.calling_ae}'.") from exc


def retrieve(profile: ClusterProfile, study_uid: str, series_uid: str | None = None, *,
             library: Library | None = None, sink: Sink | None = None, held: Callable[[str], bool] | None = None,
             progress: Progress | None = None, on_event: OnEvent | None = None,
             cancel: threading.Event | None = None, associations: int | None = None) -> RetrievalResult:
    """Retrieve a study (or one series) from `profile` (a cluster, or a node as a cluster of one) into `library`
    or `sink`.  Returns per-series outcomes rather than raising for one failed series; raises only for what
    stops everything: cancellation (OperationCancelled: what arrived is kept), a local problem (LibraryError,
    e.g. the disk is full), or a study the source cannot even list within the retry budget."""
    return Retrieval(profile, library=library, sink=sink, held=held, progress=progress, on_event=on_event,
                     cancel=cancel, associations=associations).run(study_uid, series_uid)
