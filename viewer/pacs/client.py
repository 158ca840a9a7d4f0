"""One interface over every PACS transport, and the retrieval the viewer uses.

:class:`PacsClient` is what :class:`~viewer.pacs.dimse.DimseClient` (C-GET or C-MOVE) and
:class:`~viewer.pacs.dicomweb.DicomWebClient` (QIDO-RS / WADO-RS) both provide; :func:`open_client` picks one
for a node.  :func:`retrieve_study` fetches a study in the order a viewer needs it: for each series the first,
middle and last image come before all the others, so every series can be shown (and scrolled end to end)
while the rest arrive.  Instances already held are not asked for again, which is also how an interrupted
retrieval resumes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

from viewer.errors import OperationCancelled, PacsError
from viewer.library.store import Library, is_valid_uid
from viewer.library.writer import GroupWriter
from viewer.pacs.dicomweb import DicomWebClient
from viewer.pacs.dimse import DEFAULT_ASSOCIATIONS, DimseClient
from viewer.pacs.node import (
    DEFAULT_STORAGE_PORT,
    FIND_RESULTS_LIMIT_MAX,
    Node,
    Progress,
    RetrieveResult,
    Sink,
)

log = logging.getLogger(__name__)

Via = Literal["get", "move", "wado"]
VIAS: tuple[str, ...] = ("get", "move", "wado")
SERIES_PER_STUDY_MAX = 10_000
INSTANCES_PER_SERIES_MAX = FIND_RESULTS_LIMIT_MAX


@runtime_checkable
class PacsClient(Protocol):
    """What every transport offers (the conformance tests in tests/pacs run each through the same class)."""

    def echo(self) -> float:
        """Check the node answers; return the round trip in seconds."""
        ...

    def find(
        self,
        level: str,
        keys: Mapping[str, str] | None = None,
        *,
        cancel: threading.Event | None = None,
        limit: int = ...,
    ) -> list[dict[str, str]]:
        """Query at level "patient" (DIMSE only), "study", "series" or "image"; ``{keyword: text}`` per match."""
        ...

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
        """Fetch a study, a series or listed instances of one series into `sink` (Part 10 bytes each)."""
        ...

    def close(self) -> None:
        """Release what the client holds (an HTTP session); it must not be used afterwards."""
        ...


def open_client(
    node: Node,
    via: str = "get",
    *,
    move_port: int | None = None,
    associations: int = DEFAULT_ASSOCIATIONS,
) -> PacsClient:
    """The client for `node` and the chosen transport: ``"get"`` (C-GET), ``"move"`` (C-MOVE to our AE title,
    our Storage SCP on `move_port`) or ``"wado"`` (DICOMweb at ``node.dicomweb_url``)."""
    if via == "wado":
        if not node.dicomweb_url:
            raise PacsError(f"No DICOMweb URL is configured for the node '{node.name}'.")
        return DicomWebClient(node.dicomweb_url, node.timeouts, node=node)
    if via in ("get", "move"):
        return DimseClient(node, via=via, storage_port=move_port or DEFAULT_STORAGE_PORT, associations=associations)
    raise PacsError(f"'{via}' is not a retrieval method; use one of {', '.join(VIAS)}.")


def first_middle_last(count: int) -> list[int]:
    """Indexes of the images a viewer shows first: first, middle, last (no repeats)."""
    return list(dict.fromkeys(i for i in (0, count // 2, count - 1) if count > 0))


def _instance_key(item: Mapping[str, str]) -> tuple[int, int, str]:
    text = item.get("InstanceNumber", "").strip()
    try:
        return (0, int(float(text)), item.get("SOPInstanceUID", ""))
    except (ValueError, OverflowError):  # empty, text, NaN, infinity: after the numbered ones
        return (1, 0, item.get("SOPInstanceUID", ""))


@dataclasses.dataclass
class _SeriesPlan:
    series_uid: str
    ordered: list[str]  # SOP Instance UIDs by Instance Number
    sop_class_uids: set[str]
    first: list[str]


def plan_study(client: PacsClient, study_uid: str, series_uid: str | None,
          cancel: threading.Event | None) -> list[_SeriesPlan]:
    """List each series' instances (IMAGE-level query, hierarchical: series first, PS3.4 C.4.1.3.1)."""
    if series_uid:
        series_uids = [series_uid]
    else:
        rows = client.find("series", {"StudyInstanceUID": study_uid}, cancel=cancel, limit=SERIES_PER_STUDY_MAX)
        series_uids = list(dict.fromkeys(r["SeriesInstanceUID"] for r in rows
                                         if is_valid_uid(r.get("SeriesInstanceUID"))))
        if not series_uids:
            raise PacsError(f"The PACS lists no study {study_uid} (no series found).")
    plans = []
    for uid in series_uids:
        rows = client.find("image", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": uid, "SOPClassUID": "",
                                     "InstanceNumber": ""}, cancel=cancel, limit=INSTANCES_PER_SERIES_MAX)
        rows = [r for r in rows if is_valid_uid(r.get("SOPInstanceUID"))]
        rows.sort(key=_instance_key)
        ordered = list(dict.fromkeys(r["SOPInstanceUID"] for r in rows))
        classes = {r["SOPClassUID"] for r in rows if is_valid_uid(r.get("SOPClassUID"))}
        plans.append(_SeriesPlan(uid, ordered, classes, [ordered[i] for i in first_middle_last(len(ordered))]))
    return plans


def retrieve_study(
    client: PacsClient,
    study_uid: str,
    series_uid: str | None = None,
    *,
    sink: Sink,
    held: Callable[[str], bool] = lambda sop_instance_uid: False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> RetrieveResult:
    """Fetch a study (or one series) into `sink`, first/middle/last image of each series first.

    `held(sop_instance_uid)` says which instances the destination already has: they are skipped (counted in
    ``skipped_already_held``).  ``progress(done, total)`` counts the instances to fetch; it may be called
    from worker threads (parallel associations, C-MOVE's Storage SCP, parallel WADO-RS requests), as may
    `sink`, which must therefore be thread-safe (``Library.store_bytes`` is).  A study with no
    series raises PacsError; when the node lists no instances (some do not answer IMAGE-level queries) the
    whole study or series is retrieved in one go.
    Cancelling raises :class:`~viewer.errors.OperationCancelled`; what arrived stays in the sink.
    """
    if not is_valid_uid(study_uid) or (series_uid is not None and not is_valid_uid(series_uid)):
        raise PacsError("The study or series UID to retrieve is not a valid UID.")
    started = time.monotonic()
    plans = plan_study(client, study_uid, series_uid, cancel)
    if not any(p.ordered for p in plans):
        log.info("no instances listed for study %s; retrieving it whole", study_uid)
        result = client.retrieve(study_uid, series_uid, sink=sink, progress=progress, cancel=cancel)
        return dataclasses.replace(result, seconds=time.monotonic() - started)

    skipped = {uid for p in plans for uid in p.ordered if held(uid)}
    total = sum(len(p.ordered) for p in plans) - len(skipped)
    done_before = 0
    result = RetrieveResult(skipped_already_held=len(skipped))

    def phase_progress(done: int, _total: int | None) -> None:
        if progress is not None:
            progress(done_before + done, total)

    for phase in ("first", "rest"):
        for plan in plans:
            if cancel is not None and cancel.is_set():
                raise OperationCancelled("The retrieval was cancelled; the images already received were kept.")
            wanted = plan.first if phase == "first" else [u for u in plan.ordered if u not in plan.first]
            wanted = [u for u in wanted if u not in skipped and (phase == "first" or not held(u))]
            if not wanted:
                continue
            part = client.retrieve(study_uid, plan.series_uid, wanted, sink=sink, progress=phase_progress,
                                   cancel=cancel, sop_class_uids=plan.sop_class_uids or None)
            result += part
            done_before += len(part.sop_instance_uids)
    if progress is not None:
        progress(done_before, total)
    log.info("study %s: %d received, %d already held, %d failed", study_uid, result.completed,
             result.skipped_already_held, result.failed)
    return dataclasses.replace(result, seconds=time.monotonic() - started)


def retrieve_to_library(
    node: Node,
    library: Library,
    study_uid: str,
    series_uid: str | None = None,
    *,
    via: str = "get",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    move_port: int | None = None,
) -> RetrieveResult:
    """Retrieve a study (or one series) from `node` into `library`, skipping what it already holds.

    Blocking and thread-safe: run it in a worker thread; set `cancel` to stop (OperationCancelled is raised,
    the images stored so far stay in the library).  Errors are :mod:`viewer.errors` types.

    C-GET stores through a :class:`~viewer.library.writer.GroupWriter` (group commits: one durability call
    and one index transaction per batch); every retrieval flushes it before returning, so `held` and the
    library are exact between the phases and after an error.  C-MOVE's Storage SCP and WADO-RS call it as a
    plain sink, which waits for each commit (several concurrent calls still share one).
    """
    client = open_client(node, via, move_port=move_port)
    writer = GroupWriter(library)
    try:
        return retrieve_study(client, study_uid, series_uid, sink=writer, held=library.has_instance,
                              progress=progress, cancel=cancel)
    finally:
        try:
            writer.close()
        finally:
            client.close()
