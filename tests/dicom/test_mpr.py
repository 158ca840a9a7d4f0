"""viewer.dicom.mpr on the sphere phantom of test_volume: in each plane the sphere is a disc of the right
diameter centred on the crosshair, for an aligned and for an obliquely acquired volume; screen orientation
conventions; thick slabs; scrolling."""

from __future__ import annotations

import numpy as np
import pytest

from tests.dicom.test_volume import CENTRE, INSIDE, RADIUS, build, phantom_volume, stack, voxel_points
from viewer.dicom.mpr import PLANES, Mpr


def disc(image) -> tuple[float, float, float]:
    """(row centre, column centre, diameter in mm along the row through the centre) of the inside pixels."""
    inside = image.data > 0
    rows, cols = np.nonzero(inside)
    r, c = rows.mean(), cols.mean()
    line = inside[int(round(r))]
    diameter = line.sum() * image.spacing[1]
    return float(r), float(c), float(diameter)


ACQUISITIONS = {
    "axial": dict(origin=(-20.0, -40.0, 2.0)),
    "oblique": dict(turn_degrees=23.0, origin=(-20.0, -40.0, 2.0)),
    # rows run posterior, columns inferior, slices from the patient's left to right (normal -x)
    "sagittal": dict(directions=((0, 1.0, 0), (0, 0, -1.0)), origin=(40.0, -45.0, 65.0)),
    "coronal": dict(directions=((1.0, 0, 0), (0, 0, -1.0)), origin=(-25.0, -45.0, 65.0)),
}


@pytest.fixture(scope="module", params=list(ACQUISITIONS))
def mpr(request) -> Mpr:
    volume = phantom_volume(**ACQUISITIONS[request.param])
    m = Mpr(volume)
    assert m.aligned == (request.param != "oblique")
    m.set_crosshair(CENTRE)
    return m


def test_each_plane_shows_the_sphere_as_a_disc_centred_on_the_crosshair(mpr: Mpr) -> None:
    for name in PLANES:
        image = mpr.plane(name)
        r, c, diameter = disc(image)
        tolerance_px = 1.5 * max(mpr.volume.geometry.spacing) / min(image.spacing)
        assert abs(r - image.crosshair[0]) <= tolerance_px and abs(c - image.crosshair[1]) <= tolerance_px, name
        assert diameter == pytest.approx(2 * RADIUS, abs=2.0), name
        assert image.to_patient(*image.crosshair) == pytest.approx(CENTRE, abs=1.0)
        row, col = (int(round(v)) for v in image.crosshair)
        assert image.data[row, col] == pytest.approx(INSIDE, abs=1)


def test_screen_conventions(mpr: Mpr) -> None:
    # move the crosshair towards the patient's left, posterior and superior and see where each plane puts it
    base = {p: mpr.plane(p).crosshair for p in PLANES}
    mpr.set_crosshair(CENTRE + np.array([5.0, 5.0, 5.0]))
    moved = {p: mpr.plane(p).crosshair for p in PLANES}
    mpr.set_crosshair(CENTRE)
    assert moved["axial"][1] > base["axial"][1]  # patient left on the screen's right
    assert moved["axial"][0] > base["axial"][0]  # posterior at the bottom (anterior up)
    assert moved["coronal"][0] < base["coronal"][0]  # superior at the top
    assert moved["sagittal"][1] > base["sagittal"][1]  # posterior on the right (anterior on the left)


def test_scrolling_moves_one_slice_along_the_viewing_direction(mpr: Mpr) -> None:
    start = mpr.crosshair.copy()
    mpr.scroll("axial", 3)
    assert mpr.crosshair - start == pytest.approx([0, 0, 3 * mpr.step_mm("axial")], abs=1e-6)
    mpr.set_crosshair(CENTRE)


def test_a_thick_slab_projects_what_lies_beside_the_plane() -> None:
    geoms, pixels = stack(rows=64, cols=64, count=40, slice_gaps=[1.0] * 39)
    _, volume = build(geoms, pixels)
    volume.data[:] = -1000
    k, j, i = 20, 30, 30
    volume.data[k + 3, j, i] = 3000  # 3 mm above the axial plane through slice 20
    volume.data[k - 2, j + 5, i] = -2000
    m = Mpr(volume)
    m.set_crosshair(volume.geometry.to_patient((k, j, i)))
    thin = m.plane("axial")
    assert thin.data.max() == -1000
    mip = m.plane("axial", slab_mm=8, mode="mip")
    assert mip.data.max() == 3000
    assert m.plane("axial", slab_mm=8, mode="minip").data.min() == -2000
    mean = m.plane("axial", slab_mm=8, mode="mean")
    assert mean.data.max() == pytest.approx(-1000 + 4000 / 9)  # 9 slices: 20 +- 4
    assert m.plane("axial", slab_mm=4, mode="mip").data.max() == -1000  # the bright voxel is outside 20 +- 2


def test_bad_arguments() -> None:
    geoms, pixels = stack(count=5)
    _, volume = build(geoms, pixels)
    with pytest.raises(ValueError, match="unknown plane"):
        Mpr(volume).plane("oblique")
    with pytest.raises(ValueError, match="unknown slab mode"):
        Mpr(volume).plane("axial", slab_mm=4, mode="max")


def test_rotated_planes_still_cut_the_sphere_through_its_centre(mpr: Mpr) -> None:
    try:
        mpr.rotate("axial", 30.0)
        assert not mpr.is_rotated("axial") and mpr.is_rotated("coronal") and mpr.is_rotated("sagittal")
        for name in ("coronal", "sagittal"):
            right, down = mpr.axes(name)
            assert float(right @ down) == pytest.approx(0.0, abs=1e-9)
            assert float(mpr.normal(name) @ mpr.normal("axial")) == pytest.approx(0.0, abs=1e-9)  # still upright
            image = mpr.plane(name)
            r, c, diameter = disc(image)
            assert diameter == pytest.approx(2 * RADIUS, abs=2.0), name
            assert abs(r - image.crosshair[0]) <= 2 and abs(c - image.crosshair[1]) <= 2, name
            assert image.to_patient(*image.crosshair) == pytest.approx(CENTRE, abs=1.0)
        coarse = mpr.plane("coronal", pixels_max=64)  # the interactive level of detail
        assert max(coarse.data.shape) <= 64 and disc(coarse)[2] == pytest.approx(2 * RADIUS, abs=4.0)
    finally:
        mpr.reset_rotation()
    assert not mpr.rotated


def rod_volume(direction):
    """The sphere phantom's volume with its contents replaced by a rod 3 mm thick through CENTRE along
    `direction` (unit, patient)."""
    volume = phantom_volume()
    rel = voxel_points(volume) - CENTRE
    along = rel @ direction
    distance = np.linalg.norm(rel - along[..., None] * direction, axis=-1)
    volume.data[...] = np.where(distance <= 1.5, INSIDE, -INSIDE).astype(volume.data.dtype)
    return volume


def stripe_mm(image) -> float:
    """Length of the inside run on the crosshair's row."""
    row = image.data[int(round(image.crosshair[0]))] > 0
    return float(row.sum() * image.spacing[1])


def test_a_rotation_brings_an_oblique_rod_into_the_coronal_plane() -> None:
    angle = np.radians(30.0)
    mpr = Mpr(rod_volume(np.array([np.cos(angle), np.sin(angle), 0.0])))  # in the axial plane, 30 deg off x
    mpr.set_crosshair(CENTRE)
    assert stripe_mm(mpr.plane("coronal")) < 8.0  # the straight coronal plane cuts the rod across
    mpr.rotate("axial", -30.0)  # the wrong way: 60 degrees off
    assert stripe_mm(mpr.plane("coronal")) < 8.0
    mpr.reset_rotation()
    mpr.rotate("axial", 30.0)  # clockwise on the axial screen (towards posterior): along the rod
    assert stripe_mm(mpr.plane("coronal")) > 40.0
    assert mpr.axes("coronal")[0] == pytest.approx([np.cos(angle), np.sin(angle), 0.0], abs=1e-9)
    with pytest.raises(ValueError):
        mpr.rotate("oblique", 5.0)


def test_a_crosshair_move_within_a_turned_plane_reuses_its_image() -> None:
    mpr = Mpr(phantom_volume())
    mpr.set_crosshair(CENTRE)
    mpr.rotate("axial", 25.0)
    first = mpr.plane("coronal")
    mpr.scroll("axial", 4)  # along z: inside the turned coronal plane
    moved = mpr.plane("coronal")
    assert moved.data is first.data  # not resampled again
    assert moved.crosshair[0] == pytest.approx(first.crosshair[0] - 4 * mpr.step_mm("axial") / first.spacing[0])
    assert moved.to_patient(*moved.crosshair) == pytest.approx(mpr.crosshair, abs=1e-6)
    mpr.scroll("coronal", 2)  # across it: a new image
    assert mpr.plane("coronal").data is not first.data
