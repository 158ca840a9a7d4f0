"""Sending a study's saved reading (GSPS, SR, KOS) to a PACS (no Qt).

Through :class:`viewer.pacs.resume.ResilientClient`, the one path to a PACS: C-STORE when the profile speaks
DIMSE (resumed across a failover: each object stored once), else STOW-RS (re-sent whole after a failure: a
server keeps one copy per SOP Instance UID).  The objects stored are marked sent
(:func:`viewer.reading.persist.mark_sent`), so the next save of the reading makes new instances.  The send is
audited as a transfer: Begin Transferring, then DICOM Instances Transferred (:mod:`viewer.audit.transfers`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from viewer import audit
from viewer.audit import transfers
from viewer.library.store import Library
from viewer.pacs.resume import ResilientClient
from viewer.reading import persist


@dataclass(frozen=True)
class SendResult:
    """What a send achieved: stored on the PACS (SOP Instance UIDs), refused (UID -> reason), and why the rest
    was not sent ("" when everything was handled)."""

    sent: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.error and not self.refused


def send_reading(library: Library, client: ResilientClient, study_uid: str,
                 uids: Sequence[str] | None = None, *, progress: Callable[[int, int | None], None] | None = None,
                 cancel: threading.Event | None = None) -> SendResult:
    """Send our reading objects of `study_uid` (or just `uids`; by default the current ones,
    :func:`persist.reading_uids`) through `client`: C-STORE when its profile has DIMSE, else STOW-RS.  Those
    stored are marked sent; the transfer is audited.  Does not raise for the network: the result says what
    went."""
    wanted = list(uids) if uids is not None else persist.reading_uids(library, study_uid)
    if not wanted:
        return SendResult()
    blobs = [library.path_of(uid).read_bytes() for uid in wanted]
    study = audit.study_ref(library, study_uid, instances=len(blobs))
    transfers.sending(client.profile, study)
    if "dimse" in client.profile.transports:
        outcome = client.store(blobs, progress=progress, cancel=cancel)
    else:
        outcome = client.stow(blobs, study_uid, cancel=cancel)
    stored = tuple(u for u in outcome.stored if u in wanted)
    persist.mark_sent(library, stored)
    missing = [u for u in wanted if u not in stored and u not in outcome.refused]
    error = outcome.error or (f"{len(missing)} of the reading's objects were not confirmed by the PACS."
                              if missing else "")
    result = SendResult(stored, dict(outcome.refused), error)
    transfers.sent(client.profile, study, result.complete, error or ("refused" if outcome.refused else ""))
    return result
