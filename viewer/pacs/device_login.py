"""A person's own OAuth 2.0 sign-in to a DICOMweb server: the device authorization grant (RFC 8628).

A node whose ``auth`` is ``{"kind": "device", "token_url": ..., "device_url": ..., "client_id": ...,
"secret": NAME}`` is signed in to by a person, once per workstation account, with ``mifas-pacs login --node
NODE``: the viewer asks the authorization server for a code (:func:`start_login`), the person opens the address
shown in any browser (a phone will do), signs in there as the hospital has set up (Keycloak, an identity
provider, ...) and enters the code, while the viewer polls the token endpoint at the interval the server asked
(:func:`poll_login`).  The refresh token it then gets is kept in the OS keyring under NAME, never in a file; the
access tokens made from it stay in memory (:class:`DeviceHandler`), renewed before they expire, and a refresh
token the server rotates is kept in its place.

When the server no longer honours the refresh token (it expired, or IT revoked the sign-in), one sentence says
to sign in again; nothing retries it in a loop.  The client is public (no client secret: a workstation cannot
keep one from its users).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from viewer.pacs.webauth import ClientCredentialsHandler, SignInError, WebAuth, _token_refused
from viewer.secrets import SecretMissingError, SecretStoreError, read_secret, store_secret

if TYPE_CHECKING:
    from viewer.pacs.node import Timeouts

log = logging.getLogger(__name__)

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"  # RFC 8628 3.4
POLL_INTERVAL_DEFAULT_S = 5.0  # RFC 8628 3.2: when the server names none
SLOW_DOWN_STEP_S = 5.0  # RFC 8628 3.5
LOGIN_VALID_MAX_S = 3600.0  # a code the server says is valid longer is polled for this long at most
LOGIN_HINT = "sign in again with 'mifas-pacs login --node' and this node's name"


@dataclass
class DeviceCode:
    """What the person needs (``user_code``, ``verification_uri``) and what the polling needs."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    interval_s: float
    expires_at: float  # time.monotonic() seconds

    def instructions(self) -> str:
        where = self.verification_uri_complete or self.verification_uri
        minutes = max(1, round((self.expires_at - time.monotonic()) / 60))
        return (f"To sign in, open {where} in a browser and enter the code {self.user_code} "
                f"(valid for {minutes} minute{'s' if minutes != 1 else ''}).")


class DeviceHandler(ClientCredentialsHandler):
    """Access tokens made from the refresh token a person's sign-in left in the keyring (``auth.secret``)."""

    def _fetch(self) -> None:
        auth = self.auth
        try:
            refresh = read_secret(str(auth.secret))
        except SecretMissingError:
            raise SignInError(f"Nobody has signed in to {auth.token_url} on this workstation account yet: "
                              f"{LOGIN_HINT.replace('again ', '')}.") from None
        except SecretStoreError as exc:
            raise SignInError(str(exc)) from None
        form = {"grant_type": "refresh_token", "refresh_token": refresh, "client_id": str(auth.client_id)}
        if auth.scope:
            form["scope"] = auth.scope
        started = self.clock()
        status, answer = self.post(str(auth.token_url), form)
        if "access_token" not in answer:
            if answer.get("error") == "invalid_grant" or status in (400, 401):
                raise SignInError(f"Your sign-in at {auth.token_url} has expired or was revoked: {LOGIN_HINT}.",
                                  http_status=status)
            raise _token_refused(f"The authorization server at {auth.token_url}", status, answer, auth)
        self.accept(answer, started)
        _keep_refresh_token(auth, answer, previous=refresh)

    def refusal(self) -> str:
        return f"your sign-in is not accepted even with a new access token; {LOGIN_HINT}"


def _keep_refresh_token(auth: WebAuth, answer: Mapping[str, Any], previous: str | None) -> None:
    new = answer.get("refresh_token")
    if isinstance(new, str) and new and new != previous:
        store_secret(str(auth.secret), new)  # rotated (RFC 6749 6): the old one no longer works


def _handler(auth: WebAuth, timeouts: Timeouts | None) -> DeviceHandler:
    from viewer.pacs.webauth import handler_for

    handler = handler_for(auth, timeouts)
    assert isinstance(handler, DeviceHandler)
    return handler


def start_login(auth: WebAuth, timeouts: Timeouts | None = None) -> DeviceCode:
    """Ask the authorization server for a device code (RFC 8628 3.1-3.2)."""
    if auth.kind != "device":
        raise SignInError("This node does not sign in a person ('auth' kind 'device'); nothing to log in to.")
    handler = _handler(auth, timeouts)
    form = {"client_id": str(auth.client_id)}
    if auth.scope:
        form["scope"] = auth.scope
    status, answer = handler.post(str(auth.device_url), form)
    where = f"The authorization server at {auth.device_url}"
    fields = {k: answer.get(k) for k in ("device_code", "user_code", "verification_uri")}
    if status >= 400:
        raise _token_refused(where, status, answer, auth)
    if not all(isinstance(v, str) and v and len(v) <= 2048 for v in fields.values()):
        missing = ", ".join(k for k, v in fields.items() if not isinstance(v, str) or not v)
        raise SignInError(f"{where} sent a device code answer we cannot use ({missing or 'values too long'}).")
    complete = answer.get("verification_uri_complete")
    interval = _seconds(answer.get("interval"), POLL_INTERVAL_DEFAULT_S, 1.0, 60.0)
    valid = _seconds(answer.get("expires_in"), 600.0, 1.0, LOGIN_VALID_MAX_S)
    return DeviceCode(str(fields["device_code"]), str(fields["user_code"]), str(fields["verification_uri"]),
                      complete if isinstance(complete, str) and len(complete) <= 2048 else None, interval,
                      time.monotonic() + valid)


def poll_login(auth: WebAuth, code: DeviceCode, timeouts: Timeouts | None = None) -> bool:
    """Ask once whether the person has approved (RFC 8628 3.4-3.5): True when signed in (the refresh token is
    in the keyring, an access token in memory), False while the approval is pending; the refusals raise."""
    handler = _handler(auth, timeouts)
    where = f"The authorization server at {auth.token_url}"
    form = {"grant_type": DEVICE_CODE_GRANT, "device_code": code.device_code, "client_id": str(auth.client_id)}
    started = handler.clock()
    status, answer = handler.post(str(auth.token_url), form)
    error = answer.get("error")
    if "access_token" in answer:
        if not isinstance(answer.get("refresh_token"), str):
            raise SignInError(f"{where} signed you in without a refresh token, so the sign-in would last only "
                              "minutes; ask its administrator to allow refresh tokens for this client.")
        handler.accept(answer, started)
        _keep_refresh_token(auth, answer, previous=None)
        return True
    if error == "authorization_pending":
        return False
    if error == "slow_down":
        code.interval_s += SLOW_DOWN_STEP_S
        return False
    if error == "access_denied":
        raise SignInError(f"The sign-in at {auth.token_url} was refused by the person who entered the code.")
    if error == "expired_token":
        raise SignInError(f"The code expired before it was entered: run the sign-in again ({LOGIN_HINT}).")
    raise _token_refused(where, status, answer, auth)


def login(auth: WebAuth, *, say: Callable[[str], None], timeouts: Timeouts | None = None,
          cancel: threading.Event | None = None) -> None:
    """The whole sign-in: show the instructions, poll until approved, refused, expired or cancelled."""
    from viewer import audit

    code = start_login(auth, timeouts)
    say(code.instructions())
    waiter = cancel or threading.Event()
    try:
        while not poll_login(auth, code, timeouts):
            if time.monotonic() + code.interval_s > code.expires_at:
                raise SignInError(f"The code expired before it was entered: run the sign-in again ({LOGIN_HINT}).")
            if waiter.wait(code.interval_s):  # the interval the server asked for (RFC 8628 3.5)
                from viewer.errors import OperationCancelled

                raise OperationCancelled("The sign-in was cancelled.")
    except SignInError as exc:  # the audit trail's User Authentication, failed (PS3.15 A.5.3.19)
        audit.emit(audit.messages.user_authentication, str(auth.token_url), True,
                   outcome=audit.messages.MINOR_FAILURE, reason=str(exc))
        raise
    audit.emit(audit.messages.user_authentication, str(auth.token_url), True)
    log.info("signed in at %s (client '%s')", auth.token_url, auth.client_id)


def _seconds(value: object, default: float, low: float, high: float) -> float:
    try:
        seconds = float(value) if value is not None and not isinstance(value, bool) else default  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = default
    return min(max(seconds, low), high) if seconds == seconds else default
