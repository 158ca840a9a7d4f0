"""Sending instances of the local library to a PACS (no Qt): a study, series, a selection or a saved reading.

Through :class:`viewer.pacs.resume.ResilientClient`, the one path to a PACS: C-STORE when the profile speaks DIMSE
(resumed across a failover: an acknowledged instance is never sent again, the one in flight is checked on the
survivor first), else STOW-RS (re-sent whole after a failure: a server keeps one copy per SOP Instance UID).

Before anything is sent, one IMAGE-level query per series (C-FIND, or QIDO-RS without DIMSE) asks which of the
instances the PACS already holds: those are listed as ``already_held`` and not sent, so a send run again (after
the viewer was closed, or after it stopped) goes on with what the PACS does not yet hold.  Files are read from
the library in batches of at most :data:`~viewer.pacs.resume.STORE_BATCH_MAX` instances and
:data:`SEND_BATCH_BYTES_MAX` bytes, so memory stays bounded whatever the study's size.

Each study is audited as a transfer: Begin Transferring, then DICOM Instances Transferred
(:mod:`viewer.audit.transfers`).  A refusal by the PACS concerns one instance: it is listed with its status,
and the network's failures end in ``error``; neither raises.  Cancelling raises OperationCancelled (what was
acknowledged stays on the PACS).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from viewer import audit
from viewer.audit import transfers
from viewer.errors import MifasError, OperationCancelled
from viewer.library.records import InstanceRecord
from viewer.library.store import Library
from viewer.limits import FIND_RESULTS_LIMIT_MAX
from viewer.pacs.resume import STORE_BATCH_MAX, ResilientClient, StoreOutcome
from viewer.pacs.retry import classify

log = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

# Bytes of library files one send holds in memory at once (a batch read from disk, then stored): 300 slices of a
# 512x512 CT (about 157 MB) go in three batches.  A single larger file still goes, alone in its batch.
SEND_BATCH_BYTES_MAX = 64 << 20


@dataclass(frozen=True)
class SendResult:
    """What a send achieved: stored on the PACS now (SOP Instance UIDs), already held there before (not sent),
    refused (UID -> reason, e.g. "status 0xA700"), and why the rest was not sent ("" when all were handled)."""

    sent: tuple[str, ...] = ()
    already_held: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def complete(self) -> bool:
        return not self.error and not self.refused

    @property
    def on_pacs(self) -> tuple[str, ...]:
        """Sent now or held before: everything the PACS is known to hold."""
        return self.sent + self.already_held


def plan_batches(records: Sequence[InstanceRecord], *, count_max: int = STORE_BATCH_MAX,
                 bytes_max: int = SEND_BATCH_BYTES_MAX) -> list[list[InstanceRecord]]:
    """`records` in order, cut into batches of at most `count_max` instances and `bytes_max` bytes of files (a
    larger file goes alone)."""
    batches: list[list[InstanceRecord]] = []
    current: list[InstanceRecord] = []
    size = 0
    for record in records:
        if current and (len(current) >= count_max or size + record.size_bytes > bytes_max):
            batches.append(current)
            current, size = [], 0
        current.append(record)
        size += record.size_bytes
    if current:
        batches.append(current)
    return batches


def send_instances(library: Library, client: ResilientClient, uids: Sequence[str], *,
                   progress: Progress | None = None, cancel: threading.Event | None = None) -> SendResult:
    """Send the library's instances `uids` through `client` (see the module docstring); `progress(done, total)`
    counts instances handled (held, stored or refused).  Raises InstanceNotFoundError for a UID the library does
    not hold, OperationCancelled when `cancel` is set; the network's failures are in the result."""
    wanted = list(dict.fromkeys(uids))
    if not wanted:
        return SendResult()
    records = [library.instance(uid) for uid in wanted]
    study_of_series = {}
    for record in records:
        if record.series_uid not in study_of_series:
            series = library.series_record(record.series_uid)
            study_of_series[record.series_uid] = series.study_uid if series is not None else ""
    per_study: dict[str, int] = {}
    for record in records:
        study = study_of_series[record.series_uid]
        per_study[study] = per_study.get(study, 0) + 1
    studies = {uid: audit.study_ref(library, uid, instances=n) for uid, n in per_study.items()}
    for ref in studies.values():
        transfers.sending(client.profile, ref)

    sent: list[str] = []
    refused: dict[str, str] = {}
    error = ""
    total = len(records)
    try:
        held, error = _held_on_pacs(client, wanted, study_of_series, records, cancel)
        pending = [r for r in records if r.sop_instance_uid not in held]
        if progress is not None:
            progress(total - len(pending), total)
        for batch in plan_batches(pending):
            if error:
                break
            base = total - len(pending) + len(sent) + len(refused)
            outcome = _send_batch(client, batch, base, total, progress, cancel)
            sent += [u for u in outcome.stored if u not in held]
            refused.update(outcome.refused)
            error = outcome.error
            if progress is not None:
                progress(total - len(pending) + len(sent) + len(refused), total)
    except OperationCancelled:
        for ref in studies.values():
            transfers.sent(client.profile, ref, False, "the send was cancelled")
        raise
    missing = total - len(held) - len(sent) - len(refused)
    if not error and missing:
        error = f"{missing} of the images were not confirmed by the PACS."
    result = SendResult(tuple(sent), tuple(u for u in wanted if u in held), refused, error)
    for study_uid, ref in studies.items():
        mine = {r.sop_instance_uid for r in records if study_of_series[r.series_uid] == study_uid}
        done = mine <= set(result.on_pacs)
        transfers.sent(client.profile, ref, done, error or ("refused" if refused else ""))
    return result


def _held_on_pacs(client: ResilientClient, wanted: Sequence[str], study_of_series: Mapping[str, str],
                  records: Sequence[InstanceRecord], cancel: threading.Event | None) -> tuple[set[str], str]:
    """Which of `wanted` the PACS holds (one IMAGE-level query per series), and "" or why the PACS cannot be
    reached.  A PACS that answers no queries (a refusal, not the network) is taken to hold none of them."""
    mine = set(wanted)
    held: set[str] = set()
    for series_uid in dict.fromkeys(r.series_uid for r in records):
        keys = {"StudyInstanceUID": study_of_series[series_uid], "SeriesInstanceUID": series_uid}
        try:
            rows = client.find("image", keys, cancel=cancel, limit=FIND_RESULTS_LIMIT_MAX)
        except OperationCancelled:
            raise
        except MifasError as exc:
            verdict = classify(exc)
            if verdict.transient or verdict.kind in ("unreachable", "timeout", "aborted"):
                return held, str(exc)
            log.info("the PACS did not say which instances of series %s it holds (%s); sending them all",
                     series_uid, verdict.kind)
            continue
        held.update(u for u in (r.get("SOPInstanceUID", "") for r in rows) if u in mine)
    return held, ""


def _read_batch(batch: Sequence[InstanceRecord]) -> Iterator[bytes]:
    for record in batch:
        try:
            yield record.path.read_bytes()
        except OSError as exc:
            raise MifasError(f"An image of the library could not be read ({exc.strerror}).") from exc


def _send_batch(client: ResilientClient, batch: Sequence[InstanceRecord], base: int, total: int,
                progress: Progress | None, cancel: threading.Event | None) -> StoreOutcome:
    """One batch read from disk and stored (C-STORE, else STOW-RS); the bytes are dropped on return."""
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("The send was cancelled.")
    try:
        blobs = list(_read_batch(batch))
    except MifasError as exc:
        return StoreOutcome(error=str(exc))
    if "dimse" in client.profile.transports:
        def batch_progress(done: int, _total: int | None) -> None:
            if progress is not None:
                progress(base + done, total)
        return client.store(blobs, progress=batch_progress, cancel=cancel)
    return client.stow(blobs, cancel=cancel)


__all__ = ["SendResult", "plan_batches", "send_instances"]
