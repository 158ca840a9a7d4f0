"""Hanging protocols and Link here in the main window (pytest-qt): which series lands in which viewport, with
which window; the display-set keys; a broken rules file; linking a prior of another frame of reference by eye.

The studies are generated (tests/reading/hanging_studies.py); expected slices come from the positions written
into the files, not from the code under test."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt

from tests.reading.hanging_studies import brain_mr, chest_ct, mammography
from tests.ui.screenshots import save_screenshots, screenshot_dir
from tests.ui.test_layouts import CORONAL, PIXEL_MM, cyan_rows, store_series, z_of
from viewer.dicom.pixels import PRESETS

pytestmark = pytest.mark.gui


@pytest.fixture
def window(qtbot, make_window, library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MIFAS_SYSTEM_CONFIG_DIR", str(tmp_path / "etc"))
    monkeypatch.setenv("MIFAS_CONFIG_DIR", str(tmp_path / "home"))
    made = make_window(library, resume_jobs=False)
    made.activateWindow()  # shortcuts reach the active window only
    qtbot.waitUntil(made.isActiveWindow, timeout=3000)
    return made


def shown(window, library) -> list[str | None]:
    """The series UID each visible viewport shows, read from the frames its model holds."""
    out = []
    for v in window.grid.visible_viewports():
        series = v.model.series
        out.append(library.instance(series.frame_ref(0).sop_instance_uid).series_uid if series else None)
    return out


def test_opening_a_ct_study_with_its_prior_hangs_the_protocol_and_steps_display_sets(qtbot, window, library,
                                                                                      tmp_path) -> None:
    current, prior = chest_ct(library), chest_ct(library, z0=200.0, lung="Lung 1.25mm")
    with qtbot.waitSignal(window.study_opened, timeout=5000):
        assert window.open_study(current.uid, prior_uid=prior.uid)
    assert window.grid.layout_name == "1x2"
    assert shown(window, library) == [current.series["lung"], prior.series["lung"]]
    assert [v.model.window for v in window.grid.visible_viewports()] == [PRESETS["CT lung"]] * 2
    assert window.hanging.status_text == "CT chest with prior - 1/3 Lung"
    assert window.grid.active is window.grid.viewports[0]
    window.resize(1000, 560)
    qtbot.waitUntil(lambda: all(v.displayed_array() is not None for v in window.grid.visible_viewports()))
    save_screenshots({"hanging-ct-chest-with-prior.png": window.grid.grab()}, screenshot_dir(tmp_path))
    # N: the next display set; Shift+N: back; N from the last wraps to the first
    qtbot.keyClick(window.grid.active, Qt.Key.Key_N)
    assert shown(window, library) == [current.series["mediastinum"], prior.series["mediastinum"]]
    assert [v.model.window for v in window.grid.visible_viewports()] == [PRESETS["CT abdomen"]] * 2
    assert window.hanging.status_text == "CT chest with prior - 2/3 Mediastinum"
    qtbot.keyClick(window.grid.active, Qt.Key.Key_N, Qt.KeyboardModifier.ShiftModifier)
    assert window.hanging.status_text.startswith("CT chest with prior - 1/3")
    window.hanging.previous_action.trigger()
    assert window.hanging.status_text == "CT chest with prior - 3/3 Bone"
    assert [v.model.window for v in window.grid.visible_viewports()] == [PRESETS["CT bone"]] * 2
    window.hanging.next_action.trigger()
    assert shown(window, library) == [current.series["lung"], prior.series["lung"]]


def test_mr_brain_fills_a_2x2_and_leaves_an_unmatched_viewport_empty(qtbot, window, library) -> None:
    study = brain_mr(library, with_dwi=False)
    window.set_layout("2x2")
    window.open_series(study.series["localizer"], window.grid.viewports[3])  # what was there goes away
    assert window.open_study(study.uid)
    assert window.grid.layout_name == "2x2"
    assert shown(window, library) == [study.series["t1"], study.series["t2"], study.series["flair"], None]
    assert window.grid.viewports[3].message.startswith("No series open")


def test_mammography_hangs_each_view_mirrored(qtbot, window, library) -> None:
    study = mammography(library)
    assert window.open_study(study.uid)
    viewports = window.grid.visible_viewports()
    shown_images = [v.model.series.frame_ref(v.model.index).sop_instance_uid for v in viewports]
    assert shown_images == [study.instances[name] for name in ("RCC", "LCC", "RMLO", "LMLO")]
    assert [v.model.flip_h for v in viewports] == [True, False, True, False]


def test_a_broken_rules_file_is_a_sentence_and_the_shipped_protocols_still_hang(qtbot, window, library,
                                                                               tmp_path: Path) -> None:
    user_file = tmp_path / "home" / "protocols.json"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("{ broken")
    study = brain_mr(library)
    assert window.open_study(study.uid)
    message = window.statusBar().currentMessage()
    assert str(user_file) in message and "not valid JSON" in message
    assert window.hanging.status_text.startswith("MR brain - 1/2")


# -- Link here ---------------------------------------------------------------------------------------------

OFFSET_Z = 200.0  # the prior's table position: the same anatomy lies 200 mm higher in its frame
PRIOR_TOP_Z = 260.0  # the prior coronal images' first row


@pytest.fixture
def two_frames(library):
    """A current axial series (20 slices every 2.5 mm from z 0) and, in a prior of another frame of reference,
    an axial series (10 slices every 5 mm from z 200) and a coronal one (16 slices, rows from z 260 down)."""
    current_frame, prior_frame = generate_uid(), generate_uid()
    _, current = store_series(library, frame_uid=current_frame, positions=[(0.0, 0.0, 2.5 * k) for k in range(20)])
    prior_study, prior = store_series(library, frame_uid=prior_frame,
                                      positions=[(0.0, 0.0, OFFSET_Z + 5.0 * k) for k in range(10)])
    _, coronal = store_series(library, frame_uid=prior_frame, orientation=CORONAL, number=2, study_uid=prior_study,
                              positions=[(0.0, 4.0 * k, PRIOR_TOP_Z) for k in range(16)])
    return current, prior, coronal


def index_at(viewport, z: float) -> int:
    return next(i for i in range(viewport.model.count) if abs(z_of(viewport, i) - z) < 1e-6)


def test_link_here_scrolls_a_prior_of_another_frame_through_the_offset(qtbot, window, library, two_frames) -> None:
    current_uid, prior_uid, coronal_uid = two_frames
    window.set_layout("2x2")
    for i, uid in enumerate((current_uid, prior_uid, coronal_uid)):
        assert window.open_series(uid, window.grid.viewports[i])
    current, prior, coronal = window.grid.viewports[:3]
    window.grid.set_active(current)
    # not linked: another frame of reference neither scrolls along nor shows a reference line
    current.model.set_index(index_at(current, 10.0))
    prior_index = prior.model.index
    current.model.set_index(index_at(current, 30.0))
    assert prior.model.index == prior_index
    qtbot.waitUntil(lambda: coronal.painted_index >= 0, timeout=3000)
    assert cyan_rows(coronal).size == 0
    # the reader brings the same place into view (current z 10 = prior z 210) and links there
    current.model.set_index(index_at(current, 10.0))
    prior.model.set_index(index_at(prior, 210.0))
    window.grid.set_active(current)
    qtbot.keyClick(current, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier)
    assert len(window.grid.registrations) == 1
    assert window.hanging.status_text == ""  # no protocol: the label names none
    for z in (30.0, 0.0, 45.0):
        current.model.set_index(index_at(current, z))
        assert z_of(prior, prior.model.index) == pytest.approx(z + OFFSET_Z, abs=2.5)
        assert prior.model.index == min(range(prior.model.count),
                                        key=lambda i: abs(z_of(prior, i) - (z + OFFSET_Z)))
        expected_y = coronal.image_to_widget((PRIOR_TOP_Z - (z + OFFSET_Z)) / PIXEL_MM, 0).y()
        qtbot.waitUntil(lambda: cyan_rows(coronal).size > 0, timeout=3000)
        assert abs(float(cyan_rows(coronal).mean()) - expected_y) <= 1.5
    # the prior leads too, backwards through the offset
    window.grid.set_active(prior)
    prior.model.set_index(index_at(prior, 240.0))
    assert z_of(current, current.model.index) == pytest.approx(40.0)
    # Unlink: each scrolls alone again, and the reference line goes
    window.grid.set_active(current)
    window.hanging.unlink_action.trigger()
    assert window.grid.registrations == []
    current.model.set_index(index_at(current, 5.0))
    assert z_of(prior, prior.model.index) == pytest.approx(240.0)
    qtbot.waitUntil(lambda: cyan_rows(coronal).size == 0, timeout=3000)


def test_a_new_series_in_a_linked_viewport_clears_the_link(qtbot, window, library, two_frames) -> None:
    current_uid, prior_uid, _ = two_frames
    window.set_layout("1x2")
    window.open_series(current_uid, window.grid.viewports[0])
    window.open_series(prior_uid, window.grid.viewports[1])
    window.grid.set_active(window.grid.viewports[0])
    assert window.hanging.link_here() == 1
    window.open_series(current_uid, window.grid.viewports[1])  # the same frame: linked as ever, not by offset
    assert window.grid.registrations == []
    current, other = window.grid.viewports[:2]
    window.grid.set_active(current)
    current.model.set_index(index_at(current, 20.0))
    assert z_of(other, other.model.index) == pytest.approx(20.0)
    assert window.hanging.link_here() == 0  # nothing of another frame to link
