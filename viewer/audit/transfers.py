"""The audit messages of talking to a PACS, for every caller alike (``mifas-pacs``, the viewer's PACS panel, the
retrieval jobs): one Query per C-FIND / QIDO-RS, and Begin Transferring / DICOM Instances Transferred around a
retrieval, and around a send of our own objects (:func:`sending`, :func:`sent`) (PS3.15 A.5.3).  A node or a
cluster profile names the peer (its AE title; the host, or the cluster's virtual IP)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from viewer import audit
from viewer.audit import messages
from viewer.audit.messages import StudyRef


def peer_of(source: Any) -> tuple[str, str | None]:
    """(AE title, host) of a Node or of a ClusterProfile (its virtual IP)."""
    vip = getattr(source, "vip", None)
    return (str(getattr(source, "ae_title", "")), vip.host if vip is not None else getattr(source, "host", None))


@contextlib.contextmanager
def audited_query(source: Any, level: str, keys: Mapping[str, str]) -> Iterator[None]:
    """The Query message for the search the block runs (its keys go into the audit XML only), with the failure
    outcome when the block raises."""
    name, host = peer_of(source)
    query = json.dumps({"QueryRetrieveLevel": level.upper(), **keys}, ensure_ascii=False).encode("utf-8")
    try:
        yield
    except Exception:
        audit.emit(messages.query, name, host, query, outcome=messages.SERIOUS_FAILURE)
        raise
    audit.emit(messages.query, name, host, query)


def transfer_begin(source: Any, study: StudyRef) -> None:
    name, host = peer_of(source)
    audit.emit(messages.transfer_begin, name, host, study)


def transferred(source: Any, study: StudyRef, outcome: object) -> None:
    """DICOM Instances Transferred; `outcome` is the retrieval's result (None: it failed)."""
    name, host = peer_of(source)
    complete = bool(getattr(outcome, "complete", False))
    audit.emit(messages.transferred, name, host, study,
               outcome=messages.SUCCESS if complete else messages.MINOR_FAILURE,
               outcome_text=None if complete else "the retrieval is incomplete")


def sending(destination: Any, study: StudyRef) -> None:
    """Begin Transferring, for a send to `destination` (a node or a cluster profile)."""
    name, host = peer_of(destination)
    audit.emit(messages.sending_begin, name, host, study)


def sent(destination: Any, study: StudyRef, complete: bool, why: str = "") -> None:
    """DICOM Instances Transferred to `destination`; a send that left some behind is a minor failure."""
    name, host = peer_of(destination)
    audit.emit(messages.sent, name, host, study, outcome=messages.SUCCESS if complete else messages.MINOR_FAILURE,
               outcome_text=None if complete else (why or "the send is incomplete"))
