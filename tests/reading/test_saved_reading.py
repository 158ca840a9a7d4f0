"""Saved readings (viewer.reading.persist, presentation, report, keyobjects, objects): every measurement kind
through GSPS and SR and back, the objects valid for dciodvfy, autosave in place until sent, a DCMTK-made
presentation state read, hostile ones refused with a sentence, and non-image series told from image series."""

from __future__ import annotations

import copy
import io
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.dicom.generated import MAGNIFICATION, OBJECT_MM, dx_dataset, object_ends
from tests.reading.saved_support import dciodvfy_errors, every_kind, make_study, marked_store, same_points
from viewer.dicom.measure import distance, rectangle_mask, roi_stats
from viewer.errors import LibraryError, MifasError
from viewer.library import Library, drafts
from viewer.reading import persist
from viewer.reading.annotations import Annotation, AnnotationStore
from viewer.reading.keyobjects import build_kos, parse_kos
from viewer.reading.objects import (
    COMPREHENSIVE_3D_SR_SOP_CLASS,
    GSPS_SOP_CLASS,
    KEY_OBJECT_SELECTION_SOP_CLASS,
    is_image_instance,
    is_image_series,
)
from viewer.reading.persist import DisplayState
from viewer.reading.presentation import View, from_gsps_transform, parse_gsps, to_gsps_transform
from viewer.reading.report import measured_values, parse_report


@pytest.fixture
def study(tmp_path: Path):
    s = make_study(tmp_path / "lib")
    yield s
    s.library.close()


def _read(study, uid: str) -> pydicom.Dataset:
    return pydicom.dcmread(study.library.path_of(uid))


def test_every_kind_round_trips_through_gsps_and_sr(study) -> None:
    store = marked_store(study)
    shown = DisplayState((40.0, 400.0), 90, True, False)
    saved = persist.save_reading(study.library, store, study.study_uid, {study.series_uid: shown})
    assert len(saved.presentation_states) == 1 and saved.report and saved.key_objects

    readings = persist.readings_for_series(study.library, study.series_uid)
    assert [r.sop_instance_uid for r in readings] == list(saved.presentation_states)
    assert readings[0].ours and not readings[0].sent
    back = AnnotationStore()
    state = persist.load_reading(study.library, readings[0].sop_instance_uid, back)
    assert state.window == (40.0, 400.0) and (state.rotation, state.flip_h, state.flip_v) == (90, True, False)
    expected = every_kind(study.uids)
    got = [a for _, a in back.items()]
    assert len(got) == len(expected)
    for a in expected:
        assert any(same_points(a, b) for b in got), a
    assert back.calibration(study.uids[0]) == (0.5, 0.5)
    assert back.key_images() == [(study.uids[1], 0)]

    # The SR: one group per annotation, same kinds and points, the values the viewer computes.
    reported = parse_report(_read(study, saved.report))
    assert sorted(r.kind for r in reported) == sorted(a.kind for a in expected)
    from viewer.dicom.image import DicomImage
    for a in expected:
        match = next(r for r in reported if r.kind == a.kind)
        assert match.frame == a.frame and all(abs(p - q) <= 0.5 for pt, qt in zip(a.points, match.points, strict=True)
                                              for p, q in zip(pt, qt, strict=True))
        image = DicomImage.open(study.library.path_of(a.frame[0]))
        values = image.frame(0).astype(np.float64) * image.info.rescale_slope + image.info.rescale_intercept
        spacing = store.calibration(a.frame[0]) or image.info.pixel_spacing
        for name, value, unit in measured_values(a, values, spacing, "HU"):
            assert match.values[name][1] == unit
            assert match.values[name][0] == pytest.approx(value, rel=1e-9, abs=1e-9), (a.kind, name)
    # Independently of report.measured_values: measure.py's own functions on the same pixels.
    by_kind = {r.kind: r.values for r in reported}
    assert by_kind["distance"]["Length"][0] == pytest.approx(distance((3.0, 4.0), (10.25, 20.5), (0.5, 0.5)).value)
    image = DicomImage.open(study.library.path_of(study.uids[1]))
    hu = image.frame(0).astype(np.float64) + image.info.rescale_intercept
    stats = roi_stats(hu, rectangle_mask(hu.shape, (40.0, 40.0), (20.0, 10.0)), (0.7, 0.7))
    assert stats is not None and stats.pixels == 21 * 31
    assert by_kind["rectangle"]["Area"][0] == pytest.approx(21 * 31 * 0.49)
    assert by_kind["rectangle"]["Mean"][0] == pytest.approx(stats.mean)
    assert by_kind["rectangle"]["Standard Deviation"][0] == pytest.approx(stats.sd)
    assert by_kind["angle"]["Angle"][0] == pytest.approx(90.0)
    units = {name: unit for r in reported for name, (_, unit) in r.values.items()}
    assert units["Length"] == "mm" and units["Area"] == "mm2" and units["Mean"] == "[hnsf'U]"
    assert units["Angle"] == "deg"


def test_the_viewers_transform_survives_a_gsps_in_every_combination() -> None:
    def screen(rotation: int, flip_h: bool, flip_v: bool) -> np.ndarray:
        rot = np.linalg.matrix_power(np.array([[0, -1], [1, 0]]), (rotation // 90) % 4)  # clockwise, y down
        return np.diag([-1 if flip_h else 1, -1 if flip_v else 1]) @ rot

    for rotation, flip_h, flip_v in itertools.product((0, 90, 180, 270), (False, True), (False, True)):
        gsps = to_gsps_transform(View(None, rotation, flip_h, flip_v))
        back_rotation, back_flip = from_gsps_transform(*gsps)
        assert np.array_equal(screen(rotation, flip_h, flip_v), screen(back_rotation, back_flip, False))


def test_gsps_sr_and_kos_pass_dciodvfy(study, tmp_path: Path) -> None:
    store = marked_store(study)
    for rotation, flip in ((0, False), (270, True)):
        saved = persist.save_reading(study.library, store, study.study_uid,
                                     {study.series_uid: DisplayState((50.0, 350.0), rotation, flip)})
        for uid in saved.all():
            errors = dciodvfy_errors(study.library.path_of(uid))
            assert errors == [], (uid, errors)
    classes = {study.library.instance(u).sop_class_uid for u in saved.all()}
    assert classes == {GSPS_SOP_CLASS, COMPREHENSIVE_3D_SR_SOP_CLASS, KEY_OBJECT_SELECTION_SOP_CLASS}


def test_key_objects_name_the_frames_of_a_multiframe_image(study) -> None:
    header = copy.deepcopy(pydicom.dcmread(study.library.path_of(study.uids[0]), stop_before_pixels=True))
    header.NumberOfFrames = 8
    single = pydicom.dcmread(study.library.path_of(study.uids[1]), stop_before_pixels=True)
    keys = [(study.uids[0], 2), (study.uids[1], 0), (study.uids[0], 5)]
    kos = build_kos([header, single], keys, sop_instance_uid=pydicom.uid.generate_uid(),
                    series_uid=pydicom.uid.generate_uid(), series_number=9003, instance_number=1)
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"  # "Of Interest"
    frames = {str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID): i.ReferencedSOPSequence[0].get(
        "ReferencedFrameNumber") for i in kos.ContentSequence if i.ValueType == "IMAGE"}
    assert list(frames[study.uids[0]]) == [3, 6] and frames[study.uids[1]] is None
    assert sorted(parse_kos(kos)) == sorted(keys)


def test_autosave_replaces_the_draft_in_place_until_it_is_sent(study) -> None:
    store = marked_store(study)
    first = persist.save_reading(study.library, store, study.study_uid)
    paths = {u: study.library.path_of(u) for u in first.all()}
    store.add(every_kind(study.uids)[0])
    second = persist.save_reading(study.library, store, study.study_uid)
    assert second == first  # same SOP Instance UIDs
    for uid in first.all():
        assert not paths[uid].exists() or paths[uid] == study.library.path_of(uid)
        assert study.library.path_of(uid).exists()
    assert len(parse_report(_read(study, second.report))) == 6
    assert sorted(persist.unsent(study.library, study.study_uid)) == sorted(first.all())
    objects = [p for p in (study.library.root / "objects").rglob("*.dcm")]
    assert len(objects) == len(study.uids) + 3  # the old files are gone

    persist.mark_sent(study.library, list(first.all()))
    assert persist.unsent(study.library, study.study_uid) == []
    third = persist.save_reading(study.library, store, study.study_uid)
    assert set(third.all()).isdisjoint(first.all())  # a PACS never sees two versions under one UID
    reading_series = {study.library.instance(u).series_uid for u in first.all()}
    assert {study.library.instance(u).series_uid for u in third.all()} == reading_series
    readings = persist.readings_for_series(study.library, study.series_uid)
    assert [(r.sop_instance_uid, r.sent) for r in readings] == [(third.presentation_states[0], False),
                                                                (first.presentation_states[0], True)]
    assert sorted(persist.reading_uids(study.library, study.study_uid)) == sorted(third.all())


def test_replace_own_never_overwrites_an_image_or_a_sent_object(study) -> None:
    """The library refuses itself (not only persist's bookkeeping): an imported image, and a draft once sent, keep
    their bytes; nothing new is left in objects/."""
    library = study.library
    image_uid = study.uids[0]
    held = library.instance(image_uid)
    changed = pydicom.dcmread(held.path)
    changed.SeriesDescription = "replaced"
    with pytest.raises(LibraryError, match="unsent draft"):
        library.replace_own(_part10(changed))
    assert library.instance(image_uid).sha256 == held.sha256 and held.path.exists()

    saved = persist.save_reading(library, marked_store(study), study.study_uid)
    persist.mark_sent(library, list(saved.all()))
    gsps = library.instance(saved.presentation_states[0])
    objects_before = sorted((library.root / "objects").rglob("*.dcm"))
    with pytest.raises(LibraryError):
        library.replace_own(gsps.path.read_bytes())
    assert library.instance(gsps.sop_instance_uid).sha256 == gsps.sha256
    assert sorted((library.root / "objects").rglob("*.dcm")) == objects_before


def _part10(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(("magnification", "calibrated", "method", "mm"), [
    (None, False, "MIFAS-DETECTOR", OBJECT_MM * MAGNIFICATION),  # the shadow at the detector: 115 mm
    (MAGNIFICATION, False, "MIFAS-ERMF", OBJECT_MM),  # corrected to the patient: 100 mm
    (None, True, "MIFAS-CALIBRATED", OBJECT_MM),  # the reader calibrated on the rod
])
def test_a_radiographs_report_says_where_its_millimetres_are(tmp_path: Path, magnification, calibrated, method,
                                                             mm) -> None:
    """The SR's Length of a distance on a DX image carries the scale's basis as its Measurement Method, so another
    workstation does not take a length at the detector for one in the patient; the report stays valid."""
    library = Library.open(tmp_path / "library")
    ds = dx_dataset(magnification=magnification)
    path = tmp_path / "dx.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    library.store_file(path)
    sop = str(ds.SOPInstanceUID)
    store = AnnotationStore()
    store.add(Annotation("distance", (sop, 0), object_ends()))
    if calibrated:
        store.set_calibration(sop, (0.2 / MAGNIFICATION, 0.2 / MAGNIFICATION))
    saved = persist.save_reading(library, store, str(ds.StudyInstanceUID))
    report = library.path_of(saved.report)
    [group] = parse_report(pydicom.dcmread(report))
    assert group.methods == {"Length": method}
    assert group.values["Length"] == (pytest.approx(mm, abs=0.2), "mm")
    assert dciodvfy_errors(report) == []
    library.close()


def test_a_ct_report_names_no_method(study) -> None:
    store = AnnotationStore()
    for a in every_kind(study.uids):
        store.add(a)
    saved = persist.save_reading(study.library, store, study.study_uid)
    groups = parse_report(pydicom.dcmread(study.library.path_of(saved.report)))
    assert len(groups) == 5 and all(g.methods == {} for g in groups)  # mm in the patient need no words


def test_reading_series_are_told_from_image_series(study) -> None:
    persist.save_reading(study.library, marked_store(study), study.study_uid)
    kinds = {s.modality: is_image_series(s) for s in study.library.series(study.study_uid)}
    assert kinds == {"CT": True, "PR": False, "SR": False, "KO": False}
    for series in study.library.series(study.study_uid):
        for inst in study.library.instances(series.series_uid):
            assert is_image_instance(inst) == (series.modality == "CT")


def _dcmpsmk(study, tmp_path: Path) -> pydicom.Dataset:
    tool = shutil.which("/usr/bin/dcmpsmk")
    if tool is None:
        pytest.skip("DCMTK's dcmpsmk is not installed")
    out = tmp_path / "dcmtk-gsps.dcm"
    subprocess.run([tool, str(study.library.path_of(study.uids[0])), str(out)], check=True, timeout=60,
                   env={**os.environ, "TCP_NODELAY": "1"})
    return pydicom.dcmread(out)


def _graphic(shape: str, points: list[float]) -> pydicom.Dataset:
    obj = pydicom.Dataset()
    obj.GraphicAnnotationUnits = "PIXEL"
    obj.GraphicDimensions = 2
    obj.NumberOfGraphicPoints = len(points) // 2
    obj.GraphicData = points
    obj.GraphicType = shape
    obj.GraphicFilled = "N"
    return obj


def test_a_dcmtk_presentation_state_with_graphics_is_read(study, tmp_path: Path) -> None:
    ds = _dcmpsmk(study, tmp_path)
    layer = pydicom.Dataset()
    layer.GraphicLayer, layer.GraphicLayerOrder = "LAYER1", 1
    ds.GraphicLayerSequence = [layer]
    item = pydicom.Dataset()
    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
    ref.ReferencedSOPInstanceUID = study.uids[0]
    item.ReferencedImageSequence = [ref]
    item.GraphicLayer = "LAYER1"
    text = pydicom.Dataset()
    text.AnchorPointAnnotationUnits, text.UnformattedTextValue = "PIXEL", "lesion"
    text.AnchorPoint, text.AnchorPointVisible = [12.5, 14.5], "Y"
    item.TextObjectSequence = [text]
    item.GraphicObjectSequence = [
        _graphic("POLYLINE", [4.5, 3.5, 20.5, 10.5]),  # a distance
        _graphic("CIRCLE", [30.5, 30.5, 35.5, 30.5]),  # an ellipse of radius 5
        _graphic("INTERPOLATED", [1.5, 1.5, 5.5, 9.5, 9.5, 1.5, 1.5, 1.5]),  # shown, not measured
    ]
    ds.GraphicAnnotationSequence = [item]
    study.library.store_dataset(ds)

    readings = persist.readings_for_series(study.library, study.series_uid)
    assert len(readings) == 1 and not readings[0].ours
    store = AnnotationStore()
    state = persist.load_reading(study.library, readings[0].sop_instance_uid, store)
    got = sorted((a for _, a in store.items()), key=lambda a: a.kind)
    assert [a.kind for a in got] == ["distance", "ellipse"]
    assert got[0].points == ((3.0, 4.0), (10.0, 20.0))
    assert got[1].points == ((25.0, 25.0), (35.0, 35.0))
    shapes = sorted(g.shape for g in state.graphics)
    assert shapes == ["INTERPOLATED", "TEXT"]
    assert next(g for g in state.graphics if g.shape == "TEXT").text == "lesion"


def _gsps_in_library(study) -> str:
    saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
    return saved.presentation_states[0]


def test_a_truncated_presentation_state_is_a_sentence(study) -> None:
    uid = _gsps_in_library(study)
    path = study.library.path_of(uid)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(MifasError) as caught:
        persist.load_reading(study.library, uid, AnnotationStore())
    assert str(caught.value).endswith(".") and "\n" not in str(caught.value)
    assert persist.readings_for_series(study.library, study.series_uid) == []  # left out, not a crash


@pytest.mark.parametrize("damage", ["absurd count", "too many points", "odd data", "not a number", "many objects"])
def test_a_hostile_presentation_state_is_a_sentence(study, damage: str) -> None:
    ds = _read(study, _gsps_in_library(study))
    obj = ds.GraphicAnnotationSequence[0].GraphicObjectSequence[0]
    if damage == "absurd count":
        obj.NumberOfGraphicPoints = 2_000_000_000
    elif damage == "too many points":
        obj.GraphicData = [1.0] * 200_000
        obj.NumberOfGraphicPoints = 100_000
    elif damage == "odd data":
        obj.GraphicData = [1.0, 2.0, 3.0]
    elif damage == "not a number":
        obj.GraphicData = [float("nan"), 1.0, 2.0, 3.0]
    else:
        ds.GraphicAnnotationSequence[0].GraphicObjectSequence = [obj] * 25_000
    with pytest.raises(MifasError) as caught:
        parse_gsps(ds)
    assert str(caught.value).startswith("The presentation state") and str(caught.value).endswith(".")


def test_draft_rows_are_uids_only(study) -> None:
    saved = persist.save_reading(study.library, marked_store(study), study.study_uid)
    rows = drafts.of_study(study.library, study.study_uid)
    assert {r.sop_instance_uid for r in rows} == set(saved.all())
    assert {r.kind for r in rows} == {"PR", "SR", "KO"}
