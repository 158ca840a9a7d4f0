"""Assembling a series into a 3D volume with its patient geometry (no Qt, no VTK).

The geometry comes from the Image Plane module (PS3.3 C.7.6.2): Image Orientation (Patient) gives the row and
column directions, their cross product the slice normal; slices are ordered by Image Position (Patient)
projected on that normal.  Enhanced multi-frame images carry the same per frame in their functional groups
(PS3.3 C.7.6.16: Plane Position, Plane Orientation, Pixel Measures, Pixel Value Transformation).

:func:`plan_volume` checks a stack of slice geometries and says, in words, what stands in the way:

* refused (:class:`~viewer.errors.VolumeError`; the series is still read in 2D): fewer than 3 slices, slices
  without position or orientation, mixed orientations, sizes or pixel spacings, colour images, two slices at one
  position (several volumes in one series, e.g. cardiac phases);
* corrected, with a warning the viewer shows: non-uniform spacing and missing slices (resampled along the normal
  to the median spacing), gantry tilt (each slice shifted in its plane so that the stack is orthogonal);
* over the memory cap: downsampled in the plane (by 2, 4, ...) with a warning, or refused when downsampling is
  not allowed.

:func:`build_volume` then reads the pixels through a callback (one slice at a time, cancellable) into one array
``(slices, rows, columns)`` in modality units: int16 when every slope and intercept keeps the values integral and
in range (CT in HU), else float32.  :class:`VolumeGeometry` maps voxel indices to patient coordinates (mm, LPS).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from viewer.errors import OperationCancelled, VolumeError

ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ by less are "the same orientation"
SPACING_TOLERANCE = 0.01  # relative: gaps within 1 % of the median are "uniform"
SPACING_TOLERANCE_MM = 0.01
TILT_TOLERANCE_DEG = 0.05
SLICES_MIN = 3
SLICES_MAX = 4096
VOLUME_BYTES_MAX = 2 << 30  # default memory cap for one volume
DOWNSAMPLE_MAX = 8
GAP_STEPS_MAX = 10  # a gap wider than this many slice spacings is refused, not interpolated


@dataclass(frozen=True)
class SliceGeometry:
    """One 2D slice as the volume needs it.  ``key`` is what the pixel callback gets back (e.g. a frame index)."""

    key: Any
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None  # (row spacing = between rows, column spacing = between columns), mm
    rows: int
    columns: int
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    samples_per_pixel: int = 1


@dataclass(frozen=True)
class VolumeGeometry:
    """Where the voxels are.  Index order is ``(k, j, i)`` = (slice, row, column) as in the array; ``origin`` is
    the centre of voxel (0, 0, 0); ``row_direction`` is the direction of increasing column index i (PS3.3
    C.7.6.2.1.1: the first three values of Image Orientation), ``column_direction`` of increasing row index j,
    ``normal`` of increasing slice index k.  Spacing is (between slices, between rows, between columns) in mm."""

    shape: tuple[int, int, int]
    origin: tuple[float, float, float]
    row_direction: tuple[float, float, float]
    column_direction: tuple[float, float, float]
    normal: tuple[float, float, float]
    spacing: tuple[float, float, float]

    def matrix(self) -> np.ndarray:
        """4x4 affine from (i, j, k, 1) to patient (x, y, z, 1) in mm."""
        m = np.eye(4)
        sk, sj, si = self.spacing
        m[:3, 0] = np.asarray(self.row_direction) * si
        m[:3, 1] = np.asarray(self.column_direction) * sj
        m[:3, 2] = np.asarray(self.normal) * sk
        m[:3, 3] = self.origin
        return m

    def to_patient(self, kji: Sequence[float]) -> np.ndarray:
        k, j, i = kji
        return (self.matrix() @ np.array([i, j, k, 1.0]))[:3]

    def to_index(self, xyz: Sequence[float]) -> np.ndarray:
        """(k, j, i) of a patient point, fractional."""
        i, j, k, _ = np.linalg.solve(self.matrix(), np.array([*xyz, 1.0]))
        return np.array([k, j, i])

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(max(n - 1, 0) * s for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]


@dataclass
class VolumePlan:
    """What :func:`build_volume` will do: slice order, target geometry, corrections, and why."""

    slices: list[SliceGeometry]  # sorted along the normal
    distances: np.ndarray  # each slice's position along the normal, mm, from the first
    geometry: VolumeGeometry
    tilt_shift_mm: np.ndarray  # per slice, in-plane offset (along row dir, along column dir) from slice 0, mm
    resample_z: bool
    downsample: int
    dtype: np.dtype
    warnings: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.geometry.shape)) * self.dtype.itemsize


@dataclass
class Volume:
    data: np.ndarray  # (slices, rows, columns), modality units, C-contiguous
    geometry: VolumeGeometry
    warnings: list[str]

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not math.isfinite(n) or n < 1e-6:
        raise VolumeError("The image orientation is degenerate (a zero direction).")
    return v / n


def plan_volume(slices: Sequence[SliceGeometry], *, bytes_max: int = VOLUME_BYTES_MAX,
                allow_downsample: bool = True) -> VolumePlan:
    """Check a stack of slices and plan the volume; raises VolumeError with the reason (see the module doc)."""
    if len(slices) < SLICES_MIN:
        raise VolumeError(f"A volume needs at least {SLICES_MIN} slices; this series has {len(slices)}.")
    if len(slices) > SLICES_MAX:
        raise VolumeError(f"The series has {len(slices)} slices, more than the {SLICES_MAX} a volume may have.")
    if any(s.samples_per_pixel != 1 for s in slices):
        raise VolumeError("Colour images cannot be assembled into a volume; the series is shown in 2D.")
    if any(s.position is None or s.orientation is None for s in slices):
        raise VolumeError("Some images have no position or orientation in the patient; the series is shown in 2D.")
    first = slices[0]
    for s in slices[1:]:
        if any(abs(a - b) > ORIENTATION_TOLERANCE for a, b in zip(s.orientation, first.orientation, strict=True)):  # type: ignore[arg-type]
            raise VolumeError("The images of the series lie in different orientations; it is shown in 2D only.")
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise VolumeError(f"The images have different sizes ({first.columns}x{first.rows} and "
                              f"{s.columns}x{s.rows}); the series is shown in 2D only.")
        if (s.pixel_spacing is None) != (first.pixel_spacing is None) or (
                s.pixel_spacing and any(abs(a - b) > 1e-4 for a, b in zip(s.pixel_spacing, first.pixel_spacing, strict=True))):  # type: ignore[arg-type]
            raise VolumeError("The images have different pixel spacings; the series is shown in 2D only.")
    if first.rows < 2 or first.columns < 2:
        raise VolumeError("The images are too small to make a volume.")
    orientation = np.asarray(first.orientation, dtype=np.float64)
    row_dir, col_dir = _unit(orientation[:3]), _unit(orientation[3:6])
    if abs(float(np.dot(row_dir, col_dir))) > 1e-3:
        raise VolumeError("The image orientation is not orthogonal; the series is shown in 2D only.")
    normal = np.cross(row_dir, col_dir)
    positions = np.array([s.position for s in slices], dtype=np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    ordered = [slices[int(i)] for i in order]
    gaps = np.diff(along)
    if np.any(gaps < SPACING_TOLERANCE_MM):
        raise VolumeError("Two or more images lie at the same position: the series holds several volumes "
                          "(phases, echoes or repeats); it is shown in 2D only.")
    warnings: list[str] = []
    step = float(np.median(gaps))
    uneven = np.abs(gaps - step) > max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE * step)
    resample_z = bool(np.any(uneven))
    if resample_z:
        # a gap of about n whole steps (n >= 2) is n - 1 missing slices; other uneven gaps are just uneven
        missing = int(sum(round(g / step) - 1 for g in gaps[uneven]
                          if round(g / step) >= 2 and abs(g / step - round(g / step)) < 0.25))
        if gaps.max() > GAP_STEPS_MAX * step or missing > len(ordered):
            raise VolumeError(f"The slices have gaps of up to {gaps.max():.1f} mm where the spacing is {step:.2f} "
                              "mm: too much would be invented to fill them; the series is shown in 2D only.")
        if missing:
            warnings.append(f"About {missing} slice(s) seem to be missing (gaps up to {gaps.max():.2f} mm where "
                            f"the spacing is {step:.2f} mm); the gaps are filled by interpolation in 3D.")
        else:
            warnings.append(f"The slice spacing is not uniform ({gaps.min():.2f}-{gaps.max():.2f} mm); the volume "
                            f"is resampled to {step:.2f} mm.")
    # gantry tilt: the stack's axis leans away from the slice normal
    offsets = positions - positions[0]
    in_plane = np.stack([offsets @ row_dir, offsets @ col_dir], axis=1)
    span = float(along[-1] - along[0])
    lean = float(np.linalg.norm(in_plane[-1]))
    tilt_deg = math.degrees(math.atan2(lean, span)) if span > 0 else 0.0
    if tilt_deg > TILT_TOLERANCE_DEG:
        warnings.append(f"The series was acquired with a gantry tilt of {tilt_deg:.1f} degrees; the slices are "
                        "shifted in their plane so that the volume has true geometry.")
    else:
        in_plane = np.zeros_like(in_plane)
    row_spacing, col_spacing = first.pixel_spacing or (1.0, 1.0)
    if first.pixel_spacing is None:
        warnings.append("The images have no pixel spacing; 1 mm is assumed, so measurements are not in true mm.")
    dtype = _volume_dtype(ordered)
    count = int(round(span / step)) + 1 if resample_z else len(ordered)
    downsample = 1
    while count * (first.rows // downsample) * (first.columns // downsample) * dtype.itemsize > bytes_max:
        if not allow_downsample or downsample >= DOWNSAMPLE_MAX:
            need = count * first.rows * first.columns * dtype.itemsize
            raise VolumeError(f"The volume would need {need / 2**20:.0f} MiB, more than the {bytes_max / 2**20:.0f} "
                              "MiB allowed; it is shown in 2D only (raise the memory limit in the settings).")
        downsample *= 2
    if downsample > 1:
        warnings.append(f"The volume is too large for the memory limit ({bytes_max / 2**20:.0f} MiB): it is shown "
                        f"at 1/{downsample} of its in-plane resolution in 3D.")
    rows, cols = first.rows // downsample, first.columns // downsample
    # the centre of downsampled pixel (0,0) averages original pixels 0..d-1: its centre is (d-1)/2 pixels in
    origin = positions[0] + row_dir * col_spacing * (downsample - 1) / 2 + col_dir * row_spacing * (downsample - 1) / 2
    geometry = VolumeGeometry(shape=(count, rows, cols), origin=tuple(origin), row_direction=tuple(row_dir),
                              column_direction=tuple(col_dir), normal=tuple(normal),
                              spacing=(step, row_spacing * downsample, col_spacing * downsample))
    return VolumePlan(ordered, along - along[0], geometry, in_plane, resample_z, downsample, dtype, warnings)


def _volume_dtype(slices: Sequence[SliceGeometry]) -> np.dtype:
    """int16 when every slope/intercept keeps values integral (the usual CT: 1 and -1024), else float32."""
    integral = all(float(s.rescale_slope).is_integer() and float(s.rescale_intercept).is_integer()
                   and abs(s.rescale_slope) <= 8 and abs(s.rescale_intercept) <= 8192 for s in slices)
    return np.dtype(np.int16) if integral else np.dtype(np.float32)


def build_volume(plan: VolumePlan, pixels: Callable[[Any], np.ndarray], *, cancel: threading.Event | None = None,
                 progress: Callable[[int, int], None] | None = None) -> Volume:
    """Read every slice through ``pixels(key)`` (stored values, rows x columns) into the planned volume."""
    count, rows, cols = plan.geometry.shape
    data = np.empty((count, rows, cols), dtype=plan.dtype)
    sk, sj, si = plan.geometry.spacing
    d = plan.downsample
    row_spacing, col_spacing = sj / d, si / d
    if not plan.resample_z:
        for k, s in enumerate(plan.slices):
            _check(cancel)
            data[k] = _slice(plan, k, s, pixels, row_spacing, col_spacing)
            if progress is not None:
                progress(k + 1, count)
        return Volume(data, plan.geometry, list(plan.warnings))
    # resample along the normal: each target slice interpolates its two neighbours among the acquired ones
    targets = np.arange(count) * sk
    cache: dict[int, np.ndarray] = {}
    for k, z in enumerate(targets):
        _check(cancel)
        upper = int(np.searchsorted(plan.distances, z, side="left"))
        upper = min(max(upper, 0), len(plan.slices) - 1)
        lower = max(upper - 1, 0) if plan.distances[upper] > z else upper
        for index in list(cache):
            if index < lower:
                del cache[index]
        for index in {lower, upper}:
            if index not in cache:
                cache[index] = _slice(plan, index, plan.slices[index], pixels, row_spacing, col_spacing).astype(np.float32)
        if lower == upper:
            value = cache[lower]
        else:
            t = (z - plan.distances[lower]) / (plan.distances[upper] - plan.distances[lower])
            value = cache[lower] * (1 - t) + cache[upper] * t
        data[k] = np.rint(value) if plan.dtype.kind == "i" else value
        if progress is not None:
            progress(k + 1, count)
    return Volume(data, plan.geometry, list(plan.warnings))


def _check(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise OperationCancelled("Building the volume was cancelled.")


def _slice(plan: VolumePlan, index: int, s: SliceGeometry, pixels: Callable[[Any], np.ndarray],
           row_spacing: float, col_spacing: float) -> np.ndarray:
    stored = np.asarray(pixels(s.key))
    if stored.shape != (s.rows, s.columns):
        raise VolumeError(f"An image decoded to {stored.shape[1] if stored.ndim > 1 else '?'}x{stored.shape[0]} "
                          f"pixels where its header says {s.columns}x{s.rows}.")
    values = stored.astype(np.float32) * np.float32(s.rescale_slope) + np.float32(s.rescale_intercept)
    shift = plan.tilt_shift_mm[index]
    if shift[0] or shift[1]:
        values = _shift(values, -shift[1] / row_spacing, -shift[0] / col_spacing, fill=float(values.min()))
    if plan.downsample > 1:
        d = plan.downsample
        r, c = (values.shape[0] // d) * d, (values.shape[1] // d) * d
        values = values[:r, :c].reshape(r // d, d, c // d, d).mean(axis=(1, 3))
    if plan.dtype.kind == "i":
        return np.clip(np.rint(values), -32768, 32767).astype(np.int16)
    return values.astype(np.float32)


def _shift(image: np.ndarray, rows_by: float, cols_by: float, *, fill: float) -> np.ndarray:
    """The image moved so that new pixel (r, c) = old pixel (r + rows_by, c + cols_by), bilinear, `fill` outside.

    Slice k of a tilted stack starts ``(dx, dy)`` mm away (in its plane) from slice 0; sampling it at the positions
    of slice 0's grid (plus the normal offset) is reading its pixel (r - dy / row spacing, c - dx / column
    spacing), so the caller passes the negated offsets."""
    out = image
    for axis, by in ((0, rows_by), (1, cols_by)):
        if abs(by) < 1e-6:
            continue
        n = out.shape[axis]
        src = np.arange(n, dtype=np.float64) + by
        lo = np.floor(src).astype(np.int64)
        t = (src - lo).astype(np.float32)
        valid = (lo >= 0) & (lo + 1 <= n - 1) | ((lo == n - 1) & (t == 0))
        lo_c, hi_c = np.clip(lo, 0, n - 1), np.clip(lo + 1, 0, n - 1)
        a, b = np.take(out, lo_c, axis=axis), np.take(out, hi_c, axis=axis)
        shape = [1, 1]
        shape[axis] = n
        t_b = t.reshape(shape)
        mixed = a * (1 - t_b) + b * t_b
        out = np.where(valid.reshape(shape), mixed, np.float32(fill))
    return out.astype(np.float32)


# -- enhanced multi-frame (PS3.3 C.7.6.16) ------------------------------------------------------------------


def _item(ds: Any, keyword: str) -> Any:
    seq = getattr(ds, keyword, None)
    return seq[0] if seq else None


def enhanced_frame_geometries(header: Any, frames: int, rows: int, columns: int) -> list[SliceGeometry] | None:
    """Per-frame geometry of an enhanced multi-frame image from its functional groups, or None when the header has
    none (a classic multi-frame without positions cannot be a volume)."""
    shared = _item(header, "SharedFunctionalGroupsSequence")
    per_frame = getattr(header, "PerFrameFunctionalGroupsSequence", None)
    if per_frame is None or len(per_frame) != frames:
        return None

    def lookup(frame: Any, sequence: str, attribute: str) -> Any:
        for group in (frame, shared):
            item = _item(group, sequence) if group is not None else None
            if item is not None and attribute in item:
                return getattr(item, attribute)
        return None

    out = []
    for index, frame in enumerate(per_frame):
        position = lookup(frame, "PlanePositionSequence", "ImagePositionPatient")
        orientation = lookup(frame, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = lookup(frame, "PixelMeasuresSequence", "PixelSpacing")
        slope = lookup(frame, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = lookup(frame, "PixelValueTransformationSequence", "RescaleIntercept")
        try:
            out.append(SliceGeometry(
                key=index,
                position=tuple(float(v) for v in position) if position is not None and len(position) == 3 else None,
                orientation=(tuple(float(v) for v in orientation)
                             if orientation is not None and len(orientation) == 6 else None),
                pixel_spacing=tuple(float(v) for v in spacing) if spacing is not None and len(spacing) == 2 else None,
                rows=rows, columns=columns,
                rescale_slope=float(slope) if slope is not None else float(getattr(header, "RescaleSlope", 1) or 1),
                rescale_intercept=(float(intercept) if intercept is not None
                                   else float(getattr(header, "RescaleIntercept", 0) or 0)),
            ))
        except (TypeError, ValueError) as exc:
            raise VolumeError(f"Frame {index + 1} has an unreadable position or orientation ({exc}).") from exc
    return out


def _grid_frame_geometries(header: Any, frames: int, rows: int, columns: int) -> list[SliceGeometry] | None:
    """Frames of a multi-frame image laid out by Grid Frame Offset Vector (RT Dose, PS3.3 C.8.8.3.2): offsets
    along the normal from Image Position (Patient) when the first offset is 0."""
    offsets = getattr(header, "GridFrameOffsetVector", None)
    position = getattr(header, "ImagePositionPatient", None)
    orientation = getattr(header, "ImageOrientationPatient", None)
    if offsets is None or position is None or orientation is None or len(offsets) != frames:
        return None
    try:
        origin = np.array([float(v) for v in position])
        o = np.array([float(v) for v in orientation])
        values = [float(v) for v in offsets]
    except (TypeError, ValueError):
        return None
    if values[0] != 0:  # absolute z values: relative to the first frame
        values = [v - values[0] for v in values]
    normal = np.cross(o[:3], o[3:6])
    spacing = getattr(header, "PixelSpacing", None)
    slope = float(getattr(header, "DoseGridScaling", None) or getattr(header, "RescaleSlope", 1) or 1)
    return [SliceGeometry(key=index, position=tuple(origin + normal * value), orientation=tuple(o),
                          pixel_spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
                          rows=rows, columns=columns, rescale_slope=slope,
                          rescale_intercept=float(getattr(header, "RescaleIntercept", 0) or 0))
            for index, value in enumerate(values)]


def series_slices(series: Any) -> list[SliceGeometry]:
    """The slice geometries of a :class:`~viewer.dicom.series.SeriesImages` (keys are its frame indices), from the
    headers only: classic single-frame images, or one multi-frame image (enhanced functional groups or a grid
    frame offset vector).  Raises VolumeError when the series cannot say where its frames are."""
    count = len(series)
    if count == 0:
        raise VolumeError("The series has no images.")
    refs = [series.frame_ref(i) for i in range(count)]
    paths = {ref.path for ref in refs}
    if len(paths) == 1 and count > 1:  # one multi-frame instance
        header, info = series.header(0), series.info(0)
        frame_geometries = (enhanced_frame_geometries(header, info.frames, info.rows, info.columns)
                            or _grid_frame_geometries(header, info.frames, info.rows, info.columns))
        if frame_geometries is None:
            raise VolumeError("This multi-frame image does not say where its frames lie in the patient; it is "
                              "shown frame by frame in 2D.")
        by_frame = {g.key: g for g in frame_geometries}
        return [SliceGeometry(i, *_fields(by_frame[refs[i].frame_index]), samples_per_pixel=info.samples_per_pixel)
                for i in range(count)]
    if len(paths) != count:
        raise VolumeError("The series mixes multi-frame and single images; it is shown in 2D only.")
    out = []
    for i in range(count):
        info = series.info(i)
        out.append(SliceGeometry(i, info.image_position, info.image_orientation, info.pixel_spacing, info.rows,
                                 info.columns, info.rescale_slope, info.rescale_intercept, info.samples_per_pixel))
    return out


def _fields(g: SliceGeometry) -> tuple:
    return (g.position, g.orientation, g.pixel_spacing, g.rows, g.columns, g.rescale_slope, g.rescale_intercept)


def assemble(series: Any, *, bytes_max: int = VOLUME_BYTES_MAX, allow_downsample: bool = True,
             cancel: threading.Event | None = None, progress: Callable[[int, int], None] | None = None) -> Volume:
    """A SeriesImages as a Volume (see the module docstring); VolumeError (or the decoding error of a slice)
    says why not."""
    plan = plan_volume(series_slices(series), bytes_max=bytes_max, allow_downsample=allow_downsample)
    return build_volume(plan, series.stored, cancel=cancel, progress=progress)
