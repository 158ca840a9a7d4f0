"""Measurements drawn on 2D images (no Qt): what was drawn where, and what it measures; the reading's key images
and the reader's calibrations.

An :class:`Annotation` belongs to one frame (SOP Instance UID + frame index, so it stays on its image when the
series is re-sorted or re-opened during the session) and holds image points as (row, column), pixel centres at
integers.  :func:`measure_text` turns it into the words shown beside it, in mm and modality units (HU for CT)
through :mod:`viewer.dicom.measure`.  :class:`AnnotationStore` is bounded: at most
:data:`ANNOTATIONS_MAX` in a session, the oldest dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from viewer.dicom.measure import SpacingLike, angle, distance, ellipse_mask, probe, rectangle_mask, roi_stats

TOOLS = ("distance", "angle", "rectangle", "ellipse", "probe")
POINTS_NEEDED = {"distance": 2, "angle": 3, "rectangle": 2, "ellipse": 2, "probe": 1}
ANNOTATIONS_MAX = 2000

FrameKey = tuple[str, int]  # (SOP Instance UID, frame index)


@dataclass(frozen=True)
class Annotation:
    kind: str
    frame: FrameKey
    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if self.kind not in TOOLS:
            raise ValueError(f"unknown measurement {self.kind!r}; use one of {', '.join(TOOLS)}")
        if len(self.points) != POINTS_NEEDED[self.kind]:
            raise ValueError(f"a {self.kind} needs {POINTS_NEEDED[self.kind]} points, not {len(self.points)}")


def measure_text(a: Annotation, modality: np.ndarray | None, spacing: SpacingLike,
                 unit: str = "") -> str:
    """What `a` measures, in words: '34.2 mm', '87.5°', 'mean 41.0 SD 12.3 min ... (area)', '-1000 HU'.

    ``spacing`` is the image's :class:`~viewer.dicom.calibration.Scale` (lengths and areas then say where the mm
    are: '115.0 mm at detector', '100.0 mm (calibrated)', '40 px'), or a (row, column) spacing in the patient."""
    suffix = f" {unit}" if unit else ""
    if a.kind == "distance":
        return str(distance(a.points[0], a.points[1], spacing))
    if a.kind == "angle":
        return f"{angle(a.points[0], a.points[1], a.points[2], spacing):.1f}°"
    if modality is None:
        return ""
    if a.kind == "probe":
        value = probe(modality, a.points[0])
        return "outside the image" if value is None else f"{value:.6g}{suffix}"
    mask = (rectangle_mask if a.kind == "rectangle" else ellipse_mask)(modality.shape, a.points[0], a.points[1])
    stats = roi_stats(modality, mask, spacing, (a.points[0], a.points[1]))
    if stats is None:
        return "empty"
    area = f"{stats.area:.1f} {stats.area_label}" if stats.area_unit == "mm2" else f"{stats.area:.0f} px²"
    return (f"mean {stats.mean:.1f}{suffix}, SD {stats.sd:.1f}, min {stats.minimum:.6g}, max {stats.maximum:.6g}; "
            f"{area}")


class AnnotationStore:
    """The session's reading marks: annotations by frame, key images (frames marked "Of Interest") and
    calibrations (a pixel spacing the reader set from a known length, per SOP Instance UID).  ``revision`` grows
    with every change, so a saver can tell whether there is anything new.  Not thread-safe (the GUI thread owns
    it)."""

    def __init__(self, limit: int = ANNOTATIONS_MAX) -> None:
        self.limit = limit
        self._items: OrderedDict[int, Annotation] = OrderedDict()
        self._next = 0
        self.revision = 0
        self._key_images: dict[FrameKey, None] = {}  # insertion-ordered set
        self._calibrations: dict[str, tuple[float, float]] = {}

    def add(self, annotation: Annotation) -> int:
        self._next += 1
        self._items[self._next] = annotation
        while len(self._items) > self.limit:
            self._items.popitem(last=False)
        self.revision += 1
        return self._next

    def remove(self, ident: int) -> None:
        if self._items.pop(ident, None) is not None:
            self.revision += 1

    def items(self) -> list[tuple[int, Annotation]]:
        return list(self._items.items())

    # -- key images ----------------------------------------------------------------------------------------

    def is_key_image(self, frame: FrameKey) -> bool:
        return frame in self._key_images

    def set_key_image(self, frame: FrameKey, marked: bool) -> None:
        if marked and frame not in self._key_images:
            self._key_images[frame] = None
            self.revision += 1
        elif not marked and frame in self._key_images:
            del self._key_images[frame]
            self.revision += 1

    def key_images(self) -> list[FrameKey]:
        return list(self._key_images)

    # -- calibrations --------------------------------------------------------------------------------------

    def calibration(self, sop_instance_uid: str) -> tuple[float, float] | None:
        """The (row, column) pixel spacing in mm the reader set for this image, or None."""
        return self._calibrations.get(sop_instance_uid)

    def set_calibration(self, sop_instance_uid: str, spacing: tuple[float, float] | None) -> None:
        if spacing is None:
            if self._calibrations.pop(sop_instance_uid, None) is not None:
                self.revision += 1
        elif self._calibrations.get(sop_instance_uid) != spacing:
            self._calibrations[sop_instance_uid] = (float(spacing[0]), float(spacing[1]))
            self.revision += 1

    def calibrations(self) -> dict[str, tuple[float, float]]:
        return dict(self._calibrations)

    def on_frame(self, frame: FrameKey) -> list[tuple[int, Annotation]]:
        return [(i, a) for i, a in self._items.items() if a.frame == frame]

    def clear_frame(self, frame: FrameKey) -> None:
        for ident, _ in self.on_frame(frame):
            del self._items[ident]
            self.revision += 1

    def __len__(self) -> int:
        return len(self._items)
