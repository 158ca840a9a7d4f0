"""Signing in to DICOMweb servers, and trusting their HTTPS certificates: one place for both.

A node's ``auth`` (:class:`WebAuth`, ``None`` = no sign-in) says how:

    basic               HTTP Basic (RFC 7617): ``username`` and the password kept in the OS keyring as ``secret``
    bearer              a static bearer token (RFC 6750) kept in the keyring as ``secret``
    client_credentials  OAuth 2.0 client credentials (RFC 6749 4.4), for a service account: ``token_url``,
                        ``client_id``, optional ``scope``, the client secret kept in the keyring as ``secret``.
                        The access token is kept in memory only, shared by every client of the same node, and
                        fetched again ``refresh_margin_s`` before it expires.
    none                no sign-in, only the HTTPS settings below

and, for HTTPS (to the DICOMweb server and to the token endpoint): ``ca_file`` (PEM; by default the system's CA
store, /etc/ssl/certs on Debian, not only certifi's bundle), ``cert_file`` and ``key_file`` (this workstation's
certificate, when the server asks for one).

Settings hold only keyring *references* (:mod:`viewer.secrets`); a password, token or client secret written into
the settings is refused.  A server that answers 401 gets at most one new credential (a new access token, or the
password read again from the keyring) and one more try of the same request, never a loop; a 401 or 403 that stays
becomes a :class:`~viewer.errors.DicomWebError` with ``http_status`` set and ``transient=False``, worded for the
user.  No message or log line carries a secret, a token, a URL's user-info or its query string.

Requests sees a handler (:func:`handler_for`) as its ``auth=`` callable; the handler also stops requests from
reading ``~/.netrc``, a plaintext side door.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

from viewer.errors import DicomWebError, NodeUnreachableError, PacsError, PacsTimeoutError
from viewer.imports import need
from viewer.limits import TOKEN_ANSWER_BYTES_MAX
from viewer.secrets import SecretStoreError, read_secret, validate_reference

if TYPE_CHECKING:
    import requests

    from viewer.pacs.node import Timeouts

log = logging.getLogger(__name__)

AUTH_KINDS: tuple[str, ...] = ("none", "basic", "bearer", "client_credentials", "device")
REFRESH_MARGIN_S = 60.0  # fetch a new access token this long before the current one expires
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # Alpine, macOS
)
_AUTH_KEYS = ("kind", "username", "secret", "token_url", "device_url", "client_id", "scope", "ca_file", "cert_file",
              "key_file", "refresh_margin_s")
_SECRET_KEYS = ("password", "token", "access_token", "refresh_token", "client_secret")
_REQUIRED = {"basic": ("username", "secret"), "bearer": ("secret",),
             "client_credentials": ("token_url", "client_id", "secret"),
             "device": ("token_url", "device_url", "client_id", "secret"), "none": ()}


class SignInError(DicomWebError):
    """Signing in failed for a reason another try will not fix (``transient=False`` unless said otherwise)."""

    def __init__(self, message: str, *, transient: bool | None = False, http_status: int | None = None) -> None:
        super().__init__(message, transient=transient, http_status=http_status)


@dataclass(frozen=True)
class WebAuth:
    """How to sign in to one node's DICOMweb server (see the module docstring).  ``secret`` is a keyring
    reference, never the secret itself."""

    kind: str = "none"
    username: str | None = None
    secret: str | None = None
    token_url: str | None = None
    device_url: str | None = None  # kind "device": the device authorization endpoint (RFC 8628 3.1)
    client_id: str | None = None
    scope: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    refresh_margin_s: float = REFRESH_MARGIN_S

    def __post_init__(self) -> None:
        if self.kind not in AUTH_KINDS:
            raise PacsError(f"'{str(self.kind)[:40]}' is not a DICOMweb sign-in kind; use one of "
                            f"{', '.join(AUTH_KINDS)}.")
        for name in ("username", "secret", "token_url", "device_url", "client_id", "scope", "ca_file", "cert_file",
                     "key_file"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise PacsError(f"The sign-in setting '{name}' must be a non-empty text or left out.")
        missing = [name for name in _REQUIRED[self.kind] if getattr(self, name) is None]
        if missing:
            raise PacsError(f"DICOMweb sign-in '{self.kind}' needs {' and '.join(repr(m) for m in missing)}.")
        if self.username is not None and ":" in self.username:
            raise PacsError("An HTTP Basic user name cannot contain ':'.")
        if self.secret is not None:
            try:
                validate_reference(self.secret)
            except SecretStoreError as exc:
                raise PacsError(f"The sign-in setting 'secret' names the keyring entry that holds the secret: "
                                f"{exc}") from None
        for url in (self.token_url, self.device_url):
            if url is not None:
                from viewer.pacs.node import validate_url  # here: node imports this module

                validate_url(url)  # no user-info, no query; kept as written (a trailing "/" matters)
        if self.key_file is not None and self.cert_file is None:
            raise PacsError("The sign-in setting 'key_file' needs 'cert_file' (this workstation's certificate).")
        margin = self.refresh_margin_s
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin <= 3600:
            raise PacsError("The sign-in setting 'refresh_margin_s' must be a number of seconds from 0 to 3600.")

    def describe(self) -> str:
        """Who we sign in as, in words (no secret)."""
        if self.kind == "basic":
            return f"user '{self.username}' (HTTP Basic)"
        if self.kind == "bearer":
            return f"the bearer token kept in the keyring as '{self.secret}'"
        if self.kind == "client_credentials":
            return f"OAuth client '{self.client_id}' of {self.token_url}"
        if self.kind == "device":
            return f"the person signed in with 'mifas-pacs login' at {self.token_url}"
        return "no sign-in"


def auth_to_json(auth: WebAuth | None) -> dict[str, Any] | None:
    if auth is None:
        return None
    data: dict[str, Any] = {k: getattr(auth, k) for k in _AUTH_KEYS if getattr(auth, k) is not None}
    if auth.refresh_margin_s == REFRESH_MARGIN_S:
        del data["refresh_margin_s"]
    return data


def auth_from_json(data: Any) -> WebAuth | None:
    """``null``/absent: no sign-in; an object with ``kind`` and that kind's fields."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise PacsError("The node's 'auth' must be a JSON object (kind, username, secret, token_url, client_id, "
                        "scope, ca_file, cert_file, key_file).")
    leaked = [k for k in data if str(k).lower() in _SECRET_KEYS]
    if leaked:
        raise PacsError(f"The node's 'auth' must not hold a secret ('{leaked[0]}'): settings files are not a safe "
                        "place for one. Put it in the OS keyring with 'mifas-pacs secret set NAME' and write "
                        "\"secret\": \"NAME\" instead.")
    unknown = sorted(set(data) - set(_AUTH_KEYS))
    if unknown:
        raise PacsError(f"The node's 'auth' has unknown keys: {', '.join(map(str, unknown))}.")
    return WebAuth(**{k: data[k] for k in _AUTH_KEYS if k in data})


# -- HTTPS ------------------------------------------------------------------------------------------------------


def system_ca_bundle() -> str | bool:
    """The system's CA store as requests' ``verify=`` (a PEM bundle or a hashed folder); True (certifi's bundle)
    only where the system has none Python can find."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, *SYSTEM_CA_BUNDLES):
        if candidate and os.path.isfile(candidate):
            return candidate
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def https_settings(auth: WebAuth | None) -> tuple[str | bool, str | tuple[str, str] | None]:
    """``(verify, cert)`` for requests: the node's CA file or the system's store; its client certificate."""
    verify = auth.ca_file if auth is not None and auth.ca_file else system_ca_bundle()
    cert: str | tuple[str, str] | None = None
    if auth is not None and auth.cert_file:
        cert = (auth.cert_file, auth.key_file) if auth.key_file else auth.cert_file
    return verify, cert


def tls_failure(where: str, exc: BaseException, auth: WebAuth | None) -> DicomWebError:
    """A requests SSLError as a sentence (not retried: waiting does not fix a certificate)."""
    from viewer.pacs.tls import certificate_problem, find_certificate_error

    text = str(exc)
    ca = f"the CA file '{auth.ca_file}'" if auth is not None and auth.ca_file else "the system's CA store"
    refused = find_certificate_error(exc)
    if refused is not None:
        why = certificate_problem(refused, f"a CA in {ca}")
        return DicomWebError(f"{where} presented a certificate that {why}; check the node's 'ca_file' in its "
                             "'auth' settings, or ask the server's administrator.", transient=False)
    if "Could not find the TLS certificate file" in text or "Could not find the TLS key file" in text or \
            "PEM lib" in text:
        return DicomWebError("This workstation's certificate or key (the node's 'cert_file' and 'key_file') "
                             f"cannot be read; {where[:1].lower() + where[1:]} was not contacted.", transient=False)
    return DicomWebError(f"{where}: the HTTPS connection failed (TLS handshake).", transient=False)


# -- handlers (requests' auth= callables) ------------------------------------------------------------------------


class NoSignIn:
    """requests ``auth=`` that adds nothing, and keeps requests from reading ``~/.netrc`` (a plaintext side door)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


NO_SIGN_IN = NoSignIn()


class _Handler:
    """Sets ``Authorization``; on a 401, at most one new credential and one more try of the same request.

    The retried request is sent through the connection adapter, which runs no hooks: its answer, whatever it
    is, goes back to the caller, so a server that keeps refusing cannot make us loop."""

    def __init__(self, auth: WebAuth) -> None:
        self.auth = auth
        self._lock = threading.Lock()

    def header(self) -> str:
        raise NotImplementedError

    def renew(self, refused: str | None) -> bool:
        """After a 401 for the header `refused`: get a new credential; False when there is none to try."""
        return False

    def refusal(self) -> str:
        """What to check, for a 401 that stayed."""
        return ""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.header()
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        refused = response.request.headers.get("Authorization")
        if not self.renew(refused):
            return response
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = self.header()
        log.info("the DICOMweb server refused our credential (HTTP 401); trying once with a new one")
        answer = response.connection.send(retry, **kwargs)
        answer.history.append(response)
        answer.request = retry
        return answer

    def _secret(self) -> str:
        assert self.auth.secret is not None
        try:
            return read_secret(self.auth.secret)
        except SecretStoreError as exc:
            raise SignInError(str(exc)) from None


class BasicHandler(_Handler):
    """HTTP Basic with the password from the keyring; after a 401 the keyring is read again once (IT may have
    changed the password), and the request tried again only if it holds another one."""

    def __init__(self, auth: WebAuth) -> None:
        super().__init__(auth)
        self._value: str | None = None

    def _credential(self) -> str:
        import base64

        user_pass = f"{self.auth.username}:{self._secret()}".encode()
        return "Basic " + base64.b64encode(user_pass).decode("ascii")

    def header(self) -> str:
        with self._lock:
            if self._value is None:
                self._value = self._credential()
            return self._value

    def renew(self, refused: str | None) -> bool:
        with self._lock:
            if refused != self._value:
                return True  # another thread already read a new one
            self._value = self._credential()
            return self._value != refused

    def refusal(self) -> str:
        return (f"check the user name '{self.auth.username}' and the password kept in the keyring as "
                f"'{self.auth.secret}' (mifas-pacs secret set {self.auth.secret})")


class BearerHandler(BasicHandler):
    """A static bearer token from the keyring (read again once after a 401, like a password)."""

    def _credential(self) -> str:
        return f"Bearer {self._secret()}"

    def refusal(self) -> str:
        return (f"the token kept in the keyring as '{self.auth.secret}' is not (or no longer) accepted; put a "
                f"valid one there with 'mifas-pacs secret set {self.auth.secret}'")


class ClientCredentialsHandler(_Handler):
    """OAuth 2.0 client credentials (RFC 6749 4.4): a new access token before the current one expires, and one
    after a 401 (the token was revoked).  `clock` is monotonic seconds (tests move it instead of waiting)."""

    def __init__(self, auth: WebAuth, timeouts: Timeouts | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(auth)
        from viewer.pacs.node import Timeouts

        self.timeouts = timeouts or Timeouts()
        self.clock = clock
        self.tokens_fetched = 0  # how many access tokens this handler obtained
        self._token: str | None = None
        self._expires_at: float | None = None
        self._session: requests.Session | None = None

    def header(self) -> str:
        with self._lock:
            if self._token is None or (self._expires_at is not None
                                       and self.clock() >= self._expires_at - self.auth.refresh_margin_s):
                self._fetch()
            return f"Bearer {self._token}"

    def renew(self, refused: str | None) -> bool:
        with self._lock:
            if refused == f"Bearer {self._token}":
                self._fetch()
            return True

    def refusal(self) -> str:
        return (f"even with a new access token from {self.auth.token_url}; the OAuth client '{self.auth.client_id}' "
                "may not be allowed to use this server")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()

    def _fetch(self) -> None:
        need("requests")
        import requests

        auth = self.auth
        secret = self._secret()
        # RFC 6749 2.3.1: client ID and secret form-encoded, then HTTP Basic.
        basic = requests.auth.HTTPBasicAuth(quote_plus(str(auth.client_id)), quote_plus(secret))
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        started = self.clock()
        status, answer = self.post(str(auth.token_url), form, basic)
        if status >= 400 or "access_token" not in answer:
            raise _token_refused(f"The authorization server at {auth.token_url}", status, answer, auth)
        self.accept(answer, started)

    def post(self, url: str, form: Mapping[str, str], basic: Any = None) -> tuple[int, dict[str, Any]]:
        """POST a form to an endpoint of the authorization server: (HTTP status, the JSON object answered)."""
        need("requests")
        import requests

        auth = self.auth
        where = f"The authorization server at {url}"
        if self._session is None:
            self._session = requests.Session()
            self._session.trust_env = False  # no ~/.netrc, no proxy for the token endpoint's secret
        verify, cert = https_settings(auth)
        try:
            response = self._session.post(url, data=dict(form), auth=basic, verify=verify, cert=cert,
                                          timeout=(self.timeouts.connect_s, self.timeouts.dimse_s),
                                          allow_redirects=False, stream=True, headers={"Accept": "application/json"})
        except requests.exceptions.SSLError as exc:
            raise tls_failure(where, exc, auth) from None
        except requests.ConnectTimeout:
            raise NodeUnreachableError(f"{where} did not answer within {self.timeouts.connect_s:g} s.") from None
        except requests.Timeout:
            raise PacsTimeoutError(f"{where} stopped answering.") from None
        except requests.RequestException as exc:
            raise NodeUnreachableError(f"{where} cannot be reached ({type(exc).__name__}).") from None
        try:
            return response.status_code, _token_answer(response)
        finally:
            response.close()

    def accept(self, answer: Mapping[str, Any], started: float) -> None:
        """Keep the access token of a token endpoint's answer (obtained at clock time `started`)."""
        auth = self.auth
        where = f"The authorization server at {auth.token_url}"
        token_type = str(answer.get("token_type", "bearer")).lower()
        token = answer["access_token"]
        if token_type != "bearer" or not isinstance(token, str) or not token or len(token) > TOKEN_ANSWER_BYTES_MAX:
            raise SignInError(f"{where} sent an access token we cannot use (type '{token_type[:20]}').")
        expires_in = answer.get("expires_in")
        try:
            lifetime = float(expires_in) if expires_in is not None else None
        except (TypeError, ValueError):
            lifetime = None
        if lifetime is not None and not math.isfinite(lifetime):
            lifetime = None
        self._token = token
        self._expires_at = started + lifetime if lifetime is not None else None
        self.tokens_fetched += 1
        log.info("access token %d obtained from %s for client '%s' (valid for %s s)", self.tokens_fetched,
                 auth.token_url, auth.client_id, "?" if lifetime is None else f"{lifetime:g}")


def _token_answer(response: requests.Response) -> dict[str, Any]:
    from viewer.json_input import parse_json

    body = response.raw.read(TOKEN_ANSWER_BYTES_MAX + 1, decode_content=True) if response.raw else b""
    if not body or len(body) > TOKEN_ANSWER_BYTES_MAX:
        return {}
    try:
        answer = parse_json(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _token_refused(where: str, status: int, answer: Mapping[str, Any], auth: WebAuth) -> SignInError:
    error = str(answer.get("error", ""))[:40]
    if error in ("invalid_client", "unauthorized_client") or status == 401:
        return SignInError(f"{where} refused the OAuth client '{auth.client_id}' ({error or f'HTTP {status}'}): "
                           f"check the client ID and the client secret kept in the keyring as '{auth.secret}'.",
                           http_status=status)
    if error == "invalid_scope":
        return SignInError(f"{where} refused the scope '{auth.scope}' for client '{auth.client_id}'.",
                           http_status=status)
    if status >= 500 or status in (408, 429):
        return SignInError(f"{where} answered HTTP {status}.", transient=True, http_status=status)
    return SignInError(f"{where} gave no access token (HTTP {status}{', ' + error if error else ''}).",
                       http_status=status)


# -- one handler per node's sign-in --------------------------------------------------------------------------------

_handlers: dict[tuple[WebAuth, Any], _Handler] = {}
_handlers_lock = threading.Lock()


def handler_for(auth: WebAuth | None, timeouts: Timeouts | None = None) -> _Handler | None:
    """The process's one handler for `auth` (so every client of a node shares its access token); None when
    there is no sign-in."""
    if auth is None or auth.kind == "none":
        return None
    with _handlers_lock:
        handler = _handlers.get((auth, timeouts))
        if handler is None:
            if auth.kind == "basic":
                handler = BasicHandler(auth)
            elif auth.kind == "bearer":
                handler = BearerHandler(auth)
            elif auth.kind == "device":
                from viewer.pacs.device_login import DeviceHandler  # a person's sign-in (RFC 8628)

                handler = DeviceHandler(auth, timeouts)
            else:
                handler = ClientCredentialsHandler(auth, timeouts)
            _handlers[(auth, timeouts)] = handler
        return handler


def refused(where: str, status: int, auth: WebAuth | None, handler: object | None) -> DicomWebError:
    """A 401 or 403 that stayed, as a sentence; ``http_status`` set, ``transient=False``."""
    if status == 403:
        who = auth.describe() if auth is not None and auth.kind != "none" else "an anonymous request"
        return DicomWebError(f"{where} answered HTTP 403 Forbidden: {who} may not read this.",
                             http_status=status, transient=False)
    if handler is None:
        return DicomWebError(f"{where} requires signing in (HTTP 401): set the node's 'auth' (see \"Signing in to "
                             "DICOMweb servers\" in the administrator's guide).", http_status=status, transient=False)
    hint = handler.refusal() if isinstance(handler, _Handler) else ""
    return DicomWebError(f"{where} refused our sign-in (HTTP 401)" + (f": {hint}." if hint else "."),
                         http_status=status, transient=False)
