"""The tag browser: real headers read in a worker, filtered in the table."""

from __future__ import annotations

import pytest

from viewer.ui.series_source import open_series
from viewer.ui.tag_browser import TagBrowser

pytestmark = pytest.mark.gui


@pytest.fixture
def tags(qtbot):
    widget = TagBrowser()
    qtbot.addWidget(widget)
    widget.show()
    yield widget
    widget.shutdown()


def test_shows_header_rows_and_filters(qtbot, tags, ct_series):
    series = open_series(ct_series.library, ct_series.series_uid)
    tags.show_slice(series, 0)
    qtbot.waitUntil(lambda: tags.model.rowCount() > 20, timeout=5000)
    rows = tags.visible_rows()
    assert ("(0010,0010)", "PatientName", "PN", "Test^Patient") in rows
    assert any(r[0] == "(0002,0010)" for r in rows)  # file meta comes first
    assert not any(r[0] == "(7FE0,0010)" for r in rows)  # headers never carry pixel data
    tags.set_filter("patientid")
    assert tags.visible_rows() == [("(0010,0020)", "PatientID", "LO", "UI-0001")]
    tags.set_filter("ui-0001")  # values match too, case-insensitively
    assert [r[1] for r in tags.visible_rows()] == ["PatientID"]
    tags.set_filter("")
    assert len(tags.visible_rows()) == len(rows)


def test_latest_request_wins_and_errors_are_words(qtbot, tags, ct_series, tmp_path):
    series = open_series(ct_series.library, ct_series.series_uid)
    for i in range(len(series)):
        tags.show_slice(series, i)
    qtbot.waitUntil(lambda: tags.model.rowCount() > 0, timeout=5000)
    instance = [r for r in tags.visible_rows() if r[1] == "InstanceNumber"]
    assert instance == [("(0020,0013)", "InstanceNumber", "IS", str(len(series)))]
    # The file vanished under us: the status says so, no exception escapes.
    path = series.frame_ref(0).path
    path.unlink()
    fresh = open_series(ct_series.library, ct_series.series_uid)
    tags.show_slice(fresh, 0)
    qtbot.waitUntil(lambda: tags.status.text() not in ("", "Reading header…") and tags.model.rowCount() == 0,
                    timeout=5000)
    assert "cannot be read" in tags.status.text()
