"""viewer.ui.render3d (VTK, offscreen) on the sphere phantom: every preset draws real pixels where the sphere
projects, the presets differ, the transfer-function shift changes the picture, the snapshot is a real PNG, and
level of detail does not move anything."""

from __future__ import annotations

import numpy as np
import pytest
from vtkmodules.util import numpy_support
from vtkmodules.vtkIOImage import vtkPNGReader

from tests.dicom.test_volume import CENTRE, RADIUS, phantom_volume, voxel_points
from viewer.ui.render3d import PRESETS, VolumeScene

pytestmark = pytest.mark.gui

SIZE = (200, 200)


@pytest.fixture(scope="module")
def scene():
    volume = phantom_volume()
    # three tissues, so that each preset has something of its own to show: the bone-like sphere (1000 HU), a
    # soft-tissue shell around it (40 HU), lung-like air beyond (-850 HU)
    distance = np.linalg.norm(voxel_points(volume) - CENTRE, axis=-1)
    volume.data[:] = np.where(distance <= RADIUS, 1000, np.where(distance <= RADIUS + 6, 40, -850))
    s = VolumeScene(volume, size=SIZE, mapper="cpu")
    yield s
    s.close()


def projected_centre(scene: VolumeScene) -> tuple[float, float]:
    """Where the sphere's centre lands on screen (row, column from the top left)."""
    renderer = scene.renderer
    renderer.SetWorldPoint(*CENTRE, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return SIZE[1] - 1 - y, x


def drawn(frame: np.ndarray) -> np.ndarray:
    return frame.max(axis=2) > 20


def test_every_preset_draws_the_sphere_where_it_projects(scene: VolumeScene) -> None:
    frames = {}
    for name in PRESETS:
        scene.set_preset(name)
        scene.reset_camera()
        scene.render()
        frame = scene.frame()
        assert frame.shape == (SIZE[1], SIZE[0], 3)
        mask = drawn(frame)
        assert mask.mean() > 0.01, f"{name} drew (almost) nothing"
        frames[name] = frame
    # MIP of a sphere: a disc centred on the projected centre, about the projected diameter wide
    scene.set_preset("MIP")
    scene.reset_camera()
    scene.render()
    mip = scene.frame().max(axis=2) > 200
    rows, cols = np.nonzero(mip)
    r, c = projected_centre(scene)
    assert abs(rows.mean() - r) < 3 and abs(cols.mean() - c) < 3
    camera = scene.renderer.GetActiveCamera()
    scale = SIZE[1] / (2 * np.tan(np.radians(camera.GetViewAngle() / 2)) * camera.GetDistance())  # px per mm
    assert (cols.max() - cols.min()) == pytest.approx(2 * RADIUS * scale, rel=0.15)
    names = list(frames)
    for i, a in enumerate(names):  # each preset looks different from every other
        for b in names[i + 1:]:
            assert np.abs(frames[a].astype(int) - frames[b].astype(int)).mean() > 1.0, (a, b)


def test_the_transfer_shift_changes_the_picture(scene: VolumeScene) -> None:
    scene.set_preset("CT bone")
    scene.render()
    before = scene.frame()
    scene.shift_transfer(+1200)  # the bone window moved beyond the sphere's 1000 HU: it disappears
    scene.render()
    after = scene.frame()
    assert drawn(before).mean() > 0.01 and drawn(after).mean() < drawn(before).mean() / 4
    scene.set_preset("CT bone")  # a preset resets the shift
    assert scene.shift == (0.0, 1.0)


def test_level_of_detail_keeps_the_picture_in_place(scene: VolumeScene) -> None:
    scene.set_preset("MIP")
    scene.reset_camera()
    scene.set_interacting(True)
    scene.render()
    coarse = drawn(scene.frame())
    scene.set_interacting(False)
    scene.render()
    fine = drawn(scene.frame())
    assert (coarse ^ fine).mean() < 0.02  # the same disc, only the edge pixels differ


def test_rotation_moves_an_off_centre_sphere(scene: VolumeScene) -> None:
    scene.set_preset("MIP")
    scene.reset_camera()
    scene.render()
    start = projected_centre(scene)
    scene.rotate(90)
    scene.render()
    turned = projected_centre(scene)
    rows, cols = np.nonzero(scene.frame().max(axis=2) > 200)
    assert abs(cols.mean() - turned[1]) < 3
    assert abs(turned[1] - start[1]) > 2  # the sphere is off the rotation axis, so it moved sideways


def test_snapshot_is_a_real_png(scene: VolumeScene, tmp_path) -> None:
    scene.set_preset("CT bone")
    scene.reset_camera()
    path = scene.snapshot(tmp_path / "view.png")
    reader = vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    width, height, _ = reader.GetOutput().GetDimensions()
    assert (width, height) == SIZE
    pixels = numpy_support.vtk_to_numpy(reader.GetOutput().GetPointData().GetScalars())
    assert pixels.max() > 100 and pixels.std() > 5
