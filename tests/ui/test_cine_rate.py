"""Cine at the acquisition's rate in the main window (pytest-qt; state, not timing): a 30 fps multi-frame sets the
fps box and the model to 30 and plays on its own clock; the overlay shows the measured rate while playing; the user
can override the rate and go back to the acquisition's by choosing it again."""

from __future__ import annotations

import re

import pydicom
import pytest

from tests.dicom.generated import cine_dataset

pytestmark = pytest.mark.gui


@pytest.fixture
def loop_uid(tmp_path, library) -> str:
    ds = cine_dataset(frames=30, size=64)  # Frame Time 33.3333 ms
    path = tmp_path / "loop.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    library.store_file(path)
    return ds.SeriesInstanceUID


def test_a_30_fps_series_plays_at_30_fps(qtbot, make_window, library, loop_uid) -> None:
    window = make_window(library)
    assert window.open_series(loop_uid)
    view, m = window.viewport, window.viewport.model
    qtbot.waitUntil(lambda: view.displayed_array() is not None, timeout=5000)
    assert m.count == 30 and m.plays_acquisition_rate
    assert m.cine_fps == pytest.approx(30.0, abs=0.01) and window.fps_box.value() == 30
    assert "Frame Time" in window.fps_box.toolTip()

    window.cine_action.trigger()
    assert m.playing
    rate_line = re.compile(r"^Cine \d+\.\d fps$")
    qtbot.waitUntil(lambda: any(rate_line.match(t) for t in view.overlay_lines()["bottom_right"]), timeout=5000)

    window.fps_box.setValue(12)  # the reader's own rate: every frame evenly
    assert not m.plays_acquisition_rate and m.cine_timing().rate_fps == pytest.approx(12.0)
    window.fps_box.setValue(30)  # the acquisition's rate again: its own clock
    assert m.plays_acquisition_rate and m.cine_timing() is m.acquisition_timing

    window.cine_action.trigger()
    assert not m.playing
    assert not any(t.startswith("Cine") for t in view.overlay_lines()["bottom_right"])


def test_a_series_without_timing_keeps_the_users_rate(qtbot, make_window, ct_series) -> None:
    window = make_window(ct_series.library)
    window.fps_box.setValue(25)
    window.open_series(ct_series.series_uid)
    m = window.viewport.model
    assert m.acquisition_timing is None and m.cine_fps == 25 and window.fps_box.value() == 25
