"""Measurements on an image in physical units (no Qt): distance, angle, rectangle and ellipse ROI statistics, and
the pixel probe.

Points are (row, column) in image pixels, fractional, pixel centres at integers.  ``spacing`` is a
:class:`~viewer.dicom.calibration.Scale` (the unit then says where the mm are: "mm", "mm (calibrated)", "mm at
detector", ...; an ultrasound scale resolves per measurement to the region holding it), or a plain (row spacing,
column spacing) in mm taken to be in the patient (PS3.3 C.7.6.2.1.1 Pixel Spacing: between rows first); without
either, distances are in pixels and say so (``unit``).  Statistics are over modality values (e.g. HU): the caller
passes the stored values with the rescale, or modality values directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .calibration import PATIENT, PIXEL_SCALE, Scale

Point = tuple[float, float]
SpacingLike = Scale | tuple[float, float] | None


def _scale(spacing: SpacingLike, points) -> Scale:
    """The scale for a measurement through ``points``: a plain spacing is in the patient."""
    if spacing is None:
        return PIXEL_SCALE
    if isinstance(spacing, Scale):
        return spacing.for_points(points)
    return Scale(PATIENT, (float(spacing[0]), float(spacing[1])))


@dataclass(frozen=True)
class Length:
    value: float
    unit: str  # "mm", "px", or where the mm are: "mm (calibrated)", "mm at detector", ...

    def __str__(self) -> str:
        return f"{self.value:.1f} {self.unit}"


def distance(a: Point, b: Point, spacing: SpacingLike) -> Length:
    """The length of the segment a-b, in mm when the spacing is known (the unit says where)."""
    dr, dc = b[0] - a[0], b[1] - a[1]
    scale = _scale(spacing, (a, b))
    if scale.spacing is None:
        return Length(math.hypot(dr, dc), scale.length_unit)
    return Length(math.hypot(dr * scale.spacing[0], dc * scale.spacing[1]), scale.length_unit)


def angle(vertex: Point, a: Point, b: Point, spacing: SpacingLike = None) -> float:
    """The angle a-vertex-b in degrees (0-180), measured in physical space (anisotropic pixels matter)."""
    sr, sc = _scale(spacing, (vertex, a, b)).spacing or (1.0, 1.0)
    u = np.array([(a[0] - vertex[0]) * sr, (a[1] - vertex[1]) * sc])
    v = np.array([(b[0] - vertex[0]) * sr, (b[1] - vertex[1]) * sc])
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0 or nv == 0:
        return 0.0
    return math.degrees(math.acos(float(np.clip(np.dot(u, v) / (nu * nv), -1.0, 1.0))))


@dataclass(frozen=True)
class RoiStats:
    pixels: int
    mean: float
    sd: float  # population standard deviation of the pixels in the ROI
    minimum: float
    maximum: float
    area: float
    area_unit: str  # "mm2" or "px2"
    area_label: str = ""  # the unit as shown: "mm²", "mm² at detector", "px²", ...


def rectangle_mask(shape: tuple[int, int], a: Point, b: Point) -> np.ndarray:
    """Pixels whose centres lie in the rectangle spanned by corners a and b (inclusive)."""
    r0, r1 = sorted((a[0], b[0]))
    c0, c1 = sorted((a[1], b[1]))
    rows = np.arange(shape[0])[:, None]
    cols = np.arange(shape[1])[None, :]
    return (rows >= r0) & (rows <= r1) & (cols >= c0) & (cols <= c1)


def ellipse_mask(shape: tuple[int, int], a: Point, b: Point) -> np.ndarray:
    """Pixels whose centres lie in the ellipse inscribed in the rectangle a-b."""
    cr, cc = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    rr, rc = abs(b[0] - a[0]) / 2, abs(b[1] - a[1]) / 2
    if rr == 0 or rc == 0:
        return np.zeros(shape, dtype=bool)
    rows = np.arange(shape[0])[:, None]
    cols = np.arange(shape[1])[None, :]
    return ((rows - cr) / rr) ** 2 + ((cols - cc) / rc) ** 2 <= 1.0


def roi_stats(values: np.ndarray, mask: np.ndarray, spacing: SpacingLike,
              corners: tuple[Point, Point] | None = None) -> RoiStats | None:
    """Statistics of `values` where `mask` holds; None for an empty ROI.  The area is the pixel count times the
    pixel area (what the pixels cover, not the drawn shape's exact area).  ``corners`` (the drawn rectangle)
    place the ROI for an ultrasound scale; without them, the mask's bounding box does."""
    picked = np.asarray(values, dtype=np.float64)[mask]
    if picked.size == 0:
        return None
    if corners is None and isinstance(spacing, Scale) and spacing.regions:
        rows, cols = np.nonzero(mask)
        corners = ((float(rows.min()), float(cols.min())), (float(rows.max()), float(cols.max())))
    scale = _scale(spacing, corners or ())
    pixel_area = scale.spacing[0] * scale.spacing[1] if scale.spacing is not None else 1.0
    return RoiStats(int(picked.size), float(picked.mean()), float(picked.std()), float(picked.min()),
                    float(picked.max()), float(picked.size * pixel_area),
                    "mm2" if scale.spacing is not None else "px2", scale.area_unit)


def probe(values: np.ndarray, point: Point) -> float | None:
    """The value of the pixel under `point` (nearest pixel centre), or None outside the image."""
    r, c = int(round(point[0])), int(round(point[1]))
    if 0 <= r < values.shape[0] and 0 <= c < values.shape[1]:
        return float(values[r, c])
    return None
