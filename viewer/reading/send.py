"""Sending a study's saved reading (GSPS, SR, KOS) to a PACS (no Qt).

A thin caller of :func:`viewer.share.send.send_instances`, the one path for sending: C-STORE when the profile
speaks DIMSE (resumed across a failover: each object stored once), else STOW-RS; objects the PACS already holds
are not sent again; the send is audited as a transfer.  The objects on the PACS afterwards (sent, or held
already) are marked sent (:func:`viewer.reading.persist.mark_sent`), so the next save of the reading makes new
instances.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from viewer.library.store import Library
from viewer.pacs.resume import ResilientClient
from viewer.reading import persist
from viewer.share.send import SendResult, send_instances


def send_reading(library: Library, client: ResilientClient, study_uid: str,
                 uids: Sequence[str] | None = None, *, progress: Callable[[int, int | None], None] | None = None,
                 cancel: threading.Event | None = None) -> SendResult:
    """Send our reading objects of `study_uid` (or just `uids`; by default the current ones,
    :func:`persist.reading_uids`) through `client`.  Those on the PACS afterwards are marked sent.  Does not
    raise for the network: the result says what went."""
    wanted = list(uids) if uids is not None else persist.reading_uids(library, study_uid)
    if not wanted:
        return SendResult()
    result = send_instances(library, client, wanted, progress=progress, cancel=cancel)
    persist.mark_sent(library, result.on_pacs)
    return result


__all__ = ["SendResult", "send_reading"]
