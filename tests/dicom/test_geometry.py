"""viewer.dicom.geometry: reference lines between axial, coronal and oblique images of known geometry, and the
nearest slice for linked scrolling."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from viewer.dicom.geometry import ImagePlane, nearest_slice, reference_line, series_geometry


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


def header(frame_uid="1.2.3", orientation=(1, 0, 0, 0, 1, 0), spacing=(0.5, 0.5), rows=400, columns=400):
    ds = Dataset()
    if frame_uid:
        ds.FrameOfReferenceUID = frame_uid
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = rows, columns
    return ds


def test_series_geometry_from_the_index_positions_and_one_header() -> None:
    positions = [(-100.0, -100.0, 2.0 * k) for k in range(5)]
    geometry = series_geometry(positions, header())
    assert geometry.frame_of_reference_uid == "1.2.3"
    assert geometry.plane(3) == axial(6.0)
    assert geometry.plane(5) is None
    coronal_series = series_geometry([(-100.0, 4.0 * k, 80.0) for k in range(3)],
                                     header(orientation=(1, 0, 0, 0, 0, -1), spacing=(1.0, 0.5), rows=160))
    assert coronal_series.plane(0) == coronal(0.0)
    assert not geometry.linkable_with(coronal_series)  # same frame, orthogonal slices: reference lines only
    assert geometry.linkable_with(series_geometry(positions[:2], header(spacing=(0.7, 0.7))))
    assert not geometry.linkable_with(series_geometry(positions, header(frame_uid="1.2.4")))


def test_series_without_frame_of_reference_or_geometry_is_not_linked() -> None:
    positions = [(0.0, 0.0, float(k)) for k in range(3)]
    assert series_geometry(positions, header(frame_uid="")) is None
    assert series_geometry(positions, header(spacing=(0.0, 0.5))) is None
    bad = header()
    bad.ImageOrientationPatient = [1, 0, 0]
    assert series_geometry(positions, bad) is None
    assert series_geometry([None, None], header()) is None  # a classic multi-frame without positions


def test_series_geometry_of_an_enhanced_multiframe_from_its_functional_groups() -> None:
    ds = header(rows=400, columns=400)
    del ds.ImageOrientationPatient, ds.PixelSpacing
    ds.NumberOfFrames = 3
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.5, 0.5]
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(3):
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [-100.0, -100.0, 10.0 * k]
        item.PlanePositionSequence = Sequence([position])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    geometry = series_geometry([None, None, None], ds)
    assert [geometry.plane(k) for k in range(3)] == [axial(0.0), axial(10.0), axial(20.0)]


def test_series_nearest_is_the_closest_depth_within_half_a_spacing() -> None:
    depths = (8.0, 0.0, 2.0, 4.0, 6.0, 10.5)  # any order, one uneven gap; mean spacing 2.1 mm
    geometry = series_geometry([(-100.0, -100.0, z) for z in depths], header())
    half = (10.5 - 0.0) / 5 / 2
    for z in np.arange(-3.0, 14.0, 0.25):
        point = (0.0, 0.0, float(z))
        if z < -half or z > 10.5 + half:
            expected = None
        else:  # written out: the smallest distance, the shallower slice on a tie
            expected = min(range(len(depths)), key=lambda i: (abs(depths[i] - z), depths[i]))
        assert geometry.nearest(point) == expected, z
        assert nearest_slice(geometry.planes, point) == expected, z


# -- crosshair: pixel -> patient point -> nearest slice and its pixel ------------------------------------------


def test_a_pixel_goes_to_the_patient_and_back() -> None:
    plane = axial(12.5)
    point = plane.to_patient(40.0, 100.0)  # row 40 is y -100 + 20, column 100 is x -100 + 50
    assert point == pytest.approx([-50.0, -80.0, 12.5])
    assert plane.to_pixel(point) == pytest.approx((40.0, 100.0))
    assert plane.distance(point) == pytest.approx(0.0)
    assert plane.distance((0.0, 0.0, 20.0)) == pytest.approx(7.5)  # axial normal is +z
    assert plane.contains_pixel(-0.5, 399.5) and not plane.contains_pixel(400.0, 0.0)


def test_locate_finds_the_nearest_slice_and_the_projection_on_it() -> None:
    from viewer.dicom.geometry import SeriesGeometry

    series = SeriesGeometry("1.2.3", tuple(axial(5.0 * k) for k in range(10)))  # z 0 .. 45
    located = series.locate((10.0, -40.0, 21.0))
    assert located is not None
    assert located.index == 4  # z 20
    assert (located.row, located.col) == pytest.approx((120.0, 220.0))  # (y + 100) / 0.5, (x + 100) / 0.5
    assert located.distance == pytest.approx(1.0)
    assert series.locate((0.0, 0.0, 47.0)).index == 9  # within half a spacing (2.5 mm) past the end
    assert series.locate((0.0, 0.0, 47.0)).distance == pytest.approx(2.0)
    assert series.locate((0.0, 0.0, 48.0)) is None  # beyond the slab
    assert series.locate((150.0, 0.0, 20.0)) is None  # x 150 lies outside the 200 mm image


def test_locate_projects_an_axial_point_onto_a_coronal_series() -> None:
    from viewer.dicom.geometry import SeriesGeometry

    series = SeriesGeometry("1.2.3", tuple(coronal(-40.0 + 4.0 * k) for k in range(20)))  # y -40 .. 36
    point = axial(30.0).to_patient(128.0, 250.0)  # x -100 + 125 = 25, y -100 + 64 = -36, z 30
    located = series.locate(point)
    assert located.index == 1  # y -36
    assert (located.row, located.col) == pytest.approx((50.0, 250.0))  # row (80 - 30) / 1.0, col (25 + 100) / 0.5
    assert abs(located.distance) == pytest.approx(0.0)
    # a frame offset moves the same point: prior z = current z + 200
    assert SeriesGeometry("p", tuple(axial(200.0 + 5.0 * k) for k in range(10))).locate(
        point + np.array([0.0, 0.0, 200.0])).index == 6  # z 230
