"""ViewportModel without Qt: state transitions and the events they emit."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from viewer.dicom.image import ImageInfo
from viewer.dicom.pixels import PRESETS, Window
from viewer.errors import MalformedDicomError
from viewer.ui import viewport_model as vm
from viewer.ui.viewport_model import Changed, ViewportModel


def info_with(windows: tuple = ()) -> ImageInfo:
    return ImageInfo(rows=4, columns=4, frames=1, samples_per_pixel=1, bits_allocated=16, bits_stored=16,
                     pixel_representation=1, photometric="MONOCHROME2", windows=windows, modality="CT")


class FakeSeries:
    """Enough of SeriesImages for the model: n frames, all loaded, one optional broken frame."""

    def __init__(self, n: int, windows: tuple = (), broken: int | None = None) -> None:
        self.n = n
        self.windows = windows
        self.broken = broken
        self.frames = [np.full((4, 4), 10 * i, dtype=np.int16) for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def info(self, i: int) -> ImageInfo:
        if i == self.broken:
            raise MalformedDicomError("The file is damaged.")
        return info_with(self.windows)

    def stored(self, i: int) -> np.ndarray:
        return self.frames[i]

    def is_loaded(self, i: int) -> bool:
        return True


@pytest.fixture
def model() -> tuple[ViewportModel, list[Changed]]:
    m = ViewportModel()
    events: list[Changed] = []
    m.changed.connect(events.append)
    m.set_series(FakeSeries(10, windows=(Window(40, 400),)))
    events.clear()
    return m, events


def test_model_module_does_not_import_qt():
    assert "PySide6" not in getattr(vm, "__dict__", {})
    source = open(vm.__file__, encoding="utf-8").read()
    assert "PySide6" not in source and "QtCore" not in source


def test_scroll_clamps_and_emits_index_once_per_change(model):
    m, events = model
    m.scroll(3)
    assert m.index == 3
    m.scroll(-100)
    assert m.index == 0
    m.scroll(-1)  # already at the start: no event
    m.scroll(100)
    assert m.index == 9
    assert [e.aspects for e in events] == [frozenset({vm.INDEX})] * 3


def test_set_index_clamps(model):
    m, _ = model
    m.set_index(42)
    assert m.index == 9
    m.set_index(-5)
    assert m.index == 0


def test_preset_and_window(model):
    m, events = model
    m.apply_preset("CT bone")
    assert m.window == PRESETS["CT bone"] == Window(400, 1800)
    assert events[-1].aspects == frozenset({vm.WINDOW})
    with pytest.raises(ValueError):
        m.apply_preset("no such preset")
    m.set_window(Window(10, -5))  # width is floored, never zero or negative
    assert m.window.width > 0


def test_effective_window_falls_back_to_file_then_minmax():
    m = ViewportModel()
    m.set_series(FakeSeries(3, windows=(Window(40, 400),)))
    assert m.window is None
    assert m.effective_window() == Window(40, 400)
    m.set_series(FakeSeries(3))  # no window in the file: min/max of the slice (values 10..10 at index 1)
    m.set_index(2)
    w = m.effective_window()
    assert w is not None and w.center == pytest.approx(20.5)


def test_effective_window_of_an_undecodable_slice_is_none():
    m = ViewportModel()
    m.set_series(FakeSeries(3, broken=1))
    m.set_index(1)
    assert m.effective_window() is None
    m.drag_window(10, 10)  # nothing to drag from: no change, no exception
    assert m.window is None


def test_drag_window_horizontal_width_vertical_centre_scaled_by_width(model):
    m, _ = model
    m.drag_window(256, 0)  # one full width per 256 px
    assert m.window == Window(40, 800)
    m.drag_window(0, 128)  # down raises the centre by half the (new) width
    assert m.window == Window(440, 800)
    m.drag_window(-100000, 0)
    assert m.window.width == pytest.approx(vm.WIDTH_MIN)


def test_zoom_keeps_anchor_fixed_and_is_bounded(model):
    m, events = model
    m.zoom_by(2.0, anchor=(100.0, 50.0))
    assert m.zoom == 2.0
    # The image point under the anchor was (100 - 0)/1 from the centre; now it is at pan + 2*(100) = 100.
    assert m.pan == (-100.0, -50.0)
    m.zoom_by(1e9)
    assert m.zoom == vm.ZOOM_MAX
    m.zoom_by(1e-12)
    assert m.zoom == vm.ZOOM_MIN
    m.zoom_by(float("nan"))
    assert m.zoom == vm.ZOOM_MIN
    assert all(e.aspects == frozenset({vm.VIEW}) for e in events)


def test_rotate_flip_pan_reset(model):
    m, events = model
    m.rotate(90)
    m.rotate(90)
    m.rotate(-270)
    assert m.rotation == 270
    with pytest.raises(ValueError):
        m.rotate(45)
    m.flip(horizontal=True)
    m.flip(horizontal=False)
    m.pan_by(5, -3)
    m.apply_preset("CT lung")
    m.toggle_invert()
    m.set_index(4)
    assert (m.flip_h, m.flip_v, m.pan, m.invert) == (True, True, (5, -3), True)
    events.clear()
    m.reset()
    assert (m.rotation, m.flip_h, m.flip_v, m.pan, m.zoom, m.window, m.invert) == (
        0, False, False, (0.0, 0.0), 1.0, None, False)
    assert m.index == 4  # reset keeps the slice
    assert len(events) == 1 and events[0].aspects == frozenset({vm.WINDOW, vm.INVERT, vm.VIEW})


def test_cine_wraps_and_fps_is_bounded(model):
    m, _ = model
    m.set_playing(True)
    assert m.playing
    m.set_index(9)
    m.advance_cine()
    assert m.index == 0
    m.set_cine_fps(1000)
    assert m.cine_fps == vm.CINE_FPS_MAX
    m.set_cine_fps(0)
    assert m.cine_fps == vm.CINE_FPS_MIN


def test_cine_does_not_play_a_single_slice():
    m = ViewportModel()
    m.set_series(FakeSeries(1))
    m.set_playing(True)
    assert not m.playing


def test_new_series_resets_view_and_stops_cine(model):
    m, events = model
    m.apply_preset("CT bone")
    m.zoom_by(3)
    m.set_playing(True)
    m.set_series(FakeSeries(5), index=2)
    assert (m.index, m.window, m.zoom, m.playing, m.count) == (2, None, 1.0, False, 5)
    assert vm.SERIES in events[-1].aspects


def test_empty_model_is_harmless():
    m = ViewportModel()
    m.scroll(1)
    m.advance_cine()
    m.drag_window(5, 5)
    assert (m.count, m.index, m.effective_window()) == (0, 0, None)


def test_callback_may_disconnect_itself(model):
    m, _ = model
    calls = []

    def once(event):
        calls.append(event)
        m.changed.disconnect(once)

    m.changed.connect(once)
    m.scroll(1)
    m.scroll(1)
    assert len(calls) == 1


def test_no_qt_loaded_by_model_import():
    import subprocess

    code = "import sys, viewer.ui.viewport_model; print(any(k.startswith('PySide6') for k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
