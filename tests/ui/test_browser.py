"""The study browser over a real library: search, series with thumbnails, activation."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from viewer.ui.browser import Browser

pytestmark = pytest.mark.gui


@pytest.fixture
def make_browser(qtbot):
    made = []

    def make(library):
        browser = Browser(library)
        qtbot.addWidget(browser)
        browser.resize(500, 700)
        browser.show()
        made.append(browser)
        return browser

    yield make
    for b in made:
        b.shutdown()


def test_empty_library_offers_the_demo(qtbot, make_browser, library):
    browser = make_browser(library)
    assert browser.local.demo_button.isVisible()
    with qtbot.waitSignal(browser.demo_requested, timeout=1000):
        qtbot.mouseClick(browser.local.demo_button, Qt.MouseButton.LeftButton)


def test_studies_series_and_thumbnail(qtbot, make_browser, ct_series):
    browser = make_browser(ct_series.library)
    local = browser.local
    assert not local.demo_button.isVisible()
    assert local.studies.rowCount() == 1
    study = local.studies.record(0)
    assert (study.study_uid, study.patient_name, study.series_count) == (ct_series.study_uid, "Test^Patient", 1)
    assert local.studies.index(0, 0).data() == "Test Patient"
    assert local.studies.index(0, 2).data() == "2024-01-02"
    assert local.selected_study_uid() == ct_series.study_uid  # the first study is selected
    assert local.series.rowCount() == 1
    assert "8 image(s)" in local.series.index(0).data()
    qtbot.waitUntil(lambda: local.has_thumbnail(ct_series.series_uid), timeout=5000)
    icon = local.series.index(0).data(Qt.ItemDataRole.DecorationRole)
    image = icon.pixmap(96, 96).toImage()
    greys = {image.pixelColor(x, y).red() for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)}
    assert len(greys) > 5  # a rendered ramp, not the flat placeholder


@pytest.mark.parametrize(("field", "value", "found"), [
    ("patient_name", "test", 1), ("patient_name", "nobody", 0), ("patient_name", "T*t^P?tient", 1),
    ("patient_id", "UI-0001", 1), ("accession", "ACC1", 1), ("accession", "ACC2", 0),
    ("date_from", "2024-01-01", 1), ("date_from", "20240103", 0), ("date_to", "20240101", 0),
])
def test_search_fields_filter_the_library(qtbot, make_browser, ct_series, field, value, found):
    browser = make_browser(ct_series.library)
    search = browser.local.search
    getattr(search, field).setText(value)
    qtbot.mouseClick(search.search_button, Qt.MouseButton.LeftButton)
    assert browser.local.studies.rowCount() == found
    assert browser.local.series.rowCount() == found
    assert not browser.local.demo_button.isVisible()  # the library is not empty, only the search


def test_modality_search(qtbot, make_browser, ct_series):
    browser = make_browser(ct_series.library)
    search = browser.local.search
    search.modality.setCurrentText("mr")
    search.search_requested.emit()
    assert browser.local.studies.rowCount() == 0
    search.modality.setCurrentText("ct")
    search.search_requested.emit()
    assert browser.local.studies.rowCount() == 1


def test_activating_a_series_emits_its_uid(qtbot, make_browser, ct_series):
    browser = make_browser(ct_series.library)
    view = browser.local.series_view
    with qtbot.waitSignal(browser.series_activated, timeout=1000) as opened:
        view.activated.emit(browser.local.series.index(0))
    assert opened.args == [ct_series.series_uid]
    with qtbot.waitSignal(browser.study_activated, timeout=1000) as opened:
        browser.local.studies_view.activated.emit(browser.local.studies.index(0, 0))  # a study: laid out whole
    assert opened.args == [ct_series.study_uid]


def test_dicom_keys_for_pacs_queries(qtbot, make_browser, library):
    search = make_browser(library).local.search
    search.patient_name.setText("doe")
    search.date_from.setText("20240101")
    search.date_to.setText("2024-01-31")
    search.modality.setCurrentText("ct")
    assert search.dicom_keys() == {"PatientName": "*doe*", "StudyDate": "20240101-20240131",
                                   "ModalitiesInStudy": "CT"}
