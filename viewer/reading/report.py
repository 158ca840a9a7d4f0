"""A study's measurements as a Comprehensive 3D SR, TID 1500 Measurement Report (no Qt).

One measurement group per annotation, its Tracking Identifier ``"<kind> <n>"`` (so the kind is recoverable) and a
Tracking Unique Identifier of its own:

- rectangle and ellipse: TID 1410 Planar ROI, the region as a SCOORD (closed POLYLINE, ELLIPSE) on its image and
  frame, with Area (mm2, or ``{pixel}`` squared as ``{px2}`` without a pixel spacing) and Mean, Standard Deviation,
  Minimum, Maximum in modality units (``[hnsf'U]`` for CT, ``1`` otherwise);
- probe: TID 1410 with a POINT region and its value (Attenuation Coefficient in HU for CT, Mean otherwise);
- distance and angle: TID 1501 with Length (mm or ``{px}``) or Angle (deg), the NUM's SCOORD (POLYLINE, the angle
  drawn arm - vertex - arm) inferring it.

Values are those :mod:`viewer.dicom.measure` computes, over the modality values with the reader's calibration
when there is one.  A length or area whose millimetres are not simply in the patient (a radiograph's, see
:mod:`viewer.dicom.calibration`) says so in its Measurement Method (EV (G-C036, SRT, "Measurement Method")): at the
detector, corrected for magnification, or calibrated.  PS3.16 has no codes for these, so they are of the private
coding scheme :data:`CODING_SCHEME` (PS3.3 8.2: designators beginning "99"), their meanings plain words that another
workstation shows.  SCOORD coordinates are those of a GSPS (:mod:`viewer.reading.presentation`): (column + 0.5,
row + 0.5).  :func:`parse_report` reads the groups back (bounded by :data:`SR_CONTENT_ITEMS_MAX` and
:data:`SR_DEPTH_MAX`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from viewer.dicom.calibration import CALIBRATED, DETECTOR, MAGNIFICATION_CORRECTED, Scale
from viewer.dicom.measure import SpacingLike, angle, distance, ellipse_mask, probe, rectangle_mask, roi_stats
from viewer.errors import MalformedDicomError, MifasError
from viewer.imports import need
from viewer.limits import GRAPHIC_POINTS_MAX, SR_CONTENT_ITEMS_MAX, SR_DEPTH_MAX
from viewer.reading.annotations import TOOLS, Annotation, FrameKey
from viewer.reading.presentation import MANUFACTURER, _for_highdicom, _outline, _pixel

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

Value = tuple[str, float, str]  # (concept name, value, UCUM unit code)

CODING_SCHEME = "99MIFAS"
# The Measurement Method of a length or area by the basis of its scale (viewer.dicom.calibration); none for
# "patient" and "region" (in the patient) and for pixels (the unit says it).
METHODS = {
    DETECTOR: ("MIFAS-DETECTOR", "At the detector, not corrected for magnification"),
    MAGNIFICATION_CORRECTED: ("MIFAS-ERMF", "Corrected for estimated radiographic magnification"),
    CALIBRATED: ("MIFAS-CALIBRATED", "Calibrated against an object of known size"),
}


@dataclass(frozen=True)
class Reported:
    """One measurement group read back: its kind, frame, points (row, col) and values by concept name."""

    kind: str
    frame: FrameKey
    points: tuple[tuple[float, float], ...]
    values: dict[str, tuple[float, str]]
    methods: dict[str, str] = field(default_factory=dict)  # concept name -> Measurement Method's code value


def scale_basis(a: Annotation, spacing: SpacingLike) -> str:
    """The basis of the scale `a` is measured on (:data:`viewer.dicom.calibration.BASES`; a bare (row, col)
    spacing is taken as in the patient)."""
    if isinstance(spacing, Scale):
        return spacing.for_points(a.points).basis
    return "patient" if spacing is not None else "pixels"


def measured_values(a: Annotation, modality: np.ndarray | None, spacing: SpacingLike,
                    unit: str = "") -> tuple[Value, ...]:
    """The values of `a` as the viewer computes them (`spacing`: the image's
    :class:`~viewer.dicom.calibration.Scale`, or a (row, col) spacing in mm), with UCUM units; () when there is
    nothing to report (an ROI or probe without pixels, an empty ROI, a probe outside the image).  Millimetres are
    reported as mm whatever their basis (patient, calibrated, at the detector): the basis is not coded."""
    value_unit = "[hnsf'U]" if unit == "HU" else "1"
    if a.kind == "distance":
        length = distance(a.points[0], a.points[1], spacing)
        return (("Length", length.value, "{px}" if length.unit == "px" else "mm"),)
    if a.kind == "angle":
        return (("Angle", angle(a.points[0], a.points[1], a.points[2], spacing), "deg"),)
    if modality is None:
        return ()
    if a.kind == "probe":
        value = probe(modality, a.points[0])
        if value is None:
            return ()
        return (("Attenuation Coefficient" if unit == "HU" else "Mean", value, value_unit),)
    mask = (rectangle_mask if a.kind == "rectangle" else ellipse_mask)(modality.shape, a.points[0], a.points[1])
    stats = roi_stats(modality, mask, spacing, (a.points[0], a.points[1]))
    if stats is None:
        return ()
    return (("Area", stats.area, "mm2" if stats.area_unit == "mm2" else "{px2}"), ("Mean", stats.mean, value_unit),
            ("Standard Deviation", stats.sd, value_unit), ("Minimum", stats.minimum, value_unit),
            ("Maximum", stats.maximum, value_unit))


def _codes():
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    names = {"Length": codes.SCT.Length, "Angle": codes.SCT.Angle, "Area": codes.SCT.Area, "Mean": codes.SCT.Mean,
             "Standard Deviation": codes.SCT.StandardDeviation, "Minimum": codes.SCT.Minimum,
             "Maximum": codes.SCT.Maximum, "Attenuation Coefficient": codes.DCM.AttenuationCoefficient}
    units = {"mm": codes.UCUM.Millimeter, "mm2": codes.UCUM.SquareMillimeter, "deg": codes.UCUM.Degree,
             "[hnsf'U]": codes.UCUM.HounsfieldUnit, "1": codes.UCUM.NoUnits,
             "{px}": Code("{px}", "UCUM", "pixel"), "{px2}": Code("{px2}", "UCUM", "square pixel")}
    return names, units


def build_report(images: Sequence[Dataset], measured: Sequence[tuple[Annotation, tuple[Value, ...], str]], *,
                 sop_instance_uid: str, series_uid: str, series_number: int, instance_number: int,
                 software_version: str, creator: str = "") -> Dataset:
    """The measurement report of a study.  `images` are the headers of the images measured (the evidence), each
    annotation comes with :func:`measured_values` and the :func:`scale_basis` they were measured on."""
    need("pydicom")
    import highdicom.sr as sr
    from pydicom.sr.codedict import codes

    names, units = _codes()
    by_uid = {str(h.SOPInstanceUID): _for_highdicom(h) for h in images}
    groups = []
    for number, (a, values, basis) in enumerate(measured, start=1):
        image = by_uid.get(a.frame[0])
        if image is None:
            continue
        multi = int(image.get("NumberOfFrames", 1) or 1) > 1
        source = sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID),
                                         [a.frame[1] + 1] if multi else None)
        shape, points = _outline(a)
        data = np.array([_pixel(q, int(image.Rows), int(image.Columns)) for q in points], dtype=np.float64)
        tracking = sr.TrackingIdentifier(uid=_tracking_uid(), identifier=f"{a.kind} {number}")
        if a.kind in ("distance", "angle"):
            coordinates = sr.CoordinatesForMeasurement(shape, data, source)
            measurements = [sr.Measurement(names[n], v, units[u], referenced_coordinates=[coordinates],
                                           method=_method(basis, u)) for n, v, u in values]
            source_group = sr.SourceImageForMeasurementGroup(str(image.SOPClassUID), str(image.SOPInstanceUID),
                                                             [a.frame[1] + 1] if multi else None)
            groups.append(sr.MeasurementsAndQualitativeEvaluations(
                tracking, measurements=measurements or None, source_images=[source_group]))
        else:
            region = sr.ImageRegion(shape, data, source)
            measurements = [sr.Measurement(names[n], v, units[u], method=_method(basis, u)) for n, v, u in values]
            groups.append(sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking, referenced_region=region, measurements=measurements or None))
    person = sr.ObserverContext(codes.DCM.Person, sr.PersonObserverIdentifyingAttributes(name=creator or "^"))
    report = sr.MeasurementReport(sr.ObservationContext(observer_person_context=person),
                                  codes.DCM.ImagingMeasurementReport,
                                  imaging_measurements=groups or None)
    return sr.Comprehensive3DSR(list(by_uid.values()), report, series_uid, series_number, sop_instance_uid,
                                instance_number, manufacturer=MANUFACTURER, software_versions=software_version,
                                manufacturer_model_name="MIFAS Viewer")


def _method(basis: str, unit: str):
    """The Measurement Method of a value in `unit` measured on a scale of `basis`: for millimetres not in the
    patient only."""
    if unit not in ("mm", "mm2") or basis not in METHODS:
        return None
    from pydicom.sr.coding import Code

    value, meaning = METHODS[basis]
    return Code(value, CODING_SCHEME, meaning)


def _tracking_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


# -- reading -------------------------------------------------------------------------------------------------------

def parse_report(ds: Dataset) -> list[Reported]:
    """The measurement groups of a TID 1500 report (ours: kinds from the tracking identifiers; other programs':
    the kind from the SCOORD's shape).  A malformed or oversized report is a MalformedDicomError sentence."""
    uid = str(ds.get("SOPInstanceUID", "") or "")[:64]
    try:
        counter = [SR_CONTENT_ITEMS_MAX]
        found: list[Reported] = []
        for item in ds.get("ContentSequence", []) or []:
            _walk(item, 1, counter, found, uid)
        return found
    except MifasError:
        raise
    except Exception as exc:
        raise MalformedDicomError(f"The structured report {uid} cannot be read: {type(exc).__name__}.") from exc


def _meaning(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeMeaning", "")) if names else ""


def _walk(item: Dataset, depth: int, counter: list[int], found: list[Reported], uid: str) -> None:
    counter[0] -= 1
    if counter[0] < 0 or depth > SR_DEPTH_MAX:
        raise MalformedDicomError(f"The structured report {uid} holds more content than the viewer accepts.")
    if str(item.get("ValueType", "")) == "CONTAINER" and _meaning(item) == "Measurement Group":
        group = _group(item, depth, counter, uid)
        if group is not None:
            found.append(group)
        return
    for child in item.get("ContentSequence", []) or []:
        _walk(child, depth + 1, counter, found, uid)


def _group(container: Dataset, depth: int, counter: list[int], uid: str) -> Reported | None:
    identifier = ""
    scoord: tuple[str, list[tuple[float, float]], FrameKey] | None = None
    values: dict[str, tuple[float, str]] = {}
    methods: dict[str, str] = {}
    stack = [(child, depth + 1) for child in container.get("ContentSequence", []) or []]
    while stack:
        item, level = stack.pop()
        counter[0] -= 1
        if counter[0] < 0 or level > SR_DEPTH_MAX:
            raise MalformedDicomError(f"The structured report {uid} holds more content than the viewer accepts.")
        kind = str(item.get("ValueType", ""))
        if kind == "TEXT" and _meaning(item) == "Tracking Identifier":
            identifier = str(item.get("TextValue", ""))
        elif kind == "NUM":
            measured = (item.get("MeasuredValueSequence") or [None])[0]
            if measured is not None:
                unit_code = (measured.get("MeasurementUnitsCodeSequence") or [None])[0]
                values[_meaning(item)] = (float(measured.NumericValue),
                                          str(unit_code.CodeValue) if unit_code is not None else "")
                method = next((c for c in item.get("ContentSequence", []) or []
                               if _meaning(c) == "Measurement Method"), None)
                if method is not None and method.get("ConceptCodeSequence"):
                    methods[_meaning(item)] = str(method.ConceptCodeSequence[0].get("CodeValue", ""))
        elif kind == "SCOORD" and scoord is None:
            data = list(item.get("GraphicData") or [])
            if len(data) > 2 * GRAPHIC_POINTS_MAX or len(data) % 2:
                raise MalformedDicomError(f"The structured report {uid} has a region of too many points.")
            points = [(float(data[i + 1]) - 0.5, float(data[i]) - 0.5) for i in range(0, len(data), 2)]
            image = next((c for c in item.get("ContentSequence", []) or [] if str(c.get("ValueType")) == "IMAGE"), None)
            frame: FrameKey = ("", 0)
            if image is not None and image.get("ReferencedSOPSequence"):
                ref = image.ReferencedSOPSequence[0]
                numbers = ref.get("ReferencedFrameNumber")
                number = (numbers if isinstance(numbers, int) else (list(numbers) or [1])[0]) if numbers else 1
                frame = (str(ref.ReferencedSOPInstanceUID), max(int(number) - 1, 0))
            scoord = (str(item.get("GraphicType", "")), points, frame)
        stack.extend((child, level + 1) for child in item.get("ContentSequence", []) or [])
    if scoord is None:
        return None
    shape, points, frame = scoord
    named = identifier.split(" ")[0] if identifier else ""
    kind = named if named in TOOLS else _kind_of(shape, len(points))
    if kind is None:
        return None
    if not all(math.isfinite(v) for p in points for v in p):
        raise MalformedDicomError(f"The structured report {uid} has a region with a point that is no number.")
    if kind == "angle" and len(points) == 3:
        points = [points[1], points[0], points[2]]
    elif kind == "rectangle" and len(points) >= 3:
        points = [points[0], points[2]]
    elif kind == "ellipse" and len(points) == 4:
        from viewer.reading.presentation import _ellipse

        mapped = _ellipse(points)[1]
        if not mapped:
            return None
        points = list(mapped)
    return Reported(kind, frame, tuple(points), values, methods)


def _kind_of(shape: str, count: int) -> str | None:
    return {("POINT", 1): "probe", ("POLYLINE", 2): "distance", ("POLYLINE", 3): "angle",
            ("POLYLINE", 5): "rectangle", ("ELLIPSE", 4): "ellipse"}.get((shape, count))
