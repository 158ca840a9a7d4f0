"""Issue 2's acceptance check, end to end through the main window: import pydicom's test files, open the CT series
of CT_small.dcm, apply a window preset from the toolbar, and compare what is displayed and what is on screen with
values computed here, independently, from the file."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tests.ui.conftest import linear_window
from tests.ui.test_main_window import pydicom_test_folder  # noqa: F401 - fixture
from tests.ui.test_viewport import screen_grey

pytestmark = pytest.mark.gui


def test_imported_ct_with_bone_preset_shows_the_files_values(qtbot, make_window, library,
                                                             pydicom_test_folder):  # noqa: F811
    window = make_window(library)
    with qtbot.waitSignal(window.import_finished, timeout=60000):
        window.import_paths([pydicom_test_folder])

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    with qtbot.waitSignal(window.series_opened, timeout=5000):
        window.open_series(str(source.SeriesInstanceUID))
    view = window.viewport
    assert view.model.count == len(library.instances(str(source.SeriesInstanceUID)))
    index = next(i for i in range(view.model.count)
                 if view.model.series.frame_ref(i).sop_instance_uid == source.SOPInstanceUID)
    view.model.set_index(index)
    qtbot.waitUntil(lambda: view.displayed_array() is not None, timeout=5000)

    window.preset_actions["CT bone"].trigger()

    hu = source.pixel_array.astype(np.float64) * float(source.RescaleSlope) + float(source.RescaleIntercept)
    expected = linear_window(hu, 400, 1800)
    assert len(np.unique(expected)) > 10  # the check means something: CT_small spans the bone window
    np.testing.assert_array_equal(view.displayed_array(), expected)
    rows, cols = expected.shape
    for r, c in ((rows // 2, cols // 2), (rows // 4, cols // 3), (3 * rows // 4, 2 * cols // 3)):
        assert screen_grey(view, r, c) == (expected[r, c],) * 3
    assert "W: 1800 L: 400" in view.overlay_lines()["bottom_right"]
