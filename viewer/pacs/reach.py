"""Which of several TCP endpoints accepts a connection now: all probed at once, without threads.

During a takeover the addresses of a cluster behave differently: a dead node's port refuses at once, a node
whose link is cut swallows the SYN (only a timeout tells), the passive node refuses until Heartbeat has started
its PACS, and the virtual IP follows whichever node holds it.  Trying them one after the other with a connect
timeout each adds those timeouts to the outage.  :func:`first_accepting` instead keeps one non-blocking
connect in flight per address, starts a fresh one :data:`PROBE_INTERVAL_S` after a refusal (or at once after
a connect timeout), and returns as soon as any address accepts.  A probe sends nothing: the connection is
closed as soon as it is established, which a DICOM or HTTP server takes as a client that changed its mind.

Bounded: one socket per address at a time, a total wait, and the caller's cancel event (checked at least
every :data:`CANCEL_CHECK_S`).
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

PROBE_INTERVAL_S = 0.25  # after a refusal, the next connect to that address
CANCEL_CHECK_S = 0.1
ADDRESSES_MAX = 16


def url_address(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, with the scheme's default port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def first_accepting(
    addresses: Sequence[tuple[str, int]],
    *,
    connect_s: float,
    wait_s: float,
    prefer_from: int = 0,
    interval_s: float = PROBE_INTERVAL_S,
    cancel: threading.Event | None = None,
) -> int | None:
    """The index of an address that accepts a TCP connection within `wait_s`, else None (also when `cancel` is
    set).  When several accept in the same instant, the first at or after `prefer_from` (wrapping) wins."""
    if not addresses or len(addresses) > ADDRESSES_MAX:
        raise ValueError(f"first_accepting takes 1-{ADDRESSES_MAX} addresses, not {len(addresses)}")
    count = len(addresses)
    rank = {i: (i - prefer_from) % count for i in range(count)}
    deadline = time.monotonic() + max(0.0, wait_s)
    next_try = [0.0] * count  # monotonic time of the next connect to start, per address
    started: dict[int, float] = {}
    sockets: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    try:
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return None
            for i in range(count):
                if i not in sockets and now >= next_try[i]:
                    sock = _start_connect(addresses[i])
                    if sock is None:  # refused or unresolvable at once
                        next_try[i] = now + interval_s
                        continue
                    sockets[i], started[i] = sock, now
                    selector.register(sock, selectors.EVENT_WRITE, i)
            if now >= deadline:
                return None
            wake = min([deadline, now + CANCEL_CHECK_S] + [started[i] + connect_s for i in sockets]
                       + [next_try[i] for i in range(count) if i not in sockets])
            accepted: list[int] = []
            for key, _ in selector.select(max(0.0, wake - now)) if sockets else _sleep(wake - now):
                i = key.data
                sock = sockets.pop(i)
                selector.unregister(sock)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                sock.close()
                if error == 0:
                    accepted.append(i)
                else:
                    next_try[i] = time.monotonic() + interval_s
            if accepted:
                return min(accepted, key=rank.__getitem__)
            now = time.monotonic()
            for i in [i for i in sockets if now - started[i] >= connect_s]:  # silent: try afresh (a new SYN)
                selector.unregister(sockets[i])
                sockets.pop(i).close()
                next_try[i] = now
    finally:
        for sock in sockets.values():
            sock.close()
        selector.close()


def _sleep(seconds: float) -> list:
    time.sleep(max(0.0, seconds))
    return []


def _start_connect(address: tuple[str, int]) -> socket.socket | None:
    """A non-blocking connect in flight, or None when it failed at once."""
    host, port = address
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError):
        return None
    sock = socket.socket(family, kind, proto)
    sock.setblocking(False)
    code = sock.connect_ex(sockaddr)
    if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        return sock
    sock.close()
    return None
