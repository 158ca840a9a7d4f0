"""viewer.dicom.geometry: reference lines between axial, coronal and oblique images of known geometry, and the
nearest slice for linked scrolling."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.dicom.geometry import ImagePlane, nearest_slice, reference_line


def axial(z: float) -> ImagePlane:
    return ImagePlane((-100.0, -100.0, z), (1.0, 0, 0), (0, 1.0, 0), (0.5, 0.5), 400, 400)  # 200 x 200 mm


def coronal(y: float) -> ImagePlane:
    return ImagePlane((-100.0, y, 80.0), (1.0, 0, 0), (0, 0, -1.0), (1.0, 0.5), 160, 400)  # z 80 .. -80


def test_an_axial_slice_is_a_horizontal_line_on_a_coronal_image() -> None:
    line = reference_line(axial(20.0), coronal(0.0))
    assert line is not None
    (r0, c0), (r1, c1) = line
    assert r0 == pytest.approx(60.0) and r1 == pytest.approx(60.0)  # z = 20 is row (80 - 20) / 1.0
    assert (c0, c1) == pytest.approx((-0.5, 399.5))  # across the whole image


def test_a_coronal_slice_is_a_horizontal_line_on_an_axial_image() -> None:
    (r0, _), (r1, _) = reference_line(coronal(-30.0), axial(0.0))
    assert r0 == pytest.approx(140.0) and r1 == pytest.approx(140.0)  # y = -30 is row (-30 + 100) / 0.5


def test_parallel_or_missing_planes_have_no_line() -> None:
    assert reference_line(axial(10.0), axial(20.0)) is None
    assert reference_line(axial(500.0), coronal(0.0)) is None  # z = 500 is above the coronal image


def test_an_oblique_cut_lies_on_both_planes() -> None:
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    oblique = ImagePlane((-80.0, -80.0, -40.0), (c, 0, s), (0, 1.0, 0), (0.8, 0.8), 200, 200)
    target = coronal(10.0)
    (r0, c0), (r1, c1) = reference_line(oblique, target)
    for r, col in ((r0, c0), (r1, c1), ((r0 + r1) / 2, (c0 + c1) / 2)):
        p = target.to_patient(r, col)
        assert float((p - np.asarray(oblique.position)) @ oblique.normal) == pytest.approx(0, abs=1e-6)


def test_nearest_slice_for_linked_scrolling() -> None:
    slices = [axial(z) for z in (10.0, 0.0, 5.0, 15.0)]  # unordered, 5 mm apart
    assert nearest_slice(slices, (0, 0, 6.0)) == 2
    assert nearest_slice(slices, (30.0, -7.0, 14.0)) == 3  # in-plane position does not matter
    assert nearest_slice(slices, (0, 0, -2.0)) == 1  # within half a slice below the first
    assert nearest_slice(slices, (0, 0, 40.0)) is None
    assert nearest_slice([None, None], (0, 0, 0)) is None


def test_pixel_round_trip() -> None:
    plane = coronal(3.0)
    assert plane.to_pixel(plane.to_patient(12.5, 33.0)) == pytest.approx((12.5, 33.0))
