"""The 3D reading window of one series: the MPR panel above, the volume rendering below, and what the volume
assembly had to say (gantry tilt corrected, slices missing, downsampled for the memory cap) in a line on top.

The volume is built off the GUI thread by the main window (cancellable, with progress); this window only shows
it.  Its slab controls (thickness, MIP / MinIP / mean) act on all three MPR planes; "Straighten" undoes the
oblique turns made with Ctrl + drag.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from viewer.dicom.mpr import SLAB_MM_MAX, SLAB_MODES
from viewer.dicom.volume import Volume
from viewer.ui.mpr_view import MprPanel
from viewer.ui.volume_view import VolumeView

SLAB_LABELS = {"mip": "MIP", "minip": "MinIP", "mean": "Average"}


class Reading3DWindow(QWidget):
    def __init__(self, volume: Volume, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle(f"3D: {title}")
        self.resize(1200, 900)
        self.volume = volume
        self.notes = QLabel(" ".join(volume.warnings) or "", self)
        self.notes.setWordWrap(True)
        self.notes.setVisible(bool(volume.warnings))
        self.notes.setStyleSheet("QLabel { background: #5a4a00; color: white; padding: 4px; }")
        self.mpr = MprPanel(volume, self)
        self.volume_view = VolumeView(volume, self)
        self.slab = QDoubleSpinBox(self)
        self.slab.setRange(0.0, SLAB_MM_MAX)
        self.slab.setSuffix(" mm slab")
        self.slab.setSingleStep(1.0)
        self.slab_mode = QComboBox(self)
        for mode in SLAB_MODES:
            self.slab_mode.addItem(SLAB_LABELS[mode], mode)
        self.slab.valueChanged.connect(self._slab_changed)
        self.slab_mode.currentIndexChanged.connect(self._slab_changed)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("MPR:", self))
        controls.addWidget(self.slab)
        controls.addWidget(self.slab_mode)
        self.straighten = QPushButton("Straighten", self)
        self.straighten.setToolTip("Back to straight axial, coronal and sagittal planes")
        self.straighten.clicked.connect(self.mpr.reset_rotation)
        controls.addWidget(self.straighten)
        controls.addWidget(QLabel("Click: move the crosshair · wheel: scroll · right drag: window · "
                                  "Ctrl + drag: turn the other planes (oblique)", self))
        controls.addStretch(1)
        split = QSplitter(Qt.Orientation.Vertical, self)
        top = QWidget(split)
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addLayout(controls)
        top_layout.addWidget(self.mpr, 1)
        split.addWidget(top)
        split.addWidget(self.volume_view)
        layout = QVBoxLayout(self)
        layout.addWidget(self.notes)
        layout.addWidget(split, 1)

    def _slab_changed(self, *_: object) -> None:
        self.mpr.set_slab(self.slab.value(), self.slab_mode.currentData())

    def closeEvent(self, event) -> None:
        self.mpr.shutdown()
        self.volume_view.shutdown()
        super().closeEvent(event)
