"""The physical scale of an image (viewer.dicom.calibration): a distance on a radiograph is "mm" only where it is
in the patient.  The DX images are written to disk and read back (real files), with a 100 mm rod drawn 575 px long
at the detector (0.2 mm Imager Pixel Spacing, magnification 1.15)."""

from __future__ import annotations

import math

import pydicom
import pytest

from tests.dicom.generated import (
    IMAGER_SPACING_MM,
    MAGNIFICATION,
    OBJECT_MM,
    cine_dataset,
    dx_dataset,
    object_ends,
    us_dataset,
)
from tests.ui.conftest import ct_dataset
from viewer.dicom import calibration as cal
from viewer.dicom.info import image_info
from viewer.reading.annotations import Annotation, measure_text


def read_back(ds, tmp_path):
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return pydicom.dcmread(path, stop_before_pixels=True)


def rod_text(header) -> str:
    a, b = object_ends()
    return measure_text(Annotation("distance", ("1.2.3", 0), (a, b)), None, image_info(header).scale)


def test_a_magnified_rod_measures_its_true_length(tmp_path) -> None:
    header = read_back(dx_dataset(), tmp_path)
    scale = image_info(header).scale
    assert scale.basis == cal.MAGNIFICATION_CORRECTED
    assert scale.spacing == pytest.approx((IMAGER_SPACING_MM / MAGNIFICATION,) * 2)
    assert rod_text(header) == f"{OBJECT_MM:.1f} mm (magnification corrected)"  # 100.0, not 115.0


def test_without_a_factor_the_length_is_at_the_detector(tmp_path) -> None:
    header = read_back(dx_dataset(magnification=None), tmp_path)
    assert image_info(header).scale.basis == cal.DETECTOR
    assert rod_text(header) == f"{OBJECT_MM * MAGNIFICATION:.1f} mm at detector"  # 115.0 mm at detector
    assert image_info(header).pixel_spacing == (IMAGER_SPACING_MM, IMAGER_SPACING_MM)  # display aspect kept


def test_pixel_spacing_equal_to_imager_spacing_is_not_calibrated(tmp_path) -> None:
    header = read_back(dx_dataset(magnification=None, pixel_spacing=(0.2, 0.2)), tmp_path)
    assert image_info(header).scale.basis == cal.DETECTOR  # PS3.3 10.7.1.1: same values = not calibrated
    header = read_back(dx_dataset(pixel_spacing=(0.2, 0.2)), tmp_path)
    assert image_info(header).scale.basis == cal.MAGNIFICATION_CORRECTED  # the factor still applies


def test_pixel_spacing_the_modality_corrected_or_calibrated(tmp_path) -> None:
    corrected = IMAGER_SPACING_MM / MAGNIFICATION
    differs = image_info(read_back(dx_dataset(magnification=None, pixel_spacing=(corrected, corrected)),
                                   tmp_path)).scale
    assert differs.basis == cal.MAGNIFICATION_CORRECTED and differs.spacing == pytest.approx((corrected,) * 2)
    fiducial = image_info(read_back(dx_dataset(magnification=None, pixel_spacing=(0.18, 0.18),
                                               calibration_type="FIDUCIAL"), tmp_path)).scale
    assert fiducial.basis == cal.CALIBRATED and fiducial.length_unit == "mm (calibrated)"
    geometry = image_info(read_back(dx_dataset(magnification=None, pixel_spacing=(0.2, 0.2),
                                               calibration_type="GEOMETRY"), tmp_path)).scale
    assert geometry.basis == cal.MAGNIFICATION_CORRECTED


def test_absurd_magnification_factors_are_ignored(tmp_path) -> None:
    for factor in (0.5, 0.0, 50.0):
        assert image_info(read_back(dx_dataset(magnification=factor), tmp_path)).scale.basis == cal.DETECTOR


def test_projection_pixel_spacing_alone_is_taken_at_the_detector() -> None:
    ds = dx_dataset(magnification=None, pixel_spacing=(0.15, 0.15))
    del ds.ImagerPixelSpacing
    scale = cal.header_scale(ds)
    assert (scale.basis, scale.spacing) == (cal.DETECTOR, (0.15, 0.15))


def test_ct_pixel_spacing_is_in_the_patient(tmp_path) -> None:
    header = read_back(ct_dataset(0, 1, study_uid="1.2.3", series_uid="1.2.3.4"), tmp_path)
    scale = image_info(header).scale
    assert (scale.basis, scale.spacing, scale.overlay_text) == (cal.PATIENT, (0.7, 0.7), "")
    text = measure_text(Annotation("distance", ("1", 0), ((0, 0), (30, 40))), None, scale)
    assert text == f"{math.hypot(21, 28):.1f} mm"


def test_ultrasound_measures_in_mm_only_inside_one_region(tmp_path) -> None:
    scale = image_info(read_back(us_dataset(), tmp_path)).scale
    assert scale.basis == cal.REGION and len(scale.regions) == 1  # the Doppler strip (units 4) is not spatial

    def text(kind, a, b):
        return measure_text(Annotation(kind, ("1", 0), (a, b)), None, scale)

    assert text("distance", (50, 20), (50, 120)) == "10.0 mm"  # 100 px x 0.1 mm, wholly inside the 2D region
    assert text("distance", (50, 100), (50, 200)) == "100.0 px"  # from the 2D region into the Doppler strip
    assert text("distance", (5, 20), (5, 120)) == "100.0 px"  # above every region


def test_ultrasound_roi_area(tmp_path) -> None:
    import numpy as np

    scale = image_info(read_back(us_dataset(), tmp_path)).scale
    values = np.zeros((200, 300))
    inside = measure_text(Annotation("rectangle", ("1", 0), ((30, 30), (39, 39))), values, scale)
    assert inside.endswith("; 1.0 mm²")  # 100 pixels of 0.1 x 0.1 mm
    across = measure_text(Annotation("rectangle", ("1", 0), ((30, 140), (39, 169))), values, scale)
    assert across.endswith("; 300 px²")


def test_the_readers_calibration_wins_and_keeps_the_aspect() -> None:
    header = cal.header_scale(dx_dataset(magnification=None))
    a, b = object_ends()
    spacing = cal.calibrate(a, b, OBJECT_MM, (0.2, 0.2))
    scale = cal.effective_scale(header, spacing)
    assert scale.basis == cal.CALIBRATED and scale.overlay_text == "Calibrated"
    assert measure_text(Annotation("distance", ("1", 0), (a, b)), None, scale) == "100.0 mm (calibrated)"
    assert cal.effective_scale(header, None) is header
    # Anisotropic pixels stay anisotropic: a vertical 50 px line on 0.4 x 0.2 mm pixels set to 10 mm.
    row_mm, col_mm = cal.calibrate((0, 0), (50, 0), 10.0, (0.4, 0.2))
    assert (row_mm, col_mm) == pytest.approx((0.2, 0.1))


@pytest.mark.parametrize("length", [0.0, -5.0, float("nan"), float("inf")])
def test_a_calibration_needs_a_positive_length(length) -> None:
    with pytest.raises(ValueError):
        cal.calibrate((0, 0), (0, 100), length)
    with pytest.raises(ValueError):
        cal.calibrate((0, 0), (0, 1), 10.0)  # a click, not a line


def test_nothing_known_is_pixels() -> None:
    ds = cine_dataset(frames=2, size=16)
    del ds.PixelSpacing
    ds.Modality = "OT"
    assert cal.header_scale(ds) is cal.PIXEL_SCALE
    assert measure_text(Annotation("distance", ("1", 0), ((0, 0), (3, 4))), None, cal.PIXEL_SCALE) == "5.0 px"
