"""The physical scale of an image for measurements (no Qt): how many mm one pixel is, and *where* (its basis).

A distance on a projection radiograph measured with the detector's pixel size is the size of the shadow at the
detector, 10-20 % larger than the anatomy (the beam diverges); labelling it "mm" as if in the patient is a
patient-safety error.  :func:`header_scale` reads what the header says and names the basis; a measurement is
labelled "mm" only where the scale is in the patient.

Bases (:class:`Scale`.basis) and their labels (:attr:`Scale.length_unit`):

- ``patient`` - "mm": Pixel Spacing (0028,0030) of a cross-sectional image (CT, MR, PET, ...; also the Pixel
  Measures functional group of enhanced multi-frame images): "physical distance in the patient" (PS3.3 C.7.6.2).
- ``magnification corrected`` - "mm (magnification corrected)": projection radiography whose scale was corrected
  to the patient for geometric magnification: Imager Pixel Spacing / Estimated Radiographic Magnification Factor
  (0018,1114) (PS3.3 C.8.11.5 DX Positioning Module: the "ratio of SID over SOD"), or a Pixel Spacing
  that the modality corrected (Pixel Spacing Calibration Type GEOMETRY, or a Pixel Spacing that differs from Imager
  Pixel Spacing without a type).  Correct only at the depth the estimate assumed.
- ``calibrated`` - "mm (calibrated)": the reader's own calibration against an object of known length
  (:func:`calibrate`; kept by :class:`viewer.reading.annotations.AnnotationStore`), which wins over the header; or a
  modality calibration against a fiducial (Pixel Spacing Calibration Type FIDUCIAL).
- ``detector`` - "mm at detector": Imager Pixel Spacing (0018,1164) without a magnification factor, or Nominal
  Scanned Pixel Spacing (0018,2010) of scanned film: the size at the front plane of the detector (or on the film).
- ``region`` - ultrasound: the Sequence of Ultrasound Regions (0018,6011, PS3.3 C.8.5.5), each region with Physical
  Units X/Y Direction 3 (cm) and Physical Delta X/Y (cm per pixel).  A measurement wholly inside one such region is
  in that region's mm ("mm"); one outside every region, across two regions, or in a region with other units
  (seconds, cm/s of a Doppler strip) is in pixels.
- ``pixels`` - "px": nothing is known.

The rule for projection radiography (CR, DX, MG, IO, PX, RF, XA, RG, or any image with Imager Pixel Spacing or
Nominal Scanned Pixel Spacing), from PS3.3 10.7 Basic Pixel Spacing Calibration Macro (used by the DX Detector
Module C.8.11.4 and the CR Image Module) and 10.7.1.1/10.7.1.2:

1. Pixel Spacing with Pixel Spacing Calibration Type (0028,0A02) FIDUCIAL: ``calibrated``; GEOMETRY: ``magnification
   corrected``.
2. Pixel Spacing without a type, equal to Imager Pixel Spacing (or Nominal Scanned Pixel Spacing): PS3.3 10.7.1.1
   says the image "has not been calibrated": at the detector (go on with rule 4).
3. Pixel Spacing without a type, different from Imager Pixel Spacing: PS3.3 10.7.1.1 says it "has been corrected
   for known or assumed geometric magnification or calibrated with respect to some object of known size at known
   depth": ``magnification corrected`` (an estimate in the patient either way).
4. No usable Pixel Spacing: Imager Pixel Spacing / ERMF when the Estimated Radiographic Magnification Factor is
   given and within :data:`~viewer.limits.MAGNIFICATION_FACTOR_RANGE`: ``magnification corrected``; Imager Pixel
   Spacing (or Nominal Scanned Pixel Spacing) alone: ``detector``.  We never derive a factor from Distance Source to
   Detector / Distance Source to Patient: the latter is measured to the patient support or bucky side (C.8.11.5),
   or to the breast support (C.8.11.7 Mammography Image Module), not to the anatomy being measured.
5. Pixel Spacing only, with neither a type nor Imager Pixel Spacing: PS3.3 10.7.1.1 says it "cannot be determined"
   whether it was corrected; old CR writers put the plate's spacing there, so it is taken as ``detector``.

:class:`ImageInfo`'s ``pixel_spacing`` (any of these spacings) still gives the display aspect; only measurements
use the scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from viewer.limits import MAGNIFICATION_FACTOR_RANGE, US_REGIONS_MAX

PATIENT = "patient"
MAGNIFICATION_CORRECTED = "magnification corrected"
CALIBRATED = "calibrated"
DETECTOR = "detector"
REGION = "region"
PIXELS = "pixels"
BASES = (PATIENT, MAGNIFICATION_CORRECTED, CALIBRATED, DETECTOR, REGION, PIXELS)

PROJECTION_MODALITIES = frozenset({"CR", "DX", "MG", "IO", "PX", "RF", "XA", "RG", "DF", "DS"})
US_UNITS_CM = 3  # Physical Units X/Y Direction (0018,6024/6026): 3 = cm (PS3.3 C.8.5.5.1.15)
SAME_SPACING_REL = 1e-4  # Pixel Spacing "the same as" Imager Pixel Spacing: DS strings rounded differently
CALIBRATION_LINE_MIN_PX = 2.0  # a shorter calibration line is a click, not a measurement

_LENGTH_UNITS = {PATIENT: "mm", REGION: "mm", CALIBRATED: "mm (calibrated)",
                 MAGNIFICATION_CORRECTED: "mm (magnification corrected)", DETECTOR: "mm at detector", PIXELS: "px"}
_AREA_UNITS = {PATIENT: "mm²", REGION: "mm²", CALIBRATED: "mm² (calibrated)",
               MAGNIFICATION_CORRECTED: "mm² (magnification corrected)", DETECTOR: "mm² at detector",
               PIXELS: "px²"}
# What the overlay says about the scale of the image on screen ("" where mm are simply in the patient).
_OVERLAY_WORDS = {CALIBRATED: "Calibrated", MAGNIFICATION_CORRECTED: "Magnification corrected",
                  DETECTOR: "Scale: at detector", REGION: "Scale: ultrasound regions", PIXELS: "Scale: pixels"}

Point = tuple[float, float]  # (row, column), pixel centres at integers


@dataclass(frozen=True)
class UsRegion:
    """One ultrasound region in cm (PS3.3 C.8.5.5): pixel bounds inclusive, x = column, y = row; mm per pixel."""

    x0: int
    y0: int
    x1: int
    y1: int
    row_mm: float
    col_mm: float

    def contains(self, point: Point) -> bool:
        row, col = point
        return self.y0 - 0.5 <= row <= self.y1 + 0.5 and self.x0 - 0.5 <= col <= self.x1 + 0.5


@dataclass(frozen=True)
class Scale:
    """The physical scale of an image: ``spacing`` (row, column) mm per pixel or None, its ``basis`` (one of
    :data:`BASES`), ``source`` (which attributes, in words) and, for ultrasound, the ``regions`` in cm."""

    basis: str
    spacing: tuple[float, float] | None = None
    source: str = ""
    regions: tuple[UsRegion, ...] = ()

    @property
    def length_unit(self) -> str:
        return _LENGTH_UNITS[self.basis]

    @property
    def area_unit(self) -> str:
        return _AREA_UNITS[self.basis]

    @property
    def overlay_text(self) -> str:
        """A short line for the viewport's overlay ("Calibrated", "Scale: at detector"); "" for the patient."""
        return _OVERLAY_WORDS.get(self.basis, "")

    def for_points(self, points: Iterable[Point]) -> Scale:
        """The scale a measurement through ``points`` uses: for ultrasound, the region holding every point (mm),
        else pixels; other bases are the same everywhere."""
        if self.basis != REGION:
            return self
        points = list(points)
        for region in self.regions:
            if points and all(region.contains(p) for p in points):
                return Scale(REGION, (region.row_mm, region.col_mm), self.source)
        return Scale(PIXELS, None, "outside the ultrasound regions")


PIXEL_SCALE = Scale(PIXELS, None, "no spacing in the header")


# -- reading the header ------------------------------------------------------------------------------------


def _get(ds: Any, keyword: str) -> Any:
    try:
        value = ds.get(keyword)
    except Exception:  # a damaged optional value means "not given"
        return None
    return None if value is None or value == "" else value


def _pair(value: Any) -> tuple[float, float] | None:
    """A positive, finite (row, column) spacing, or None."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(numbers) != 2 or not all(math.isfinite(n) and n > 0 for n in numbers):
        return None
    return (numbers[0], numbers[1])


def _number(value: Any) -> float | None:
    try:
        if value is not None and not isinstance(value, (str, bytes)) and isinstance(value, Sequence):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if math.isfinite(number) else None


def _same(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return all(abs(x - y) <= SAME_SPACING_REL * max(abs(x), abs(y)) for x, y in zip(a, b, strict=True))


def _functional_pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """Pixel Spacing from the Shared Functional Groups' Pixel Measures (enhanced multi-frame images)."""
    try:
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            measures = shared[0].get("PixelMeasuresSequence")
            if measures:
                return _pair(_get(measures[0], "PixelSpacing"))
    except Exception:
        return None
    return None


def _us_regions(ds: Any) -> tuple[UsRegion, ...] | None:
    """The spatial regions in cm of a Sequence of Ultrasound Regions; None when the sequence is absent."""
    try:
        items = ds.get("SequenceOfUltrasoundRegions")
    except Exception:
        return None
    if not items:
        return None
    regions = []
    for item in list(items)[:US_REGIONS_MAX]:
        units = (_number(_get(item, "PhysicalUnitsXDirection")), _number(_get(item, "PhysicalUnitsYDirection")))
        dx, dy = _number(_get(item, "PhysicalDeltaX")), _number(_get(item, "PhysicalDeltaY"))
        bounds = [_number(_get(item, k)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                   "RegionLocationMaxX1", "RegionLocationMaxY1")]
        if units != (US_UNITS_CM, US_UNITS_CM) or not dx or not dy or any(b is None for b in bounds):
            continue  # a Doppler strip (seconds, cm/s), or an unreadable region: pixels there
        x0, y0, x1, y1 = (int(b) for b in bounds)  # type: ignore[arg-type]
        if x1 < x0 or y1 < y0:
            continue
        # Physical Delta may be negative (the axis runs the other way); the size of a pixel is its magnitude.
        regions.append(UsRegion(x0, y0, x1, y1, abs(dy) * 10.0, abs(dx) * 10.0))
    return tuple(regions)


def _is_projection(ds: Any, modality: str) -> bool:
    return (modality in PROJECTION_MODALITIES or _get(ds, "ImagerPixelSpacing") is not None
            or _get(ds, "NominalScannedPixelSpacing") is not None)


def header_scale(ds: Any) -> Scale:
    """The scale the header gives (the rule is in the module docstring); never raises."""
    modality = str(_get(ds, "Modality") or "").strip().upper()
    regions = _us_regions(ds)
    if regions is not None:
        return Scale(REGION, None, "Sequence of Ultrasound Regions", regions)
    pixel_spacing = _pair(_get(ds, "PixelSpacing"))
    if not _is_projection(ds, modality):
        pixel_spacing = pixel_spacing or _functional_pixel_spacing(ds)
        if pixel_spacing is not None:
            return Scale(PATIENT, pixel_spacing, "Pixel Spacing")
        return PIXEL_SCALE
    imager = _pair(_get(ds, "ImagerPixelSpacing"))
    scanned = _pair(_get(ds, "NominalScannedPixelSpacing"))
    detector = imager or scanned
    detector_name = "Imager Pixel Spacing" if imager else "Nominal Scanned Pixel Spacing"
    kind = str(_get(ds, "PixelSpacingCalibrationType") or "").strip().upper()
    if pixel_spacing is not None:
        if kind == "FIDUCIAL":
            return Scale(CALIBRATED, pixel_spacing, "Pixel Spacing, calibrated against a fiducial")
        if kind == "GEOMETRY":
            return Scale(MAGNIFICATION_CORRECTED, pixel_spacing, "Pixel Spacing, corrected for magnification")
        if detector is not None and not _same(pixel_spacing, detector):
            return Scale(MAGNIFICATION_CORRECTED, pixel_spacing, f"Pixel Spacing (differs from {detector_name})")
        detector = detector or pixel_spacing
        if detector is pixel_spacing:
            detector_name = "Pixel Spacing (projection image, not said to be calibrated)"
    if detector is None:
        return PIXEL_SCALE
    factor = _number(_get(ds, "EstimatedRadiographicMagnificationFactor"))
    low, high = MAGNIFICATION_FACTOR_RANGE
    if imager is not None and factor is not None and low <= factor <= high:
        return Scale(MAGNIFICATION_CORRECTED, (imager[0] / factor, imager[1] / factor),
                     f"Imager Pixel Spacing / Estimated Radiographic Magnification Factor {factor:g}")
    return Scale(DETECTOR, detector, detector_name)


def effective_scale(header: Scale, reader_spacing: tuple[float, float] | None) -> Scale:
    """The scale measurements use: the reader's calibration (row, column mm) when set, else the header's."""
    spacing = _pair(reader_spacing)
    if spacing is not None:
        return Scale(CALIBRATED, spacing, "calibrated by the reader")
    return header


# -- the reader's calibration -------------------------------------------------------------------------------


def calibrate(a: Point, b: Point, length_mm: float, aspect: tuple[float, float] | None = None) -> tuple[float, float]:
    """The (row, column) pixel spacing in mm that makes the line a-b ``length_mm`` long.

    ``aspect`` is any (row, column) spacing the image already has (its ratio is kept: anisotropic pixels stay
    anisotropic); None means square pixels.  Raises ValueError for a length that is not a positive finite number,
    or a line shorter than :data:`CALIBRATION_LINE_MIN_PX`.
    """
    if not (isinstance(length_mm, (int, float)) and math.isfinite(length_mm) and length_mm > 0):
        raise ValueError("The known length must be a positive number of millimetres.")
    ratio = 1.0
    pair = _pair(aspect)
    if pair is not None:
        ratio = pair[0] / pair[1]
    dr, dc = b[0] - a[0], b[1] - a[1]
    if math.hypot(dr, dc) < CALIBRATION_LINE_MIN_PX:
        raise ValueError("Draw the calibration line along the whole known length.")
    col_mm = length_mm / math.hypot(dr * ratio, dc)
    return (col_mm * ratio, col_mm)
