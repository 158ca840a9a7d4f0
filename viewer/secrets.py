"""Secrets (passwords, tokens, client secrets, refresh tokens) live in the OS keyring, never in our files.

Settings and profiles hold only a *reference*: a short name such as ``pacs-web/password``.  The secret is kept by
the `keyring` package under the service ``mifas-viewer`` with that name as the user name: on a Linux desktop the
Secret Service (GNOME Keyring, KWallet), on macOS the Keychain, on Windows the Credential Manager.

When no keyring is available (no desktop session, no D-Bus, a locked-down server) every call raises
:class:`SecretStoreError` with a sentence that says so.  There is no plaintext fallback: a secret that cannot be
kept safely is not kept.  Secret values never appear in a message or a log line; references do.

    store_secret("pacs-web/password", "...")      IT or the user, through ``mifas-pacs secret set``
    read_secret("pacs-web/password")              the DICOMweb sign-in, when it needs it
    delete_secret("pacs-web/password")
"""

from __future__ import annotations

import logging
import re

from viewer.errors import MifasError
from viewer.imports import need
from viewer.limits import SECRET_LENGTH_MAX

log = logging.getLogger(__name__)

SERVICE = "mifas-viewer"
REFERENCE_LENGTH_MAX = 200
_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/+:-]*$")


class SecretStoreError(MifasError):
    """The keyring is missing, locked or refused us, or holds no secret under a reference."""


class SecretMissingError(SecretStoreError):
    """The keyring works but holds nothing under the reference."""


def validate_reference(reference: object) -> str:
    """A reference is 1-200 characters: letters, digits and ``. _ @ / + : -``, starting with a letter or digit."""
    if not isinstance(reference, str) or not _REFERENCE_RE.match(reference) or len(reference) > REFERENCE_LENGTH_MAX:
        raise SecretStoreError(
            f"{str(reference)[:40]!r} is not a keyring reference: use 1-{REFERENCE_LENGTH_MAX} letters, digits and "
            "'. _ @ / + : -', e.g. 'pacs-web/password'.")
    return reference


def _backend():  # -> keyring.backend.KeyringBackend
    """The keyring backend to use; SecretStoreError when there is none we can trust with a secret."""
    need("keyring")
    import keyring
    from keyring.backends import chainer, fail

    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # a broken keyring configuration file, a backend that fails to load
        raise SecretStoreError(f"The OS keyring cannot be opened ({type(exc).__name__}).") from None
    usable = not isinstance(backend, fail.Keyring) and _priority(backend) > 0
    if isinstance(backend, chainer.ChainerBackend):
        usable = usable and bool(backend.backends)
    if not usable:
        raise SecretStoreError(
            "No OS keyring is available to keep passwords and tokens (on Linux: the Secret Service of GNOME "
            "Keyring or KWallet, in a desktop session with D-Bus). MIFAS Viewer never keeps them in plain text: "
            "sign in to the desktop, or ask IT to set up a keyring.")
    return backend


def _priority(backend: object) -> float:
    try:
        return float(getattr(type(backend), "priority", 0) or 0)
    except Exception:  # a backend's priority property raises when it cannot work here
        return 0.0


def _failure(what: str, reference: str, exc: BaseException) -> SecretStoreError:
    name = type(exc).__name__
    if "Locked" in name:
        return SecretStoreError(f"The OS keyring is locked, so the secret '{reference}' cannot be {what}; "
                                "unlock it (sign in to the desktop) and try again.")
    return SecretStoreError(f"The OS keyring failed while the secret '{reference}' was being {what} ({name}).")


def store_secret(reference: str, value: str) -> None:
    """Keep `value` in the keyring under `reference` (replacing what was there)."""
    reference = validate_reference(reference)
    if not isinstance(value, str) or not value:
        raise SecretStoreError(f"The secret for '{reference}' is empty; nothing was stored.")
    if len(value) > SECRET_LENGTH_MAX or "\n" in value or "\r" in value or "\0" in value:
        raise SecretStoreError(f"The secret for '{reference}' is not one line of at most {SECRET_LENGTH_MAX} "
                               "characters; nothing was stored.")
    backend = _backend()
    try:
        backend.set_password(SERVICE, reference, value)
    except Exception as exc:  # keyring.errors.PasswordSetError, secretstorage's, dbus's
        raise _failure("stored", reference, exc) from None
    log.info("secret '%s' stored in the keyring", reference)


def read_secret(reference: str) -> str:
    """The secret kept under `reference`; SecretMissingError when there is none."""
    reference = validate_reference(reference)
    backend = _backend()
    try:
        value = backend.get_password(SERVICE, reference)
    except Exception as exc:
        raise _failure("read", reference, exc) from None
    if not value:
        raise SecretMissingError(f"The OS keyring holds no secret named '{reference}'; put it there with "
                                 f"'mifas-pacs secret set {reference}'.")
    return str(value)


def has_secret(reference: str) -> bool:
    try:
        read_secret(reference)
    except SecretMissingError:
        return False
    return True


def delete_secret(reference: str) -> bool:
    """Remove the secret kept under `reference`; False when there was none."""
    reference = validate_reference(reference)
    backend = _backend()
    need("keyring")
    from keyring.errors import PasswordDeleteError

    try:
        backend.delete_password(SERVICE, reference)
    except PasswordDeleteError:
        return False
    except Exception as exc:
        raise _failure("deleted", reference, exc) from None
    log.info("secret '%s' deleted from the keyring", reference)
    return True
