"""viewer.pacs.reach.first_accepting against real sockets on loopback: a listening port, a closed one (refused at
once), one that starts listening later, and one whose SYNs are swallowed (a listener whose accept queue is full:
Linux then drops new SYNs, as a host behind a cut link does)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from viewer.pacs.reach import PROBE_INTERVAL_S, first_accepting, url_address

pytestmark = pytest.mark.network


def _closed_port() -> tuple[socket.socket, int]:
    """A port bound but not listening: connects are refused (RST), and nobody else can take it meanwhile."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


@pytest.fixture
def listening() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def refused() -> Iterator[int]:
    sock, port = _closed_port()
    yield port
    sock.close()


@pytest.fixture
def swallowing() -> Iterator[int]:
    """A listener with a full accept queue: the kernel drops further SYNs (net.ipv4.tcp_abort_on_overflow=0)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # the queue holds backlog+1 connections; fill it, the rest time out
        c = socket.socket()
        c.settimeout(0.3)
        try:
            c.connect(("127.0.0.1", port))
        except OSError:
            c.close()
            break
        fillers.append(c)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        probe.connect(("127.0.0.1", port))
        swallows = False
    except OSError:
        swallows = True
    finally:
        probe.close()
    assert swallows, "this kernel accepted a SYN beyond a full accept queue; the test needs it dropped"
    yield port
    for c in fillers:
        c.close()
    server.close()


def test_a_listening_address_is_found_at_once(refused: int, listening: int) -> None:
    started = time.monotonic()
    assert first_accepting([("127.0.0.1", refused), ("127.0.0.1", listening)], connect_s=1, wait_s=5) == 1
    assert time.monotonic() - started < 1


def test_nothing_answering_gives_none_after_the_wait(refused: int) -> None:
    started = time.monotonic()
    assert first_accepting([("127.0.0.1", refused)], connect_s=1, wait_s=0.6) is None
    assert 0.6 <= time.monotonic() - started < 2


def test_an_address_that_starts_listening_is_found_within_the_probe_interval() -> None:
    holder, port = _closed_port()
    opened = []

    def open_later() -> None:
        time.sleep(0.5)
        holder.listen(4)
        opened.append(time.monotonic())

    thread = threading.Thread(target=open_later)
    thread.start()
    try:
        assert first_accepting([("127.0.0.1", port)], connect_s=1, wait_s=5) == 0
        found = time.monotonic()
    finally:
        thread.join()
        holder.close()
    assert found - opened[0] <= PROBE_INTERVAL_S + 0.2


def test_a_swallowed_syn_does_not_hold_up_another_address(swallowing: int, listening: int) -> None:
    started = time.monotonic()
    # connect_s is long: a one-after-the-other walk would wait that long on the first address
    assert first_accepting([("127.0.0.1", swallowing), ("127.0.0.1", listening)], connect_s=5, wait_s=10) == 1
    assert time.monotonic() - started < 1


def test_a_swallowed_syn_alone_times_out(swallowing: int) -> None:
    assert first_accepting([("127.0.0.1", swallowing)], connect_s=0.3, wait_s=1.0) is None


def test_preference_among_addresses_that_answer(listening: int) -> None:
    addresses = [("127.0.0.1", listening)] * 3
    assert first_accepting(addresses, connect_s=1, wait_s=1, prefer_from=0) == 0
    assert first_accepting(addresses, connect_s=1, wait_s=1, prefer_from=2) == 2


def test_cancel_stops_the_wait(refused: int) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    assert first_accepting([("127.0.0.1", refused)], connect_s=1, wait_s=30, cancel=cancel) is None
    assert time.monotonic() - started < 1


def test_unresolvable_host_is_just_not_answering() -> None:
    assert first_accepting([("no-such-host.invalid", 104)], connect_s=0.2, wait_s=0.3) is None


def test_limits_and_urls() -> None:
    with pytest.raises(ValueError):
        first_accepting([], connect_s=1, wait_s=1)
    assert url_address("http://192.0.2.10:8042/dicom-web") == ("192.0.2.10", 8042)
    assert url_address("https://pacs.example/dicom-web") == ("pacs.example", 443)
