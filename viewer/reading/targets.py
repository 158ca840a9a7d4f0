"""Which image series a reading series (PR, SR, KO) is about (no Qt).

The browser lists a study's presentation states, reports and key object selections beside its images; activating
one opens the image series it refers to, with that reading.  The references are read from the objects' headers:
a presentation state's Referenced Series Sequence, a report's or key object selection's Current Requested
Procedure Evidence Sequence.  Only image series of the library count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from viewer.errors import MifasError
from viewer.imports import need
from viewer.library.store import Library
from viewer.reading.objects import GSPS_SOP_CLASS, is_image_series

log = logging.getLogger(__name__)

INSTANCES_READ_MAX = 20  # headers read to find the image series of one reading series


@dataclass(frozen=True)
class ReadingTarget:
    """What opening a reading series means: its image series, and the presentation state to show with it
    (None for a report or a key object selection: the series' own readings are looked up as usual)."""

    image_series_uid: str
    gsps_uid: str | None


def _referenced_series(ds) -> list[str]:
    found: list[str] = []
    for item in getattr(ds, "ReferencedSeriesSequence", None) or []:  # GSPS
        uid = str(getattr(item, "SeriesInstanceUID", "") or "")
        if uid:
            found.append(uid)
    for study in getattr(ds, "CurrentRequestedProcedureEvidenceSequence", None) or []:  # SR, KOS
        for item in getattr(study, "ReferencedSeriesSequence", None) or []:
            uid = str(getattr(item, "SeriesInstanceUID", "") or "")
            if uid:
                found.append(uid)
    return found


def reading_target(library: Library, series_uid: str) -> ReadingTarget | None:
    """The image series (of the library) that reading series `series_uid` refers to; None when it refers to none
    held here, or cannot be read."""
    need("pydicom")
    import pydicom

    for record in library.instances(series_uid)[:INSTANCES_READ_MAX]:
        try:
            ds = pydicom.dcmread(record.path, stop_before_pixels=True)
            referenced = _referenced_series(ds)
        except Exception as exc:  # a broken object: try the next, say nothing of its content
            log.warning("reading object %s could not be read (%s)", record.sop_instance_uid, type(exc).__name__)
            continue
        for uid in referenced:
            try:
                target = library.series_record(uid)
            except MifasError:
                continue
            if target is not None and is_image_series(target):
                gsps = record.sop_instance_uid if record.sop_class_uid == GSPS_SOP_CLASS else None
                return ReadingTarget(uid, gsps)
    return None
