"""The retry-and-resume engine over a cluster profile: every operation survives a takeover within the budget.

:class:`ResilientClient` runs each operation through :func:`~viewer.pacs.retry.run_with_retry` over the
profile's candidates (virtual IP first, then the members):

- **echo**, **find** (C-FIND), **qido** (QIDO-RS): re-issued whole after a failure (queries are idempotent).
- **retrieve**: the retrieval engine (:mod:`viewer.pacs.retrieve`), whose queries and attempts run through
  this client's retry loop (:meth:`ResilientClient.run`).
- **stow** (STOW-RS): the request is re-sent whole after a failure (a server keeps one copy per SOP Instance UID).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from viewer.errors import MifasError, OperationCancelled, PacsError
from viewer.imports import need
from viewer.library.store import Library
from viewer.limits import FIND_RESULTS_MAX
from viewer.pacs.cluster import ClusterProfile
from viewer.pacs.dimse import DEFAULT_ASSOCIATIONS, DimseClient
from viewer.pacs.node import Node, Progress, Sink
from viewer.pacs.reach import first_accepting, url_address
from viewer.pacs.retry import (
    Attempt,
    OnEvent,
    classify,
    run_with_retry,
)
from viewer.pacs.status import store_succeeded

if TYPE_CHECKING:
    from viewer.pacs.dicomweb import DicomWebClient
    from viewer.pacs.retrieve import RetrievalResult

log = logging.getLogger(__name__)

STORE_BATCH_MAX = 1000  # instances per store() call; callers split larger sends


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

    def run(self, op: Callable[[Attempt[Node]], Any], operation: str, candidates: Sequence[Node],
            cancel: threading.Event | None, on_event: OnEvent | None = None,
            outage_started: float | None = None) -> Any:
        """``op(attempt)`` through the retry loop over `candidates` (see :func:`run_with_retry`)."""
        if not candidates:
            raise PacsError(f"The cluster '{self.profile.name}' has no address for {operation}.")
        web = operation in ("WADO-RS", "QIDO-RS", "STOW-RS")
        addresses = [url_address(n.dicomweb_url) if web and n.dicomweb_url else (n.host, n.port)
                     for n in candidates]
        connect_s = min(n.timeouts.connect_s for n in candidates)

        def reachable(prefer_from: int, wait_s: float) -> int | None:
            return first_accepting(addresses, connect_s=connect_s, wait_s=wait_s, prefer_from=prefer_from,
                                   cancel=cancel)

        return run_with_retry(op, self.profile.retry, candidates=candidates, describe=lambda n: n.name,
                              operation=operation, on_event=on_event or self.on_event, cancel=cancel,
                              reachable=reachable, outage_started=outage_started)

    # -- echo and queries ----------------------------------------------------------------------------------

    def echo(self, *, cancel: threading.Event | None = None) -> tuple[str, float]:
        """C-ECHO through the cluster; return the name of the node that answered and the round trip (s)."""
        return self.run(lambda a: (a.node.name, DimseClient(a.node).echo()), "C-ECHO",
                         self.profile.candidates(), cancel)

    def find(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = FIND_RESULTS_MAX, on_event: OnEvent | None = None) -> list[dict[str, str]]:
        """C-FIND (or QIDO-RS when the profile has no DIMSE), re-issued whole after a failure.  `on_event`
        replaces the client's for this query."""
        if "dimse" not in self.profile.transports:
            return self.qido(level, keys, cancel=cancel, limit=limit, on_event=on_event)
        return self.run(lambda a: DimseClient(a.node).find(level, keys, cancel=cancel, limit=limit), "C-FIND",
                        self.profile.candidates(), cancel, on_event)

    def qido(self, level: str, keys: Mapping[str, str] | None = None, *, cancel: threading.Event | None = None,
             limit: int = FIND_RESULTS_MAX, on_event: OnEvent | None = None) -> list[dict[str, str]]:
        def op(attempt: Attempt[Node]) -> list[dict[str, str]]:
            with _WebSession(attempt.node) as web:
                return web.qido(level, keys, cancel=cancel, limit=limit)
        return self.run(op, "QIDO-RS", self.profile.web_candidates(), cancel, on_event)

    # -- retrieval -----------------------------------------------------------------------------------------

    def retrieve(
        self,
        study_uid: str,
        series_uid: str | None = None,
        *,
        sink: Sink | None = None,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RetrievalResult:
        """Fetch a study (or one series) into the library (or `sink`) with the retrieval engine
        (:func:`viewer.pacs.retrieve.retrieve`), resuming after interruptions."""
        from viewer.pacs.retrieve import retrieve  # the engine runs its queries through this client

        if sink is None and self.library is None:
            raise ValueError("retrieve needs a library or a sink")
        return retrieve(self.profile, study_uid, series_uid, library=self.library if sink is None else None,
                        sink=sink, progress=progress, on_event=self.on_event, cancel=cancel,
                        associations=self.associations)

    # -- C-STORE -------------------------------------------------------------------------------------------

    def store(self, instances: Sequence[bytes], *, progress: Progress | None = None,
              cancel: threading.Event | None = None) -> StoreOutcome:
        """Send Part 10 files to the cluster with C-STORE, resuming after failovers (see the module docstring).
        Does not raise for the network: the outcome says what is stored and, in ``error``, why not the rest."""
        if len(instances) > STORE_BATCH_MAX:
            raise ValueError(f"store at most {STORE_BATCH_MAX} instances per call")
        if "dimse" not in self.profile.transports:
            raise PacsError(f"The cluster '{self.profile.name}' has no DIMSE transport for C-STORE.")
        need("pydicom")
        import pydicom  # here: only a C-STORE reads headers this way

        items: dict[str, tuple[bytes, str, str]] = {}  # SOP Instance UID -> (data, study, series)
        for data in instances:
            header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            items[str(header.SOPInstanceUID)] = (data, str(header.StudyInstanceUID), str(header.SeriesInstanceUID))
        state = _StoreState(items, progress)
        try:
            self.run(lambda attempt: state.attempt(attempt, cancel), "C-STORE", self.profile.candidates(), cancel)
        except OperationCancelled:
            raise
        except MifasError as exc:
            return state.outcome(str(exc))
        return state.outcome("")

    def stow(self, instances: Sequence[bytes], study_uid: str = "", *, cancel: threading.Event | None = None,
             on_event: OnEvent | None = None) -> StoreOutcome:
        """Store Part 10 files with STOW-RS through the retry loop over the profile's DICOMweb nodes, re-sent
        whole after a failure (storing a SOP Instance UID again is harmless: the server keeps one copy).  Does
        not raise for the network: the outcome says what is stored and, in ``error``, why not the rest."""
        if len(instances) > STORE_BATCH_MAX:
            raise ValueError(f"store at most {STORE_BATCH_MAX} instances per call")

        def op(attempt: Attempt[Node]) -> tuple[list[str], dict[str, str]]:
            with _WebSession(attempt.node) as web:
                return web.stow(instances, study_uid)
        try:
            stored, refused = self.run(op, "STOW-RS", self.profile.web_candidates(), cancel, on_event)
        except OperationCancelled:
            raise
        except MifasError as exc:
            return StoreOutcome(error=str(exc))
        return StoreOutcome(acknowledged=tuple(stored), refused=refused)


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
        need("requests", "pydicom")  # dicomweb imports both
        from viewer.pacs.dicomweb import DicomWebClient  # here: requests costs ~0.1 s to import

        self._client = DicomWebClient(node.dicomweb_url, node.timeouts, node=node)

    def __enter__(self) -> DicomWebClient:
        return self._client

    def __exit__(self, *exc: object) -> None:
        self._client.close()


__all__ = ["ResilientClient", "StoreOutcome"]
