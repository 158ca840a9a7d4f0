"""The retry policy, pure: error classification and the bounded loop, with a clock the test drives."""

from __future__ import annotations

import random
import threading

import pytest

from viewer.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    DicomWebError,
    MalformedDicomError,
    NodeUnreachableError,
    OperationCancelled,
    PacsError,
    PacsStatusError,
    PacsTimeoutError,
    StorageFullError,
)
from viewer.pacs.retry import (
    AttemptFailed,
    GaveUp,
    Resumed,
    RetryEvent,
    RetryPolicy,
    SwitchedNode,
    classify,
    run_with_retry,
)


@pytest.mark.parametrize(("error", "progressed", "transient", "kind"), [
    (NodeUnreachableError("refused"), False, True, "unreachable"),
    (PacsTimeoutError("silent"), False, True, "timeout"),
    (AssociationAbortedError("aborted"), False, True, "aborted"),
    (ConnectionResetError(104, "reset"), False, True, "aborted"),
    (AssociationRejectedError("rejected: calling AE title 'X' is not known to it"), False, False, "rejected"),
    (AssociationRejectedError("rejected: it is busy", transient=True), False, True, "rejected"),
    (PacsStatusError("out of resources", 0xA702), True, True, "status"),
    (PacsStatusError("out of resources", 0xA702), False, False, "status"),
    (PacsStatusError("unknown destination", 0xA801), True, False, "status"),
    (PacsStatusError("unable to process", 0xC000), False, False, "status"),
    (DicomWebError("Service Unavailable.", http_status=503), False, True, "http"),
    (DicomWebError("Bad Gateway.", http_status=502), False, True, "http"),
    (DicomWebError("Not Found.", http_status=404), False, False, "http"),
    (DicomWebError("Bad Request.", http_status=400), False, False, "http"),
    (DicomWebError("Not Implemented.", http_status=501), False, False, "http"),
    (DicomWebError("The connection broke off during the transfer.", transient=True), False, True, "http"),
    # Decisions read the fields, never the words: a message that merely says so changes nothing.
    (DicomWebError("The DICOMweb server at x answered HTTP 503 Service Unavailable."), False, False, "http"),
    (AssociationRejectedError("rejected: it is busy (temporary congestion); try again later"), False, False,
     "rejected"),
    (DicomWebError("sent a search answer that is not JSON"), False, False, "http"),
    (PacsError("does not offer C-GET"), False, False, "config"),
    (StorageFullError("disk full"), True, False, "local"),
    (MalformedDicomError("damaged"), False, False, "local"),
    (OperationCancelled("stop"), False, False, "cancelled"),
    (KeyError("bug"), False, False, "bug"),
])
def test_classify(error: BaseException, progressed: bool, transient: bool, kind: str) -> None:
    verdict = classify(error, progressed=progressed)
    assert (verdict.transient, verdict.kind) == (transient, kind)
    assert verdict.reason


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def run(op, policy: RetryPolicy, fake: FakeTime, events: list[RetryEvent], candidates=("vip", "a", "b"), **kw):
    return run_with_retry(op, policy, candidates=list(candidates), operation="C-GET", on_event=events.append,
                          clock=fake.clock, sleep=fake.sleep, rng=random.Random(1), **kw)


def test_failover_switches_nodes_then_resumes() -> None:
    fake, events = FakeTime(), []
    tried: list[str] = []

    def op(attempt):
        tried.append(attempt.node)
        fake.now += 1
        if len(tried) < 3:
            raise NodeUnreachableError(f"{attempt.node} refused")
        attempt.progress(137, 300)
        return "ok"

    assert run(op, RetryPolicy(), fake, events) == "ok"
    assert tried == ["vip", "a", "b"]
    assert fake.slept == []  # switching to the next candidate does not wait; only a full cycle does
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["AttemptFailed", "SwitchedNode", "AttemptFailed", "SwitchedNode", "Resumed"]
    resumed = events[-1]
    assert isinstance(resumed, Resumed) and (resumed.node, resumed.done, resumed.total) == ("b", 137, 300)
    assert resumed.outage_s == pytest.approx(2.0)


def test_backoff_grows_after_each_full_cycle_and_is_capped() -> None:
    fake, events = FakeTime(), []
    policy = RetryPolicy(budget_s=10_000, backoff_initial_s=1, backoff_max_s=4, jitter=0, attempts_max=100)
    count = [0]

    def op(attempt):
        count[0] += 1
        if count[0] <= 5:
            raise PacsTimeoutError("silent")
        return count[0]

    assert run(op, policy, fake, events, candidates=("vip",)) == 6
    assert fake.slept == [1, 2, 4, 4, 4]


def test_permanent_error_is_not_retried() -> None:
    fake, events = FakeTime(), []
    calls = []

    def op(attempt):
        calls.append(attempt.number)
        raise PacsStatusError("it does not know the move destination", 0xA801)

    with pytest.raises(PacsStatusError, match="move destination"):
        run(op, RetryPolicy(), fake, events)
    assert calls == [1]
    assert len(events) == 1 and isinstance(events[0], AttemptFailed) and not events[0].transient


def test_budget_runs_out_with_a_clear_error() -> None:
    fake, events = FakeTime(), []

    def op(attempt):
        fake.now += 2.0  # connect timeout
        raise NodeUnreachableError(f"The PACS at {attempt.node} did not answer within 2 s.")

    with pytest.raises(NodeUnreachableError, match=r"Gave up the C-GET after \d+ attempt\(s\) over \d+ s"):
        run(op, RetryPolicy(budget_s=30, backoff_initial_s=1, backoff_max_s=4), fake, events)
    gave_up = events[-1]
    assert isinstance(gave_up, GaveUp)
    assert gave_up.elapsed_s <= 30
    assert fake.now - 1000.0 <= 30 + 2.0 + 4 * 1.25  # never sleeps past the budget


def test_attempts_are_bounded() -> None:
    fake, events = FakeTime(), []
    calls = []

    def op(attempt):
        calls.append(1)
        raise AssociationAbortedError("aborted")

    with pytest.raises(AssociationAbortedError):
        run(op, RetryPolicy(budget_s=10_000, backoff_initial_s=0, backoff_max_s=0, attempts_max=7), fake, events)
    assert len(calls) == 7


def test_progress_starts_a_new_outage() -> None:
    """A flapping node that moves the work forward each time is not given up on after one budget."""
    fake, events = FakeTime(), []
    policy = RetryPolicy(budget_s=5, backoff_initial_s=1, backoff_max_s=1, jitter=0)
    done = [0]

    def op(attempt):
        fake.now += 4
        done[0] += 1
        attempt.progress(done[0], 10)
        if done[0] < 10:
            raise AssociationAbortedError("aborted mid-transfer")
        return done[0]

    assert run(op, policy, fake, events, candidates=("vip",)) == 10
    assert not any(isinstance(e, GaveUp) for e in events)


def test_cancel_stops_waiting() -> None:
    cancel = threading.Event()
    events: list[RetryEvent] = []

    def op(attempt):
        cancel.set()
        raise NodeUnreachableError("refused")

    with pytest.raises(NodeUnreachableError):
        run_with_retry(op, RetryPolicy(), candidates=["vip"], cancel=cancel, on_event=events.append)
    with pytest.raises(OperationCancelled):
        run_with_retry(lambda a: 1, RetryPolicy(), candidates=["vip"], cancel=cancel)


def test_switch_events_name_both_nodes() -> None:
    fake, events = FakeTime(), []

    def op(attempt):
        if attempt.node == "vip":
            raise NodeUnreachableError("refused")
        return attempt.node

    assert run(op, RetryPolicy(), fake, events) == "a"
    switched = [e for e in events if isinstance(e, SwitchedNode)]
    assert [(e.from_node, e.node) for e in switched] == [("vip", "a")]


@pytest.mark.parametrize("kwargs", [
    {"budget_s": -1}, {"backoff_initial_s": 5, "backoff_max_s": 1}, {"jitter": 1.5}, {"attempts_max": 0},
])
def test_policy_validation(kwargs) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_reachable_sends_the_next_attempt_where_something_answers() -> None:
    fake, events = FakeTime(), []
    tried: list[str] = []
    probes: list[tuple[int, float]] = []

    def op(attempt):
        tried.append(attempt.node)
        if len(tried) == 1:
            raise NodeUnreachableError("vip refused")
        return "ok"

    def reachable(prefer_from: int, wait_s: float) -> int | None:
        probes.append((prefer_from, wait_s))
        fake.now += 3  # the prober waited 3 s for an address to answer
        return 2

    assert run(op, RetryPolicy(budget_s=60), fake, events, reachable=reachable) == "ok"
    assert tried == ["vip", "b"]  # not "a": it did not answer the probe
    assert probes == [(1, 60)]
    assert fake.slept == []  # no backoff after "unreachable": the prober paced the wait
    resumed = [e for e in events if isinstance(e, Resumed)]
    assert resumed and resumed[0].node == "b" and resumed[0].outage_s == pytest.approx(3)


def test_reachable_finding_nothing_gives_up_with_the_last_error() -> None:
    fake, events = FakeTime(), []

    def op(attempt):
        raise NodeUnreachableError("refused")

    def reachable(prefer_from: int, wait_s: float) -> int | None:
        fake.now += wait_s
        return None

    with pytest.raises(NodeUnreachableError, match="Gave up the C-GET after 1 attempt"):
        run(op, RetryPolicy(budget_s=30), fake, events, reachable=reachable)
    assert isinstance(events[-1], GaveUp)


def test_reachable_keeps_the_backoff_for_nodes_that_answer_and_fail() -> None:
    fake, events = FakeTime(), []
    count = [0]

    def op(attempt):
        count[0] += 1
        if count[0] <= 2:
            raise PacsTimeoutError("silent after the association")
        return "ok"

    policy = RetryPolicy(budget_s=100, backoff_initial_s=1, jitter=0)
    assert run(op, policy, fake, events, candidates=("vip",), reachable=lambda p, w: 0) == "ok"
    assert fake.slept == [1, 2]
