"""The choice between several saved readings of a series, when it opens (one is loaded without asking).

A small dialog lists the presentation states found (:func:`viewer.reading.persist.readings_for_series`, newest
first): label, creator, date and whether MIFAS Viewer wrote it or another program did.  The newest is selected;
the last row, "None", opens the series without a saved reading.  The dialog is opened with ``open()`` (it never
blocks the event loop) and answers with :attr:`ReadingPicker.chosen`.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.ui.formatting import format_name

NONE_TEXT = "None: open the images without a saved reading"


def describe(reading) -> str:
    """One line for a saved reading: 'Label — creator, 2026-12-07 22:58 (ours)'."""
    who = " ".join(format_name(reading.creator).split()) or "unknown author"  # a PN: Family^Given
    when = f", {reading.created}" if reading.created else ""
    origin = "MIFAS Viewer" if reading.ours else "another program"
    return f"{reading.label or 'Untitled'} — {who}{when} ({origin})"


class ReadingPicker(QDialog):
    """Pick one of `readings` (SavedReading, newest first) or none."""

    chosen = Signal(object)  # the SavedReading picked, or None

    def __init__(self, readings, series_text: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Saved readings")
        self.readings = list(readings)
        heading = f"{len(self.readings)} saved readings exist for {series_text or 'this series'}. Show which?"
        self.list = QListWidget(self)
        for reading in self.readings:
            item = QListWidgetItem(describe(reading), self.list)
            item.setToolTip(reading.description or reading.label)
        QListWidgetItem(NONE_TEXT, self.list)
        self.list.setCurrentRow(0)  # the newest
        self.list.itemActivated.connect(lambda _item: self.accept())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel,
                                   Qt.Orientation.Horizontal, self)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        label = QLabel(heading, self)
        label.setWordWrap(True)
        layout.addWidget(label)
        layout.addWidget(self.list)
        layout.addWidget(buttons)
        self.resize(520, 80 + 26 * (len(self.readings) + 1) + 60)
        self.finished.connect(self._on_finished)

    def rows(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def selected(self):
        row = self.list.currentRow()
        return self.readings[row] if 0 <= row < len(self.readings) else None

    def _on_finished(self, result: int) -> None:
        self.chosen.emit(self.selected() if result == QDialog.DialogCode.Accepted else None)
