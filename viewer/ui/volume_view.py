"""The 3D view: a :class:`~viewer.ui.render3d.VolumeScene` in a QVTK widget, with a preset chooser, Reset and
Snapshot (issue 5).

Mouse (VTK's trackball camera): left drag rotates, right drag zooms, middle drag (or Shift+left) pans; Ctrl+left
drag shifts the transfer function (horizontal: wider or narrower, vertical: higher or lower values), like the
window/level drag of the 2D viewport.  While a drag lasts the scene renders at its interactive level of detail;
releasing the button draws one full-quality frame.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget
from vtkmodules.qt.QVTKRenderWindowInteractor import QVTKRenderWindowInteractor
from vtkmodules.vtkInteractionStyle import vtkInteractorStyleTrackballCamera

from viewer.dicom.volume import Volume
from viewer.ui.render3d import PRESETS, VolumeScene

SHIFT_PER_PIXEL = 2.0  # modality units of transfer-function shift per pixel of Ctrl+drag


class VolumeView(QWidget):
    """One volume in 3D.  ``scene`` is the VTK pipeline (see render3d); ``snapshot_saved(path)`` after a snapshot."""

    snapshot_saved = Signal(str)

    def __init__(self, volume: Volume, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.vtk_widget = QVTKRenderWindowInteractor(self)
        self.scene = VolumeScene(volume, window=self.vtk_widget.GetRenderWindow())
        interactor = self.vtk_widget.GetRenderWindow().GetInteractor()
        style = vtkInteractorStyleTrackballCamera()
        interactor.SetInteractorStyle(style)
        for event in ("StartInteractionEvent", "EndInteractionEvent"):
            style.AddObserver(event, self._on_interaction)
        # Ctrl+left drag shifts the transfer function instead of rotating (the observers replace the style's own
        # handlers for these three events and hand everything else back to it)
        self._style, self._shifting, self._last_xy = style, False, (0, 0)
        style.AddObserver("LeftButtonPressEvent", self._on_left_down)
        style.AddObserver("MouseMoveEvent", self._on_move)
        style.AddObserver("LeftButtonReleaseEvent", self._on_left_up)
        self.presets = QComboBox(self)
        self.presets.addItems(PRESETS)
        self.presets.setCurrentText(self.scene.preset_name)
        self.presets.currentTextChanged.connect(self.set_preset)
        reset = QPushButton("Reset", self)
        reset.clicked.connect(self.reset)
        snapshot = QPushButton("Snapshot…", self)
        snapshot.clicked.connect(self._ask_snapshot)
        bar = QHBoxLayout()
        bar.addWidget(self.presets)
        bar.addWidget(reset)
        bar.addWidget(snapshot)
        bar.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(bar)
        layout.addWidget(self.vtk_widget, 1)
        interactor.Initialize()

    def _on_interaction(self, _obj, event: str) -> None:
        self.scene.set_interacting(event == "StartInteractionEvent")
        if event == "EndInteractionEvent":
            self.scene.render()

    def set_preset(self, name: str) -> None:
        self.scene.set_preset(name)
        if self.presets.currentText() != name:
            self.presets.setCurrentText(name)
        self.scene.render()

    def reset(self) -> None:
        self.scene.set_preset(self.scene.preset_name)
        self.scene.reset_camera()
        self.scene.render()

    def shift_transfer(self, dx_px: float, dy_px: float) -> None:
        """Ctrl+drag, as the 2D window drag: down moves the transfer function to higher values (the picture gets
        darker), right widens it."""
        self.scene.shift_transfer(dy_px * SHIFT_PER_PIXEL, 1.0 + dx_px / 200.0)
        self.scene.render()

    def _on_left_down(self, _obj, _event) -> None:
        interactor = self._style.GetInteractor()
        if interactor.GetControlKey():
            self._shifting, self._last_xy = True, interactor.GetEventPosition()
            self.scene.set_interacting(True)
        else:
            self._style.OnLeftButtonDown()

    def _on_move(self, _obj, _event) -> None:
        if not self._shifting:
            self._style.OnMouseMove()
            return
        x, y = self._style.GetInteractor().GetEventPosition()
        dx, dy = x - self._last_xy[0], y - self._last_xy[1]
        self._last_xy = (x, y)
        self.shift_transfer(dx, -dy)  # VTK's y grows upwards

    def _on_left_up(self, _obj, _event) -> None:
        if self._shifting:
            self._shifting = False
            self.scene.set_interacting(False)
            self.scene.render()
        else:
            self._style.OnLeftButtonUp()

    def save_snapshot(self, path: Path | str) -> Path:
        saved = self.scene.snapshot(path)
        self.snapshot_saved.emit(str(saved))
        return saved

    def _ask_snapshot(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the 3D view", "view3d.png", "PNG image (*.png)")
        if path:
            self.save_snapshot(path)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Release the OpenGL window, once.  The QVTK widget is hidden first: a paint event reaching a finalized
        render window draws on a destroyed context, which takes the X server down with it."""
        if getattr(self, "_shut", False):
            return
        self._shut = True
        self.vtk_widget.hide()
        self.scene.close()
        self.vtk_widget.Finalize()
