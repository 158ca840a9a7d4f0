"""File > Export view without identity (pytest-qt, a real window and library): the PNG of the view as shown, with
the overlay's patient name, ID, study date and descriptions not painted, and every other pixel as in the ordinary export."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtGui import QImage

from tests.ui.test_reading_persist import show
from viewer.ui.viewport_paint import OVERLAY_MARGIN_PX

pytestmark = [pytest.mark.gui]


def pixels(path) -> np.ndarray:
    image = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB888)
    assert not image.isNull()
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    return np.frombuffer(image.constBits(), np.uint8, h * stride).reshape(h, stride)[:, : w * 3].reshape(h, w, 3).copy()


def test_export_view_without_identity_leaves_out_the_patient_text(qtbot, make_window, ct_series, tmp_path) -> None:
    window = make_window(ct_series.library, resume_jobs=False, cluster_profiles_path=tmp_path / "clusters.json",
                         system_profiles_dir=None)
    view = show(qtbot, window, ct_series.series_uid)
    assert "UI-0001" in " ".join(view.overlay_lines()["top_left"])
    assert window.export_view_to(tmp_path / "with.png")
    assert window.export_view_to(tmp_path / "without.png", identity=False)
    window.overlays_action.trigger()  # overlays off: what the corners look like with no text at all
    assert window.export_view_to(tmp_path / "bare.png")
    window.overlays_action.trigger()
    assert "UI-0001" in " ".join(view.overlay_lines()["top_left"])  # the screen shows the identity again

    with_id, without_id, bare = (pixels(tmp_path / f"{n}.png") for n in ("with", "without", "bare"))
    h, w = with_id.shape[:2]
    lines = 3 * view._metrics.lineSpacing()
    top_left = (slice(0, OVERLAY_MARGIN_PX + lines), slice(0, w // 3))
    top_right = (slice(0, OVERLAY_MARGIN_PX + lines), slice(2 * w // 3, w))
    middle = (slice(h // 3, 2 * h // 3), slice(w // 3, 2 * w // 3))
    # the name and ID are painted in the ordinary export and not in the one without identity
    assert not np.array_equal(with_id[top_left], bare[top_left])
    assert np.array_equal(without_id[top_left], bare[top_left])
    # the top right lost its date and description lines, but still says which series it is
    assert "Axial" in " ".join(view.overlay_lines()["top_right"])  # on screen: date and descriptions
    assert view._series_overlay.without_identity().top_right == ("Se: 1",)  # exported: the series number only
    assert not np.array_equal(without_id[top_right], with_id[top_right])
    assert not np.array_equal(without_id[top_right], bare[top_right])
    # the image itself and the other corners are the same
    assert np.array_equal(without_id[middle], with_id[middle])
    bottom = (slice(h - OVERLAY_MARGIN_PX - lines, h), slice(0, w))
    assert np.array_equal(without_id[bottom], with_id[bottom])
