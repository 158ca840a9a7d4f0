"""Cluster health: periodic probes of the virtual IP and each member, and an event log in plain words.

:class:`HealthMonitor` runs one daemon thread that, every ``interval_s``, probes every address of a
:class:`~viewer.pacs.cluster.ClusterProfile` at once (a small pool, one worker per address, at most
:data:`MEMBERS_MAX` + 1): a C-ECHO with short timeouts for DIMSE, an HTTP GET of the DICOMweb root for DICOMweb.
A round is bounded by those timeouts, so a dead node never stalls the monitor.  Which member serves the virtual
IP is told, when the profile gives REST URLs (``rest_url``, Orthanc's REST root), by comparing the ``Name``
Orthanc reports in ``/system`` through the VIP with each member's; otherwise it is shown as unknown.

:class:`EventLog` keeps the last :data:`EVENT_LOG_MAX` sentences with their times, e.g. "node A stopped
answering at 10:42:03", "C-GET resumed through the virtual IP (node B) at 10:42:19 after 16 s; 137 of 300
images were already here".  It takes the retry engine's events (:meth:`EventLog.record`) and the monitor's own
transitions.  No Qt here: the UI polls :meth:`HealthMonitor.statuses` / :meth:`EventLog.entries` or forwards
``on_change`` to a signal.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from viewer.errors import MifasError
from viewer.imports import need
from viewer.json_input import parse_json
from viewer.limits import SYSTEM_ANSWER_BYTES_MAX
from viewer.pacs.cluster import MEMBERS_MAX, ClusterAddress, ClusterProfile
from viewer.pacs.dimse import DimseClient
from viewer.pacs.node import Node, Timeouts
from viewer.pacs.retry import (
    AttemptFailed,
    FellBack,
    GaveUp,
    Resumed,
    RetryEvent,
    SourceDropped,
    SourcesServed,
    SwitchedNode,
    UnrequestedInstance,
)

log = logging.getLogger(__name__)

EVENT_LOG_MAX = 500
INTERVAL_MIN_S = 0.2
PROBE_TIMEOUTS = Timeouts(connect_s=1.0, acse_s=2.0, dimse_s=2.0, network_s=3.0)
HTTP_PROBE_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 10.0


def clock_text(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


@dataclass(frozen=True)
class LogEntry:
    at: float
    text: str  # a sentence for a person, starting with the time


class EventLog:
    """A bounded, thread-safe list of plain sentences.  `serving` (optional) names the member behind the
    virtual IP, so that "the virtual IP" can be shown as "the virtual IP (node B)"."""

    def __init__(self, maxlen: int = EVENT_LOG_MAX, serving: Callable[[], str | None] | None = None) -> None:
        self._entries: deque[LogEntry] = deque(maxlen=maxlen)
        self._lock = threading.RLock()
        self._serving = serving
        self._failing: set[str] = set()  # operations in an outage: their repeated failures are not repeated here

    def add(self, text: str, at: float | None = None) -> LogEntry:
        entry = LogEntry(time.time() if at is None else at, text)
        with self._lock:
            self._entries.append(entry)
        log.info("%s", text)
        return entry

    def entries(self) -> list[LogEntry]:
        with self._lock:
            return list(self._entries)

    def sentences(self) -> list[str]:
        return [e.text for e in self.entries()]

    def _where(self, node: str) -> str:
        serving = self._serving() if self._serving is not None else None
        if node == "virtual IP":
            return f"the virtual IP ({serving})" if serving else "the virtual IP"
        return node

    def record(self, event: RetryEvent) -> LogEntry | None:
        """Turn one retry event into a sentence (repeated failures of one outage give one sentence).
        Thread-safe: the engine calls it from worker threads."""
        with self._lock:
            return self._record(event)

    def _record(self, event: RetryEvent) -> LogEntry | None:
        when = clock_text(event.at)
        if isinstance(event, AttemptFailed):
            if not event.transient:
                self._failing.discard(event.operation)
                return self.add(f"The {event.operation} failed at {when}: {event.reason}", event.at)
            if event.operation in self._failing:
                return None
            self._failing.add(event.operation)
            return self.add(f"{_cap(self._where(event.node))} stopped answering at {when} during the "
                            f"{event.operation}; retrying.", event.at)
        if isinstance(event, Resumed):
            self._failing.discard(event.operation)
            text = (f"The {event.operation} resumed through {self._where(event.node)} at {when} "
                    f"after {event.outage_s:.0f} s")
            if event.done is not None and event.total is not None:
                where = "already stored on the PACS" if event.operation == "C-STORE" else "already here"
                text += f"; {event.done} of {event.total} images were {where}"
            return self.add(text + ".", event.at)
        if isinstance(event, GaveUp):
            self._failing.discard(event.operation)
            return self.add(f"Gave up the {event.operation} at {when} after {event.elapsed_s:.0f} s and "
                            f"{event.attempts} attempts: {event.reason}", event.at)
        if isinstance(event, FellBack):
            return self.add(f"{_cap(self._where(event.node))} refused {event.from_method.upper()} at {when}; "
                            f"using {event.to_method.upper()} instead.", event.at)
        if isinstance(event, UnrequestedInstance):
            return self.add(f"{_cap(self._where(event.node))} sent an image that was not asked for at {when} "
                            f"(SOP Instance UID {event.sop_instance_uid}); it was refused.", event.at)
        if isinstance(event, SourceDropped):
            return self.add(f"{_cap(self._where(event.node))} failed at {when} during a co-allocated retrieval and "
                            f"was dropped; the other sources take over its share ({event.left} images queued): "
                            f"{event.reason}", event.at)
        if isinstance(event, SourcesServed):
            served = ", ".join(f"{n} from {self._where(name)}" for name, n in event.shares)
            return self.add(f"Co-allocated retrieval done at {when}: {served}.", event.at)
        if isinstance(event, SwitchedNode):
            return None  # part of an outage already reported
        return None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class NodeStatus:
    """One address of the cluster as last probed.  ``up`` is None before the first probe."""

    name: str
    address: str
    is_vip: bool
    up: bool | None = None
    rtt_s: float | None = None
    web_up: bool | None = None  # None: no DICOMweb URL
    identity: str | None = None  # what the node calls itself (Orthanc's /system Name), if it can be asked
    serving: str | None = None  # VIP only: the member answering behind it, when it can be told
    checked_at: float | None = None
    since: float | None = None  # when `up` last changed
    error: str = ""
    # In words for the UI: "serving" (a member behind the VIP), "up", "standby" (its host answers but refuses
    # the PACS port: the passive node of an active/passive pair), "down" (nothing answers), "unknown".
    state: str = "unknown"
    host_up: bool | None = None  # a TCP connection to the port got an answer (accepted or refused)


STATE_TEXT = {
    "serving": "serving the virtual IP",
    "up": "up",
    "standby": "standby (host up, PACS not running)",
    "down": "down",
    "unknown": "not checked yet",
}


class HealthMonitor:
    """Probe the cluster every `interval_s` in a daemon thread; call ``on_change(statuses)`` when a node goes up
    or down or the serving member changes.  start()/stop() or a context manager; :meth:`check_once` probes
    now (for ``mifas-pacs health``)."""

    def __init__(self, profile: ClusterProfile, interval_s: float = 5.0,
                 on_change: Callable[[list[NodeStatus]], None] | None = None, *,
                 probe_timeouts: Timeouts = PROBE_TIMEOUTS, event_log: EventLog | None = None) -> None:
        if not INTERVAL_MIN_S <= interval_s <= 3600:
            raise ValueError(f"interval_s must be between {INTERVAL_MIN_S} and 3600")
        self.profile = profile
        self.interval_s = interval_s
        self.on_change = on_change
        self.probe_timeouts = probe_timeouts
        self.event_log = event_log or EventLog(serving=self.serving)
        addresses = profile.addresses()[:MEMBERS_MAX + 1]
        self._nodes = [(a, replace(profile.node_for(a, i), timeouts=probe_timeouts)) for i, a in enumerate(addresses)]
        self._lock = threading.Lock()
        self._statuses = [NodeStatus(n.name, n.address, i == 0) for i, (_, n) in enumerate(self._nodes)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None

    # -- life cycle ----------------------------------------------------------------------------------------

    def start(self) -> HealthMonitor:
        if self._thread is not None:
            return self
        self._stop.clear()
        self._pool = ThreadPoolExecutor(len(self._nodes), thread_name_prefix="viewer.pacs.health-probe")
        self._thread = threading.Thread(target=self._run, name="viewer.pacs.health", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop and wait for the current round (bounded by the probe timeouts)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT_S)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> HealthMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception:  # a bug must not kill the monitor silently forever
                log.exception("health round failed")
            self._stop.wait(self.interval_s)

    # -- state ---------------------------------------------------------------------------------------------

    def statuses(self) -> list[NodeStatus]:
        with self._lock:
            return list(self._statuses)

    def serving(self) -> str | None:
        """The member that answers behind the virtual IP, when it can be told."""
        with self._lock:
            return self._statuses[0].serving if self._statuses else None

    # -- probing -------------------------------------------------------------------------------------------

    def check_once(self) -> list[NodeStatus]:
        """Probe every address now (in parallel), update the statuses and the event log, return them."""
        pool = self._pool or ThreadPoolExecutor(len(self._nodes), thread_name_prefix="viewer.pacs.health-probe")
        try:
            probed = list(pool.map(lambda pair: self._probe(*pair), self._nodes))
        finally:
            if pool is not self._pool:
                pool.shutdown(wait=True)
        probed = self._tell_serving(probed)
        with self._lock:
            before = self._statuses
            now = time.time()
            merged = []
            for old, new in zip(before, probed, strict=True):
                since = old.since if old.up == new.up else now
                merged.append(replace(new, since=since))
            self._statuses = merged
        changed = self._log_changes(before, merged)
        if changed and self.on_change is not None:
            try:
                self.on_change(list(merged))
            except Exception:
                log.exception("health on_change observer failed")
        return merged

    def _probe(self, address: ClusterAddress, node: Node) -> NodeStatus:
        status = NodeStatus(node.name, node.address, address is self.profile.vip, checked_at=time.time())
        if "dimse" in self.profile.transports:
            try:
                status = replace(status, up=True, rtt_s=DimseClient(node).echo())
            except MifasError as exc:
                status = replace(status, up=False, error=str(exc),
                                 host_up=_host_answers(node.host, node.port, self.probe_timeouts.connect_s))
        if address.dicomweb_url and "dicomweb" in self.profile.transports:
            web_up = _http_up(f"{address.dicomweb_url}/studies?limit=1", self.probe_timeouts.connect_s)
            status = replace(status, web_up=web_up)
            if status.up is None:
                status = replace(status, up=web_up, error="" if web_up else "the DICOMweb server does not answer")
        if address.rest_url and status.up is not False:
            status = replace(status, identity=_orthanc_name(address.rest_url, self.probe_timeouts.connect_s))
        return status

    def _tell_serving(self, statuses: list[NodeStatus]) -> list[NodeStatus]:
        vip = statuses[0]
        serving = None
        if vip.up and vip.identity is not None:
            same = [s.name for s in statuses[1:] if s.up and s.identity == vip.identity]
            serving = same[0] if len(same) == 1 else None
        return [replace(s, serving=serving if s.is_vip else s.serving, state=_state(s, serving)) for s in statuses]

    def _log_changes(self, before: Sequence[NodeStatus], after: Sequence[NodeStatus]) -> bool:
        changed = False
        for old, new in zip(before, after, strict=True):
            when = clock_text(new.checked_at or time.time())
            if old.up != new.up and new.up is not None:
                changed = True
                if new.up:
                    text = f"{_cap(new.name)} answers{' again' if old.up is False else ''} at {when}"
                    self.event_log.add(text + (f" ({new.rtt_s * 1000:.0f} ms)." if new.rtt_s else "."))
                elif new.state == "standby":
                    verb = "is on standby" if old.up is None else "went to standby"
                    self.event_log.add(f"{_cap(new.name)} {verb} at {when}: its host answers, its PACS does not run.")
                else:
                    self.event_log.add(f"{_cap(new.name)} stopped answering at {when}.")
            elif old.state != new.state and new.state in ("standby", "down") and old.state in ("standby", "down"):
                changed = True
                self.event_log.add(f"{_cap(new.name)} is {STATE_TEXT[new.state]} since {when}.")
            if new.is_vip and new.serving != old.serving:
                changed = True
                if new.serving:
                    self.event_log.add(f"The virtual IP is served by {new.serving} since {when}.")
        return changed


def _state(status: NodeStatus, serving: str | None) -> str:
    if status.up is None:
        return "unknown"
    if status.up:
        return "serving" if not status.is_vip and status.name == serving else "up"
    return "standby" if status.host_up and not status.is_vip else "down"


def _host_answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether the host is alive at all: a TCP connect that is accepted or refused (RST) says so; silence,
    no route or a timeout does not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _http_up(url: str, timeout_s: float) -> bool:
    """Whether an HTTP server answers at `url` with anything but a 5xx (bounded by `timeout_s`)."""
    need("requests")
    import requests  # here: a command-line retrieval imports this module but probes nothing over HTTP

    try:
        with requests.get(url, timeout=(timeout_s, HTTP_PROBE_TIMEOUT_S), stream=True) as response:
            return response.status_code < 500
    except requests.RequestException:
        return False


def _orthanc_name(rest_url: str, timeout_s: float) -> str | None:
    """Orthanc's configured ``Name`` (``GET /system``), or None if it cannot be asked."""
    need("requests")
    import requests

    try:
        with requests.get(f"{rest_url}/system", timeout=(timeout_s, HTTP_PROBE_TIMEOUT_S), stream=True) as response:
            if response.status_code != 200:
                return None
            body = response.raw.read(SYSTEM_ANSWER_BYTES_MAX + 1, decode_content=True)
        if len(body) > SYSTEM_ANSWER_BYTES_MAX:
            return None
        name = parse_json(body).get("Name")
        return str(name)[:64] if name else None
    except (requests.RequestException, ValueError, AttributeError):
        return None
