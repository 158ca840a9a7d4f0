"""The health monitor against a real Orthanc (and a port nobody listens on), and the event log's sentences."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mifaslab.orthanc import ORTHANC_BINARY, OrthancProcess, free_port
from tests.pacs.conftest import CALLING_AE
from tests.support import require
from viewer.pacs.cluster import ClusterAddress, ClusterProfile
from viewer.pacs.health import EventLog, HealthMonitor, NodeStatus
from viewer.pacs.retry import AttemptFailed, FellBack, GaveUp, Resumed, SwitchedNode, UnrequestedInstance

AT = time.mktime((2026, 1, 2, 10, 42, 3, 0, 0, -1))


def test_event_log_sentences() -> None:
    log = EventLog(serving=lambda: "node B")
    failed = AttemptFailed("C-GET", "node A", AT, 1, "aborted", "aborted", True, 0.2)
    assert log.record(failed) is not None
    assert log.record(SwitchedNode("C-GET", "virtual IP", AT + 1, "node A")) is None
    assert log.record(AttemptFailed("C-GET", "virtual IP", AT + 2, 2, "unreachable", "refused", True, 0.4)) is None
    log.record(Resumed("C-GET", "virtual IP", AT + 16, 3, 16.0, 137, 300))
    log.record(FellBack("C-GET", "virtual IP", AT + 17, "get", "move", "refused"))
    log.record(UnrequestedInstance("C-GET", "node A", AT + 18, "1.2.3.4"))
    log.record(GaveUp("C-FIND", "node A", AT + 19, 9, 120.0, "refused"))
    assert log.sentences() == [
        "Node A stopped answering at 10:42:03 during the C-GET; retrying.",
        "The C-GET resumed through the virtual IP (node B) at 10:42:19 after 16 s; 137 of 300 images were "
        "already here.",
        "The virtual IP (node B) refused GET at 10:42:20; using MOVE instead.",
        "Node A sent an image that was not asked for at 10:42:21 (SOP Instance UID 1.2.3.4); it was refused.",
        "Gave up the C-FIND at 10:42:22 after 120 s and 9 attempts: refused",
    ]


def test_event_log_is_bounded() -> None:
    log = EventLog(maxlen=5)
    for index in range(50):
        log.add(f"event {index}")
    assert log.sentences() == [f"event {i}" for i in range(45, 50)]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancProcess]:
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    with OrthancProcess(tmp_path / "orthanc", aet="ORTHANCH", remote_access=False) as process:
        yield process


@pytest.mark.network
@pytest.mark.slow
def test_monitor_reports_up_down_and_who_serves_the_vip(orthanc: OrthancProcess) -> None:
    dead_port = free_port()
    profile = ClusterProfile(
        name="watched",
        vip=ClusterAddress("127.0.0.1", orthanc.dicom_port, rest_url=orthanc.url,
                           dicomweb_url=orthanc.dicomweb_url if orthanc.dicomweb else None),
        members=(ClusterAddress("127.0.0.1", orthanc.dicom_port, name="node A", rest_url=orthanc.url),
                 ClusterAddress("127.0.0.1", dead_port, name="node B", rest_url=f"http://127.0.0.1:{dead_port}")),
        ae_title="ORTHANCH", calling_ae=CALLING_AE, transports=("dimse", "dicomweb"))
    changes: list[list[NodeStatus]] = []
    monitor = HealthMonitor(profile, interval_s=0.2, on_change=changes.append)

    statuses = monitor.check_once()
    assert [(s.name, s.up) for s in statuses] == [("virtual IP", True), ("node A", True), ("node B", False)]
    assert statuses[0].rtt_s is not None and statuses[0].rtt_s >= 0
    assert statuses[0].serving == "node A" and monitor.serving() == "node A"
    assert "refused the connection" in statuses[2].error
    if orthanc.dicomweb:
        assert statuses[0].web_up is True
    assert len(changes) == 1
    sentences = monitor.event_log.sentences()
    assert any(s.startswith("Virtual IP answers at") for s in sentences)
    # node B's port is refused: its host is up but no PACS runs there, the passive node of a pair
    assert [s.state for s in statuses] == ["up", "serving", "standby"]
    assert any(s.startswith("Node B is on standby at") for s in sentences)
    assert any(s.startswith("The virtual IP is served by node A since") for s in sentences)

    assert monitor.check_once() == monitor.statuses()
    assert len(changes) == 1  # nothing changed: no notification

    # the monitor thread notices the node going away, and stops promptly
    noticed = threading.Event()
    monitor.on_change = lambda s: noticed.set() if s[0].up is False else None
    with monitor:
        orthanc.stop()
        assert noticed.wait(30)
    assert monitor._thread is None
    statuses = monitor.statuses()
    assert [s.up for s in statuses] == [False, False, False]
    assert [s.state for s in statuses] == ["down", "standby", "standby"]
    assert statuses[0].serving is None
    assert any(s.startswith("Virtual IP stopped answering at") for s in monitor.event_log.sentences())
