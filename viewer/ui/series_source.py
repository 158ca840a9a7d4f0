"""Open a series of the local library for display (library index -> ordered frames -> lazy decoder)."""

from __future__ import annotations

from viewer.dicom.series import SeriesImages, order_frames
from viewer.errors import InstanceNotFoundError
from viewer.library import Library

SERIES_CACHE_BYTES_MAX = 1 << 30  # decoded frames held per open series (docs/architecture.md, Limits)


def open_series(library: Library, series_uid: str, *, cache_bytes_max: int = SERIES_CACHE_BYTES_MAX) -> SeriesImages:
    """The series' frames in display order; opens no file (ordering uses the library index only)."""
    instances = library.instances(series_uid)
    if not instances:
        raise InstanceNotFoundError("That series has no images in the local library.")
    return SeriesImages(order_frames(instances), cache_bytes_max=cache_bytes_max)


def first_series_uid(library: Library, study_uids) -> str | None:
    """The first series (by series number) of the first of ``study_uids`` that has one."""
    for study_uid in sorted(study_uids):
        series = library.series(study_uid)
        if series:
            return series[0].series_uid
    return None
