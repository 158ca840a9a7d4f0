"""What a PACS node is, and the value types every transport shares.

A :class:`Node` names one remote Application Entity (PS3.7 / PS3.8: AE title, host, TCP port) plus, optionally,
the DICOMweb base URL of the same archive (PS3.18).  Nodes come from the command line (``AET@HOST:PORT``,
:func:`parse_node`) or from the settings file (:func:`node_to_json` / :func:`node_from_json`).

Timeouts (:class:`Timeouts`) say how long we wait for what; every wait in ``viewer.pacs`` is bounded by one of
them.  The query vocabulary (levels, default return keys, result limits) and :class:`RetrieveResult`, what a
retrieval returns, are shared by every transport.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from viewer.errors import PacsError

if TYPE_CHECKING:  # viewer.pacs.tls imports ssl: only a node that uses TLS loads it
    from viewer.pacs.tls import TlsSettings
    from viewer.pacs.webauth import WebAuth

QueryLevel = Literal["patient", "study", "series", "image"]
QUERY_LEVELS: tuple[str, ...] = ("patient", "study", "series", "image")

Sink = Callable[[bytes], object]
"""Receives one complete DICOM Part 10 file (preamble, file meta, data set) per instance;
``Library.store_bytes`` fits.  May raise :class:`~viewer.errors.StorageFullError` or another MifasError."""

Progress = Callable[[int, "int | None"], None]
"""``progress(done, total)``: instances received so far, and the total when the peer has said it (else None)."""

AE_TITLE_LENGTH_MAX = 16  # PS3.5 Table 6.2-1, VR AE
HOSTNAME_LENGTH_MAX = 253  # RFC 1035 2.3.4
PORT_MAX = 65535
DEFAULT_CALLING_AE = "MIFAS"
DEFAULT_STORAGE_PORT = 11113  # where our Storage SCP listens during a C-MOVE unless configured otherwise

_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_NODE_RE = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Timeouts:
    """How long each kind of wait may last, in seconds.  All must be positive.

    connect_s
        Opening the TCP connection (DIMSE and HTTP).  A dead host or a firewalled port is noticed this fast.
    acse_s
        The answer to an association request or release (A-ASSOCIATE-AC/RJ, A-RELEASE-RP; PS3.8 9.1.5, the
        ARTIM timer).  A node that accepts TCP but never speaks DICOM is noticed this fast.
    dimse_s
        Silence while a request is outstanding: no PDU at all (DIMSE) or no bytes (HTTP) for this long means the
        node stopped answering.  Every PDU or chunk that arrives restarts it, so a slow transfer that keeps
        moving is never cut, however long it takes in total.  On the lean association a PDU restarts it when it is
        whole, or after each 64 KiB of it: a peer that trickles bytes slower than that is silent.
    network_s
        Silence on a connection with nothing outstanding (pynetdicom's ``network_timeout``): an idle
        association, and each association a peer opens to our Storage SCP during a C-MOVE, is dropped after it.
    """

    connect_s: float = 3.0
    acse_s: float = 10.0
    dimse_s: float = 30.0
    network_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "acse_s", "dimse_s", "network_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 86400:
                raise ValueError(f"Timeouts.{name} must be a number of seconds between 0 and 86400, not {value!r}")


def validate_ae_title(value: str, what: str = "AE title") -> str:
    """Return `value` stripped of surrounding spaces if it is a valid AE title (PS3.5 6.2, VR AE): 1-16
    characters of the default repertoire, no backslash, no control characters, not all spaces."""
    if not isinstance(value, str):
        raise PacsError(f"The {what} must be text.")
    stripped = value.strip(" ")
    if not stripped:
        raise PacsError(f"The {what} is empty.")
    if len(stripped) > AE_TITLE_LENGTH_MAX:
        raise PacsError(f"The {what} '{stripped}' is longer than {AE_TITLE_LENGTH_MAX} characters.")
    if "\\" in stripped or any(ord(c) < 0x20 or ord(c) > 0x7E for c in stripped):
        raise PacsError(f"The {what} {stripped!r} contains a backslash, a control or a non-ASCII character.")
    return stripped


def validate_host(value: str) -> str:
    """Return `value` if it is an IP address or a syntactically valid host name."""
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(host):
        raise PacsError(f"'{value}' is not a valid host name or IP address.")
    return host


def validate_port(value: object) -> int:
    try:
        port = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise PacsError(f"'{value}' is not a TCP port number.") from None
    if not 1 <= port <= PORT_MAX:
        raise PacsError(f"The TCP port {port} is outside 1-{PORT_MAX}.")
    return port


def validate_url(value: str) -> str:
    """An http(s) base URL without credentials or a query (they would be kept in settings and shown in messages)."""
    if isinstance(value, str) and re.match(r"^https?://[^\s/?#]*@", value):
        raise PacsError("A DICOMweb URL must not carry a user name or password ('user:password@'): they would be "
                        "stored in plain text and shown in messages. Remove them from the URL: the user name goes "
                        "in the node's \"auth\" settings and the password in the OS keyring ('mifas-pacs secret "
                        "set NAME'; see \"Signing in to DICOMweb servers\" in the administrator's guide).")
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
        raise PacsError(f"'{without_secrets(value)[:200]}' is not an http:// or https:// URL without a query.")
    return value.rstrip("/")


def without_secrets(text: object) -> str:
    """`text` (a URL, or a message quoting one) as it may be shown: every URL's user-info and query string (a
    search's patient attributes) taken out."""
    text = re.sub(r"//[^/\s@]*@", "//", str(text))
    return re.sub(r"[?#]\S*", "", text)


@dataclass(frozen=True)
class Node:
    """A remote DICOM node.  ``calling_ae`` is *our* AE title when talking to it (the peer must know it)."""

    name: str
    ae_title: str
    host: str
    port: int
    calling_ae: str = DEFAULT_CALLING_AE
    dicomweb_url: str | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    tls: TlsSettings | None = None  # DICOM TLS on every association with this node (viewer.pacs.tls)
    auth: WebAuth | None = None  # signing in to its DICOMweb server, and HTTPS trust (viewer.pacs.webauth)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ae_title", validate_ae_title(self.ae_title, "called AE title"))
        object.__setattr__(self, "calling_ae", validate_ae_title(self.calling_ae, "calling AE title"))
        object.__setattr__(self, "host", validate_host(self.host))
        object.__setattr__(self, "port", validate_port(self.port))
        if self.dicomweb_url is not None:
            object.__setattr__(self, "dicomweb_url", validate_url(self.dicomweb_url))
        if not isinstance(self.name, str) or not self.name.strip():
            object.__setattr__(self, "name", f"{self.ae_title}@{self.host}:{self.port}")

    @property
    def address(self) -> str:
        """``host:port`` as shown in messages (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def describe(self) -> str:
        return f"'{self.ae_title}' at {self.address}"


def parse_node(
    text: str,
    *,
    calling_ae: str = DEFAULT_CALLING_AE,
    name: str = "",
    dicomweb_url: str | None = None,
    timeouts: Timeouts | None = None,
) -> Node:
    """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets: ``AET@[::1]:104``) into a :class:`Node`.

    Raises :class:`~viewer.errors.PacsError` with a plain-words reason for anything malformed.
    """
    match = _NODE_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise PacsError(f"'{text}' is not a node address; write it as AET@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242.")
    return Node(
        name=name or text.strip(),
        ae_title=match["aet"],
        host=match["host"],
        port=validate_port(match["port"]),
        calling_ae=calling_ae,
        dicomweb_url=dicomweb_url,
        timeouts=timeouts or Timeouts(),
    )


# -- queries (shared by C-FIND and QIDO-RS) -------------------------------------------------------------------

# Return keys asked for when the caller does not name them (PS3.4 C.6.1.1 and C.6.2.1 key tables).
DEFAULT_RETURN_KEYS: Mapping[str, tuple[str, ...]] = {
    "patient": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
    "study": (
        "StudyInstanceUID", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
        "AccessionNumber", "StudyID", "StudyDescription", "ModalitiesInStudy", "ReferringPhysicianName",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    ),
    "series": (
        "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
        "BodyPartExamined", "NumberOfSeriesRelatedInstances",
    ),
    # Not SOPClassUID: Orthanc 1.10 reads every instance from its storage to answer it (+45 ms per 200 matches);
    # ask for it by name when it is needed (the engine's listing does only when SOP Classes in Study is not answered).
    "image": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber"),
}


def check_level(level: str) -> str:
    if level not in QUERY_LEVELS:
        raise PacsError(f"'{level}' is not a query level; use one of {', '.join(QUERY_LEVELS)}.")
    return level


# -- JSON ---------------------------------------------------------------------------------------------------


def timeouts_to_json(timeouts: Timeouts) -> dict[str, float]:
    return {"connect_s": timeouts.connect_s, "acse_s": timeouts.acse_s, "dimse_s": timeouts.dimse_s,
            "network_s": timeouts.network_s}


def timeouts_from_json(data: Mapping[str, Any] | None) -> Timeouts:
    if data is None:
        return Timeouts()
    if not isinstance(data, Mapping):
        raise PacsError("The node's timeouts must be a JSON object.")
    known = {k: data[k] for k in ("connect_s", "acse_s", "dimse_s", "network_s") if k in data}
    try:
        return Timeouts(**known)
    except ValueError as exc:
        raise PacsError(str(exc)) from None


def node_to_json(node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "ae_title": node.ae_title,
        "host": node.host,
        "port": node.port,
        "calling_ae": node.calling_ae,
        "dicomweb_url": node.dicomweb_url,
        "timeouts": timeouts_to_json(node.timeouts),
        **({"tls": tls_to_json_lazily(node.tls)} if node.tls is not None else {}),
        **({"auth": auth_to_json_lazily(node.auth)} if node.auth is not None else {}),
    }


def tls_to_json_lazily(tls: TlsSettings) -> dict[str, Any] | None:
    from viewer.pacs.tls import tls_to_json

    return tls_to_json(tls)


def tls_from_json_lazily(data: Any) -> TlsSettings | None:
    """The node's ``tls`` entry (:func:`viewer.pacs.tls.tls_from_json`), importing ssl only when there is one."""
    if data is None or data is False:
        return None
    from viewer.pacs.tls import tls_from_json

    return tls_from_json(data)


def auth_to_json_lazily(auth: WebAuth) -> dict[str, Any] | None:
    from viewer.pacs.webauth import auth_to_json

    return auth_to_json(auth)


def auth_from_json_lazily(data: Any) -> WebAuth | None:
    """The node's ``auth`` entry (:func:`viewer.pacs.webauth.auth_from_json`), loaded only when there is one."""
    if data is None:
        return None
    from viewer.pacs.webauth import auth_from_json

    return auth_from_json(data)


def node_from_json(data: Mapping[str, Any]) -> Node:
    """Build a :class:`Node` from :func:`node_to_json` output; unknown keys are ignored, bad values raise
    :class:`~viewer.errors.PacsError`."""
    if not isinstance(data, Mapping):
        raise PacsError("A node must be a JSON object.")
    for key in ("ae_title", "host", "port"):
        if key not in data:
            raise PacsError(f"The node entry lacks '{key}'.")
    return Node(
        name=str(data.get("name") or ""),
        ae_title=data["ae_title"],
        host=data["host"],
        port=data["port"],
        calling_ae=data.get("calling_ae") or DEFAULT_CALLING_AE,
        dicomweb_url=data.get("dicomweb_url") or None,
        timeouts=timeouts_from_json(data.get("timeouts")),
        tls=tls_from_json_lazily(data.get("tls")),
        auth=auth_from_json_lazily(data.get("auth")),
    )


# -- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrieveResult:
    """The outcome of one retrieval (C-GET, C-MOVE or WADO-RS), or of several added together.

    ``completed``/``failed``/``warnings`` count sub-operations as the peer reported them (PS3.4 C.4.2.1.6,
    C.4.3.1.6) or, for WADO-RS, instances received/rejected; ``skipped_already_held`` counts instances not
    requested because the library held them; ``bytes`` is the size of the Part 10 files handed to the sink.
    """

    completed: int = 0
    failed: int = 0
    warnings: int = 0
    skipped_already_held: int = 0
    bytes: int = 0
    seconds: float = 0.0
    sop_instance_uids: tuple[str, ...] = ()
    failed_sop_instance_uids: tuple[str, ...] = ()
    unrequested_sop_instance_uids: tuple[str, ...] = ()  # sent without being asked for (or by a stranger): refused

    def __add__(self, other: RetrieveResult) -> RetrieveResult:
        if not isinstance(other, RetrieveResult):
            return NotImplemented
        return RetrieveResult(
            completed=self.completed + other.completed,
            failed=self.failed + other.failed,
            warnings=self.warnings + other.warnings,
            skipped_already_held=self.skipped_already_held + other.skipped_already_held,
            bytes=self.bytes + other.bytes,
            seconds=self.seconds + other.seconds,
            sop_instance_uids=self.sop_instance_uids + other.sop_instance_uids,
            failed_sop_instance_uids=self.failed_sop_instance_uids + other.failed_sop_instance_uids,
            unrequested_sop_instance_uids=self.unrequested_sop_instance_uids + other.unrequested_sop_instance_uids,
        )

    def describe(self) -> str:
        parts = [f"{self.completed} image(s) received"]
        if self.skipped_already_held:
            parts.append(f"{self.skipped_already_held} already in the library")
        if self.warnings:
            parts.append(f"{self.warnings} with warnings")
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.unrequested_sop_instance_uids:
            parts.append(f"{len(self.unrequested_sop_instance_uids)} sent without being asked for were refused")
        rate = f" ({self.bytes / self.seconds / 1e6:.1f} MB/s)" if self.seconds > 0 and self.bytes else ""
        return ", ".join(parts) + f" in {self.seconds:.1f} s{rate}."


class Matches(list[dict[str, str]]):
    """What a query returns: one ``{keyword: text}`` dict per match, in the order the node sent them.

    ``truncated`` is True when these are not all the node's matches: the query stopped at its `limit` (and
    cancelled the rest), or the node ended it early by itself.  A plain list otherwise.
    """

    truncated: bool = False  # set on the instance by whoever cut the query short


class AnyEvent:
    """Looks like a threading.Event to a transport's cancel check: set when any of the events is (the caller's
    cancel, a failure elsewhere, the engine stopping a pass)."""

    def __init__(self, *events: Any) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)
