"""viewer.dicom.measure: distances across known anisotropic spacing, angles in physical space, ROI statistics
equal to numpy's on the same pixels, and the probe."""

from __future__ import annotations

import math

import numpy as np
import pytest

from viewer.dicom.measure import angle, distance, ellipse_mask, probe, rectangle_mask, roi_stats


def test_distance_uses_row_and_column_spacing() -> None:
    spacing = (0.8, 0.5)  # mm between rows, between columns
    assert distance((10, 10), (10, 110), spacing).value == pytest.approx(50.0)  # 100 columns x 0.5
    assert distance((10, 10), (110, 10), spacing).value == pytest.approx(80.0)  # 100 rows x 0.8
    assert distance((0, 0), (30, 40), spacing).value == pytest.approx(math.hypot(24, 20))
    assert str(distance((0, 0), (3, 4), None)) == "5.0 px"
    assert distance((0, 0), (3, 4), spacing).unit == "mm"


def test_angle_in_physical_space() -> None:
    assert angle((0, 0), (0, 10), (10, 0)) == pytest.approx(90.0)
    assert angle((0, 0), (0, 10), (0, -10)) == pytest.approx(180.0)
    # 45 degrees in pixels is not 45 degrees in the patient when pixels are not square
    assert angle((0, 0), (0, 10), (10, 10), (2.0, 1.0)) == pytest.approx(math.degrees(math.atan2(20, 10)))
    assert angle((0, 0), (0, 0), (1, 1)) == 0.0


def test_roi_statistics_equal_numpy_on_the_same_pixels() -> None:
    rng = np.random.default_rng(3)
    hu = rng.normal(40, 12, size=(64, 80))
    rect = rectangle_mask(hu.shape, (10.2, 5.0), (30.0, 40.7))
    assert rect.sum() == 20 * 36  # rows 11..30, columns 5..40
    stats = roi_stats(hu, rect, (0.7, 0.7))
    picked = hu[11:31, 5:41]
    assert (stats.mean, stats.sd, stats.minimum, stats.maximum) == pytest.approx(
        (picked.mean(), picked.std(), picked.min(), picked.max()))
    assert stats.pixels == picked.size and stats.area == pytest.approx(picked.size * 0.49)
    ellipse = ellipse_mask(hu.shape, (10, 10), (50, 70))
    rows, cols = np.mgrid[0:64, 0:80]
    expected = ((rows - 30) / 20) ** 2 + ((cols - 40) / 30) ** 2 <= 1
    assert np.array_equal(ellipse, expected)
    e = roi_stats(hu, ellipse, None)
    assert e.mean == pytest.approx(hu[expected].mean()) and e.area_unit == "px2"
    assert e.area == pytest.approx(math.pi * 20 * 30, rel=0.03)  # pixel count ~ the true ellipse area
    assert roi_stats(hu, np.zeros_like(expected), None) is None


def test_probe() -> None:
    values = np.arange(12, dtype=np.int16).reshape(3, 4) - 1024
    assert probe(values, (1.2, 2.6)) == -1024 + 7
    assert probe(values, (5, 0)) is None
