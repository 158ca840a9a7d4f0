"""3D / MPR from the main window (pytest-qt): the volume is built in a worker with progress and Cancel, the
reading window shows MPR and volume rendering of the open series, a series that cannot be a volume says why
without a window, and the memory cap of the settings downsamples with a visible note."""

from __future__ import annotations

import numpy as np
import pytest

from viewer.settings import Settings

pytestmark = pytest.mark.gui


def test_the_open_series_opens_in_mpr_and_3d(qtbot, make_window, ct_series) -> None:
    window = make_window(ct_series.library)
    assert window.open_series(ct_series.series_uid)
    with qtbot.waitSignal(window.volume_opened, timeout=20000) as opened:
        window.open_3d_action.trigger()
    reading = opened.args[0]
    qtbot.waitExposed(reading)
    volume = reading.volume
    assert volume.data.shape == (8, 64, 64)
    series = window.viewport.model.series  # the 2D view's own decoding is the reference
    first = series.stored(0).astype(np.int32) * int(series.info(0).rescale_slope) + int(series.info(0).rescale_intercept)
    axial_slices = {int(np.rint(volume.geometry.to_index(series.frame_ref(i).position)[0])) for i in range(len(series))}
    assert axial_slices == set(range(8))  # every slice landed where its position says
    k0 = int(np.rint(volume.geometry.to_index(series.frame_ref(0).position)[0]))
    assert np.array_equal(volume.data[k0], first)
    reading.mpr.set_crosshair(volume.geometry.to_patient((k0, 20, 30)))
    axial = reading.mpr.views["axial"].image
    assert np.array_equal(axial.data, first)  # an axial acquisition: the axial plane is the slice itself
    reading.volume_view.set_preset("MIP")
    assert (reading.volume_view.scene.frame().max(axis=2) > 40).mean() > 0.02
    assert not reading.notes.isVisible()


def test_a_series_that_is_no_volume_says_why(qtbot, make_window, tmp_path, library) -> None:
    from tests.ui.conftest import write_ct_series
    from viewer.library import import_paths

    study_uid, series_uid, paths = write_ct_series(tmp_path / "one", n=1)
    import_paths(library, paths)
    window = make_window(library)
    assert window.open_series(series_uid)
    window.open_3d_action.trigger()
    qtbot.waitUntil(lambda: window.message_box is not None and window.message_box.isVisible(), timeout=10000)
    assert "at least 3 slices" in window.message_box.text()
    assert window.reading_windows == []
    assert window.viewport.displayed_array() is not None  # the 2D view goes on


def test_the_memory_cap_downsamples_with_a_note(qtbot, make_window, ct_series) -> None:
    window = make_window(ct_series.library, Settings(volume_memory_mib=64))
    window.open_series(ct_series.series_uid)
    from viewer.dicom import volume as volume_module

    original = volume_module.assemble

    def tiny_cap(series, *, bytes_max, **kw):  # 64 MiB is the smallest setting; this series needs 64 KiB
        assert bytes_max == 64 << 20
        return original(series, bytes_max=32 * 1024, **kw)

    from viewer.ui import main_window as mw
    mw.assemble = tiny_cap
    try:
        with qtbot.waitSignal(window.volume_opened, timeout=20000) as opened:
            window.open_3d()
    finally:
        mw.assemble = original
    reading = opened.args[0]
    assert reading.volume.data.shape == (8, 32, 32)
    assert reading.notes.isVisible() and "1/2 of its in-plane resolution" in reading.notes.text()


def test_cancel_leaves_no_window(qtbot, make_window, ct_series) -> None:
    window = make_window(ct_series.library)
    window.open_series(ct_series.series_uid)
    import threading

    from viewer.ui import main_window as mw

    release = threading.Event()
    original = mw.assemble

    def slow(series, *, cancel, **kw):
        release.wait(10)
        return original(series, cancel=cancel, **kw)

    mw.assemble = slow
    try:
        job = window.open_3d()
        assert job is not None and window.busy
        job.cancel()
        release.set()
        qtbot.waitUntil(lambda: not window.busy, timeout=10000)
    finally:
        mw.assemble = original
    assert window.reading_windows == []
