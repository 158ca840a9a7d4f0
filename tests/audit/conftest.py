"""A real audit repository for the audit tests: Debian's rsyslogd (its own config, work folder and pid file, high
ports; never the system service) with a TLS listener (imtcp, gtls driver, x509/name: our client certificate is
required) and a UDP one (imudp).  What it receives is written, one raw RFC 5424 message a line, into a FIFO
that a thread of the test reads: receiving is a blocking read, not a poll.

Certificates are made by the openssl command line into the session's temporary folder.  The PS3.15 A.5.1 schema
(audit-message.rnc, converted to audit-message.rng) validates every message.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mifaslab.orthanc import free_port
from tests.pacs.conftest import move_port, orthanc, seed_data  # noqa: F401  (the session's Orthanc, seeded)
from tests.support import require
from viewer.audit.config import AuditConfig

RSYSLOGD = "/usr/sbin/rsyslogd"
GTLS_DRIVER = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
SCHEMA = Path(__file__).with_name("audit-message.rng")
CLIENT_CN = "mifas-ws-test"
START_TIMEOUT_S = 20.0
RECEIVE_TIMEOUT_S = 20.0
_STOP_LINE = b"\x00stop-reader\n"


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here: a repository checked against it is refused


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, subject: str, ext: str, ca: str = "ca") -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", subject, cwd=folder)
    (folder / f"{name}.ext").write_text(ext)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    require(shutil.which("openssl") is not None, "the openssl command is not installed (apt-get install openssl)")
    folder = tmp_path_factory.mktemp("audit-certs")
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                 f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN=MIFAS audit test {ca}", cwd=folder)
    _issue(folder, "server", "/CN=localhost",
           "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _issue(folder, "client", f"/CN={CLIENT_CN}", f"subjectAltName=DNS:{CLIENT_CN}\nextendedKeyUsage=clientAuth\n")
    return Certs(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
                 folder / "client.key", folder / "other-ca.pem")


def _listening(port: int, udp: bool = False) -> bool:
    """True when a socket is bound to `port` on this host (read from /proc: no connection is made)."""
    wanted = f":{port:04X}"
    for table in (("udp", "udp6") if udp else ("tcp", "tcp6")):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].endswith(wanted) and (udp or fields[3] == "0A"):
                return True
    return False


class Rsyslog:
    """rsyslogd as our child: start(), stop(), start() again on the same ports; receive() the next message."""

    def __init__(self, folder: Path, certs: Certs) -> None:
        self.folder = folder
        self.tls_port = free_port()
        self.udp_port = free_port()
        self.fifo = folder / "received.fifo"
        os.mkfifo(self.fifo, 0o600)
        (folder / "work").mkdir()
        self.conf = folder / "rsyslog.conf"
        self.conf.write_text(f"""
global(workDirectory="{folder / 'work'}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{certs.ca}"
       defaultNetstreamDriverCertFile="{certs.server_cert}"
       defaultNetstreamDriverKeyFile="{certs.server_key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/name"
       permittedPeer=["{CLIENT_CN}"])
module(load="imudp")
input(type="imtcp" port="{self.tls_port}" address="127.0.0.1")
input(type="imudp" port="{self.udp_port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="ompipe" pipe="{self.fifo}" template="raw" action.resumeRetryCount="-1" action.resumeInterval="1")
""")
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: queue.Queue[bytes] = queue.Queue()
        self._fd = os.open(self.fifo, os.O_RDWR)  # read and write: the reader never sees EOF between restarts
        try:  # room for a whole batch: rsyslog's ompipe writes without blocking, and retries when it is full
            fcntl.fcntl(self._fd, 1031, 1 << 20)  # F_SETPIPE_SZ
        except OSError:
            pass
        self._reader = threading.Thread(target=self._read, name="rsyslog-fifo", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = os.read(self._fd, 65536)
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line + b"\n" == _STOP_LINE:
                    return
                self.lines.put(line)

    def start(self) -> None:
        require(Path(RSYSLOGD).exists(), "rsyslogd is not installed (apt-get install rsyslog)")
        require(GTLS_DRIVER.exists(), "rsyslog's TLS driver is not installed (apt-get install rsyslog-gnutls)")
        pidfile = self.folder / "rsyslogd.pid"
        pidfile.unlink(missing_ok=True)
        self.process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(pidfile)],
                                        stdout=(self.folder / "rsyslogd.out").open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (_listening(self.tls_port) and _listening(self.udp_port, udp=True)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.folder / "rsyslogd.out").read_text(errors="replace")[-2000:]
                pytest.fail(f"rsyslogd did not start listening: {output}")
            time.sleep(0.02)  # waiting for another process to bind: nothing to block on

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        self.process = None

    def receive(self, timeout_s: float = RECEIVE_TIMEOUT_S) -> bytes:
        return self.lines.get(timeout=timeout_s)

    def close(self) -> None:
        self.stop()
        os.write(self._fd, _STOP_LINE)
        self._reader.join(timeout=10)
        os.close(self._fd)

    def tls_config(self, certs: Certs, **changes: object) -> AuditConfig:
        values: dict[str, object] = dict(scheme="tls", host="127.0.0.1", port=self.tls_port, ca_file=str(certs.ca),
                                         cert_file=str(certs.client_cert), key_file=str(certs.client_key),
                                         server_name="localhost", source_id="MIFAS-TEST-WS")
        values.update(changes)
        return AuditConfig(**values)  # type: ignore[arg-type]

    def tls_json(self, certs: Certs) -> dict[str, object]:
        """The same, as IT writes it in /etc/mifas-viewer/settings.json."""
        return {"repository": f"tls://127.0.0.1:{self.tls_port}", "ca_file": str(certs.ca),
                "cert_file": str(certs.client_cert), "key_file": str(certs.client_key),
                "server_name": "localhost", "source_id": "MIFAS-TEST-WS"}


@pytest.fixture
def rsyslog(tmp_path: Path, certs: Certs) -> Iterator[Rsyslog]:
    """An rsyslogd, not started: the test starts (and stops) it."""
    folder = tmp_path / "rsyslog"
    folder.mkdir()
    server = Rsyslog(folder, certs)
    yield server
    server.close()
