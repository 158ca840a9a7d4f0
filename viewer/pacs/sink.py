"""The one place where a received instance is accepted or refused, whatever carried it.

Every transport hands each instance it receives to an :class:`InstanceSink` (the lean C-GET for its C-STORE
sub-operations, the C-MOVE Storage SCP, WADO-RS for each multipart part); the sink decides and answers the
DIMSE status the peer gets (PS3.4 B.2.3).  An instance is accepted only when

1. it was asked for: its SOP Instance UID is on the list of the request (when there is a list; a peer that
   slips in another instance gets Refused: Not Authorized, 0x0124), and
2. it is well formed and where it claims to be: a Part 10 file whose header reads (the library's own fast
   reader), whose SOP Instance UID is the one announced, and whose Study (and Series) Instance UID are those
   retrieved.  A broken one gets Cannot Understand (0xC000) and costs only itself.

A second copy of an instance already accepted in this retrieval (co-allocated sources race for the last
instances; a peer repeats itself) is acknowledged and dropped: the library never sees it twice.

What the sink does with an accepted instance depends on its store: a
:class:`~viewer.library.writer.GroupWriter` gets it at once and the peer is acknowledged at once (the PACS
keeps its copy; an instance counts as received only when its batch is committed); any other callable (a
folder, a test's collector) is called and its exception decides the status.  A full disk or an unusable
library stops the whole retrieval (:attr:`InstanceSink.fatal`); every later instance is refused with Out of
Resources.  Refusals are counted and, bounded, listed (:data:`REFUSED_LISTED_MAX`): the retrieval says what it
refused and why.

Thread-safe: the lanes of a C-GET, the Storage SCP's associations and WADO-RS workers call it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from viewer.errors import LibraryError, MifasError, StorageFullError
from viewer.library.header import index_row
from viewer.library.writer import GroupWriter, Withdrawn
from viewer.pacs.node import Progress, RetrieveResult, Sink
from viewer.pacs.status import DimseStatus

log = logging.getLogger(__name__)

REFUSED_LISTED_MAX = 256  # refusals listed by UID in a result (all are counted)
META_BYTES_MAX = 64 << 10  # the File Meta Information group is looked for in this many bytes
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})

UNREQUESTED = "not asked for"
OUT_OF_SCOPE = "of another study or series"
FOREIGN_PEER = "sent by a peer we did not ask"
MALFORMED = "damaged or not DICOM"
TOO_LARGE = "larger than the limit"
UNASKED = frozenset({UNREQUESTED, OUT_OF_SCOPE, FOREIGN_PEER})  # refused because nobody asked for them


@dataclass(frozen=True)
class Refusal:
    sop_instance_uid: str
    reason: str  # one of the constants above


@dataclass(frozen=True)
class Mark:
    """Where the sink's counts stood when a transport call began (results are per call)."""

    stored: int
    bytes: int
    late: int
    refused: int


def part10_sop_instance_uid(part10: bytes) -> str:
    """The Media Storage SOP Instance UID (0002,0003) of a Part 10 file, read from its File Meta Information
    (PS3.10 7.1: explicit VR little endian after the preamble and "DICM") without parsing anything else.
    Returns "" when it is missing or malformed; at most :data:`META_BYTES_MAX` bytes are looked at."""
    if part10[128:132] != b"DICM":
        return ""
    pos, end = 132, min(len(part10), 132 + META_BYTES_MAX)
    while pos + 8 <= end:
        group, element = int.from_bytes(part10[pos:pos + 2], "little"), int.from_bytes(part10[pos + 2:pos + 4], "little")
        if group != 0x0002:
            return ""
        vr = part10[pos + 4:pos + 6]
        if vr in _LONG_LENGTH_VRS:
            length, pos = int.from_bytes(part10[pos + 8:pos + 12], "little"), pos + 12
        else:
            length, pos = int.from_bytes(part10[pos + 6:pos + 8], "little"), pos + 8
        if length == 0xFFFFFFFF or pos + length > end:
            return ""
        if element == 0x0003:
            return part10[pos:pos + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos += length
    return ""


class _State:
    """What every view of one retrieval's sink shares (see :meth:`InstanceSink.view`)."""

    def __init__(self, store: Sink | GroupWriter, wanted: Collection[str] | None, study_uid: str | None,
                 series_uids: Collection[str] | None, progress: Progress | None, expected: int | None,
                 on_refused: Callable[[Refusal], None] | None) -> None:
        self.store = store
        self.writer = store if isinstance(store, GroupWriter) else None
        self.wanted = frozenset(wanted) if wanted is not None else None
        self.study_uid = study_uid
        self.series_uids = frozenset(series_uids) if series_uids is not None else None
        self.progress = progress
        self.on_refused = on_refused
        self.lock = threading.Lock()
        self.expected = expected if expected is not None else (len(self.wanted) if self.wanted is not None else None)
        self.peer_total: int | None = None
        self.fatal: BaseException | None = None
        self.accepted: set[str] = set()  # accepted in this retrieval (stored, or on their way to the disk)
        self.late: list[str] = []  # acknowledged, then refused by the library (not stored)
        self.stored: list[str] = []  # committed, through any view, in order
        self.bytes = 0
        self.refused: list[Refusal] = []  # listed up to REFUSED_LISTED_MAX
        self.refused_count = 0
        self.duplicates = 0
        # Before the plan (a first pass that asked for the whole study runs while the study is listed):
        # instances in scope are acknowledged and staged, then published or withdrawn when the plan arrives.
        self.plan_pending = False
        self.abandoned = False  # the listing failed: nothing of the first pass is published


class InstanceSink:
    """Accepts or refuses received instances for one retrieval (see the module docstring).

    `store`: a GroupWriter (group commits) or any ``callable(part10_bytes)``.  `wanted`: the SOP Instance UIDs
    asked for (None: the request named a study or series, not instances).  `study_uid` / `series_uids`: where
    every accepted instance must belong (None: not checked).  `progress(done, total)` counts stored instances;
    `expected` is the total when known (else what the peer announces, :meth:`note_total`).  `on_refused` hears
    of each refusal (the engine's event log).

    :meth:`view` gives another sink over the same retrieval that counts what came through it (one per source
    of a co-allocated retrieval): acceptance, duplicates and the library are shared; :meth:`mark` and
    :meth:`result` are per view, :meth:`total` for the whole retrieval.
    """

    def __init__(self, store: Sink | GroupWriter, *, wanted: Collection[str] | None = None,
                 study_uid: str | None = None, series_uids: Collection[str] | None = None,
                 progress: Progress | None = None, expected: int | None = None,
                 on_refused: Callable[[Refusal], None] | None = None) -> None:
        self._s = _State(store, wanted, study_uid, series_uids, progress, expected, on_refused)
        self.label = ""
        self._stored: list[str] = []  # committed through this view, in order
        self._bytes = 0
        self._late: list[str] = []
        self._refused = 0

    def view(self, label: str) -> InstanceSink:
        """Another sink over this retrieval that counts what comes through it (`label`: a source's name)."""
        other = InstanceSink.__new__(InstanceSink)
        other._s = self._s
        other.label = label
        other._stored, other._bytes, other._late, other._refused = [], 0, [], 0
        return other

    def await_plan(self) -> None:
        """A first pass asks for the whole study before it is listed: until :meth:`expect` (or :meth:`abandon`),
        instances of the study are acknowledged and staged by the library's writer, which publishes nothing
        meanwhile (:meth:`GroupWriter.hold`); each is checked against the plan just before publication."""
        s = self._s
        if s.writer is None:
            raise ValueError("a first pass needs the library's GroupWriter behind the sink")
        with s.lock:
            s.plan_pending = True
        s.writer.hold()

    def expect(self, wanted: Collection[str] | None, series_uids: Collection[str] | None) -> None:
        """The plan: from now on accept only `wanted` (the planned instances still missing; None: anything of the
        study), of these series.  What a first pass delivered before is published if the plan lists it, else
        withdrawn and refused (it was acknowledged to the peer; it is reported, never stored)."""
        s = self._s
        with s.lock:
            s.wanted = frozenset(wanted) if wanted is not None else None
            if series_uids is not None:
                s.series_uids = frozenset(series_uids)
            s.expected = len(s.wanted) if s.wanted is not None else None
            s.plan_pending = False
        if s.writer is not None:
            s.writer.release()

    def abandon(self) -> None:
        """No plan will come (the listing failed): what a first pass delivered is withdrawn, never stored."""
        s = self._s
        with s.lock:
            s.abandoned = True
            s.plan_pending = False
        if s.writer is not None:
            s.writer.release()

    def _belongs(self, uid: str, series_uid: str) -> bool:
        """(the writer's publication check of a first pass's instance) Whether the plan lists it."""
        s = self._s
        with s.lock:
            ok = not s.abandoned and (s.wanted is None or uid in s.wanted) and \
                (s.series_uids is None or series_uid in s.series_uids)
        if not ok:
            self._forget(uid)
            if not s.abandoned:
                self.refuse(uid, UNREQUESTED)
        return ok

    @classmethod
    def wrap(cls, sink: Sink | InstanceSink, *, wanted: Collection[str] | None = None,
             study_uid: str | None = None, series_uid: str | None = None,
             progress: Progress | None = None) -> InstanceSink:
        """A transport's sink: `sink` itself when it is one (the retrieval engine's), else one around it."""
        if isinstance(sink, InstanceSink):
            return sink
        return cls(sink, wanted=wanted, study_uid=study_uid, series_uids=None if series_uid is None else (series_uid,),
                   progress=progress)

    @property
    def fatal(self) -> BaseException | None:
        """The error that stopped the retrieval (a full disk, an unusable library); transports re-raise it."""
        return self._s.fatal

    def _fail(self, exc: BaseException) -> None:
        if self._s.fatal is None:
            self._s.fatal = exc

    @property
    def refused_count(self) -> int:
        return self._s.refused_count

    @property
    def duplicates(self) -> int:
        return self._s.duplicates

    # -- the transports' side -------------------------------------------------------------------------------

    def refusal_status(self) -> int | None:
        """The status every instance gets once a fatal error stopped the retrieval, else None."""
        fatal = self._s.fatal
        if fatal is None:
            return None
        return DimseStatus.OUT_OF_RESOURCES if isinstance(fatal, StorageFullError) else DimseStatus.UNABLE_TO_PROCESS

    def offer(self, data: bytes, announced_uid: str | None = None, *, whole_series: bool = False) -> int:
        """Decide on one received Part 10 file; the C-STORE-RSP status (PS3.4 B.2.3) for the peer.

        `announced_uid`: the SOP Instance UID the peer's C-STORE-RQ named (None: read from the file).
        `whole_series`: the request asked for a whole series of which only `wanted` were needed (WADO-RS fetches
        most of a series that way): the others are dropped quietly, they were not slipped in.
        """
        s = self._s
        stopped = self.refusal_status()
        if stopped is not None:
            return stopped
        uid = announced_uid if announced_uid is not None else part10_sop_instance_uid(data)
        if s.wanted is not None and uid not in s.wanted:
            if whole_series and self._in_scope(data):
                return DimseStatus.SUCCESS  # another image of the series asked for whole: not needed, not slipped
            return self.refuse(uid, UNREQUESTED)
        with s.lock:
            if uid in s.accepted:
                s.duplicates += 1
                return DimseStatus.SUCCESS  # the first copy is kept
        try:
            row = index_row(data)
        except MifasError:
            return self.refuse(uid, MALFORMED)
        if row.sop_uid != uid or (announced_uid is not None and part10_sop_instance_uid(data) != uid):
            return self.refuse(uid, MALFORMED)
        if (s.study_uid is not None and row.study_uid != s.study_uid) or \
                (s.series_uids is not None and row.series_uid not in s.series_uids):
            return self.refuse(uid, OUT_OF_SCOPE)
        with s.lock:
            if uid in s.accepted:
                s.duplicates += 1
                return DimseStatus.SUCCESS
            s.accepted.add(uid)
            provisional = s.plan_pending
        if s.writer is not None:
            return self._submit(uid, data, row, provisional)
        return self._store_now(uid, data)

    def _in_scope(self, data: bytes) -> bool:
        """Whether a well-formed file belongs to the study and series of this retrieval."""
        s = self._s
        try:
            row = index_row(data)
        except MifasError:
            return False
        return (s.study_uid is None or row.study_uid == s.study_uid) and \
            (s.series_uids is None or row.series_uid in s.series_uids)

    def refuse(self, uid: str, reason: str) -> int:
        """Refuse one instance (the transport or the Storage SCP found it unacceptable); its status."""
        log.warning("instance %s refused: %s", uid, reason)
        refusal = Refusal(uid, reason)
        s = self._s
        with s.lock:
            s.refused_count += 1
            self._refused += 1
            if len(s.refused) < REFUSED_LISTED_MAX:
                s.refused.append(refusal)
        if s.on_refused is not None:
            try:
                s.on_refused(refusal)
            except Exception:  # an observer's bug must not break the transfer
                log.exception("refusal observer failed")
        if reason in UNASKED:
            return DimseStatus.NOT_AUTHORIZED
        if reason == TOO_LARGE:
            return DimseStatus.OUT_OF_RESOURCES
        return DimseStatus.UNABLE_TO_PROCESS

    def note_total(self, total: int) -> None:
        """The peer said how many instances the request covers (C-GET/C-MOVE pending responses)."""
        self._s.peer_total = total

    def flush(self) -> None:
        """Wait until every accepted instance is committed or refused (a GroupWriter's batches)."""
        writer = self._s.writer
        if writer is None:
            return
        try:
            writer.flush()
        except Exception as exc:  # already reported through the callbacks; keep the first
            self._fail(exc)

    def mark(self) -> Mark:
        with self._s.lock:
            return Mark(len(self._stored), self._bytes, len(self._late), self._refused)

    def result(self, since: Mark | None, seconds: float, *, completed: int | None = None, failed: int = 0,
               warnings: int = 0, failed_uids: Collection[str] = ()) -> RetrieveResult:
        """What came through this view since `since` (None: from the start): stored UIDs and bytes, with the
        peer's counts when it gave them (``completed`` None: our own count)."""
        since = since or Mark(0, 0, 0, 0)
        with self._s.lock:
            stored = tuple(self._stored[since.stored:])
            late = tuple(self._late[since.late:])
            size = self._bytes - since.bytes
            refused = tuple(dict.fromkeys(r.sop_instance_uid for r in self._s.refused if r.reason in UNASKED))
        return RetrieveResult(
            completed=max((len(stored) if completed is None else completed) - len(late), 0),
            failed=failed + len(late), warnings=warnings, bytes=size, seconds=seconds, sop_instance_uids=stored,
            failed_sop_instance_uids=tuple(failed_uids) + late, unrequested_sop_instance_uids=refused)

    def total(self, seconds: float) -> RetrieveResult:
        """What the whole retrieval stored, through every view."""
        s = self._s
        with s.lock:
            refused = tuple(dict.fromkeys(r.sop_instance_uid for r in s.refused if r.reason in UNASKED))
            return RetrieveResult(completed=len(s.stored), failed=len(s.late), bytes=s.bytes, seconds=seconds,
                                  sop_instance_uids=tuple(s.stored), failed_sop_instance_uids=tuple(s.late),
                                  unrequested_sop_instance_uids=refused)

    def stored_count(self) -> int:
        """Instances stored through this view."""
        with self._s.lock:
            return len(self._stored)

    def accepted_count(self) -> int:
        """Instances this retrieval has accepted, stored or on their way to the disk (staged while a first pass
        waits for the plan)."""
        with self._s.lock:
            return len(self._s.accepted)

    def stored_bytes(self) -> int:
        with self._s.lock:
            return self._bytes

    def held(self, uid: str) -> bool:
        """Whether this retrieval has stored `uid` (or has it on its way to the disk)."""
        with self._s.lock:
            return uid in self._s.accepted

    # -- storing ----------------------------------------------------------------------------------------------

    def _submit(self, uid: str, data: bytes, row: object, provisional: bool = False) -> int:
        s = self._s
        writer = s.writer
        assert writer is not None
        size = len(data)
        check = (lambda: self._belongs(uid, row.series_uid)) if provisional else None  # type: ignore[attr-defined]
        try:
            writer.submit(data, lambda result, error: self._committed(uid, size, error), row=row, check=check)
        except (StorageFullError, LibraryError) as exc:
            self._forget(uid)
            self._fail(exc)
            return self.refusal_status() or DimseStatus.UNABLE_TO_PROCESS
        return DimseStatus.SUCCESS

    def _committed(self, uid: str, size: int, error: BaseException | None) -> None:
        """The writer's callback: the instance's batch is committed (or the instance refused)."""
        if isinstance(error, Withdrawn):
            return  # the plan did not list it (_belongs said so and refused it)
        if error is None:
            self._stored_one(uid, size)
            return
        with self._s.lock:
            self._late.append(uid)
            self._s.late.append(uid)
            self._s.accepted.discard(uid)
        if isinstance(error, MifasError) and not isinstance(error, LibraryError):
            log.warning("instance %s not stored: %s", uid, error)  # unusable; the others may be fine
        else:
            self._fail(error)  # the disk is full or the index is unusable: stop, it would repeat

    def _store_now(self, uid: str, data: bytes) -> int:
        try:
            self._s.store(data)  # type: ignore[operator]
        except StorageFullError as exc:
            self._forget(uid)
            self._fail(exc)
            return DimseStatus.OUT_OF_RESOURCES
        except LibraryError as exc:  # cannot write at all (permissions, damaged index): stop, it would repeat
            self._forget(uid)
            self._fail(exc)
            return DimseStatus.UNABLE_TO_PROCESS
        except MifasError as exc:  # this instance is unusable; the others may be fine
            self._forget(uid)
            log.warning("instance %s not stored: %s", uid, exc)
            return self.refuse(uid, MALFORMED)
        except Exception as exc:  # a bug in the store: stop and re-raise it after the operation
            self._forget(uid)
            log.exception("the sink failed on instance %s", uid)
            self._fail(exc)
            return DimseStatus.UNABLE_TO_PROCESS
        self._stored_one(uid, len(data))
        return DimseStatus.SUCCESS

    def _forget(self, uid: str) -> None:
        with self._s.lock:
            self._s.accepted.discard(uid)

    def _stored_one(self, uid: str, size: int) -> None:
        s = self._s
        with s.lock:
            self._stored.append(uid)
            self._bytes += size
            s.stored.append(uid)
            s.bytes += size
            done = len(s.stored)
        if s.progress is None:
            return
        try:
            s.progress(done, s.expected if s.expected is not None else s.peer_total)
        except Exception as exc:  # a bug in the caller's callback: stop, re-raise after the operation
            log.exception("progress callback failed")
            self._fail(exc)
