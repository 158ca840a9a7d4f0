"""The audit trail (no Qt): a local append-only log, one file per day, and a disk queue that a background thread
sends to IT's audit repository over syslog (RFC 5424 messages; RFC 5425 TLS with octet counting, or RFC 5426 UDP).

:meth:`AuditTrail.record` never touches the network and never raises: it renders the message, appends it to
today's file and, when a repository is configured, writes it into the queue folder (one file per message, 0600)
and wakes the sender.  The sender takes the queue folder's lock (``flock``: one sender per user at a time, the
viewer's or a ``mifas-pacs``'s), sends the oldest messages on one connection, and removes each file only once the
repository has read the whole batch: after our last message we close our half of the connection and wait for the
repository to close its own, which it does only after reading everything before it.  A connection that fails
before that keeps every file of the batch; they are sent again on the next try (backoff 1 s doubling to 60 s).

So a message is never dropped while the queue holds less than ``queue_max_mib``; it is sent twice only if the
process dies, or the network fails, between the repository reading the batch and our seeing it close (its copy of
the batch then arrives again).  Over UDP a datagram the network loses is lost: RFC 5426 has no acknowledgement.

Past ``queue_max_mib`` a new message is written to the local log but not queued: a warning line (no patient
data) says so and :attr:`AuditTrail.not_queued` counts it.  IT collects the local files for such a gap.

Files: ``<audit dir>/audit-YYYY-MM-DD.log`` (UTC day; each line one RFC 5424 message whose MSG is the audit XML)
and ``<audit dir>/queue/*.msg``; the folders 0700 and the files 0600 whatever the umask.  Day files older than
``local_days``, and the oldest ones while all of them together exceed ``local_max_mib``, are removed when the
trail starts and when the day changes; today's file is never removed.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import socket
import ssl
import threading
import time
from pathlib import Path

from viewer.audit import messages

try:
    import fcntl
except ImportError:  # Windows (not tested): no flock, so run one sender at a time there
    fcntl = None  # type: ignore[assignment]
from viewer.audit.config import AuditConfig, audit_dir
from viewer.private import PRIVATE_FILE, private_dir, tighten

log = logging.getLogger("viewer.audit")

FACILITY_AUTHPRIV, SEVERITY_NOTICE = 10, 5
PRI = f"<{FACILITY_AUTHPRIV * 8 + SEVERITY_NOTICE}>"
MSGID = "DICOM+RFC3881"  # PS3.15 A.6: the MSGID of an audit message sent over syslog
DAY_FILE = re.compile(r"^audit-(\d{4}-\d{2}-\d{2})\.log$")
QUEUE_DIR, QUEUE_LOCK = "queue", ".lock"
NETWORK_TIMEOUT_S = 10.0
BATCH_MAX = 256
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0
CLOSE_JOIN_S = 1.0  # at stop: how long an in-flight batch may finish; queued messages wait for the next start


def _header_field(text: str, limit: int) -> str:
    """An RFC 5424 header field: printable US-ASCII, no spaces, at most `limit` characters, '-' when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or "-"


def syslog_message(xml: bytes, app_name: str, when: dt.datetime) -> bytes:
    """One RFC 5424 message: <85>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG (MSG: the audit XML)."""
    header = " ".join((f"{PRI}1", when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       _header_field(socket.gethostname(), 255), _header_field(app_name, 48),
                       str(os.getpid()), MSGID, "-"))
    return header.encode("ascii") + b" " + xml


class AuditTrail:
    """One process's audit trail.  Thread-safe; :meth:`record` returns at once."""

    def __init__(self, config: AuditConfig | None = None, app_name: str = "mifas-viewer",
                 folder: Path | None = None) -> None:
        self.config = config or AuditConfig()
        self.app_name = app_name
        self.folder = Path(folder) if folder is not None else audit_dir()
        self.queue_dir = self.folder / QUEUE_DIR
        self.source = messages.Source(**{k: v for k, v in (("source_id", self.config.source_id),
                                                            ("enterprise_site_id", self.config.enterprise_site_id))
                                         if v})
        self.recorded = 0  # messages written to the local log
        self.not_queued = 0  # messages the full queue could not take (they are in the local log)
        self.write_errors = 0
        self._lock = threading.Lock()
        self._day: str | None = None
        self._seq = 0
        self._queued_bytes = 0
        self._sender: _Sender | None = None
        try:
            private_dir(self.folder)
            tighten(self.folder)
            if self.config.scheme:
                private_dir(self.queue_dir)
                tighten(self.queue_dir)
                self._queued_bytes = sum(p.stat().st_size for p in self._queue_files())
        except OSError as exc:
            self._warn_write(exc)
        if self.config.scheme:
            self._sender = _Sender(self)
            self._sender.start()

    # -- recording -------------------------------------------------------------------------------------------

    def record(self, event: messages.AuditEvent) -> None:
        """Write `event` to the local log and, with a repository, queue it for sending.  Never raises."""
        try:
            when = dt.datetime.now(dt.timezone.utc)
            line = syslog_message(messages.render(event, self.source, when), self.app_name, when)
        except Exception as exc:  # a bug in a builder must not stop the viewer; the line names the event only
            self.write_errors += 1
            log.warning("audit: the %s message could not be built (%s)", event.name, type(exc).__name__)
            return
        with self._lock:
            try:
                self._append_local(line, when)
                self.recorded += 1
            except OSError as exc:
                self._warn_write(exc)
            if self._sender is not None:
                self._enqueue(line)
        if self._sender is not None:
            self._sender.wake()

    def _append_local(self, line: bytes, when: dt.datetime) -> None:
        day = when.strftime("%Y-%m-%d")
        if day != self._day:
            private_dir(self.folder)
            self._day = day
            self.prune()
        fd = os.open(self.folder / f"audit-{day}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                     PRIVATE_FILE)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)

    def _enqueue(self, line: bytes) -> None:
        if self._queued_bytes + len(line) > self.config.queue_max_mib << 20:
            self.not_queued += 1
            log.warning("audit: the queue for the audit repository is full (%d MiB); a message was written to the "
                        "local audit log only (%d so far)", self.config.queue_max_mib, self.not_queued)
            return
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:08d}"
        tmp, final = self.queue_dir / f".{name}.tmp", self.queue_dir / f"{name}.msg"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
            os.replace(tmp, final)  # the sender sees whole messages only
            self._queued_bytes += len(line)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.not_queued += 1
            self._warn_write(exc)

    def _warn_write(self, exc: OSError) -> None:
        self.write_errors += 1
        log.warning("audit: cannot write under %s (%s)", self.folder, exc.strerror or type(exc).__name__)

    # -- the local files ----------------------------------------------------------------------------------------

    def day_files(self) -> list[Path]:
        """The local day files, oldest first."""
        try:
            return sorted(p for p in self.folder.iterdir() if DAY_FILE.match(p.name))
        except OSError:
            return []

    def prune(self) -> None:
        """Remove day files older than local_days, then the oldest while the rest exceed local_max_mib; never
        today's."""
        files = self.day_files()
        today = dt.datetime.now(dt.timezone.utc).date()
        keep: list[Path] = []
        for path in files:
            day = dt.date.fromisoformat(DAY_FILE.match(path.name).group(1))  # type: ignore[union-attr]
            if (today - day).days >= self.config.local_days and path.name != f"audit-{self._day}.log":
                path.unlink(missing_ok=True)
            else:
                keep.append(path)
        sizes = {p: p.stat().st_size for p in keep if p.exists()}
        total, limit = sum(sizes.values()), self.config.local_max_mib << 20
        for path in keep[:-1]:
            if total <= limit or path.name == f"audit-{self._day}.log":
                break
            total -= sizes.get(path, 0)
            path.unlink(missing_ok=True)

    # -- the queue -----------------------------------------------------------------------------------------------

    def _queue_files(self) -> list[Path]:
        try:
            return sorted(p for p in self.queue_dir.iterdir() if p.suffix == ".msg")
        except OSError:
            return []

    def queued(self) -> int:
        """How many messages wait in the queue folder (this user's, all processes)."""
        return len(self._queue_files())

    def flush(self, timeout_s: float) -> bool:
        """Ask the sender to try now (a repository back up), and wait up to `timeout_s` for the queue to be
        empty; True when it is.  For tests and a clean exit: the viewer's own calls never wait."""
        if self._sender is None:
            return True
        return self._sender.wait_empty(timeout_s)

    def close(self, join_s: float = CLOSE_JOIN_S) -> None:
        """Stop the sender: an in-flight batch may finish within `join_s`; what is queued stays for later."""
        if self._sender is not None:
            self._sender.stop(join_s)


class _Sender(threading.Thread):
    def __init__(self, trail: AuditTrail) -> None:
        super().__init__(name="audit-sender", daemon=True)
        self.trail = trail
        self.config = trail.config
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._backoff = 0.0
        self._retry_at = 0.0
        self.sent = 0
        self.failures = 0
        self._warned = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self, join_s: float) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(join_s)

    def wait_empty(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        self._backoff = 0.0
        self._wake.set()
        with self._changed:
            while self.trail.queued():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._backoff = 0.0
                self._wake.set()
                self._changed.wait(min(left, 0.5))  # woken after each try; the bound covers another sender
        return True

    def run(self) -> None:
        while not self._stopping.is_set():
            # 5 s: another process may have queued messages for us.  After a failure, new messages do not
            # bring the next try forward: only the backoff's end, flush() or stop() do.
            self._wake.wait(max(0.0, self._retry_at - time.monotonic()) if self._backoff else 5.0)
            self._wake.clear()
            if self._stopping.is_set():
                break
            if self._backoff and time.monotonic() < self._retry_at:
                continue
            try:
                more = self._drain()
            except Exception as exc:  # never let the thread die: the queue stays on disk for the next try
                more = True
                self._failed(type(exc).__name__)
            with self._changed:
                self._changed.notify_all()
            if more and not self._backoff:
                self._wake.set()

    def _drain(self) -> bool:
        """Send one batch under the queue lock; True when more may wait.  A failure sets the backoff."""
        trail = self.trail
        try:
            lock = os.open(trail.queue_dir / QUEUE_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE_FILE)
        except OSError as exc:
            self._failed(exc.strerror or type(exc).__name__)
            return False
        try:
            try:
                if fcntl is not None:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # another process of this user is sending; the 5 s wake retries
                raise
            files = trail._queue_files()[:BATCH_MAX]
            if not files:
                return False
            batch = []
            for path in files:
                try:
                    batch.append((path, path.read_bytes()))
                except FileNotFoundError:
                    continue
            try:
                self._send([data for _, data in batch])
            except (OSError, ssl.SSLError) as exc:
                self._failed(_reason(exc))
                return False
            for path, data in batch:
                path.unlink(missing_ok=True)
                with trail._lock:
                    trail._queued_bytes = max(0, trail._queued_bytes - len(data))
            self.sent += len(batch)
            if self._warned:
                log.warning("audit: the audit repository %s is reachable again", self.config.repository)
            self._backoff, self._warned = 0.0, False
            return len(files) == BATCH_MAX
        finally:
            os.close(lock)  # releases the flock

    def _failed(self, reason: str) -> None:
        self.failures += 1
        self._backoff = min(BACKOFF_MAX_S, max(BACKOFF_FIRST_S, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        if not self._warned:
            log.warning("audit: the audit repository %s cannot be reached (%s); messages wait in the queue",
                        self.config.repository, reason)
            self._warned = True

    def _send(self, batch: list[bytes]) -> None:
        config = self.config
        if config.scheme == "udp":
            family = socket.getaddrinfo(config.host, config.port, type=socket.SOCK_DGRAM)[0]
            with socket.socket(family[0], socket.SOCK_DGRAM) as udp:
                for data in batch:
                    udp.sendto(data, family[4])
            return
        context = ssl.create_default_context(cafile=config.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if config.cert_file and config.key_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        raw = socket.create_connection((config.host, config.port), timeout=NETWORK_TIMEOUT_S)
        with raw, context.wrap_socket(raw, server_hostname=config.server_name or config.host) as tls:
            # RFC 5425 4.3: octet-counting framing, "MSG-LEN SP SYSLOG-MSG"
            tls.sendall(b"".join(b"%d %s" % (len(data), data) for data in batch))
            try:
                tls.unwrap()  # close_notify; the repository may answer with its own, or just close
            except (ssl.SSLError, OSError):
                pass
            tls.shutdown(socket.SHUT_WR)  # (a plain socket from here on)
            while tls.recv(65536):  # the repository closes only after reading all we sent: the batch arrived
                pass


def _reason(exc: BaseException) -> str:
    """Why a send failed, without addresses' user-info or message content (there is none in these errors)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"its certificate was refused: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or type(exc).__name__}"
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else type(exc).__name__
