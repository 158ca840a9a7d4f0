"""Sending to a real audit repository (rsyslogd on loopback): TLS (RFC 5425) with our client certificate, UDP
(RFC 5426), the repository down and back, a refused certificate, two senders on one queue."""

from __future__ import annotations

import fcntl
import logging
import os
import queue
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.audit.conftest import Certs, Rsyslog
from tests.audit.support import Received, parse
from viewer.audit import AuditConfig, AuditTrail, messages

pytestmark = pytest.mark.network

FLUSH_S = 30.0


def accessed(index: int) -> messages.AuditEvent:
    return messages.instances_accessed("mifas-viewer", messages.StudyRef(f"1.2.826.0.1.{index}", f"PID{index}",
                                                                         "Roe^Richard"))


def receive_until_sentinel(trail: AuditTrail, rsyslog: Rsyslog) -> list[Received]:
    """Everything the repository received before a last message sent after the others: it comes through the
    same queue and the same sender, in order, so any duplicate would arrive before it."""
    trail.record(accessed(999_999))
    assert trail.flush(FLUSH_S)
    got = []
    while True:
        message = parse(rsyslog.receive())
        if message.study_uids == ["1.2.826.0.1.999999"]:
            return got
        got.append(message)


def test_every_message_reaches_the_tls_repository_once(rsyslog: Rsyslog, certs: Certs, tmp_path: Path) -> None:
    rsyslog.start()
    trail = AuditTrail(rsyslog.tls_config(certs), "mifas-viewer", tmp_path / "audit")
    try:
        for index in range(20):
            trail.record(accessed(index))
        got = receive_until_sentinel(trail, rsyslog)
    finally:
        trail.close()
    assert sorted(m.study_uids[0] for m in got) == sorted(f"1.2.826.0.1.{i}" for i in range(20))
    for message in got:
        assert (message.pri, message.app_name, message.msgid) == ("<85>", "mifas-viewer", "DICOM+RFC3881")
        assert message.event == "DICOM Instances Accessed"
        assert message.xml.find("AuditSourceIdentification").get("AuditSourceID") == "MIFAS-TEST-WS"
    assert trail.queued() == 0
    assert len(trail.day_files()[-1].read_bytes().splitlines()) == 21  # and each is in the local log


def test_the_repository_down_queues_on_disk_and_sends_when_it_is_back(rsyslog: Rsyslog, certs: Certs,
                                                                       tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="viewer.audit")
    trail = AuditTrail(rsyslog.tls_config(certs), "mifas-viewer", tmp_path / "audit")
    try:
        for index in range(10):
            trail.record(accessed(index))  # returns at once: nothing waits on the network
        assert not trail.flush(0.5)  # the sender tried, and keeps them
        assert trail.queued() == 10
        rsyslog.start()
        got = receive_until_sentinel(trail, rsyslog)
        assert sorted(m.study_uids[0] for m in got) == sorted(f"1.2.826.0.1.{i}" for i in range(10))
        # Down again, then back: only the new messages are sent.
        rsyslog.stop()
        trail.record(accessed(10))
        assert not trail.flush(0.5) and trail.queued() == 1
        rsyslog.start()
        again = receive_until_sentinel(trail, rsyslog)
        assert [m.study_uids for m in again] == [["1.2.826.0.1.10"]]
    finally:
        trail.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "cannot be reached" in text and "reachable again" in text
    assert "PID" not in text and "Roe" not in text and "1.2.826" not in text


def test_a_repository_whose_certificate_we_do_not_trust_gets_nothing(rsyslog: Rsyslog, certs: Certs,
                                                                     tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="viewer.audit")
    rsyslog.start()
    trail = AuditTrail(rsyslog.tls_config(certs, ca_file=str(certs.other_ca)), "mifas-viewer", tmp_path / "audit")
    try:
        trail.record(accessed(1))
        assert not trail.flush(1.0)
        assert trail.queued() == 1
    finally:
        trail.close()
    with pytest.raises(queue.Empty):
        rsyslog.receive(timeout_s=0.5)
    assert any("certificate" in r.getMessage() for r in caplog.records)
    # The same queue, with the right CA (IT fixed the configuration): the message goes out once.
    fixed = AuditTrail(rsyslog.tls_config(certs), "mifas-viewer", tmp_path / "audit")
    try:
        got = receive_until_sentinel(fixed, rsyslog)
    finally:
        fixed.close()
    assert [m.study_uids for m in got] == [["1.2.826.0.1.1"]]


def test_two_senders_on_one_queue_never_send_a_message_twice(rsyslog: Rsyslog, certs: Certs, tmp_path: Path) -> None:
    """The viewer and a mifas-pacs of the same user at once: one queue folder, one sender at a time (flock)."""
    trails = [AuditTrail(rsyslog.tls_config(certs), name, tmp_path / "audit") for name in ("mifas-viewer", "mifas-pacs")]
    try:
        for index in range(200):
            trails[index % 2].record(accessed(index))
        rsyslog.start()
        with ThreadPoolExecutor(2) as pool:  # both senders try at once
            assert all(pool.map(lambda trail: trail.flush(FLUSH_S), trails))
        got = receive_until_sentinel(trails[0], rsyslog)
    finally:
        for trail in trails:
            trail.close()
    assert sorted(m.study_uids[0] for m in got) == sorted(f"1.2.826.0.1.{i}" for i in range(200))


def test_udp_repository(rsyslog: Rsyslog, tmp_path: Path) -> None:
    rsyslog.start()
    config = AuditConfig(scheme="udp", host="127.0.0.1", port=rsyslog.udp_port)
    trail = AuditTrail(config, "mifas-viewer", tmp_path / "audit")
    try:
        for index in range(3):
            trail.record(accessed(index))
        assert trail.flush(FLUSH_S)
        got = sorted(parse(rsyslog.receive()).study_uids[0] for _ in range(3))
    finally:
        trail.close()
    assert got == [f"1.2.826.0.1.{i}" for i in range(3)]


def test_a_sender_waits_while_another_process_holds_the_queue(rsyslog: Rsyslog, certs: Certs, tmp_path: Path) -> None:
    """Another process sending (it holds the queue's lock): this one sends nothing until the lock is free."""
    rsyslog.start()
    trail = AuditTrail(rsyslog.tls_config(certs), "mifas-viewer", tmp_path / "audit")
    lock = os.open(tmp_path / "audit" / "queue" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        trail.record(accessed(1))
        assert not trail.flush(1.0) and trail.queued() == 1
        with pytest.raises(queue.Empty):
            rsyslog.receive(timeout_s=0.2)
        fcntl.flock(lock, fcntl.LOCK_UN)
        got = receive_until_sentinel(trail, rsyslog)
    finally:
        os.close(lock)
        trail.close()
    assert [m.study_uids for m in got] == [["1.2.826.0.1.1"]]
