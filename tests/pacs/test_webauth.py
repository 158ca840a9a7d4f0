"""Signing in to DICOMweb servers, against real peers: Orthanc with HTTP Basic on, a real OAuth 2.0 authorization
server (django-oauth-toolkit, tests/peers/oauth) guarding a DICOMweb resource, secrets read from a real Secret
Service (GNOME Keyring on a private D-Bus, tests/peers/secret_service.py), and an HTTPS server with a certificate
from a CA made here.  No mocks: expiry is made observable by giving the sign-in a clock the test moves.

Every test also checks that no log record and no error text (nor its chained causes) carries a secret.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from mifaslab.orthanc import DICOMWEB_PLUGIN, ORTHANC_BINARY, OrthancProcess
from tests.pacs.conftest import ct_series, part10
from tests.peers import secret_service
from tests.peers.oauth import OAuthServer
from tests.peers.secret_service import PrivateSecretService
from tests.support import require
from viewer import secrets
from viewer.errors import DicomWebError, MifasError, PacsError
from viewer.pacs import webauth
from viewer.pacs.cluster import ClusterProfile, profile_from_json, profile_to_json
from viewer.pacs.dicomweb import DicomWebClient
from viewer.pacs.node import Node, Timeouts, node_from_json, node_to_json, validate_url
from viewer.pacs.retrieve import retrieve
from viewer.pacs.retry import classify
from viewer.pacs.webauth import (
    BasicHandler,
    BearerHandler,
    ClientCredentialsHandler,
    SignInError,
    WebAuth,
    auth_from_json,
)

pytestmark = [pytest.mark.network]

TIMEOUTS = Timeouts(connect_s=3, acse_s=10, dimse_s=20, network_s=30)
BASIC_USER, BASIC_PASSWORD = "mifas", "Bas1c-pw-7f3a9c"
WRONG_PASSWORD = "wr0ng-pw-55d1e2"
CC_ID, CC_SECRET = "mifas-viewer-cc", "cl1ent-s3cret-a81b"
BLOCKED_ID, BLOCKED_SECRET = "mifas-blocked-cc", "bl0cked-s3cret-c4e0"
STATIC_TOKEN = "st4tic-bearer-token-9e2d6b"
WRONG_TOKEN = "n0t-a-valid-token-3c7f"
TOKEN_LIFETIME_S = 120  # DOT's ACCESS_TOKEN_EXPIRE_SECONDS for the test server
MARGIN_S = 30.0
SECRETS = [BASIC_PASSWORD, WRONG_PASSWORD, CC_SECRET, BLOCKED_SECRET, STATIC_TOKEN, WRONG_TOKEN]
_SERIES = ct_series(3, rows=8, columns=8, seed=41, patient_name="Auth^Test", patient_id="MIFAS-AUTH")
STUDY = str(_SERIES[0].StudyInstanceUID)


class Clock:
    """Monotonic seconds that move only when the test says (the sign-in's `clock`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- peers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """Orthanc with HTTP Basic on (AuthenticationEnabled + RegisteredUsers), holding one small study."""
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    process = OrthancProcess(tmp_path_factory.mktemp("orthanc-basic"), aet="ORTHANCA", remote_access=False,
                             extra_config={"AuthenticationEnabled": True,
                                           "RegisteredUsers": {BASIC_USER: BASIC_PASSWORD}},
                             http_auth=(BASIC_USER, BASIC_PASSWORD))
    with process:
        for ds in _SERIES:
            process.upload_bytes(part10(ds))
        yield process


@pytest.fixture(scope="module")
def plain_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancProcess]:
    """The archive behind the bearer-protected resource (the resource signs in for us; Orthanc needs none)."""
    require(ORTHANC_BINARY.exists(), "Orthanc is not installed (apt-get install orthanc)")
    require(DICOMWEB_PLUGIN.exists(), "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    with OrthancProcess(tmp_path_factory.mktemp("orthanc-plain"), aet="ORTHANCB", remote_access=False) as process:
        for ds in _SERIES:
            process.upload_bytes(part10(ds))
        yield process


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory, plain_orthanc: OrthancProcess) -> Iterator[OAuthServer]:
    require(_has_module("oauth2_provider"), "django-oauth-toolkit is not installed (pip install -e .[test])")
    server = OAuthServer(tmp_path_factory.mktemp("oauth"), plain_orthanc.dicomweb_url + "/",
                         clients={"viewer": (CC_ID, CC_SECRET), "blocked-account": (BLOCKED_ID, BLOCKED_SECRET)},
                         static_tokens={"viewer": STATIC_TOKEN}, token_lifetime_s=TOKEN_LIFETIME_S)
    with server:
        yield server


@pytest.fixture
def keyring_service(tmp_path: Path) -> Iterator[PrivateSecretService]:
    require(secret_service.available(), "gnome-keyring and dbus are not installed (apt-get install gnome-keyring dbus)")
    with PrivateSecretService(tmp_path / "secret-service") as service:
        yield service


@pytest.fixture
def texts(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Every log line of the test (all loggers, DEBUG up) plus the error texts the test adds: none may hold a
    secret, nor a token the authorization server issued."""
    collected: list[str] = []
    caplog.set_level(logging.DEBUG)
    yield collected
    records = caplog.get_records("setup") + caplog.get_records("call")  # at teardown, .records is teardown's
    lines = [record.getMessage() for record in records] + collected
    assert lines, "nothing was logged or raised: the check would prove nothing"
    for secret in SECRETS + _ISSUED_TOKENS:
        for line in lines:
            assert secret not in line, f"a secret leaked into: {line[:200]}"


_ISSUED_TOKENS: list[str] = []  # access tokens seen during the module, added by the tests that obtain them


def error_texts(exc: BaseException) -> list[str]:
    """The exception's text and repr and those of its whole chain."""
    out = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return out


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def node_for(url: str, auth: WebAuth | None) -> Node:
    return Node(name="web", ae_title="WEB", host="127.0.0.1", port=104, dicomweb_url=url, timeouts=TIMEOUTS,
                auth=auth)


def counting_session() -> tuple[requests.Session, list[int]]:
    """A session that records the status of every HTTP answer, the retried one included."""
    statuses: list[int] = []
    session = requests.Session()
    original = session.send

    def send(request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        response = original(request, **kwargs)
        statuses.extend([r.status_code for r in response.history] + [response.status_code])
        return response

    session.send = send  # type: ignore[method-assign]  # observes, changes nothing
    return session, statuses


def mifas_pacs(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "viewer.pacs.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=60, env=env or dict(os.environ))


# -- settings ---------------------------------------------------------------------------------------------------


def test_auth_settings_round_trip_and_hold_no_secret() -> None:
    auth = WebAuth(kind="client_credentials", token_url="https://idp.example.org/oauth/token", client_id="viewer",
                   secret="pacs/cc", scope="dicomweb", ca_file="/etc/mifas/ca.pem", refresh_margin_s=10)
    node = node_for("https://pacs.example.org/dicom-web", auth)
    data = json.loads(json.dumps(node_to_json(node)))
    assert data["auth"]["secret"] == "pacs/cc" and node_from_json(data).auth == auth
    assert node_from_json({**data, "auth": None}).auth is None
    assert "auth" not in node_to_json(node_for("http://a/dicom-web", None))
    profile = ClusterProfile.of_node(node, "wado")
    assert profile.auth == auth and all(n.auth == auth for n in profile.candidates())
    assert profile_from_json({**json.loads(json.dumps(profile_to_json(profile))), "name": "archive"}).auth == auth
    with pytest.raises(PacsError, match="must not hold a secret.*keyring.*mifas-pacs secret set"):
        auth_from_json({"kind": "basic", "username": "u", "password": BASIC_PASSWORD})
    for bad, words in [({"kind": "kerberos"}, "not a DICOMweb sign-in kind"),
                       ({"kind": "basic", "username": "u"}, "needs 'secret'"),
                       ({"kind": "bearer", "secret": "a b"}, "not a keyring reference"),
                       ({"kind": "client_credentials", "client_id": "c", "secret": "s",
                         "token_url": "https://u:p@idp/token"}, "user name or password"),
                       ({"kind": "none", "key_file": "k.pem"}, "needs 'cert_file'"),
                       ({"kind": "basic", "username": "u", "secret": "s", "extra": 1}, "unknown keys")]:
        with pytest.raises(PacsError, match=words):
            auth_from_json(bad)
    with pytest.raises(PacsError) as refused:
        validate_url(f"https://{BASIC_USER}:{BASIC_PASSWORD}@pacs.example.org/dicom-web")
    assert BASIC_PASSWORD not in str(refused.value)
    assert "\"auth\"" in str(refused.value) and "keyring" in str(refused.value)


# -- the keyring -----------------------------------------------------------------------------------------------


def test_no_keyring_is_a_sentence_never_plain_text(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   texts: list[str]) -> None:
    # The real situation of a session without D-Bus: no Secret Service can be reached, keyring falls back to
    # its "fail" backend, and we must refuse (never keep the secret anywhere else).
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    monkeypatch.delenv("PYTHON_KEYRING_BACKEND", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    secret_service.reselect_keyring()
    try:
        with pytest.raises(secrets.SecretStoreError, match="No OS keyring is available") as stored:
            secrets.store_secret("pacs/password", BASIC_PASSWORD)
        texts += error_texts(stored.value)
        client = DicomWebClient("http://127.0.0.1:9/dicom-web", TIMEOUTS, node=node_for(
            "http://127.0.0.1:9/dicom-web", WebAuth(kind="basic", username=BASIC_USER, secret="pacs/no-keyring")))
        with pytest.raises(SignInError, match="No OS keyring") as signed:
            client.echo()  # refused before anything is sent: port 9 has nothing listening
        assert signed.value.transient is False and classify(signed.value).transient is False
        texts += error_texts(signed.value)
    finally:
        monkeypatch.undo()
        secret_service.reselect_keyring()
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS", "PYTHON_KEYRING_BACKEND")}
    done = mifas_pacs("secret", "set", "pacs/password", stdin=BASIC_PASSWORD + "\n", env={**env, "HOME": str(tmp_path)})
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "No OS keyring is available" in done.stderr
    texts.append(done.stderr)
    assert not any(BASIC_PASSWORD.encode() in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_secret_command_keeps_the_value_in_the_secret_service(keyring_service: PrivateSecretService,
                                                             texts: list[str]) -> None:
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=keyring_service.address)
    done = mifas_pacs("secret", "set", "pacs/password", stdin=BASIC_PASSWORD + "\n", env=env)
    assert done.returncode == 0, done.stderr
    assert secrets.read_secret("pacs/password") == BASIC_PASSWORD  # read back through this process's keyring
    checked = mifas_pacs("secret", "check", "pacs/password", env=env)
    assert checked.returncode == 0 and BASIC_PASSWORD not in checked.stdout + checked.stderr
    assert mifas_pacs("secret", "delete", "pacs/password", env=env).returncode == 0
    assert mifas_pacs("secret", "check", "pacs/password", env=env).returncode == 1
    with pytest.raises(secrets.SecretMissingError, match="mifas-pacs secret set pacs/password") as missing:
        secrets.read_secret("pacs/password")
    texts += [done.stdout, done.stderr, checked.stdout, *error_texts(missing.value)]


# -- HTTP Basic against Orthanc -------------------------------------------------------------------------------


def test_basic_against_orthanc(keyring_service: PrivateSecretService, basic_orthanc: OrthancProcess,
                               texts: list[str]) -> None:
    secrets.store_secret("orthanc/basic-ok", BASIC_PASSWORD)
    node = dataclasses.replace(basic_orthanc.node(timeouts=TIMEOUTS),
                               auth=WebAuth(kind="basic", username=BASIC_USER, secret="orthanc/basic-ok"))
    client = DicomWebClient(node.dicomweb_url, node=node)  # the process's handler for this node
    try:
        assert [row["StudyInstanceUID"] for row in client.qido("study")] == [STUDY]
        received: list[bytes] = []
        result = client.retrieve(STUDY, sink=received.append)
        assert result.completed == 3 and len(received) == 3
    finally:
        client.close()
    # The one retrieval engine (a node as a cluster of one, WADO-RS) signs in with the node's auth too.
    stored: list[bytes] = []
    outcome = retrieve(ClusterProfile.of_node(node, "wado"), STUDY, sink=stored.append)
    assert outcome.complete and len(stored) == 3
    # Without the node's auth the same server says we must sign in: a sentence, not retried.
    anonymous = DicomWebClient(basic_orthanc.dicomweb_url, TIMEOUTS)
    with pytest.raises(DicomWebError, match="requires signing in.*'auth'") as refused:
        anonymous.echo()
    assert refused.value.http_status == 401 and classify(refused.value).transient is False
    texts += error_texts(refused.value)


def test_basic_wrong_password_is_one_request_and_a_sentence(keyring_service: PrivateSecretService,
                                                            basic_orthanc: OrthancProcess,
                                                            texts: list[str]) -> None:
    secrets.store_secret("orthanc/basic-wrong", WRONG_PASSWORD)
    auth = WebAuth(kind="basic", username=BASIC_USER, secret="orthanc/basic-wrong")
    session, statuses = counting_session()
    client = DicomWebClient(basic_orthanc.dicomweb_url, TIMEOUTS, session, node=node_for(basic_orthanc.dicomweb_url, auth),
                            auth_handler=BasicHandler(auth))
    with pytest.raises(DicomWebError) as refused:
        client.qido("study", {"PatientName": "Auth^Test"})
    error = refused.value
    assert error.http_status == 401 and error.transient is False and classify(error).transient is False
    assert "user name 'mifas'" in str(error) and "orthanc/basic-wrong" in str(error)
    assert statuses == [401]  # the keyring still held the same password: nothing new to try, no loop
    texts += error_texts(error)
    # IT puts the right password into the keyring: the next request is refused once, the keyring is read again,
    # and the same request goes through with the new password.
    secrets.store_secret("orthanc/basic-wrong", BASIC_PASSWORD)
    assert [row["StudyInstanceUID"] for row in client.qido("study")] == [STUDY]
    assert statuses == [401, 401, 200]


# -- bearer tokens and OAuth 2.0 client credentials (django-oauth-toolkit) -----------------------------------------


@pytest.mark.slow  # starts the OAuth server (Django) once for the module
def test_static_bearer_token(keyring_service: PrivateSecretService, oauth: OAuthServer, texts: list[str]) -> None:
    secrets.store_secret("web/static", STATIC_TOKEN)
    secrets.store_secret("web/wrong-static", WRONG_TOKEN)
    good = WebAuth(kind="bearer", secret="web/static")
    client = DicomWebClient(oauth.dicomweb_url, TIMEOUTS, node=node_for(oauth.dicomweb_url, good),
                            auth_handler=BearerHandler(good))
    assert [row["StudyInstanceUID"] for row in client.qido("study")] == [STUDY]
    before = oauth.stats()
    bad = WebAuth(kind="bearer", secret="web/wrong-static")
    client = DicomWebClient(oauth.dicomweb_url, TIMEOUTS, node=node_for(oauth.dicomweb_url, bad),
                            auth_handler=BearerHandler(bad))
    with pytest.raises(DicomWebError, match="refused our sign-in.*web/wrong-static") as refused:
        client.qido("study")
    assert refused.value.http_status == 401 and classify(refused.value).transient is False
    after = oauth.stats()
    assert after["resource_requests"] - before["resource_requests"] == 1
    texts += error_texts(refused.value)


def _cc_handler(client_id: str, secret_ref: str, oauth: OAuthServer, clock: Clock) -> ClientCredentialsHandler:
    auth = WebAuth(kind="client_credentials", token_url=oauth.token_url, client_id=client_id, secret=secret_ref,
                   scope="dicomweb", refresh_margin_s=MARGIN_S)
    return ClientCredentialsHandler(auth, TIMEOUTS, clock=clock)


def _client(oauth: OAuthServer, handler: ClientCredentialsHandler) -> DicomWebClient:
    return DicomWebClient(oauth.dicomweb_url, TIMEOUTS, node=node_for(oauth.dicomweb_url, handler.auth),
                          auth_handler=handler)


@pytest.mark.slow  # starts the OAuth server (Django) once for the module
def test_client_credentials_refreshes_before_expiry(keyring_service: PrivateSecretService, oauth: OAuthServer,
                                                    texts: list[str]) -> None:
    secrets.store_secret("web/cc", CC_SECRET)
    clock = Clock()
    handler = _cc_handler(CC_ID, "web/cc", oauth, clock)
    client = _client(oauth, handler)
    before = oauth.stats()
    assert [row["StudyInstanceUID"] for row in client.qido("study")] == [STUDY]
    assert handler.tokens_fetched == 1
    _ISSUED_TOKENS.append(str(handler._token))  # noqa: SLF001 - the test must know what may not leak
    received: list[bytes] = []
    assert client.retrieve(STUDY, sink=received.append).completed == 3
    # The server said the token lives TOKEN_LIFETIME_S: it is reused until MARGIN_S before that.
    clock.now += TOKEN_LIFETIME_S - MARGIN_S - 1
    client.echo()
    assert handler.tokens_fetched == 1
    clock.now += 2
    client.echo()
    assert handler.tokens_fetched == 2
    _ISSUED_TOKENS.append(str(handler._token))  # noqa: SLF001
    after = oauth.stats()
    assert after["tokens_issued"]["viewer"] - before["tokens_issued"].get("viewer", 0) == 2
    assert after["refused"] == before["refused"]  # renewed before the server had to refuse anything
    texts.append(repr(handler))


@pytest.mark.slow  # starts the OAuth server (Django) once for the module
def test_revoked_token_gets_one_new_token(keyring_service: PrivateSecretService, oauth: OAuthServer,
                                         texts: list[str]) -> None:
    secrets.store_secret("web/cc", CC_SECRET)
    handler = _cc_handler(CC_ID, "web/cc", oauth, Clock())
    client = _client(oauth, handler)
    client.echo()
    revoked = str(handler._token)  # noqa: SLF001
    _ISSUED_TOKENS.append(revoked)
    oauth.revoke(revoked, "viewer")
    before = oauth.stats()
    assert [row["StudyInstanceUID"] for row in client.qido("study")] == [STUDY]
    after = oauth.stats()
    assert handler.tokens_fetched == 2 and str(handler._token) != revoked  # noqa: SLF001
    _ISSUED_TOKENS.append(str(handler._token))  # noqa: SLF001
    assert after["refused"] - before["refused"] == 1
    assert after["resource_requests"] - before["resource_requests"] == 2


@pytest.mark.slow  # starts the OAuth server (Django) once for the module
def test_refused_even_with_a_new_token_is_a_sentence_not_a_loop(keyring_service: PrivateSecretService,
                                                                 oauth: OAuthServer, texts: list[str]) -> None:
    secrets.store_secret("web/blocked", BLOCKED_SECRET)
    handler = _cc_handler(BLOCKED_ID, "web/blocked", oauth, Clock())
    client = _client(oauth, handler)
    before = oauth.stats()
    with pytest.raises(DicomWebError, match="refused our sign-in.*new access token.*mifas-blocked-cc") as refused:
        client.qido("study", {"PatientName": "Auth^Test"})
    _ISSUED_TOKENS.append(str(handler._token))  # noqa: SLF001
    after = oauth.stats()
    assert refused.value.http_status == 401 and classify(refused.value).transient is False
    assert handler.tokens_fetched == 2
    assert after["tokens_issued"]["blocked-account"] - before["tokens_issued"].get("blocked-account", 0) == 2
    assert after["resource_requests"] - before["resource_requests"] == 2
    assert "Auth^Test" not in str(refused.value)
    texts += error_texts(refused.value)


@pytest.mark.slow  # starts the OAuth server (Django) once for the module
def test_wrong_client_secret_is_a_sentence(keyring_service: PrivateSecretService, oauth: OAuthServer,
                                           texts: list[str]) -> None:
    secrets.store_secret("web/cc-wrong", WRONG_PASSWORD)
    handler = _cc_handler(CC_ID, "web/cc-wrong", oauth, Clock())
    before = oauth.stats()
    with pytest.raises(SignInError, match="refused the OAuth client 'mifas-viewer-cc'.*web/cc-wrong") as refused:
        _client(oauth, handler).qido("study")
    assert refused.value.http_status == 401 and classify(refused.value).transient is False
    assert handler.tokens_fetched == 0 and oauth.stats()["resource_requests"] == before["resource_requests"]
    texts += error_texts(refused.value)


# -- HTTPS: the system's CA store by default, the node's CA file when set --------------------------------------------


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A DICOMweb-ish HTTPS server (QIDO answers []) whose certificate is signed by a CA made here."""
    folder = tmp_path_factory.mktemp("https")
    ca_pem, cert_pem, key_pem = _make_ca_and_server_cert()
    (folder / "ca.pem").write_bytes(ca_pem)
    (folder / "server.pem").write_bytes(cert_pem + key_pem)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "application/dicom+json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}/dicom-web", folder / "ca.pem"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _make_ca_and_server_cert() -> tuple[bytes, bytes, bytes]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "MIFAS test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def test_https_trusts_the_system_store_by_default_and_the_node_ca_file(https_server: tuple[str, Path],
                                                                     texts: list[str]) -> None:
    url, ca_file = https_server
    verify, cert = webauth.https_settings(None)
    assert verify == ssl.get_default_verify_paths().cafile or verify in webauth.SYSTEM_CA_BUNDLES
    assert cert is None
    client = DicomWebClient(url, TIMEOUTS, node=node_for(url, None))
    assert client._session.verify == verify  # noqa: SLF001 - the system store, not certifi's bundle
    with pytest.raises(DicomWebError, match="not signed by a CA in the system's CA store") as untrusted:
        client.echo()
    assert untrusted.value.transient is False and classify(untrusted.value).transient is False
    texts += error_texts(untrusted.value)
    trusting = DicomWebClient(url, TIMEOUTS, node=node_for(url, WebAuth(kind="none", ca_file=str(ca_file))))
    assert trusting.qido("study") == []


def test_errors_are_mifas_errors() -> None:
    assert issubclass(SignInError, DicomWebError) and issubclass(secrets.SecretStoreError, MifasError)
