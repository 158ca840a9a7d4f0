"""viewer.dicom.volume on synthetic stacks of known geometry: ordering, the voxel-to-patient mapping, a sphere
of known radius at a known off-centre position under anisotropic spacing and a tilted orientation, non-uniform
spacing, missing slices, gantry tilt, the memory cap, and every refusal with its sentence."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from viewer.dicom.volume import (
    SliceGeometry,
    build_volume,
    enhanced_frame_geometries,
    plan_volume,
)
from viewer.errors import OperationCancelled, VolumeError

CENTRE = np.array([12.0, -7.5, 30.0])  # the sphere's centre, patient mm (off the volume's centre)
RADIUS = 20.0
INSIDE, OUTSIDE = 1000, -1000  # HU


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    a = math.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def stack(*, rows=64, cols=80, count=40, row_spacing=0.9, col_spacing=0.7, slice_gaps=None, tilt_mm=(0.0, 0.0),
          turn_degrees=0.0, slope=1.0, intercept=-1024.0, origin=(-30.0, -25.0, 5.0), directions=None):
    """Slices through the sphere: returns (geometries, pixels by key).  Each pixel's patient position is
    computed from its slice's own position and orientation, exactly as a scanner would record it."""
    r = rotation(np.array([1.0, 2.0, 0.5]), turn_degrees)
    row_dir, col_dir = (np.asarray(d, dtype=float) for d in directions) if directions else (
        r @ np.array([1.0, 0, 0]), r @ np.array([0, 1.0, 0]))
    normal = np.cross(row_dir, col_dir)
    gaps = slice_gaps if slice_gaps is not None else [1.5] * (count - 1)
    z = np.concatenate([[0.0], np.cumsum(gaps)])
    geoms, pixels = [], {}
    jj, ii = np.mgrid[0:rows, 0:cols]
    for k, dz in enumerate(z):
        lean = np.array(tilt_mm) * k  # a gantry tilt: each slice's origin slides in the plane
        position = np.asarray(origin) + normal * dz + row_dir * lean[0] + col_dir * lean[1]
        points = (position[None, None, :] + ii[..., None] * col_spacing * row_dir
                  + jj[..., None] * row_spacing * col_dir)
        hu = np.where(np.linalg.norm(points - CENTRE, axis=-1) <= RADIUS, INSIDE, OUTSIDE)
        stored = np.rint((hu - intercept) / slope).astype(np.int16)
        key = f"s{k}"
        pixels[key] = stored
        geoms.append(SliceGeometry(key, tuple(position), (*row_dir, *col_dir), (row_spacing, col_spacing), rows, cols,
                                   slope, intercept))
    return geoms, pixels


def build(geoms, pixels, **kw):
    plan = plan_volume(geoms, **kw)
    return plan, build_volume(plan, pixels.__getitem__)


PHANTOM = dict(rows=96, cols=96, count=64, row_spacing=0.8, col_spacing=0.6, slice_gaps=[1.2] * 63)


def phantom_volume(**kw):
    """The sphere phantom the 3D tests share: 96 x 96 x 64 anisotropic voxels (0.8 x 0.6 x 1.2 mm), acquired
    axially from (-20, -40, 2) unless `kw` says otherwise."""
    geoms, pixels = stack(**{"origin": (-20.0, -40.0, 2.0), **PHANTOM, **kw})
    return build(geoms, pixels)[1]


def voxel_points(volume) -> np.ndarray:
    """The patient position (x, y, z) of every voxel, shaped (slices, rows, columns, 3)."""
    k, j, i = np.indices(volume.geometry.shape)
    return (np.stack([i, j, k, np.ones_like(i)], axis=-1) @ volume.geometry.matrix().T)[..., :3]


def sphere_extent_mm(volume, axis_vector: np.ndarray) -> float:
    """Length of the sphere's chord through its centre along `axis_vector`, from the voxels (inside = > 0)."""
    g = volume.geometry
    hits = []
    for t in np.arange(-RADIUS * 1.5, RADIUS * 1.5, 0.1):
        k, j, i = np.rint(g.to_index(CENTRE + t * axis_vector)).astype(int)
        if 0 <= k < g.shape[0] and 0 <= j < g.shape[1] and 0 <= i < g.shape[2] and volume.data[k, j, i] > 0:
            hits.append(t)
    return max(hits) - min(hits) if hits else 0.0


def test_slices_are_ordered_and_the_geometry_maps_voxels_to_the_patient() -> None:
    geoms, pixels = stack()
    shuffled = geoms[::2] + geoms[1::2]
    plan, volume = build(shuffled, pixels)
    assert [s.key for s in plan.slices] == [s.key for s in geoms]
    assert volume.data.shape == (40, 64, 80) and volume.data.dtype == np.int16
    assert volume.geometry.spacing == pytest.approx((1.5, 0.9, 0.7))
    for k in (0, 17, 39):  # voxel (k, 0, 0) is slice k's Image Position (Patient)
        assert volume.geometry.to_patient((k, 0, 0)) == pytest.approx(np.array(geoms[k].position))
    assert volume.geometry.to_index(volume.geometry.to_patient((3, 5, 7))) == pytest.approx([3, 5, 7])
    assert volume.warnings == []


@pytest.mark.parametrize("turn", [0.0, 23.0])
def test_a_sphere_keeps_its_place_and_size_under_anisotropic_spacing_and_a_tilted_orientation(turn: float) -> None:
    geoms, pixels = stack(turn_degrees=turn, rows=96, cols=96, count=60, row_spacing=0.8, col_spacing=0.6,
                          slice_gaps=[1.2] * 59, origin=(-20.0, -40.0, 2.0))
    _, volume = build(geoms, pixels)
    k, j, i = np.rint(volume.geometry.to_index(CENTRE)).astype(int)
    assert volume.data[k, j, i] == INSIDE  # HU, rescale applied
    for axis in np.eye(3):  # patient x, y and z: the chord through the centre is the diameter, within a voxel
        assert sphere_extent_mm(volume, axis) == pytest.approx(2 * RADIUS, abs=1.5)


def test_non_uniform_spacing_is_resampled_with_a_warning() -> None:
    gaps = [1.0] * 10 + [1.5] * 10 + [1.0] * 9
    geoms, pixels = stack(slice_gaps=gaps, count=30)
    for g in geoms:  # a ramp along the normal: interpolation must reproduce it exactly
        pixels[g.key] = np.full((g.rows, g.columns), int(round(np.dot(g.position, [0, 0, 1]) * 10)), np.int16)
    plan, volume = build(geoms, pixels)
    assert plan.resample_z and "not uniform" in volume.warnings[0]
    step = volume.geometry.spacing[0]
    assert step == pytest.approx(1.0)
    z0 = geoms[0].position[2]
    for k in range(volume.data.shape[0]):
        expected = (z0 + k * step) * 10 - 1024
        assert abs(float(volume.data[k, 3, 3]) - expected) <= 1.0


def test_missing_slices_are_named() -> None:
    gaps = [1.5] * 10 + [4.5] + [1.5] * 10  # two slices missing
    geoms, pixels = stack(slice_gaps=gaps, count=22)
    plan = plan_volume(geoms)
    assert "About 2 slice(s) seem to be missing" in plan.warnings[0]
    assert plan.geometry.shape[0] == 24


def test_huge_gaps_are_refused_not_invented() -> None:
    geoms, _ = stack(slice_gaps=[1.5] * 5 + [40.0] + [1.5] * 5, count=12)
    with pytest.raises(VolumeError, match="too much would be invented"):
        plan_volume(geoms)


def test_gantry_tilt_is_corrected_so_the_sphere_stays_where_it_is() -> None:
    geoms, pixels = stack(tilt_mm=(0.0, 0.4), count=50, rows=80, cols=80, origin=(-20.0, -40.0, 2.0))
    plan, volume = build(geoms, pixels)
    assert any("gantry tilt of 14.9 degrees" in w for w in plan.warnings)
    k, j, i = np.rint(volume.geometry.to_index(CENTRE)).astype(int)
    assert volume.data[k, j, i] == INSIDE
    assert sphere_extent_mm(volume, np.array([0, 1.0, 0])) == pytest.approx(2 * RADIUS, abs=1.5)
    assert sphere_extent_mm(volume, np.array([0, 0, 1.0])) == pytest.approx(2 * RADIUS, abs=2.0)


def test_the_memory_cap_downsamples_or_refuses() -> None:
    geoms, pixels = stack(rows=64, cols=80, count=40)
    full = 40 * 64 * 80 * 2
    plan, volume = build(geoms, pixels, bytes_max=full // 3)
    assert plan.downsample == 2 and volume.data.shape == (40, 32, 40)
    assert "1/2 of its in-plane resolution" in volume.warnings[0]
    assert volume.geometry.spacing == pytest.approx((1.5, 1.8, 1.4))
    k, j, i = np.rint(volume.geometry.to_index(CENTRE)).astype(int)
    assert volume.data[k, j, i] == INSIDE  # still in the right place
    with pytest.raises(VolumeError, match="more than the 0 MiB allowed"):
        plan_volume(geoms, bytes_max=full // 3, allow_downsample=False)


def test_rescale_decides_the_type() -> None:
    geoms, pixels = stack(slope=0.5, intercept=-1000.0)
    _, volume = build(geoms, pixels)
    assert volume.data.dtype == np.float32
    k, j, i = np.rint(volume.geometry.to_index(CENTRE)).astype(int)
    assert volume.data[k, j, i] == pytest.approx(INSIDE)


def _with(geoms, index, **changes):
    from dataclasses import replace
    out = list(geoms)
    out[index] = replace(out[index], **changes)
    return out


@pytest.mark.parametrize(("change", "message"), [
    (lambda g: g[:2], "at least 3 slices"),
    (lambda g: _with(g, 3, orientation=(0, 1.0, 0, 0, 0, -1.0)), "different orientations"),
    (lambda g: _with(g, 3, rows=63), "different sizes"),
    (lambda g: _with(g, 3, pixel_spacing=(1.0, 1.0)), "different pixel spacings"),
    (lambda g: _with(g, 3, position=g[4].position), "several volumes"),
    (lambda g: _with(g, 3, position=None), "no position or orientation"),
    (lambda g: _with(g, 3, samples_per_pixel=3), "Colour images"),
])
def test_refusals_say_why_and_that_2d_still_works(change, message: str) -> None:
    geoms, _ = stack(count=8)
    with pytest.raises(VolumeError, match=message):
        plan_volume(change(geoms))


def test_cancel_stops_the_build() -> None:
    geoms, pixels = stack()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        build_volume(plan_volume(geoms), pixels.__getitem__, cancel=cancel)


def test_a_slice_that_decodes_to_another_size_is_refused() -> None:
    geoms, pixels = stack(count=5)
    pixels[geoms[2].key] = np.zeros((10, 10), np.int16)
    with pytest.raises(VolumeError, match="decoded to 10x10"):
        build_volume(plan_volume(geoms), pixels.__getitem__)


def test_enhanced_multiframe_functional_groups() -> None:
    header = Dataset()
    shared = Dataset()
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.6]
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    header.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in range(4):
        frame = Dataset()
        plane = Dataset()
        plane.ImagePositionPatient = [0, 0, 2.0 * (3 - k)]  # stored top down
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
        frame.PlanePositionSequence = Sequence([plane])
        frame.PixelValueTransformationSequence = Sequence([transform])
        frames.append(frame)
    header.PerFrameFunctionalGroupsSequence = Sequence(frames)
    geoms = enhanced_frame_geometries(header, 4, 8, 8)
    assert geoms is not None and [g.key for g in geoms] == [0, 1, 2, 3]
    assert geoms[0].pixel_spacing == (0.5, 0.6) and geoms[0].rescale_intercept == -1024
    plan = plan_volume(geoms)
    assert [s.key for s in plan.slices] == [3, 2, 1, 0] and plan.geometry.spacing == pytest.approx((2.0, 0.5, 0.6))
    assert enhanced_frame_geometries(Dataset(), 4, 8, 8) is None
