"""A series' reading as a Grayscale Softcopy Presentation State (GSPS, PS3.3 A.33.1), written and read back (no Qt).

Written (:func:`build_gsps`, with highdicom): one GSPS per image series, referencing every image of the series
(so the window applies to all of them), with

- a graphic annotation per (image frame, measurement kind) in PIXEL units: a distance is a 2-point POLYLINE, an
  angle a 3-point POLYLINE drawn arm - vertex - arm, a rectangle a closed 5-point POLYLINE starting at the first
  corner drawn, an ellipse an ELLIPSE (major axis then minor axis, each from the side of the first corner drawn),
  a probe a POINT; each with a TextObject holding the words the viewer shows (:func:`measure_text`);
- **the kind is the graphic layer**: layers ``MIFAS_DISTANCE``, ``MIFAS_ANGLE``, ``MIFAS_RECTANGLE``,
  ``MIFAS_ELLIPSE``, ``MIFAS_PROBE`` (no private elements);
- the window in force as the Softcopy VOI LUT (modality units: the Modality LUT is the images'), the rotation and
  horizontal flip as the Spatial Transformation (the viewer's vertical flip is a horizontal flip plus 180 degrees),
  the Displayed Area Selection (the whole image, scaled to fit, its corners as rotated and flipped) and, for images the reader calibrated, the
  calibration as Presentation Pixel Spacing there.

Coordinates: the viewer's (row, column) pixel centres are integers; a GSPS puts the top left corner of the first
pixel at 0\\0, so (row, col) -> (col + 0.5, row + 0.5).  Points outside the image are moved to its edge (a GSPS
cannot hold them).

Read (:func:`parse_gsps`, ours and other programs'): graphics on a ``MIFAS_*`` layer become that kind; others map
to the closest kind by shape (POINT -> probe, 2-point POLYLINE -> distance, 3-point POLYLINE -> angle, closed
axis-aligned 4-corner POLYLINE -> rectangle, axis-aligned ELLIPSE or CIRCLE -> ellipse) and whatever does not map
(other polylines, INTERPOLATED curves, rotated ellipses, DISPLAY-unit graphics, other programs' text) is kept as
a display-only :class:`Graphic`.  Counts are bounded by :data:`GRAPHIC_POINTS_MAX` and
:data:`GRAPHICS_PER_STATE_MAX`; a malformed state is a :class:`MalformedDicomError` sentence.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

from viewer.errors import MalformedDicomError, MifasError
from viewer.imports import need
from viewer.limits import GRAPHIC_POINTS_MAX, GRAPHICS_PER_STATE_MAX
from viewer.reading.annotations import POINTS_NEEDED, TOOLS, Annotation, FrameKey

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

MANUFACTURER = "MIFAS"
MODEL_NAME = "MIFAS Viewer"
CONTENT_LABEL = "MIFAS_READING"
LAYER_PREFIX = "MIFAS_"
LAYERS = {kind: LAYER_PREFIX + kind.upper() for kind in TOOLS}
_KIND_OF_LAYER = {name: kind for kind, name in LAYERS.items()}
# Type 2 attributes highdicom copies from the referenced images: present (maybe empty) in what it is given.
_TYPE2_FROM_IMAGES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                      "ReferringPhysicianName", "StudyID", "AccessionNumber")
_AXIS_TOLERANCE = 1e-3  # px: how far an ellipse's or rectangle's axes may lean and still count as aligned


@dataclass(frozen=True)
class View:
    """How the series is shown, in the viewer's terms (see :class:`viewer.reading.persist.DisplayState`)."""

    window: tuple[float, float] | None = None
    rotation: int = 0
    flip_h: bool = False
    flip_v: bool = False


@dataclass(frozen=True)
class Graphic:
    """A graphic or text of another program's state that is not one of our measurement kinds: shown, not
    measured.  `shape` is the GSPS Graphic Type (POLYLINE, INTERPOLATED, CIRCLE, ELLIPSE, POINT) or TEXT;
    `points` are (row, col) for PIXEL units, or fractions of the displayed area for DISPLAY units."""

    frame: FrameKey
    shape: str
    points: tuple[tuple[float, float], ...]
    text: str = ""
    units: str = "PIXEL"
    filled: bool = False


@dataclass(frozen=True)
class Presentation:
    """What a GSPS says, in the viewer's terms."""

    sop_instance_uid: str
    series_uid: str  # of the images it applies to ("" when it references none)
    image_uids: tuple[str, ...]
    annotations: tuple[Annotation, ...]
    view: View
    calibrations: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    graphics: tuple[Graphic, ...] = ()
    label: str = ""
    description: str = ""
    creator: str = ""
    created: str = ""  # "YYYY-MM-DD HH:MM"
    ours: bool = False
    timestamp: str = ""  # Presentation Creation Date + Time as written (sorts newest last)


# -- transformation ------------------------------------------------------------------------------------------------

def to_gsps_transform(view: View) -> tuple[int, bool]:
    """(Image Rotation, Image Horizontal Flip) of the GSPS for the viewer's rotation-then-flips.  Both rotate
    first (a GSPS flips "after any rotation has been applied", PS3.3 C.10.6); the viewer's vertical flip is a
    horizontal flip after another 180 degrees."""
    theta = int(view.rotation) % 360
    if view.flip_v:
        return (theta + 180) % 360, not view.flip_h
    return theta, bool(view.flip_h)


def from_gsps_transform(rotation: int, flip: bool) -> tuple[int, bool]:
    """The viewer's (rotation, flip_h) for a GSPS rotation and horizontal flip (flip_v is never needed)."""
    return int(rotation) % 360, bool(flip)


def displayed_corners(columns: int, rows: int, rotation: int, flip: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Displayed Area Top Left and Bottom Right Hand Corners (column, row) of the whole image, as PS3.3 C.10.4
    wants them: the image corners that land at the top left and bottom right once rotated, then flipped."""
    def shown(p: tuple[int, int]) -> tuple[int, int]:
        x, y = p
        for _ in range((rotation % 360) // 90):
            x, y = -y, x  # 90 degrees clockwise (rows grow downwards)
        return (-x, y) if flip else (x, y)
    corners = [(1, 1), (columns, 1), (1, rows), (columns, rows)]
    return min(corners, key=lambda p: sum(shown(p))), max(corners, key=lambda p: sum(shown(p)))


# -- writing -------------------------------------------------------------------------------------------------------

def _pixel(point: tuple[float, float], rows: int, cols: int) -> tuple[float, float]:
    """(row, col) pixel centre -> GSPS PIXEL (column, row), inside the image."""
    return (min(max(point[1] + 0.5, 0.0), float(cols)), min(max(point[0] + 0.5, 0.0), float(rows)))


def _outline(a: Annotation) -> tuple[str, list[tuple[float, float]]]:
    """Graphic type and (row, col) points of an annotation."""
    p = a.points
    if a.kind == "distance":
        return "POLYLINE", [p[0], p[1]]
    if a.kind == "angle":
        return "POLYLINE", [p[1], p[0], p[2]]  # arm, vertex, arm
    if a.kind == "probe":
        return "POINT", [p[0]]
    (r0, c0), (r1, c1) = p
    if a.kind == "rectangle":
        return "POLYLINE", [(r0, c0), (r0, c1), (r1, c1), (r1, c0), (r0, c0)]
    cr, cc = (r0 + r1) / 2, (c0 + c1) / 2
    horizontal = [(cr, c0), (cr, c1)]
    vertical = [(r0, cc), (r1, cc)]
    major, minor = (horizontal, vertical) if abs(c1 - c0) >= abs(r1 - r0) else (vertical, horizontal)
    return "ELLIPSE", major + minor


def _for_highdicom(header: Dataset) -> Dataset:
    ds = copy.copy(header)
    for keyword in _TYPE2_FROM_IMAGES:
        if keyword not in ds:
            setattr(ds, keyword, "")
    return ds


def build_gsps(images: Sequence[Dataset], annotations: Sequence[Annotation], texts: Sequence[str], view: View,
               calibrations: Mapping[str, tuple[float, float]], *, sop_instance_uid: str, series_uid: str,
               series_number: int, instance_number: int, software_version: str, creator: str = "",
               description: str = "") -> Dataset:
    """The GSPS of one image series.  `images` are the headers of the series' images (all of one series; no pixels
    needed), `annotations` those on their frames with `texts` their words, `calibrations` (row, col) mm by SOP
    Instance UID."""
    need("pydicom")
    import highdicom as hd
    import numpy as np
    from highdicom.pr import (
        GraphicAnnotation,
        GraphicLayer,
        GraphicObject,
        GrayscaleSoftcopyPresentationState,
        SoftcopyVOILUTTransformation,
        TextObject,
    )
    from pydicom.dataset import Dataset as PydicomDataset

    if not images:
        raise ValueError("a presentation state needs the images it applies to")
    refs = [_for_highdicom(h) for h in images]
    by_uid = {str(h.SOPInstanceUID): h for h in refs}
    layers = {kind: GraphicLayer(layer_name=LAYERS[kind], order=i + 1, description=f"MIFAS Viewer {kind}")
              for i, kind in enumerate(TOOLS)}
    grouped: dict[tuple[str, int, str], tuple[list, list]] = {}
    for a, text in zip(annotations, texts, strict=True):
        image = by_uid.get(a.frame[0])
        if image is None:
            continue
        rows, cols = int(image.Rows), int(image.Columns)
        shape, points = _outline(a)
        data = np.array([_pixel(q, rows, cols) for q in points], dtype=np.float64)
        objects, words = grouped.setdefault((a.frame[0], a.frame[1], a.kind), ([], []))
        objects.append(GraphicObject(shape, data, "PIXEL"))
        if text:
            words.append(TextObject(text[:1024], "PIXEL", anchor_point=tuple(data[-1]), anchor_point_visible=False))
    annotations_seq = []
    for (uid, frame, kind), (objects, words) in grouped.items():
        image = by_uid[uid]
        multi = int(image.get("NumberOfFrames", 1) or 1) > 1
        annotations_seq.append(GraphicAnnotation([image], layers[kind], referenced_frame_number=frame + 1 if multi
                                                 else None, graphic_objects=objects, text_objects=words or None))
    used = [layers[k] for k in TOOLS if any(key[2] == k for key in grouped)]
    voi = None
    if view.window is not None:
        voi = [SoftcopyVOILUTTransformation(window_center=float(view.window[0]),
                                            window_width=max(float(view.window[1]), 1.0))]
    ds = GrayscaleSoftcopyPresentationState(
        refs, series_uid, series_number, sop_instance_uid, instance_number, MANUFACTURER, MODEL_NAME,
        software_version, "1", CONTENT_LABEL, content_description=description[:64] or None,
        graphic_annotations=annotations_seq or None, graphic_layers=used or None, voi_lut_transformations=voi,
        content_creator_name=creator or None)
    rotation, flip = to_gsps_transform(view)
    if rotation or flip:
        ds.ImageRotation = rotation
        ds.ImageHorizontalFlip = "Y" if flip else "N"
    if "Laterality" not in ds:
        ds.Laterality = ""  # Type 2C in General Series; empty is "unknown"
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: the measurements' words hold "°" and "²"
    ds.DisplayedAreaSelectionSequence = _displayed_areas(refs, calibrations, (rotation, flip), hd, PydicomDataset)
    return ds


def _displayed_areas(refs: Sequence[Dataset], calibrations: Mapping[str, tuple[float, float]],
                     transform: tuple[int, bool], hd, DatasetClass) -> list:
    """One Displayed Area Selection item per (size, calibration or aspect) group of images; an item names its
    images unless it applies to all."""
    groups: dict[tuple, list[Dataset]] = {}
    for h in refs:
        uid = str(h.SOPInstanceUID)
        spacing = calibrations.get(uid)
        if spacing is not None:
            key: tuple = (int(h.Columns), int(h.Rows), "spacing", float(spacing[0]), float(spacing[1]))
        else:
            key = (int(h.Columns), int(h.Rows), "aspect", *_aspect(h))
        groups.setdefault(key, []).append(h)
    items = []
    for key, members in groups.items():
        item = DatasetClass()
        if len(groups) > 1:
            item.ReferencedImageSequence = hd.ReferencedImageSequence(referenced_images=members)
        top_left, bottom_right = displayed_corners(key[0], key[1], *transform)
        item.DisplayedAreaTopLeftHandCorner = list(top_left)
        item.DisplayedAreaBottomRightHandCorner = list(bottom_right)
        item.PresentationSizeMode = "SCALE TO FIT"
        if key[2] == "spacing":
            item.PresentationPixelSpacing = [key[3], key[4]]
        else:
            item.PresentationPixelAspectRatio = [key[3], key[4]]
        items.append(item)
    return items


def _aspect(header: Dataset) -> tuple[int, int]:
    """Presentation Pixel Aspect Ratio (row spacing : column spacing, integers) from the image's Pixel Spacing."""
    try:
        row, col = (float(v) for v in header.PixelSpacing)
        ratio = Fraction(row / col).limit_denominator(1000)
        if ratio > 0:
            return ratio.numerator, ratio.denominator
    except Exception:  # absent or malformed: square pixels
        pass
    return 1, 1


# -- reading -------------------------------------------------------------------------------------------------------

def parse_gsps(ds: Dataset) -> Presentation:
    """What a GSPS (ours or another program's) says, in the viewer's terms.  Raises MalformedDicomError (one
    sentence) for a state that breaks the limits or cannot be read."""
    try:
        return _parse(ds)
    except MifasError:
        raise
    except Exception as exc:
        raise MalformedDicomError(
            f"The presentation state {_uid(ds)} cannot be read: {type(exc).__name__}.") from exc


def _uid(ds: Dataset) -> str:
    try:
        return str(ds.get("SOPInstanceUID", "") or "")[:64] or "(without a UID)"
    except Exception:
        return "(without a UID)"


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _parse(ds: Dataset) -> Presentation:
    uid = _uid(ds)
    if str(ds.get("SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.11.1":
        raise MalformedDicomError(f"The object {uid} is not a grayscale softcopy presentation state.")
    image_uids: list[str] = []
    series_uid = ""
    for series in ds.get("ReferencedSeriesSequence", []) or []:
        series_uid = series_uid or _text(series, "SeriesInstanceUID")
        for ref in series.get("ReferencedImageSequence", []) or []:
            image_uids.append(_text(ref, "ReferencedSOPInstanceUID"))
            if len(image_uids) > GRAPHICS_PER_STATE_MAX:
                raise MalformedDicomError(f"The presentation state {uid} references too many images.")
    ours = _text(ds, "Manufacturer") == MANUFACTURER and _text(ds, "ManufacturerModelName") == MODEL_NAME
    annotations: list[Annotation] = []
    graphics: list[Graphic] = []
    budget = [GRAPHICS_PER_STATE_MAX]
    for item in ds.get("GraphicAnnotationSequence", []) or []:
        _annotation_item(item, uid, ours, image_uids, annotations, graphics, budget)
    window = None
    for voi in ds.get("SoftcopyVOILUTSequence", []) or []:
        if "WindowCenter" in voi and "WindowWidth" in voi:
            center, width = _first(voi.WindowCenter), _first(voi.WindowWidth)
            if math.isfinite(center) and math.isfinite(width) and width > 0:
                window = (center, width)
                break
    rotation = int(ds.get("ImageRotation", 0) or 0)
    if rotation not in (0, 90, 180, 270):
        rotation = 0
    rotation, flip_h = from_gsps_transform(rotation, _text(ds, "ImageHorizontalFlip").upper() == "Y")
    calibrations: dict[str, tuple[float, float]] = {}
    for area in ds.get("DisplayedAreaSelectionSequence", []) or []:
        spacing = area.get("PresentationPixelSpacing")
        if spacing is None or len(spacing) != 2:
            continue
        row, col = float(spacing[0]), float(spacing[1])
        if not (math.isfinite(row) and math.isfinite(col) and row > 0 and col > 0):
            continue
        targets = [_text(r, "ReferencedSOPInstanceUID") for r in area.get("ReferencedImageSequence", []) or []]
        for target in targets or image_uids:
            calibrations[target] = (row, col)
    creator = _text(ds, "ContentCreatorName") or _text(ds, "Manufacturer")
    date, time_ = _text(ds, "PresentationCreationDate"), _text(ds, "PresentationCreationTime")
    created = f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) >= 8 else ""
    if created and len(time_) >= 4:
        created += f" {time_[:2]}:{time_[2:4]}"
    return Presentation(uid, series_uid, tuple(image_uids), tuple(annotations),
                        View(window, rotation, flip_h, False), calibrations, tuple(graphics),
                        _text(ds, "ContentLabel"), _text(ds, "ContentDescription"), creator, created, ours,
                        date + time_)


def _first(value) -> float:
    try:
        return float(value[0]) if not isinstance(value, (str, bytes)) and hasattr(value, "__len__") else float(value)
    except (TypeError, ValueError, IndexError):
        return math.nan


def _annotation_item(item: Dataset, uid: str, ours: bool, image_uids: list[str], annotations: list[Annotation],
                     graphics: list[Graphic], budget: list[int]) -> None:
    layer = _text(item, "GraphicLayer")
    frames: list[FrameKey] = []
    for ref in item.get("ReferencedImageSequence", []) or []:
        sop = _text(ref, "ReferencedSOPInstanceUID")
        numbers = ref.get("ReferencedFrameNumber")
        if numbers is None or numbers == "":
            frames.append((sop, 0))
        else:
            values = [numbers] if isinstance(numbers, (int, float, str)) else list(numbers)
            frames.extend((sop, max(int(n) - 1, 0)) for n in values[:GRAPHICS_PER_STATE_MAX + 1])
        if len(frames) > GRAPHICS_PER_STATE_MAX:
            raise MalformedDicomError(f"The presentation state {uid} references too many frames.")
    objects = list(item.get("GraphicObjectSequence", []) or [])
    texts = list(item.get("TextObjectSequence", []) or [])
    budget[0] -= (len(objects) + len(texts)) * max(len(frames), 1)
    if budget[0] < 0:
        raise MalformedDicomError(f"The presentation state {uid} holds more graphics than the viewer accepts.")
    layer_kind = _KIND_OF_LAYER.get(layer) if layer.startswith(LAYER_PREFIX) else None
    for obj in objects:
        shape = _text(obj, "GraphicType").upper()
        units = _text(obj, "GraphicAnnotationUnits").upper() or "PIXEL"
        count = int(obj.get("NumberOfGraphicPoints", 0) or 0)
        data = obj.get("GraphicData") or []
        if count > GRAPHIC_POINTS_MAX or len(data) > 2 * GRAPHIC_POINTS_MAX:
            raise MalformedDicomError(
                f"The presentation state {uid} has a graphic of more than {GRAPHIC_POINTS_MAX} points.")
        if len(data) % 2 or (count and len(data) != 2 * count):
            raise MalformedDicomError(f"The presentation state {uid} has a graphic whose points do not add up.")
        xy = [(float(data[i]), float(data[i + 1])) for i in range(0, len(data), 2)]
        if not all(math.isfinite(v) for p in xy for v in p):
            raise MalformedDicomError(f"The presentation state {uid} has a graphic with a point that is no number.")
        filled = _text(obj, "GraphicFilled").upper() == "Y"
        if units != "PIXEL":
            for frame in frames or [("", 0)]:
                graphics.append(Graphic(frame, shape, tuple((y, x) for x, y in xy), units=units, filled=filled))
            continue
        points = [(y - 0.5, x - 0.5) for x, y in xy]  # back to (row, col) pixel centres
        kind, mapped = _measurement(shape, points, layer_kind)
        for frame in frames:
            if kind is not None:
                annotations.append(Annotation(kind, frame, mapped))
            else:
                graphics.append(Graphic(frame, shape, tuple(points), filled=filled))
    if ours and layer_kind is not None:
        return  # our texts are the measurements' words: the viewer writes them again
    for obj in texts:
        value = _text(obj, "UnformattedTextValue")[:1024]
        units = "PIXEL"
        if "AnchorPoint" in obj:
            x, y = (float(v) for v in obj.AnchorPoint)
            units = _text(obj, "AnchorPointAnnotationUnits").upper() or "PIXEL"
        elif "BoundingBoxTopLeftHandCorner" in obj:
            x, y = (float(v) for v in obj.BoundingBoxTopLeftHandCorner)
            units = _text(obj, "BoundingBoxAnnotationUnits").upper() or "PIXEL"
        else:
            continue
        point = (y - 0.5, x - 0.5) if units == "PIXEL" else (y, x)
        for frame in frames or [("", 0)]:
            graphics.append(Graphic(frame, "TEXT", (point,), value, units))


def _measurement(shape: str, points: list[tuple[float, float]], layer_kind: str | None
                 ) -> tuple[str | None, tuple[tuple[float, float], ...]]:
    """The measurement kind and points of a graphic, or (None, ()) when it is none of ours."""
    n = len(points)
    if shape == "POINT" and n == 1:
        return "probe", (points[0],)
    if shape == "POLYLINE" and n == 2 and layer_kind in (None, "distance"):
        return "distance", (points[0], points[1])
    if shape == "POLYLINE" and n == 3 and layer_kind in (None, "angle"):
        return "angle", (points[1], points[0], points[2])
    if shape == "POLYLINE" and n == 5 and _close(points[0], points[4]) and _axis_aligned_box(points[:4]):
        return "rectangle", (points[0], points[2])
    if shape == "ELLIPSE" and n == 4:
        return _ellipse(points)
    if shape == "CIRCLE" and n == 2:
        (cr, cc), (pr, pc) = points
        r = math.hypot(pr - cr, pc - cc)
        return "ellipse", ((cr - r, cc - r), (cr + r, cc + r))
    return None, ()


def _close(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return abs(a[0] - b[0]) <= _AXIS_TOLERANCE and abs(a[1] - b[1]) <= _AXIS_TOLERANCE


def _axis_aligned_box(corners: Sequence[tuple[float, float]]) -> bool:
    """Four corners in drawing order, each edge horizontal or vertical, alternating."""
    edges = [(corners[i], corners[(i + 1) % 4]) for i in range(4)]
    flat = [abs(a[0] - b[0]) <= _AXIS_TOLERANCE for a, b in edges]  # same row: horizontal edge
    upright = [abs(a[1] - b[1]) <= _AXIS_TOLERANCE for a, b in edges]
    return all(f != u or (f and u) for f, u in zip(flat, upright, strict=True)) and \
        (flat == [True, False, True, False] or flat == [False, True, False, True] or all(flat) and all(upright))


def _ellipse(points: list[tuple[float, float]]) -> tuple[str | None, tuple[tuple[float, float], ...]]:
    """An axis-aligned ELLIPSE (major axis, minor axis) -> the corners it is inscribed in, from the side of each
    axis's first point (how :func:`_outline` writes ours)."""
    axes = [(points[0], points[1]), (points[2], points[3])]
    horizontal = [ax for ax in axes if abs(ax[0][0] - ax[1][0]) <= _AXIS_TOLERANCE]
    vertical = [ax for ax in axes if abs(ax[0][1] - ax[1][1]) <= _AXIS_TOLERANCE]
    if len(horizontal) == 2 and len(vertical) == 2:  # a point-like ellipse: both axes degenerate
        horizontal, vertical = [axes[0]], [axes[1]]
    if len(horizontal) != 1 or len(vertical) != 1 or horizontal[0] is vertical[0]:
        return None, ()
    (h0, h1), (v0, v1) = horizontal[0], vertical[0]
    return "ellipse", ((v0[0], h0[1]), (v1[0], h1[1]))


def annotations_by_series(annotations: Iterable[Annotation], series_of: Mapping[str, str]
                          ) -> dict[str, list[Annotation]]:
    """Annotations grouped by the series of their image (`series_of`: SOP Instance UID -> series UID); those on
    images not in `series_of` are left out."""
    grouped: dict[str, list[Annotation]] = {}
    for a in annotations:
        series = series_of.get(a.frame[0])
        if series is not None and POINTS_NEEDED.get(a.kind) == len(a.points):
            grouped.setdefault(series, []).append(a)
    return grouped
