"""The Priors dock against a real Orthanc: the newer study of a patient is in the library, the dock lists the
older one from Orthanc (and never the homonym), Compare retrieves it (the series like the one on screen first)
and both studies end up in the window's viewports."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from mifaslab.orthanc import free_port
from tests.pacs.conftest import CALLING_AE, part10
from tests.pacs.patients import orthanc_holding, patient_study
from tests.ui.screenshots import save_screenshots, screenshot_dir
from viewer.pacs.node import Timeouts
from viewer.settings import Settings

pytestmark = [pytest.mark.gui, pytest.mark.network]

NAME, BIRTH = "Gui^Prior", "19450505"


def study(patient_id: str, issuer: str, date: str, seed: int, descriptions: tuple[str, ...]) -> list:
    # BODY PART CHEST: what the CT-chest-with-prior protocol looks for
    return patient_study(patient_id, issuer, date, name=NAME, birth=BIRTH, seed=seed, descriptions=descriptions,
                         slices=3, size=32, body_part="CHEST")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with orthanc_holding(tmp_path_factory.mktemp("priors-ui-orthanc"), {
        "newer": study("GUI-1", "HOSP-A", "20240601", 10, ("Thorax axial lung",)),
        "older": study("GUI-1", "HOSP-A", "20200101", 20, ("Scout", "Dose report", "Thorax axial lung")),
        "homonym": study("GUI-2", "HOSP-A", "20220101", 30, ("Thorax axial lung",)),
        "other_issuer": study("B-77", "HOSP-B", "20210101", 40, ("Thorax axial lung",)),
    }) as server:
        yield server


def shown_studies(window) -> set[str]:
    """The studies of the series the visible viewports hold (the viewports' own series)."""
    found = set()
    for viewport in window.grid.visible_viewports():
        series = viewport.model.series
        uid = window._series_uids.get(viewport)
        if series is not None and len(series) and uid is not None:
            found.add(window.library.series_record(uid).study_uid)
    return found


@pytest.fixture
def window(make_window, library, pacs, tmp_path):
    for ds in pacs.datasets["newer"]:
        library.store_bytes(part10(ds))
    node = pacs.node(calling_ae=CALLING_AE, timeouts=Timeouts(connect_s=2, acse_s=5, dimse_s=10, network_s=20))
    return make_window(library, Settings(nodes=[node], default_via="get"), settings_path=tmp_path / "settings.json",
                       system_profiles_dir=None)


def open_and_list(qtbot, window, study_uid):
    panel = window.priors
    with qtbot.waitSignal(panel.search_finished, timeout=30000) as finished:
        assert window.open_study(study_uid)
        assert panel.status.text() == "Looking for prior studies of this patient…"  # the worker searches
    return panel, finished.args[0]


def test_the_dock_lists_the_older_study_and_compare_shows_both(qtbot, window, pacs, library, tmp_path):
    newer, older = pacs.studies["newer"], pacs.studies["older"]
    panel, result = open_and_list(qtbot, window, newer)
    assert [p.study_uid for p in panel.studies(panel.priors_group)] == [older]
    assert [p.study_uid for p in panel.studies(panel.confirm_group)] == [pacs.studies["other_issuer"]]
    assert pacs.studies["homonym"] not in {p.study_uid for p in panel.studies()}
    item = panel.priors_group.child(0)
    assert [item.text(c) for c in range(4)] == ["2020-01-01", "CT", "MIFAS test CT", "PACS orthanc"]
    assert panel.status.text() == ("1 prior study of this patient (0 in the library); 1 to confirm (same name and "
                                   "birth date, different ID issuer).")
    assert window.priors_dock.windowTitle() == "Priors (2)"
    assert shown_studies(window) == {newer}
    panel.resize(520, 220)
    save_screenshots({"priors-dock.png": panel.grab()}, screenshot_dir(tmp_path))

    assert panel.select(older)
    with qtbot.waitSignal(panel.compared, timeout=60000) as compared:
        qtbot.mouseClick(panel.compare_button, Qt.MouseButton.LeftButton)
    assert compared.args == [newer, older]
    jobs = [window.retrievals.jobs.get(job_id) for job_id in panel.comparison.jobs]
    descriptions = [library.series_record(j.series_uid).series_description if library.series_record(j.series_uid)
                    else None for j in jobs]
    assert descriptions[0] == "Thorax axial lung"  # the series like the one on screen came first
    assert len(jobs) == 3 and all(j.study_uid == older for j in jobs)
    qtbot.waitUntil(lambda: shown_studies(window) == {newer, older}, timeout=30000)
    assert window.hanging.status_text.startswith("CT chest with prior - 1/")  # the protocol laid them out
    left, right = window.grid.visible_viewports()[:2]
    assert [window.library.series_record(window._series_uids[v]).study_uid for v in (left, right)] == [newer, older]
    qtbot.waitUntil(lambda: not window.retrievals.running_jobs(), timeout=60000)
    assert len(library.series(older)) == 3
    assert [p.study_uid for p in panel.studies(panel.priors_group)] == [older]  # the list stayed
    with qtbot.waitSignal(panel.search_finished, timeout=30000) as finished:  # the prior opened on its own
        assert window.open_study(older)
    assert [p.study_uid for p in finished.args[0].priors] == [newer]
    assert [p.where for p in finished.args[0].priors] == ["library, PACS orthanc"]


def test_a_study_to_confirm_needs_the_readers_yes(qtbot, window, pacs):
    newer, other = pacs.studies["newer"], pacs.studies["other_issuer"]
    panel, _ = open_and_list(qtbot, window, newer)
    assert panel.select(other)
    qtbot.mouseClick(panel.compare_button, Qt.MouseButton.LeftButton)
    box = panel.confirm_box
    assert box is not None and box.isVisible()
    assert "Gui Prior" in box.text() and "1945-05-05" in box.text() and "HOSP-B" in box.text()
    box.button(QMessageBox.StandardButton.No).click()
    assert panel.comparison is None and window.retrievals.running_jobs() == []
    qtbot.mouseClick(panel.compare_button, Qt.MouseButton.LeftButton)
    with qtbot.waitSignal(panel.compared, timeout=60000):
        panel.confirm_box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: shown_studies(window) == {newer, other}, timeout=30000)


def test_a_source_that_is_down_is_a_sentence_and_the_library_still_answers(qtbot, make_window, library, pacs,
                                                                          tmp_path):
    """The source here is a cluster profile whose virtual IP nothing answers (its retry budget: 1 s)."""
    for key in ("newer", "older"):
        for ds in pacs.datasets[key]:
            library.store_bytes(part10(ds))
    (tmp_path / "clusters.json").write_text(json.dumps({"profiles": [{
        "name": "gone", "ae_title": "NOBODY", "calling_ae": CALLING_AE,
        "vip": {"host": "127.0.0.1", "port": free_port()},  # nothing listens there
        "timeouts": {"connect_s": 0.5, "acse_s": 1, "dimse_s": 1, "network_s": 1},
        "retry": {"budget_s": 1, "backoff_initial_s": 0.1, "backoff_max_s": 0.2}}]}))
    window = make_window(library, Settings(), settings_path=tmp_path / "s.json", system_profiles_dir=None)
    assert window.retrievals.profile_names() == ["gone"]
    panel, result = open_and_list(qtbot, window, pacs.studies["newer"])
    assert [(p.study_uid, p.where) for p in result.priors] == [(pacs.studies["older"], "library")]
    assert panel.status.text() == "1 prior study of this patient (1 in the library). PACS gone: not reachable."
    assert panel.select(pacs.studies["older"])
    with qtbot.waitSignal(panel.compared, timeout=10000):
        panel.compare_selected()  # held locally: laid out at once, nothing retrieved
    assert shown_studies(window) == {pacs.studies["newer"], pacs.studies["older"]}
    assert window.retrievals.running_jobs() == []
