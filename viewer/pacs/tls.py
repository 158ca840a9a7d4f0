"""DICOM over TLS (PS3.15 Annex B, the BCP 195 profile): one place that builds the TLS contexts every DIMSE
path uses and says, in plain words, why a TLS connection failed.

A node (or a cluster profile, for its VIP and members) with :class:`TlsSettings` speaks TLS on every
association: the lean C-GET/C-FIND socket (:mod:`viewer.pacs.association`), pynetdicom's associations
(C-ECHO, C-FIND, C-MOVE, C-STORE and the health monitor's echo, :mod:`viewer.pacs.dimse`) and the Storage SCP
a C-MOVE sends to (:mod:`viewer.pacs.storage_scp`).

What the profile asks and what we do:
- TLS 1.2 or newer (BCP 195: no SSL, no TLS 1.0/1.1); Python's default cipher list for TLS 1.2 (forward-secret
  AEAD suites first, no RC4/3DES/export), TLS 1.3's own suites.
- The peer's certificate is always verified: against ``ca_file`` when given, else the system's CA store.
  Its name is checked against the host we connect to (or ``server_name``, for a VIP whose certificate names the
  service rather than the address); ``verify_hostname: false`` turns only that check off.
- Our own certificate and key (``cert_file``/``key_file``) are sent when the PACS asks for one, and are the
  certificate of our Storage SCP during a C-MOVE, which then requires the PACS's certificate in turn.

A certificate problem is a :class:`TlsError` with ``transient=False``: the retry loop does not wait for it to go
away as it would for an outage.
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from viewer.errors import PacsError

if TYPE_CHECKING:
    from viewer.pacs.node import Node

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2  # BCP 195 (RFC 9325 3.1.1)
ALERT_WAIT_S = 1.0  # how long a failed connection is read for the alert that says why (failure paths only)

# OpenSSL's X509_V_ERR_* codes (x509_vfy.h) that name a certificate problem we can explain.
_NOT_OUR_CA = {2, 18, 19, 20, 21}  # unable to get issuer, self-signed leaf/chain, unable to get local issuer
_EXPIRED, _NOT_YET_VALID, _REVOKED = 10, 9, 23
_NAME_MISMATCH = {62, 64}  # hostname mismatch, IP address mismatch

# OpenSSL reason strings (ssl.SSLError.reason) that the *peer* sent as an alert about *our* side.
_WE_LACK_A_CERTIFICATE = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE",
                          "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
_THEY_REFUSE_OUR_CERTIFICATE = {"TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
                                "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                                "TLSV1_ALERT_DECRYPT_ERROR", "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
                                "SSLV3_ALERT_CERTIFICATE_REVOKED"}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "UNEXPECTED_EOF_WHILE_READING", "RECORD_LAYER_FAILURE",
            "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"}
_OLD_PROTOCOL = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE"}
_TLS_KEYS = ("ca_file", "cert_file", "key_file", "verify_hostname", "server_name")


class TlsError(PacsError):
    """A TLS connection to or from a PACS failed for a reason that waiting will not fix (a certificate, a
    protocol version, TLS off at the peer).  Always ``transient=False``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


@dataclass(frozen=True)
class TlsSettings:
    """How to speak TLS to one node.  Paths are PEM files; none given: the system's CA store, no certificate."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify_hostname: bool = True
    server_name: str | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "server_name"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise PacsError(f"The TLS setting '{name}' must be a non-empty text or left out.")
        if (self.cert_file is None) != (self.key_file is None):
            raise PacsError("The TLS settings need both 'cert_file' and 'key_file' (this workstation's certificate "
                            "and its private key), or neither.")
        if not isinstance(self.verify_hostname, bool):
            raise PacsError("The TLS setting 'verify_hostname' must be true or false.")


def tls_to_json(tls: TlsSettings | None) -> dict[str, Any] | None:
    if tls is None:
        return None
    return {k: getattr(tls, k) for k in _TLS_KEYS if getattr(tls, k) is not None}


def tls_from_json(data: Any) -> TlsSettings | None:
    """``null``/absent: plain DIMSE; ``true`` or ``{}``: TLS with the system CA store; an object: the fields."""
    if data is None or data is False:
        return None
    if data is True:
        return TlsSettings()
    if not isinstance(data, Mapping):
        raise PacsError("'tls' must be true, false or a JSON object (ca_file, cert_file, key_file, "
                        "verify_hostname, server_name).")
    unknown = set(data) - set(_TLS_KEYS)
    if unknown:
        raise PacsError(f"'tls' has unknown keys: {', '.join(sorted(unknown))}.")
    return TlsSettings(**{k: data[k] for k in _TLS_KEYS if k in data})


# -- contexts -------------------------------------------------------------------------------------------------

_contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
_contexts_lock = threading.Lock()


def _stamp(tls: TlsSettings) -> tuple[Any, ...]:
    """The settings plus each file's mtime and size: a renewed certificate is read again, an unchanged one not."""
    stamps = []
    for path in (tls.ca_file, tls.cert_file, tls.key_file):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stamps.append((st.st_mtime_ns, st.st_size) if st else None)
    return (tls, *stamps)


def _load(ctx: ssl.SSLContext, tls: TlsSettings, *, server: bool) -> None:
    try:
        if tls.ca_file:
            ctx.load_verify_locations(cafile=tls.ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"The CA certificates file '{tls.ca_file}' cannot be read as PEM certificates "
                       f"({_why(exc)}).") from None
    if tls.cert_file and tls.key_file:
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsError(f"This workstation's certificate '{tls.cert_file}' and key '{tls.key_file}' cannot be "
                           f"used ({_why(exc)}; the key must be unencrypted PEM and match the certificate).") from None


def _why(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, ssl.SSLError):
        return "not a valid PEM file or the wrong kind of file"
    return getattr(exc, "strerror", None) or type(exc).__name__


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    """The client context for `tls` (built once per settings and file versions; SSLContext is thread-safe)."""
    key = ("client", *_stamp(tls))
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED and check_hostname on
            ctx.minimum_version = MINIMUM_VERSION
            ctx.check_hostname = tls.verify_hostname
            _load(ctx, tls, server=False)
            _contexts[key] = ctx
        return ctx


def server_context(tls: TlsSettings, what: str = "C-MOVE over TLS") -> ssl.SSLContext:
    """The context of our Storage SCP: our certificate, and the PACS's certificate required and verified."""
    if not (tls.cert_file and tls.key_file):
        raise TlsError(f"{what} needs this workstation's certificate and key ('cert_file' and 'key_file' in the "
                       "node's TLS settings): the PACS connects to us and checks who we are.")
    key = ("server", *_stamp(tls))
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = MINIMUM_VERSION
            ctx.verify_mode = ssl.CERT_REQUIRED
            _load(ctx, tls, server=True)
            _contexts[key] = ctx
        return ctx


def server_hostname(node: Node) -> str:
    """The name the peer's certificate must carry: ``server_name`` when set, else the address we connect to."""
    assert node.tls is not None
    return node.tls.server_name or node.host


# -- connecting ----------------------------------------------------------------------------------------------


def wrap(sock: socket.socket, node: Node) -> ssl.SSLSocket:
    """The TLS handshake on a connected socket, bounded by the node's ACSE timeout; the socket is closed and the
    reason raised when it fails."""
    assert node.tls is not None
    ctx = client_context(node.tls)
    sock.settimeout(node.timeouts.acse_s)
    try:
        return ctx.wrap_socket(sock, server_hostname=server_hostname(node))
    except BaseException as exc:
        sock.close()
        raise handshake_error(node, exc) from exc


def handshake_error(node: Node, exc: BaseException) -> PacsError:
    """Why a TLS handshake (or the first read after it) with `node` failed, in plain words."""
    from viewer.errors import AssociationAbortedError, PacsTimeoutError

    where = f"The PACS at {node.address}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return certificate_error(node, exc)
    if isinstance(exc, TimeoutError):
        return PacsTimeoutError(f"{where} accepted the connection but did not complete the TLS handshake within "
                                f"{node.timeouts.acse_s:g} s (is DICOM TLS enabled on that port?).")
    if isinstance(exc, ssl.SSLError):
        return _alert_error(node, exc)
    if isinstance(exc, OSError):  # reset or closed during the handshake: a plain DIMSE port drops a ClientHello
        return _not_tls(node)
    return AssociationAbortedError(f"{where}: the TLS handshake failed.")


def after_handshake_error(node: Node, exc: OSError, sock: socket.socket | None = None) -> PacsError:
    """The error for a connection that failed while we sent the association request or waited for its answer
    over TLS.  A TLS 1.3 server that refuses our certificate says so in an alert right after the handshake; a
    send can fail first, with the alert still waiting in `sock`."""
    from viewer.errors import AssociationAbortedError

    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLEOFError):
        return handshake_error(node, exc)
    if sock is not None:
        try:
            sock.settimeout(ALERT_WAIT_S)
            sock.recv(1)
        except ssl.SSLError as alert:
            if not isinstance(alert, ssl.SSLEOFError):
                return handshake_error(node, alert)
        except OSError:
            pass
    return AssociationAbortedError(f"The PACS at {node.address} closed the TLS connection without answering our "
                                   "association request (it may have refused this workstation's certificate).")


def certificate_error(node: Node, exc: ssl.SSLCertVerificationError) -> TlsError:
    assert node.tls is not None
    trusted = f"the CA you configured ('{node.tls.ca_file}')" if node.tls.ca_file else "a CA this system trusts"
    name = server_hostname(node)
    advice = {
        "ca": "; check the node's 'ca_file', or ask the PACS administrator which CA signed its certificate",
        "expired": "; the PACS administrator must renew it",
        "name": "; connect by the name the certificate carries, or set the node's TLS 'server_name' to it",
    }.get(_kind(exc.verify_code), "")
    return TlsError(f"The PACS at {node.address} presented a certificate that "
                    f"{certificate_problem(exc, trusted, name)}{advice}.")


def certificate_problem(exc: ssl.SSLCertVerificationError, trusted: str, name: str | None = None) -> str:
    """What is wrong with a peer's certificate, as words that follow "presented a certificate that": the one
    translation of OpenSSL's verify codes, for DICOM TLS and for HTTPS (viewer.pacs.webauth)."""
    kind = _kind(exc.verify_code)
    if kind == "ca":
        return f"is not signed by {trusted}"
    if kind == "expired":
        return "has expired"
    if kind == "not yet valid":
        return "is not valid yet (check both computers' clocks)"
    if kind == "revoked":
        return "has been revoked"
    if kind == "name":
        return f"is not for '{name}'" if name else "is for another name"
    return f"could not be verified ({exc.verify_message})"


def _kind(code: int) -> str:
    if code in _NOT_OUR_CA:
        return "ca"
    if code in _NAME_MISMATCH:
        return "name"
    return {_EXPIRED: "expired", _NOT_YET_VALID: "not yet valid", _REVOKED: "revoked"}.get(code, "")


def find_certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure inside a library's error (requests wraps urllib3, which wraps ssl's
    error in its arguments or as its reason), if there is one."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo and len(seen) < 32:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError):
            return item
        todo.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return None


def _not_tls(node: Node) -> TlsError:
    return TlsError(f"The PACS at {node.address} did not answer in TLS (it closed the connection during the "
                    f"handshake): DICOM TLS may be off on port {node.port}, or that port is for plain DIMSE.")


def _alert_error(node: Node, exc: ssl.SSLError) -> TlsError:
    where = f"The PACS at {node.address}"
    reason = exc.reason or ""
    assert node.tls is not None
    if isinstance(exc, ssl.SSLEOFError) or reason in _NOT_TLS:
        return _not_tls(node)
    if reason in _WE_LACK_A_CERTIFICATE:
        if node.tls.cert_file is None:
            return TlsError(f"{where} requires a client certificate, and none is configured for this node "
                            "('cert_file' and 'key_file' in its TLS settings).")
        return TlsError(f"{where} refused the TLS connection (handshake failure): it may not accept this "
                        "workstation's certificate or any cipher we offer.")
    if reason in _THEY_REFUSE_OUR_CERTIFICATE:
        return TlsError(f"{where} does not accept this workstation's certificate ('{node.tls.cert_file}'): it is "
                        "not signed by a CA the PACS trusts, has expired, or was revoked.")
    if reason in _OLD_PROTOCOL:
        return TlsError(f"{where} offers only TLS versions older than 1.2, which are not safe to use.")
    return TlsError(f"{where}: the TLS connection failed ({reason.replace('_', ' ').lower() or 'no reason given'}).")


def probe(node: Node) -> PacsError | None:
    """Handshake with `node` once more, to learn why a TLS association failed where pynetdicom only logs it.
    Waits a moment after the handshake for the alert a TLS 1.3 server sends when it refuses our certificate.
    None when TLS itself works (the failure was elsewhere)."""
    from viewer.pacs.association import unreachable_error

    try:
        sock = socket.create_connection((node.host, node.port), timeout=node.timeouts.connect_s)
    except OSError as exc:
        return unreachable_error(node, exc)
    try:
        tls_sock = wrap(sock, node)
    except PacsError as exc:
        return exc
    try:
        tls_sock.settimeout(min(ALERT_WAIT_S, node.timeouts.acse_s))
        tls_sock.recv(1)  # a server that refuses our certificate after a TLS 1.3 handshake says so now
    except TimeoutError:
        return None
    except ssl.SSLError as exc:
        return handshake_error(node, exc)
    except OSError:
        return None
    finally:
        tls_sock.close()
    return None
