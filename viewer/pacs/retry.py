"""One retry policy for every PACS operation: which errors are worth another try, and how long to keep trying.

Errors are classified here and nowhere else (:func:`classify`):

    transient (retried)                                 permanent (reported at once)
    ------------------------------------------------    ------------------------------------------------------
    NodeUnreachableError   refused, no route, timeout   AssociationRejectedError  wrong AE title, unknown caller
    AssociationAbortedError abort, connection dropped   PacsStatusError  a refusal (unknown move destination,
    PacsTimeoutError       the node went silent                          not authorised, cannot process ...)
    AssociationRejectedError, "transient" reasons       PacsStatusError  out of resources with NO progress
      (busy, too many associations; PS3.8 9.3.4)        DicomWebError  HTTP 4xx (except 408 and 429), 501,
    PacsStatusError out of resources WITH progress                     an answer we cannot parse
    DicomWebError  HTTP 5xx, 408, 429, connection       PacsError (base)  configuration: a service not offered
                   broken off mid-answer                LibraryError, DicomError  a local problem: retrying the
    OSError        connection reset                                      network does not fix it
                                                        OperationCancelled  the user said stop

:func:`run_with_retry` runs an operation against a list of candidate nodes (a cluster profile's virtual IP, then
its members): after each failure it moves to the next candidate at once, and waits (exponential backoff with
jitter) only when it has come back to the first.  Everything is bounded: a retry *budget* in seconds counted
from the first failure of an outage (a healthy transfer, however long, never uses it up), a maximum number of
attempts per outage, and a backoff ceiling.  An attempt that made progress (e.g. stored images) ends the outage:
the budget starts afresh at the next failure; since progress is bounded by the work to do, so is the loop.

What happens is reported as structured events (:class:`AttemptFailed`, :class:`SwitchedNode`,
:class:`Resumed`, :class:`GaveUp`) that :mod:`viewer.pacs.health` and the UI turn into plain sentences.
Events carry node names and counts, never patient data.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomError,
    DicomWebError,
    LibraryError,
    MifasError,
    NodeUnreachableError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
)
from viewer.pacs.status import OUT_OF_RESOURCES_STATUSES

log = logging.getLogger(__name__)

R = TypeVar("R")
N = TypeVar("N")

# DIMSE statuses "Refused: Out of Resources" (PS3.4 B.2.3, C.4.2.1.5, C.4.3.1.4) are transient only when the
# operation was moving (the node is busy or failing over), permanent when nothing ever arrived.
HTTP_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
BUDGET_S = 120.0
ATTEMPTS_MAX = 200  # per outage; with backoff and switching this is far beyond any sane budget
JITTER = 0.25  # +-25 % on each wait, so that many clients do not retry in lock-step


# -- classification ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What an error means for the retry loop: ``transient`` (worth another try), a short ``kind`` for events
    (unreachable, timeout, aborted, rejected, status, http, local, cancelled, bug) and the user's sentence."""

    transient: bool
    kind: str
    reason: str


def classify(exc: BaseException, *, progressed: bool = False) -> Verdict:
    """Classify one error (see the module docstring).  `progressed`: the failed attempt had made progress."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, OperationCancelled):
        return Verdict(False, "cancelled", reason)
    if isinstance(exc, (LibraryError, DicomError)):
        return Verdict(False, "local", reason)
    if isinstance(exc, NodeUnreachableError):
        return Verdict(True, "unreachable", reason)
    if isinstance(exc, PacsTimeoutError):
        return Verdict(True, "timeout", reason)
    if isinstance(exc, AssociationAbortedError):
        return Verdict(True, "aborted", reason)
    if isinstance(exc, AssociationRejectedError):
        return Verdict(exc.transient is True, "rejected", reason)
    if isinstance(exc, PacsStatusError):
        return Verdict(progressed and exc.status in OUT_OF_RESOURCES_STATUSES, "status", reason)
    if isinstance(exc, DicomWebError):
        if exc.http_status is not None:
            return Verdict(exc.http_status in HTTP_TRANSIENT_STATUSES, "http", reason)
        return Verdict(exc.transient is True, "http", reason)
    if isinstance(exc, PacsError):
        return Verdict(False, "config", reason)
    if isinstance(exc, MifasError):
        return Verdict(False, "local", reason)
    if isinstance(exc, (ConnectionError, TimeoutError)):  # raw socket errors that escaped a translation
        return Verdict(True, "aborted", f"The connection broke ({type(exc).__name__}).")
    return Verdict(False, "bug", reason)


# -- policy -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry.  ``budget_s`` counts from the first failure of an outage."""

    budget_s: float = BUDGET_S
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    jitter: float = JITTER
    attempts_max: int = ATTEMPTS_MAX

    def __post_init__(self) -> None:
        for name in ("budget_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 86400:
                raise ValueError(f"RetryPolicy.{name} must be between 0 and 86400 seconds, not {value!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("RetryPolicy.backoff_max_s must not be below backoff_initial_s")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"RetryPolicy.jitter must be in [0, 1), not {self.jitter!r}")
        if not isinstance(self.attempts_max, int) or not 1 <= self.attempts_max <= 100_000:
            raise ValueError(f"RetryPolicy.attempts_max must be between 1 and 100000, not {self.attempts_max!r}")

    def backoff_s(self, cycle: int, rng: random.Random | None = None) -> float:
        """The wait before retry cycle `cycle` (1-based): initial * 2^(cycle-1), capped, with jitter."""
        base = min(self.backoff_max_s, self.backoff_initial_s * (2 ** min(cycle - 1, 30)))
        spread = (rng or random).uniform(-self.jitter, self.jitter) if self.jitter else 0.0
        return max(0.0, base * (1 + spread))


NO_RETRY = RetryPolicy(budget_s=0, attempts_max=1)


# -- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryEvent:
    operation: str  # "C-GET", "C-FIND", "C-STORE", "WADO-RS", ...
    node: str  # the candidate's name, e.g. "virtual IP" or "node A"
    at: float  # wall-clock time (time.time()) for the event log


@dataclass(frozen=True)
class AttemptFailed(RetryEvent):
    attempt: int
    kind: str
    reason: str
    transient: bool
    retry_in_s: float | None  # None: no further attempt


@dataclass(frozen=True)
class SwitchedNode(RetryEvent):
    from_node: str


@dataclass(frozen=True)
class Resumed(RetryEvent):
    """An attempt after a failure got through; ``done`` of ``total`` items were already in hand."""

    attempt: int
    outage_s: float
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class GaveUp(RetryEvent):
    attempts: int
    elapsed_s: float
    reason: str


@dataclass(frozen=True)
class FellBack(RetryEvent):
    """The node refused a retrieval method for good; the next allowed one is tried (e.g. C-GET -> C-MOVE)."""

    from_method: str
    to_method: str
    reason: str


@dataclass(frozen=True)
class UnrequestedInstance(RetryEvent):
    """The node sent an instance we did not ask for; it was refused, not stored."""

    sop_instance_uid: str


@dataclass(frozen=True)
class SourceDropped(RetryEvent):
    """A co-allocated retrieval stopped using one of its sources; the others take over its share."""

    reason: str
    left: int  # instances still queued for the others when it was dropped


@dataclass(frozen=True)
class SourcesServed(RetryEvent):
    """A co-allocated retrieval ended: how many instances each source delivered (name, count)."""

    shares: tuple[tuple[str, int], ...]


OnEvent = Callable[[RetryEvent], None]


def _emit(on_event: OnEvent | None, event: RetryEvent) -> None:
    log.info("%s", _log_line(event))
    if on_event is None:
        return
    try:
        on_event(event)
    except Exception:  # an observer's bug must not break the transfer
        log.exception("retry event observer failed")


def _log_line(event: RetryEvent) -> str:
    fields = ", ".join(f"{f.name}={getattr(event, f.name)!r}" for f in dataclasses.fields(event)
                       if f.name not in ("at", "reason"))
    return f"{type(event).__name__}({fields})"


# -- the loop ---------------------------------------------------------------------------------------------


class Attempt(Generic[N]):
    """What one try knows: its number, its candidate node, and a way to say it made progress."""

    def __init__(self, loop: _Loop[N], number: int, index: int) -> None:
        self._loop = loop
        self.number = number
        self.index = index
        self.node: N = loop.candidates[index]
        self.progressed = False

    def progress(self, done: int | None = None, total: int | None = None) -> None:
        """Say this attempt got through to the node (and how far the whole operation is): ends the outage,
        and after a failure announces :class:`Resumed` once."""
        self.progressed = True
        self._loop.on_progress(self, done, total)


class _Loop(Generic[N]):
    def __init__(self, candidates: Sequence[N], describe: Callable[[N], str], operation: str,
                 on_event: OnEvent | None, clock: Callable[[], float]) -> None:
        self.candidates = candidates
        self.describe = describe
        self.operation = operation
        self.on_event = on_event
        self.clock = clock
        self.outage_started: float | None = None
        self.announced = False

    def on_progress(self, attempt: Attempt[N], done: int | None, total: int | None) -> None:
        if self.outage_started is not None and not self.announced:
            self.announced = True
            _emit(self.on_event, Resumed(self.operation, self.describe(attempt.node), time.time(), attempt.number,
                                         self.clock() - self.outage_started, done, total))


def run_with_retry(
    op: Callable[[Attempt[N]], R],
    policy: RetryPolicy,
    *,
    candidates: Sequence[N],
    describe: Callable[[N], str] = str,
    operation: str = "operation",
    on_event: OnEvent | None = None,
    cancel: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Any] | None = None,
    rng: random.Random | None = None,
    reachable: Callable[[int, float], int | None] | None = None,
    outage_started: float | None = None,
) -> R:
    """Run ``op(attempt)`` until it returns, a permanent error occurs, the budget or the attempts run out, or
    `cancel` is set.  Permanent errors and cancellation propagate as they are; when the budget runs out the
    last error propagates with a sentence saying how long we tried.  `clock`/`sleep` let unit tests drive
    time; by default waits are cut short by `cancel`.

    `reachable(prefer_from, wait_s)`, when given, says which candidate accepts connections now (the index, the
    first at or after `prefer_from` among those answering at once; None when none did within `wait_s`):
    after a failure the next attempt goes to a candidate that answers, as soon as one does, instead of
    walking the list with a connect timeout per dead address (:func:`viewer.pacs.reach.first_accepting`).
    Waiting for an address to answer costs the PACS nothing, so after an "unreachable" failure there is no
    backoff; attempts that reached a node and failed there still back off after each full cycle.

    `outage_started` (a `clock` time): the operation already failed before this loop began (the engine's first
    pass); its budget counts from then, and the first attempt that gets through announces :class:`Resumed`."""
    if not candidates:
        raise ValueError("run_with_retry needs at least one candidate")
    loop: _Loop[N] = _Loop(candidates, describe, operation, on_event, clock)
    loop.outage_started = outage_started
    wait = sleep or (lambda s: cancel.wait(s) if cancel is not None else time.sleep(s))
    index = 0
    failures = 0  # in this outage
    cycles = 0  # full passes over the candidates in this outage
    number = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise OperationCancelled(f"The {operation} was cancelled.")
        number += 1
        attempt: Attempt[N] = Attempt(loop, number, index)
        try:
            result = op(attempt)
        except BaseException as exc:  # noqa: BLE001 - classified below; non-errors re-raised at once
            if not isinstance(exc, Exception):
                raise
            verdict = classify(exc, progressed=attempt.progressed)
            if verdict.kind == "cancelled" or (cancel is not None and cancel.is_set()):
                raise
            now = clock()
            if attempt.progressed or loop.outage_started is None:
                loop.outage_started, loop.announced, failures, cycles = now, False, 0, 0
            failures += 1
            elapsed = now - loop.outage_started
            node_name = describe(attempt.node)
            if not verdict.transient:
                _emit(on_event, AttemptFailed(operation, node_name, time.time(), number, verdict.kind,
                                              verdict.reason, False, None))
                raise
            next_index = (index + 1) % len(candidates)
            delay = 0.0
            if next_index == 0:
                cycles += 1
                delay = policy.backoff_s(cycles, rng)
            if reachable is not None and verdict.kind == "unreachable":
                delay = 0.0  # the prober paces the wait for an address that answers
            out_of_budget = elapsed + delay > policy.budget_s or failures >= policy.attempts_max
            _emit(on_event, AttemptFailed(operation, node_name, time.time(), number, verdict.kind, verdict.reason,
                                          True, None if out_of_budget else delay))
            if out_of_budget:
                _emit(on_event, GaveUp(operation, node_name, time.time(), failures, elapsed, verdict.reason))
                raise _gave_up(exc, operation, failures, elapsed) from exc
            if delay:
                wait(delay)
            if reachable is not None:
                if cancel is not None and cancel.is_set():
                    raise OperationCancelled(f"The {operation} was cancelled.") from exc
                found = reachable(next_index, max(0.0, policy.budget_s - (clock() - loop.outage_started)))
                if cancel is not None and cancel.is_set():
                    raise OperationCancelled(f"The {operation} was cancelled.") from exc
                if found is None:  # nothing answered for the rest of the budget
                    elapsed = clock() - loop.outage_started
                    _emit(on_event, GaveUp(operation, node_name, time.time(), failures, elapsed, verdict.reason))
                    raise _gave_up(exc, operation, failures, elapsed) from exc
                next_index = found
            if next_index != index:
                _emit(on_event, SwitchedNode(operation, describe(candidates[next_index]), time.time(), node_name))
            index = next_index
            continue
        if loop.outage_started is not None and not loop.announced:
            attempt.progress()
        return result


def _gave_up(last: Exception, operation: str, attempts: int, elapsed_s: float) -> Exception:
    """The last error, reworded to say we tried for a while (same type, so callers can still tell why)."""
    text = (f"Gave up the {operation} after {attempts} attempt(s) over {elapsed_s:.0f} s; last problem: {last}")
    try:
        if isinstance(last, PacsStatusError):
            return PacsStatusError(text, last.status)
        if isinstance(last, MifasError):
            return type(last)(text)
    except TypeError:  # a subclass with another constructor
        pass
    return PacsError(text)
