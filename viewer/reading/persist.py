"""Saving and reopening a reading through the local library (no Qt).

A reading of one study is kept as DICOM objects in the library, in the study itself:

- a Grayscale Softcopy Presentation State (GSPS) per series read (graphic annotations, the window and the spatial
  transformation in force, the reader's calibration as Presentation Pixel Spacing): :mod:`viewer.reading.presentation`,
- a Comprehensive 3D SR, TID 1500 Measurement Report, with the measurements and their values:
  :mod:`viewer.reading.report`,
- a Key Object Selection document ("Of Interest") for the key images: :mod:`viewer.reading.keyobjects`.

Our objects go into one "MIFAS reading" series per object kind per study.  Autosave replaces the draft in place
(same SOP Instance UID, :meth:`viewer.library.store.Library.replace_own`) until it has been sent to a PACS
(:func:`mark_sent`); an edit after sending makes a new instance (a PACS never sees two versions under one UID).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from viewer import __version__
from viewer.dicom.calibration import Scale
from viewer.errors import MalformedDicomError, MifasError
from viewer.imports import need
from viewer.library import drafts
from viewer.library.store import Library
from viewer.limits import READING_BYTES_MAX
from viewer.reading.annotations import Annotation, AnnotationStore, measure_text
from viewer.reading.objects import GSPS_SOP_CLASS, KEY_OBJECT_SELECTION_SOP_CLASS, is_image_series
from viewer.reading.presentation import Graphic, View

log = logging.getLogger(__name__)

SERIES_NUMBERS = {"PR": 9001, "SR": 9002, "KO": 9003}  # our reading series, after the images' own


@dataclass(frozen=True)
class DisplayState:
    """How a series was shown, in the viewer's terms (:class:`viewer.ui.viewport_model.ViewportModel`): the window
    in modality units as (centre, width), None for the file's own; the clockwise rotation (0/90/180/270), applied
    to the image before the flips, and the flips on screen.  `graphics`: another program's graphics and texts
    that are no measurement of ours, to draw as they are (see :mod:`viewer.reading.presentation`)."""

    window: tuple[float, float] | None = None
    rotation: int = 0
    flip_h: bool = False
    flip_v: bool = False
    graphics: tuple[Graphic, ...] = field(default=(), compare=False)  # shown, not part of the view's state


@dataclass(frozen=True)
class SavedReading:
    """A presentation state found for a series: ours or another program's (DCMTK dcmpsmk, a PACS's)."""

    sop_instance_uid: str  # of the GSPS
    series_uid: str  # the image series it applies to
    label: str  # Content Label
    description: str  # Content Description (may be "")
    creator: str  # Content Creator's Name or the manufacturer; "" when unknown
    created: str  # "YYYY-MM-DD HH:MM" from Presentation Creation Date/Time
    ours: bool  # written by MIFAS Viewer
    sent: bool = False  # ours and sent to a PACS (then a later save makes a new instance)


@dataclass(frozen=True)
class SavedObjects:
    """What one save wrote or replaced in the library (SOP Instance UIDs; "" when that kind had nothing)."""

    presentation_states: tuple[str, ...]
    report: str
    key_objects: str

    def all(self) -> tuple[str, ...]:
        """Every SOP Instance UID written, GSPS first."""
        return tuple(u for u in (*self.presentation_states, self.report, self.key_objects) if u)


# -- saving --------------------------------------------------------------------------------------------------------

def save_reading(library: Library, store: AnnotationStore, study_uid: str,
                 display: dict[str, DisplayState] | None = None, creator: str = "") -> SavedObjects:
    """Write the study's part of `store` (its frames' annotations, key images, calibrations) to the library.
    `display` gives, per image series UID, the window and transformation in force (missing: the defaults).
    A GSPS is written for every image series with marks, calibrations, a `display` entry or an earlier unsent
    draft; the SR when the study has measurements; the KOS when it has key images.  Run it off the GUI thread:
    it reads the headers of the series concerned and the pixels of the measured images."""
    need("pydicom")
    from pydicom.uid import generate_uid

    from viewer.dicom.image import read_header
    from viewer.reading.keyobjects import build_kos
    from viewer.reading.presentation import annotations_by_series, build_gsps
    from viewer.reading.report import build_report, measured_values, scale_basis

    display = display or {}
    series_of: dict[str, str] = {}
    paths: dict[str, str] = {}
    image_series = [s for s in library.series(study_uid) if is_image_series(s)]
    for series in image_series:
        for inst in library.instances(series.series_uid):
            series_of[inst.sop_instance_uid] = series.series_uid
            paths[inst.sop_instance_uid] = str(inst.path)
    annotations = [a for _, a in store.items()]
    grouped = annotations_by_series(annotations, series_of)
    calibrations = {uid: sp for uid, sp in store.calibrations().items() if uid in series_of}
    wanted = set(grouped) | {series_of[u] for u in calibrations} | (set(display) & set(series_of.values()))
    wanted |= {d.image_series_uid for d in drafts.of_study(library, study_uid) if d.kind == "PR" and not d.sent}
    headers: dict[str, object] = {}

    def header(uid: str):
        if uid not in headers:
            headers[uid] = read_header(paths[uid])
        return headers[uid]

    values: dict[tuple[str, int], tuple[np.ndarray | None, Scale | None, str]] = {}

    def pixels(a: Annotation) -> tuple[np.ndarray | None, Scale | None, str]:
        if a.frame not in values:
            values[a.frame] = _modality_values(paths[a.frame[0]], a.frame[1], store.calibration(a.frame[0]))
        return values[a.frame]

    written: list[str] = []
    for series_uid in sorted(wanted):
        uids = [u for u, s in series_of.items() if s == series_uid]
        marks = grouped.get(series_uid, [])
        texts = [measure_text(a, *pixels(a)) for a in marks]
        state = display.get(series_uid, DisplayState())
        uid, reading_series, number = _slot(library, study_uid, "PR", series_uid, generate_uid)
        ds = build_gsps([header(u) for u in uids], marks, texts, View(state.window, state.rotation, state.flip_h,
                        state.flip_v), calibrations, sop_instance_uid=uid, series_uid=reading_series,
                        series_number=SERIES_NUMBERS["PR"], instance_number=number, software_version=__version__,
                        creator=creator)
        written.append(_put(library, ds, study_uid, "PR", series_uid))
    report_uid = ""
    measured = [(a, measured_values(a, *pixels(a)), scale_basis(a, pixels(a)[1])) for a in annotations
                if a.frame[0] in series_of]
    if measured:
        evidence = [header(u) for u in dict.fromkeys(a.frame[0] for a, _, _ in measured)]
        uid, reading_series, number = _slot(library, study_uid, "SR", "", generate_uid)
        ds = build_report(evidence, measured, sop_instance_uid=uid, series_uid=reading_series,
                          series_number=SERIES_NUMBERS["SR"], instance_number=number, software_version=__version__,
                          creator=creator)
        report_uid = _put(library, ds, study_uid, "SR", "")
    kos_uid = ""
    keys = [k for k in store.key_images() if k[0] in series_of]
    if keys:
        uid, reading_series, number = _slot(library, study_uid, "KO", "", generate_uid)
        ds = build_kos([header(u) for u in dict.fromkeys(k[0] for k in keys)], keys, sop_instance_uid=uid,
                       series_uid=reading_series, series_number=SERIES_NUMBERS["KO"], instance_number=number)
        kos_uid = _put(library, ds, study_uid, "KO", "")
    return SavedObjects(tuple(written), report_uid, kos_uid)


def _modality_values(path: str, frame: int, calibration: tuple[float, float] | None
                     ) -> tuple[np.ndarray | None, Scale | None, str]:
    """The frame in modality units, its measurement scale (the reader's calibration first) and unit, as the
    viewport has them (:meth:`viewer.ui.viewport.Viewport.modality_values`)."""
    from viewer.dicom.calibration import effective_scale
    from viewer.dicom.image import DicomImage

    image = DicomImage.open(path)
    info = image.info
    stored = image.frame(frame)
    spacing = effective_scale(info.scale, calibration)
    if stored.ndim != 2:
        return None, spacing, ""
    modality = stored.astype(np.float64) * info.rescale_slope + info.rescale_intercept
    unit = "HU" if info.modality == "CT" and info.rescale_type in ("", "HU") else ""
    return modality, spacing, unit


def _slot(library: Library, study_uid: str, kind: str, image_series_uid: str, new_uid) -> tuple[str, str, int]:
    """(SOP Instance UID, series UID, instance number) for the next save of this kind: the unsent draft's own
    UID (replaced in place), else a new instance in our reading series of that kind."""
    draft = drafts.current(library, study_uid, kind, image_series_uid)
    mine = [d for d in drafts.of_study(library, study_uid) if d.kind == kind]
    series_uid = library.instance(mine[0].sop_instance_uid).series_uid if mine else str(new_uid())
    if draft is not None and not draft.sent:
        return draft.sop_instance_uid, library.instance(draft.sop_instance_uid).series_uid, len(mine)
    return str(new_uid()), series_uid, len(mine) + 1


def _put(library: Library, ds, study_uid: str, kind: str, image_series_uid: str) -> str:
    import pydicom

    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    uid = str(ds.SOPInstanceUID)
    library.replace_own(buf.getvalue())
    drafts.record(library, uid, study_uid, kind, image_series_uid)
    log.info("saved reading object %s (%s) of study %s", uid, kind, study_uid)
    return uid


# -- finding and loading -------------------------------------------------------------------------------------------

def _read_object(library: Library, sop_instance_uid: str):
    """The dataset of a reading object in the library, read with the care of an image header (size bounded)."""
    from viewer.dicom.image import read_header

    path = library.path_of(sop_instance_uid)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise MalformedDicomError(f"The saved reading {sop_instance_uid} cannot be read: {exc.strerror}.") from exc
    if size > READING_BYTES_MAX:
        raise MalformedDicomError(f"The saved reading {sop_instance_uid} is larger than the viewer accepts.")
    ds = read_header(path)
    if not _whole(path.read_bytes(), str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""):
        raise MalformedDicomError(f"The saved reading {sop_instance_uid} is truncated or damaged.")
    return ds


def _whole(data: bytes, transfer_syntax: str) -> bool:
    """Whether the elements of a little-endian Part 10 file end exactly where the file does (pydicom reads a
    truncated file without a word: the elements cut off are simply missing).  Other encodings: not checked."""
    from viewer.library.header import _UNDEFINED, _Unusual, _Walker

    if data[128:132] != b"DICM" or transfer_syntax in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"):
        return True
    meta = _Walker(data, implicit=False)
    pos = 132
    try:
        while pos < len(data) and int.from_bytes(data[pos:pos + 2], "little") == 0x0002:
            _, value, length, _ = meta.element(pos)
            pos = value + length
        walker = _Walker(data, implicit=transfer_syntax == "1.2.840.10008.1.2")
        while pos < len(data):
            _, value, length, _ = walker.element(pos)
            pos = walker.skip_undefined(value) if length == _UNDEFINED else value + length
    except _Unusual:
        return False
    return pos == len(data)


def readings_for_series(library: Library, series_uid: str) -> list[SavedReading]:
    """The presentation states in the library that apply to `series_uid`, newest first.  One that cannot be read
    is left out (and logged)."""
    from viewer.reading.presentation import parse_gsps

    record = library.series_record(series_uid)
    if record is None:
        return []
    sent = {d.sop_instance_uid: d.sent for d in drafts.of_study(library, record.study_uid)}
    found: list[tuple[str, SavedReading]] = []
    for series in library.series(record.study_uid):
        if is_image_series(series) and series.modality.upper() != "PR":
            continue
        for inst in library.instances(series.series_uid):
            if inst.sop_class_uid != GSPS_SOP_CLASS:
                continue
            try:
                p = parse_gsps(_read_object(library, inst.sop_instance_uid))
            except MifasError as exc:
                log.warning("presentation state %s left out: %s", inst.sop_instance_uid, exc)
                continue
            if p.series_uid != series_uid:
                continue
            found.append((p.timestamp, SavedReading(p.sop_instance_uid, p.series_uid, p.label, p.description,
                                                    p.creator, p.created, p.ours, sent.get(p.sop_instance_uid, False))))
    found.sort(key=lambda pair: pair[0], reverse=True)
    return [reading for _, reading in found]


def load_reading(library: Library, gsps_uid: str, store: AnnotationStore) -> DisplayState:
    """Put the annotations, calibrations (and the study's key images) of a saved reading into `store`; the
    display state it records, for the UI to apply.  A broken object raises a MifasError (one sentence).  An
    annotation already in `store` (same kind, frame and points) is not added twice."""
    from viewer.reading.keyobjects import parse_kos
    from viewer.reading.presentation import parse_gsps

    p = parse_gsps(_read_object(library, gsps_uid))
    held = {(a.kind, a.frame, a.points) for _, a in store.items()}
    for a in p.annotations:
        if (a.kind, a.frame, a.points) not in held:
            store.add(a)
    for uid, spacing in p.calibrations.items():
        if p.ours:  # another program's Presentation Pixel Spacing may just repeat the image's: not a calibration
            store.set_calibration(uid, spacing)
    record = library.series_record(p.series_uid)
    study_uid = record.study_uid if record is not None else ""
    kos = next((d for d in drafts.of_study(library, study_uid) if d.kind == "KO"), None) if study_uid else None
    if kos is not None and library.instance(kos.sop_instance_uid).sop_class_uid == KEY_OBJECT_SELECTION_SOP_CLASS:
        for key in parse_kos(_read_object(library, kos.sop_instance_uid)):
            store.set_key_image(key, True)
    v = p.view
    return DisplayState(v.window, v.rotation, v.flip_h, v.flip_v, p.graphics)


# -- sending state ---------------------------------------------------------------------------------------------------

def mark_sent(library: Library, sop_instance_uids: list[str] | tuple[str, ...]) -> None:
    """Record that these of our objects reached a PACS: the next save makes new instances instead."""
    drafts.mark_sent(library, sop_instance_uids)


def unsent(library: Library, study_uid: str) -> list[str]:
    """Our reading objects of the study not yet sent (SOP Instance UIDs), for a Send action."""
    return [d.sop_instance_uid for d in drafts.of_study(library, study_uid) if not d.sent]


def reading_uids(library: Library, study_uid: str) -> list[str]:
    """Our current reading objects of the study (the newest GSPS per image series, SR, KOS), sent or not."""
    seen: set[tuple[str, str]] = set()
    uids = []
    for d in drafts.of_study(library, study_uid):
        if (d.kind, d.image_series_uid) not in seen:
            seen.add((d.kind, d.image_series_uid))
            uids.append(d.sop_instance_uid)
    return uids
