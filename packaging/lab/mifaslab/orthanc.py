"""Run a real Orthanc (Debian's ``/usr/sbin/Orthanc``) as a plain child process, for tests, benchmarks and demos.

The Debian service wrapper is not used: :class:`OrthancProcess` writes its own JSON configuration into a work
folder (storage, index, log), picks free loopback ports unless given, enables the DICOMweb plugin at
``/dicom-web/`` when it is installed, and waits until both the DICOM port (C-ECHO) and the REST API
(``/system``) answer.  ``TCP_NODELAY=1`` is set in Orthanc's environment: without it DCMTK (inside Orthanc)
leaves Nagle's algorithm on and every DIMSE transfer costs about 40 ms per instance.

    with OrthancProcess(tmp_path / "orthanc", modalities={"mifas": ("MIFAS", "127.0.0.1", 11113)}) as orthanc:
        orthanc.upload(paths)
        client = DimseClient(orthanc.node(calling_ae="MIFAS"))
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from viewer.errors import MifasError, PacsError
from viewer.pacs.node import Node, Timeouts, validate_ae_title

if TYPE_CHECKING:
    from viewer.pacs.tls import TlsSettings

log = logging.getLogger(__name__)

ORTHANC_BINARY = Path("/usr/sbin/Orthanc")  # Debian package "orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")  # Debian package "orthanc-dicomweb"
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
READY_POLL_S = 0.1
LOG_TAIL_BYTES = 4000
UPLOAD_TIMEOUT_S = 60.0
UPLOAD_FILES_MAX = 100_000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; a tiny race remains until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class OrthancProcess:
    """An Orthanc server running as our child process; use as a context manager or call start()/stop().

    `modalities` maps a name to ``(AE title, host, port)``: the nodes Orthanc may C-MOVE to (and, with
    ``always_allow=False``, the only callers it serves).  `check_called_aet` makes Orthanc reject associations
    addressed to another AE title (PS3.8 A-ASSOCIATE-RJ, "called AE title not recognised").  Orthanc 1.10
    cannot bind to one interface: its ports listen on all of them, and with `remote_access` (needed when
    peers in other network namespaces use it) its REST API, without authentication, too.
    """

    def __init__(
        self,
        work_dir: Path | str,
        *,
        aet: str = "ORTHANC",
        dicom_port: int = 0,
        http_port: int = 0,
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        always_allow: bool = True,
        check_called_aet: bool = False,
        dicomweb: bool = True,
        remote_access: bool = True,
        extra_config: Mapping[str, Any] | None = None,
        http_auth: tuple[str, str] | None = None,
        node_tls: TlsSettings | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        binary: Path | str = ORTHANC_BINARY,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.aet = validate_ae_title(aet, "Orthanc AE title")
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.modalities = dict(modalities or {})
        self.always_allow = always_allow
        self.check_called_aet = check_called_aet
        self.dicomweb = dicomweb and DICOMWEB_PLUGIN.exists()
        self.remote_access = remote_access
        self.extra_config = dict(extra_config or {})
        self.node_tls = node_tls  # how a client reaches its DICOM port when extra_config turns DICOM TLS on
        self.startup_timeout_s = startup_timeout_s
        self.binary = Path(binary)
        self._process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()
        self._session.auth = http_auth  # (user, password) for our own REST calls when extra_config turns auth on

    # -- addresses ------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "orthanc.log"

    def node(self, calling_ae: str = "MIFAS", timeouts: Timeouts | None = None, name: str = "orthanc") -> Node:
        return Node(name=name, ae_title=self.aet, host="127.0.0.1", port=self.dicom_port, calling_ae=calling_ae,
                    dicomweb_url=self.dicomweb_url if self.dicomweb else None, timeouts=timeouts or Timeouts(),
                    tls=self.node_tls)

    # -- life cycle -----------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": f"mifas-{self.aet}",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "index"),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": self.remote_access,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": self.check_called_aet,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": self.always_allow,
            "DicomAlwaysAllowFind": self.always_allow,
            "DicomAlwaysAllowGet": self.always_allow,
            "DicomAlwaysAllowMove": self.always_allow,
            "DicomModalities": {name: [aet, host, port] for name, (aet, host, port) in self.modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "DicomWeb": {"Enable": self.dicomweb, "Root": "/dicom-web/"},
        }
        config.update(self.extra_config)
        return config

    def start(self) -> OrthancProcess:
        if self._process is not None:
            raise RuntimeError("this Orthanc is already running")
        if not self.binary.exists():
            raise PacsError(f"Orthanc is not installed ({self.binary} is missing; apt-get install orthanc).")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.work_dir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self.log_path, "ab") as log_file:
            self._process = subprocess.Popen(
                [str(self.binary), str(config_path)], cwd=self.work_dir, env=env,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Orthanc %s up: DICOM port %d, HTTP port %d", self.aet, self.dicom_port, self.http_port)
        return self

    def _wait_ready(self) -> None:
        from viewer.pacs.dimse import DimseClient  # here: dimse is heavy and only needed once Orthanc runs

        deadline = time.monotonic() + self.startup_timeout_s
        probe = DimseClient(self.node(calling_ae="MIFAS-PROBE", timeouts=Timeouts(1.0, 2.0, 2.0, 2.0)))
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PacsError(f"Orthanc exited with status {self._process.returncode} while starting."
                                   f"{self._log_tail()}")
            try:
                self._session.get(f"{self.url}/system", timeout=2.0).raise_for_status()
                probe.echo()
                return
            except (requests.RequestException, MifasError) as exc:
                last_error = str(exc)
            time.sleep(READY_POLL_S)
        raise PacsError(f"Orthanc did not answer within {self.startup_timeout_s:g} s ({last_error})."
                           f"{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fp:
                fp.seek(0, os.SEEK_END)
                fp.seek(max(0, fp.tell() - LOG_TAIL_BYTES))
                tail = fp.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f"\n--- end of {self.log_path} ---\n{tail}" if tail else ""

    def stop(self) -> None:
        """Terminate Orthanc and wait until it has exited (so its database folder can be reused)."""
        process, self._process = self._process, None
        self._session.close()
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("Orthanc did not stop within %g s; killing it", STOP_TIMEOUT_S)
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> OrthancProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST helpers ---------------------------------------------------------------------------------------

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API; return the decoded JSON (or None for an empty body)."""
        kwargs.setdefault("timeout", UPLOAD_TIMEOUT_S)
        try:
            response = self._session.request(method, f"{self.url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise PacsError(f"Orthanc's REST API at {self.url} failed: {exc}") from exc
        if response.status_code >= 400:
            raise PacsError(f"Orthanc answered {method} {path} with HTTP {response.status_code}: "
                               f"{response.text[:200]}")
        return response.json() if response.content else None

    def upload(self, paths: Iterable[Path | str]) -> list[str]:
        """Store DICOM files through ``POST /instances``; return Orthanc's instance IDs."""
        ids = []
        for count, path in enumerate(paths):
            if count >= UPLOAD_FILES_MAX:
                raise PacsError(f"More than {UPLOAD_FILES_MAX} files in one upload.")
            answer = self.rest("POST", "/instances", data=Path(path).read_bytes(),
                               headers={"Content-Type": "application/dicom"})
            ids.append(answer["ID"])
        return ids

    def upload_bytes(self, data: bytes) -> str:
        return self.rest("POST", "/instances", data=data, headers={"Content-Type": "application/dicom"})["ID"]

    def add_modality(self, name: str, aet: str, host: str, port: int) -> None:
        """Declare (or update) a DICOM node Orthanc may C-MOVE to (``PUT /modalities/{name}``)."""
        self.rest("PUT", f"/modalities/{name}", json={"AET": validate_ae_title(aet), "Host": host, "Port": port})

    def instance_file(self, orthanc_id: str) -> bytes:
        response = self._session.get(f"{self.url}/instances/{orthanc_id}/file", timeout=UPLOAD_TIMEOUT_S)
        response.raise_for_status()
        return response.content


def orthanc_available() -> bool:
    return ORTHANC_BINARY.exists()
