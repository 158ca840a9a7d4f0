"""Open a series of the local library for display (library index -> ordered frames -> lazy decoder)."""

from __future__ import annotations

from PySide6.QtCore import QMimeData

from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import InstanceNotFoundError
from viewer.library import Library, is_valid_uid
from viewer.reading.objects import is_image_series

SERIES_CACHE_BYTES_MAX = 1 << 30  # decoded frames held per open series (docs/architecture.md, Limits)
SERIES_MIME_TYPE = "application/x-mifas-series-uid"  # a series dragged from the browser to a viewport


def open_series(library: Library, series_uid: str, *, cache_bytes_max: int = SERIES_CACHE_BYTES_MAX) -> SeriesImages:
    """The series' frames in display order; opens no file (ordering uses the library index only)."""
    instances = library.instances(series_uid)
    if not instances:
        raise InstanceNotFoundError("That series has no images in the local library.")
    return SeriesImages(order_frames(instances), cache_bytes_max=cache_bytes_max)


def first_series_uid(library: Library, study_uids) -> str | None:
    """The first image series (by series number) of the first of ``study_uids`` that has one: never a reading's
    presentation state, report or key object series."""
    for study_uid in sorted(study_uids):
        for record in library.series(study_uid):
            if is_image_series(record):
                return record.series_uid
    return None


def series_mime_data(series_uid: str) -> QMimeData:
    """What a dragged series carries: its UID (and as plain text, for other applications)."""
    data = QMimeData()
    data.setData(SERIES_MIME_TYPE, series_uid.encode("ascii"))
    data.setText(series_uid)
    return data


def series_uid_from_mime(data: QMimeData) -> str | None:
    """The series UID of a drop, or None when the drop carries none (or not a valid UID)."""
    if not data.hasFormat(SERIES_MIME_TYPE):
        return None
    raw = bytes(data.data(SERIES_MIME_TYPE).data())[:64]
    try:
        uid = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return None
    return uid if is_valid_uid(uid) else None
