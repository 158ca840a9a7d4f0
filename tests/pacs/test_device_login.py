"""A person's DICOMweb sign-in (viewer.pacs.device_login, RFC 8628) against django-oauth-toolkit's device
authorization grant on loopback, with the refresh token kept in a real Secret Service (gnome-keyring).

The person's part (opening the address, signing in, entering the code) is done by the peer's test-only approve
view (tests/peers/oauth/views.py): the viewer's side (asking for the code, polling at the server's interval,
keeping and rotating the refresh token, renewing access tokens, the one sentence when the sign-in is revoked) is
the real code against the real endpoints.  Expiry is made observable with a clock the test moves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leakcheck import watch

# ruff: noqa: F811  (the fixtures imported from test_webauth are parameters by name)
from tests.pacs.test_webauth import (  # noqa: F401 - fixtures used by name
    _ISSUED_TOKENS,
    MARGIN_S,
    STUDY,
    TIMEOUTS,
    TOKEN_LIFETIME_S,
    Clock,
    error_texts,
    keyring_service,
    plain_orthanc,
    texts,
)
from tests.peers.oauth import OAuthServer
from tests.peers.secret_service import PrivateSecretService
from tests.support import require
from viewer import secrets
from viewer.pacs.device_login import DeviceHandler, poll_login, start_login
from viewer.pacs.dicomweb import DicomWebClient
from viewer.pacs.node import Node
from viewer.pacs.retry import classify
from viewer.pacs.webauth import SignInError, WebAuth

pytestmark = [pytest.mark.network, pytest.mark.slow]

DEVICE_ID = "mifas-viewer-device"
MIFAS_PACS = Path(sys.executable).parent / "mifas-pacs"


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory, plain_orthanc) -> Iterator[OAuthServer]:  # noqa: F811
    try:
        import oauth2_provider  # noqa: F401
    except ImportError:
        require(False, "django-oauth-toolkit is not installed (pip install -e .[test])")
    server = OAuthServer(tmp_path_factory.mktemp("oauth-device"), plain_orthanc.dicomweb_url + "/", clients={},
                         device_clients={"workstation": DEVICE_ID}, token_lifetime_s=TOKEN_LIFETIME_S)
    with server:
        yield server


def device_auth(oauth: OAuthServer, secret: str) -> WebAuth:
    # No scope: django-oauth-toolkit 3.4.1's device authorization view answers 500 to a request that names one
    # (DeviceCodeResponse gets an unexpected 'scope'); the server's default scope, "dicomweb", is what we need.
    return WebAuth(kind="device", token_url=oauth.token_url, device_url=oauth.device_url, client_id=DEVICE_ID,
                   secret=secret, refresh_margin_s=MARGIN_S)


def client(oauth: OAuthServer, handler: DeviceHandler) -> DicomWebClient:
    node = Node(name="web", ae_title="WEB", host="127.0.0.1", port=oauth.port, dicomweb_url=oauth.dicomweb_url,
                auth=handler.auth, timeouts=TIMEOUTS)
    return DicomWebClient(oauth.dicomweb_url, TIMEOUTS, node=node, auth_handler=handler)


def sign_in(oauth: OAuthServer, auth: WebAuth) -> str:
    """The whole sign-in as the person and the viewer do it; the refresh token it left in the keyring."""
    code = start_login(auth, TIMEOUTS)
    assert code.user_code in code.instructions()
    assert code.verification_uri == "https://sign-in.hospital.example/device"  # the server's setting
    assert poll_login(auth, code, TIMEOUTS) is False  # nobody has entered the code yet: pending
    oauth.approve(code.user_code)
    assert poll_login(auth, code, TIMEOUTS) is True
    refresh = secrets.read_secret(str(auth.secret))
    watch(refresh)
    _ISSUED_TOKENS.append(refresh)
    return refresh


def test_a_person_signs_in_and_access_tokens_come_from_the_kept_refresh_token(
        keyring_service: PrivateSecretService, oauth: OAuthServer, texts: list[str]) -> None:  # noqa: F811
    auth = device_auth(oauth, "web/device")
    first_refresh = sign_in(oauth, auth)
    before = oauth.stats()
    # A later session of the viewer: nothing in memory, the refresh token from the keyring.
    clock = Clock()
    handler = DeviceHandler(auth, TIMEOUTS, clock=clock)
    web = client(oauth, handler)
    assert [row["StudyInstanceUID"] for row in web.qido("study")] == [STUDY]
    assert handler.tokens_fetched == 1
    rotated = secrets.read_secret("web/device")
    assert rotated != first_refresh  # the server rotated it, and the new one was kept
    _ISSUED_TOKENS.extend([rotated, str(handler._token)])  # noqa: SLF001 - what may not leak
    watch(rotated)
    clock.now += TOKEN_LIFETIME_S - MARGIN_S + 1  # past the renewal point: one new access token, no refusal
    web.echo()
    assert handler.tokens_fetched == 2
    _ISSUED_TOKENS.extend([secrets.read_secret("web/device"), str(handler._token)])  # noqa: SLF001
    after = oauth.stats()
    assert after["tokens_issued"]["workstation"] - before["tokens_issued"].get("workstation", 0) == 2
    assert after["refused"] == before["refused"]
    texts.append(repr(handler))


def test_a_revoked_sign_in_asks_to_sign_in_again_once(keyring_service: PrivateSecretService,
                                                       oauth: OAuthServer, texts: list[str]) -> None:  # noqa: F811
    auth = device_auth(oauth, "web/device-lost")
    refresh = sign_in(oauth, auth)
    oauth.revoke_refresh(refresh, DEVICE_ID)  # the workstation was lost: IT revokes its sign-in
    before = oauth.stats()
    handler = DeviceHandler(auth, TIMEOUTS, clock=Clock())
    with pytest.raises(SignInError, match="expired or was revoked: sign in again with 'mifas-pacs login") as asked:
        client(oauth, handler).qido("study", {"PatientName": "Auth^Test"})
    after = oauth.stats()
    assert classify(asked.value).transient is False and handler.tokens_fetched == 0
    assert after["resource_requests"] == before["resource_requests"]  # nothing was sent without a token
    assert after["tokens_issued"] == before["tokens_issued"]
    texts.extend(error_texts(asked.value))


def test_a_denied_code_and_a_missing_sign_in_are_sentences(keyring_service: PrivateSecretService,
                                                          oauth: OAuthServer, texts: list[str]) -> None:  # noqa: F811
    auth = device_auth(oauth, "web/device-denied")
    code = start_login(auth, TIMEOUTS)
    oauth.approve(code.user_code, decision="deny")
    with pytest.raises(SignInError, match="refused by the person who entered the code") as denied:
        poll_login(auth, code, TIMEOUTS)
    assert not secrets.has_secret("web/device-denied")
    with pytest.raises(SignInError, match="Nobody has signed in .* yet: sign in with 'mifas-pacs login") as missing:
        client(oauth, DeviceHandler(auth, TIMEOUTS)).qido("study")
    texts.extend(error_texts(denied.value) + error_texts(missing.value))


def test_mifas_pacs_login(keyring_service: PrivateSecretService, oauth: OAuthServer, tmp_path: Path,
                          texts: list[str]) -> None:  # noqa: F811
    """The command IT and the person use: the instructions on stdout, then it waits for the approval."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"nodes": [{
        "name": "web archive", "ae_title": "WEB", "host": "127.0.0.1", "port": oauth.port,
        "dicomweb_url": oauth.dicomweb_url,
        "auth": {"kind": "device", "token_url": oauth.token_url, "device_url": oauth.device_url,
                 "client_id": DEVICE_ID, "secret": "web/device-cli"}}]}))
    audit_dir = tmp_path / "audit"
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=keyring_service.address, MIFAS_AUDIT_DIR=str(audit_dir))
    process = subprocess.Popen([str(MIFAS_PACS), "login", "--node", "web archive", "--config", str(settings)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        instructions = process.stdout.readline()
        found = re.search(r"enter the code (\S+) ", instructions)
        assert found, instructions
        oauth.approve(found[1])
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Signed in" in out and "web/device-cli" in out
    refresh = secrets.read_secret("web/device-cli")
    watch(refresh)
    _ISSUED_TOKENS.append(refresh)
    assert refresh not in out + err
    audit_lines = "".join(p.read_text() for p in audit_dir.glob("audit-*.log"))
    assert 'csd-code="110114"' in audit_lines and 'csd-code="110122"' in audit_lines  # User Authentication, Login
    assert refresh not in audit_lines
    texts.extend([instructions, out, err])
