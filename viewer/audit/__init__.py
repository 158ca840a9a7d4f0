"""The audit trail of PS3.15 Annex A.5 (no Qt): who queried, retrieved, viewed, exported, imported or deleted which
patient's images, and when the application started and stopped.

One trail per process, like the logging module's handlers: the entry point (the viewer's ``main``, the
``mifas-pacs`` command) calls :func:`start` and :func:`stop`; the code where an event happens calls :func:`emit`
with a builder from :mod:`viewer.audit.messages`, which does nothing while no trail is started (library code used
from tests or scripts stays silent).  :func:`emit` never raises and never waits on the network.

Hooks for others' code (not wired here): a node's certificate refused ->
``emit(messages.node_authentication_failure, node_name, host, sentence)`` (``mifas-pacs`` does it for a failing
command, see :func:`authentication_failure`); a DICOMweb sign-in -> ``emit(messages.user_authentication, ...)``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from viewer.audit import messages
from viewer.audit.config import AuditConfig, audit_dir, load_audit_config
from viewer.audit.messages import AuditEvent, StudyRef
from viewer.audit.trail import AuditTrail

__all__ = ["AuditConfig", "AuditEvent", "AuditTrail", "StudyRef", "audit_dir", "current", "emit", "load_audit_config",
           "messages", "start", "stop", "study_ref"]

log = logging.getLogger("viewer.audit")
_trail: AuditTrail | None = None
_guard = threading.Lock()
_AUTH_ERRORS = {"TlsError", "SignInError"}  # class names: importing their modules would load ssl and keyring


def start(app_name: str, config: AuditConfig | None = None, folder: Path | None = None,
          warn: Callable[[str], None] | None = None) -> AuditTrail:
    """Start this process's trail (IT's configuration when `config` is None) and record Application Start.
    `warn` gets each sentence about IT's audit settings (the CLI prints them).  Never raises."""
    global _trail
    if config is None:
        config = load_audit_config()
    for text in config.warnings:
        (warn or log.warning)(text)
    with _guard:
        if _trail is not None:
            return _trail
        _trail = AuditTrail(config, app_name, folder)
    emit(messages.application_activity, True)
    return _trail


def stop() -> None:
    """Record Application Stop and stop the sender (what is queued is sent by the next start)."""
    global _trail
    emit(messages.application_activity, False)
    with _guard:
        trail, _trail = _trail, None
    if trail is not None:
        trail.close()


def current() -> AuditTrail | None:
    return _trail


def emit(builder: Callable[..., AuditEvent], *args: Any, **kwargs: Any) -> None:
    """Record ``builder(app_name, *args, **kwargs)`` when a trail is started; never raises."""
    trail = _trail
    if trail is None:
        return
    try:
        event = builder(trail.app_name, *args, **kwargs)
    except Exception as exc:  # the line names the builder only, never its arguments (patient data)
        log.warning("audit: %s could not be recorded (%s)", getattr(builder, "__name__", "an event"),
                    type(exc).__name__)
        return
    trail.record(event)


def study_ref(library: Any, study_uid: str, instances: int | None = None) -> StudyRef:
    """The study and its patient as the library knows them (only the study UID when it does not); never raises.
    Without a started trail nothing will be recorded, so the library is not asked."""
    if _trail is None:
        return StudyRef(study_uid, instances=instances)
    try:
        record = library.study(study_uid)
    except Exception:
        record = None
    if record is None:
        return StudyRef(study_uid, instances=instances)
    return StudyRef(study_uid, record.patient_id or "", record.patient_name or None,
                    instances if instances is not None else record.instance_count, None,
                    record.accession_number or None)


def authentication_failure(exc: BaseException, node_name: str, host: str | None) -> None:
    """Record a Security Alert (Node Authentication) when `exc` is a TLS or sign-in refusal (an HTTP 401 or 403
    that stayed is one too)."""
    refused = getattr(exc, "http_status", None) in (401, 403)
    if refused or any(cls.__name__ in _AUTH_ERRORS for cls in type(exc).__mro__):
        emit(messages.node_authentication_failure, node_name, host, str(exc))
