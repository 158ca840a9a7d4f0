"""Image-plane geometry shared by linked views (no Qt): reference lines and linked scrolling.

Both need only the Image Plane module (PS3.3 C.7.6.2) and the Frame of Reference (PS3.3 C.7.4.1): two series
can be linked only when they share a Frame of Reference UID, because only then do their patient coordinates
mean the same point.

* :func:`reference_line`: where the plane of one image cuts another image, as a segment in the second image's
  pixel coordinates (None when the planes are parallel or the line misses the image).
* :func:`nearest_slice`: the slice of a series closest to a patient point, along that series' own normal, for
  linked scrolling (None when the point lies farther than half a slice beyond either end).
* :meth:`SeriesGeometry.locate`: for the crosshair, the slice nearest a patient point, the point's (row, column)
  projection on it and its distance from it (a point picked on an image comes from :meth:`ImagePlane.to_patient`).
* :func:`series_geometry`: the planes of a series' frames, from the library's positions and one header.
* :class:`FrameOffset`: a translation between two frames of reference that the reader set by eye ("Link here":
  the two slices shown now are the same place), through which linked views of different frames follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple

import numpy as np

from viewer.dicom.volume import enhanced_frame_geometries

PARALLEL_TOLERANCE = 1e-6
LINK_PARALLEL_COS = 0.99  # slice normals closer than about 8 degrees count as parallel for linked scrolling


@dataclass(frozen=True)
class ImagePlane:
    """One image in the patient: pixel (0, 0) centre at ``position``; ``row_direction`` along increasing column,
    ``column_direction`` along increasing row; ``spacing`` (row spacing, column spacing) in mm."""

    position: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    spacing: tuple[float, float]
    rows: int
    columns: int

    @classmethod
    def from_info(cls, info) -> ImagePlane | None:
        """From an ImageInfo (viewer.dicom.image); None without position, orientation or spacing."""
        if info.image_position is None or info.image_orientation is None or info.pixel_spacing is None:
            return None
        o = info.image_orientation
        return cls(tuple(info.image_position), tuple(o[:3]), tuple(o[3:6]), tuple(info.pixel_spacing), info.rows,
                   info.columns)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    def to_patient(self, row: float, col: float) -> np.ndarray:
        return (np.asarray(self.position) + np.asarray(self.row_direction) * col * self.spacing[1]
                + np.asarray(self.column_direction) * row * self.spacing[0])

    @property
    def centre(self) -> np.ndarray:
        """The patient point at the middle of the image."""
        return self.to_patient((self.rows - 1) / 2, (self.columns - 1) / 2)

    def translated(self, offset: Sequence[float]) -> ImagePlane:
        """The same plane moved by `offset` (mm): the plane as another frame of reference sees it."""
        return replace(self, position=tuple(float(p + o) for p, o in zip(self.position, offset, strict=True)))

    def to_pixel(self, point: Sequence[float]) -> tuple[float, float]:
        """(row, column) of the projection of a patient point on this plane."""
        rel = np.asarray(point, dtype=float) - np.asarray(self.position)
        return (float(rel @ np.asarray(self.column_direction)) / self.spacing[0],
                float(rel @ np.asarray(self.row_direction)) / self.spacing[1])

    def distance(self, point: Sequence[float]) -> float:
        """The signed distance (mm) of a patient point from this plane, along its normal."""
        normal = self.normal
        length = float(np.linalg.norm(normal))
        rel = np.asarray(point, dtype=float) - np.asarray(self.position)
        return float(rel @ normal) / length if length > 0 else 0.0

    def contains_pixel(self, row: float, col: float) -> bool:
        """Whether (row, column) lies on the image (pixel edges included)."""
        return -0.5 <= row <= self.rows - 0.5 and -0.5 <= col <= self.columns - 0.5


class Location(NamedTuple):
    """Where a patient point falls in a series: the nearest slice, the point's (row, column) projection on it,
    and its distance (mm) from that slice."""

    index: int
    row: float
    col: float
    distance: float


def reference_line(source: ImagePlane, target: ImagePlane) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The segment of `target` (its (row, column) pixel coordinates, clipped to the image) where the plane of
    `source` cuts it; None when the two planes are parallel or the cut misses the image."""
    n_s, n_t = source.normal, target.normal
    direction = np.cross(n_s, n_t)
    if float(np.linalg.norm(direction)) < PARALLEL_TOLERANCE:
        return None
    # the points of the target image's edges (in pixels) that lie on the source plane
    d_s = float(n_s @ np.asarray(source.position))
    corners = [(-0.5, -0.5), (-0.5, target.columns - 0.5), (target.rows - 0.5, target.columns - 0.5),
               (target.rows - 0.5, -0.5)]
    hits: list[tuple[float, float]] = []
    for (r0, c0), (r1, c1) in zip(corners, corners[1:] + corners[:1], strict=True):
        a, b = target.to_patient(r0, c0), target.to_patient(r1, c1)
        fa, fb = float(n_s @ a) - d_s, float(n_s @ b) - d_s
        if fa == fb:
            continue
        t = fa / (fa - fb)
        if 0.0 <= t <= 1.0:
            point = (r0 + (r1 - r0) * t, c0 + (c1 - c0) * t)
            if all(abs(point[0] - h[0]) > 1e-9 or abs(point[1] - h[1]) > 1e-9 for h in hits):
                hits.append(point)
    if len(hits) < 2:
        return None
    hits.sort()
    return hits[0], hits[-1]


def nearest_slice(slices: Sequence[ImagePlane | None], point: Sequence[float]) -> int | None:
    """The index of the slice nearest `point` along the series' normal (slices in any order; ones without
    geometry are skipped); None when the point lies beyond the series by more than half a slice spacing."""
    return SeriesGeometry("", tuple(slices)).nearest(point)


@dataclass(frozen=True)
class SeriesGeometry:
    """The planes of a series' frames (display order) and the Frame of Reference they are in."""

    frame_of_reference_uid: str
    planes: tuple[ImagePlane | None, ...]

    def plane(self, index: int) -> ImagePlane | None:
        return self.planes[index] if 0 <= index < len(self.planes) else None

    @cached_property
    def normal(self) -> np.ndarray | None:
        known = next((p for p in self.planes if p is not None), None)
        return known.normal if known is not None else None

    @cached_property
    def _depths(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(sorted depths along the normal, their frame indices, half a spacing), for nearest()."""
        known = [(float(np.asarray(p.position) @ self.normal), i) for i, p in enumerate(self.planes) if p is not None]
        known.sort()
        depths = np.array([d for d, _ in known])
        half = (depths[-1] - depths[0]) / max(len(depths) - 1, 1) / 2 if len(depths) > 1 else 0.5
        return depths, np.array([i for _, i in known]), half

    def nearest(self, point: Sequence[float]) -> int | None:
        """The frame nearest `point` along the normal (None beyond half a spacing past either end), from depths
        computed once per series (linked scrolling asks on every step)."""
        if self.normal is None:
            return None
        depths, indices, half = self._depths
        depth = float(np.asarray(point, dtype=float) @ self.normal)
        if depth < depths[0] - half or depth > depths[-1] + half:
            return None
        k = int(np.searchsorted(depths, depth))
        candidates = [c for c in (k - 1, k) if 0 <= c < len(depths)]
        return int(indices[min(candidates, key=lambda c: abs(depths[c] - depth))])

    def locate(self, point: Sequence[float]) -> Location | None:
        """The slice nearest `point` with the point's projection on it (:meth:`nearest`); None when the point
        lies beyond the series along its normal, or its projection falls outside that slice's image."""
        index = self.nearest(point)
        plane = self.plane(index) if index is not None else None
        if plane is None:
            return None
        row, col = plane.to_pixel(point)
        if not plane.contains_pixel(row, col):
            return None
        return Location(index, row, col, plane.distance(point))

    def parallel_to(self, other: SeriesGeometry) -> bool:
        """Slices parallel within about 8 degrees (whatever their frames of reference)."""
        a, b = self.normal, other.normal
        return a is not None and b is not None and abs(float(a @ b)) >= LINK_PARALLEL_COS

    def linkable_with(self, other: SeriesGeometry) -> bool:
        """Same Frame of Reference and parallel slices (within about 8 degrees): scrolling one can follow the
        other slice by slice.  Non-parallel series of one frame are linked by reference lines only."""
        a, b = self.normal, other.normal
        return (self.frame_of_reference_uid == other.frame_of_reference_uid and a is not None and b is not None
                and abs(float(a @ b)) >= LINK_PARALLEL_COS)


@dataclass(frozen=True)
class FrameOffset:
    """A registration by translation between two frames of reference, set by the reader: the point ``p`` of
    frame ``source`` is the point ``p + offset`` of frame ``target`` (mm, LPS)."""

    source: str
    target: str
    offset: tuple[float, float, float]

    @classmethod
    def between(cls, source_plane: ImagePlane, source: str, target_plane: ImagePlane, target: str) -> FrameOffset:
        """The offset that makes the centres of two planes the same place (the reader aligned the two slices by
        eye; the centres stand for the in-plane match, which the reader did not set)."""
        delta = target_plane.centre - source_plane.centre
        return cls(source, target, (float(delta[0]), float(delta[1]), float(delta[2])))

    def toward(self, source: str, target: str) -> np.ndarray | None:
        """The offset from frame `source` to frame `target` (the inverse when asked backwards); None when this
        registration joins other frames."""
        if (source, target) == (self.source, self.target):
            return np.asarray(self.offset, dtype=float)
        if (source, target) == (self.target, self.source):
            return -np.asarray(self.offset, dtype=float)
        return None


def _floats(value, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n and all(np.isfinite(out)) else None


def series_geometry(positions: Sequence[tuple[float, float, float] | None], header) -> SeriesGeometry | None:
    """The geometry of a series from its frames' positions (display order, from the library index) and its first
    header (orientation, spacing, size, Frame of Reference UID).  An enhanced multi-frame image takes its planes
    from its functional groups.  None when the series has no Frame of Reference or no usable geometry."""
    frame_uid = str(getattr(header, "FrameOfReferenceUID", "") or "").strip()
    rows, columns = int(getattr(header, "Rows", 0) or 0), int(getattr(header, "Columns", 0) or 0)
    if not frame_uid or rows <= 0 or columns <= 0:
        return None
    if all(p is None for p in positions):  # multi-frame: per-frame functional groups, when present
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        geometries = enhanced_frame_geometries(header, frames, rows, columns) if frames == len(positions) else None
        if not geometries:
            return None
        planes = tuple(ImagePlane(g.position, g.orientation[:3], g.orientation[3:], g.pixel_spacing, rows, columns)
                       if g.position and g.orientation and g.pixel_spacing else None for g in geometries)
    else:
        orientation = _floats(getattr(header, "ImageOrientationPatient", None), 6)
        spacing = _floats(getattr(header, "PixelSpacing", None), 2)
        if orientation is None or spacing is None or min(spacing) <= 0:
            return None
        planes = tuple(ImagePlane(tuple(p), orientation[:3], orientation[3:], spacing, rows, columns)
                       if p is not None else None for p in positions)
    if all(p is None for p in planes):
        return None
    return SeriesGeometry(frame_uid, planes)
