"""The dialog shown when an import ends: counts in words and every failed file with its reason."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.library import ImportSummary


class ImportSummaryDialog(QDialog):
    """Non-modal: the import is over when it appears, and the user may keep working while reading it."""

    def __init__(self, summary: ImportSummary, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.summary = summary
        self.setWindowTitle("Import finished" if not summary.cancelled else "Import cancelled")
        self.message = QLabel(summary.describe(), self)
        self.message.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(self.message)
        self.failures = QTableWidget(len(summary.failures), 2, self)
        self.failures.setHorizontalHeaderLabels(["File", "Reason"])
        self.failures.verticalHeader().setVisible(False)
        self.failures.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.failures.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        self.failures.horizontalHeader().setStretchLastSection(True)
        self.failures.setWordWrap(False)
        self.failures.verticalHeader().setDefaultSectionSize(22)
        root = _common_folder([f.path for f in summary.failures])
        for row, failure in enumerate(summary.failures):
            shown = failure.path.relative_to(root) if root is not None else failure.path
            path_item = QTableWidgetItem(str(shown))
            path_item.setToolTip(str(failure.path))
            reason_item = QTableWidgetItem(failure.reason)
            reason_item.setToolTip(failure.reason)
            self.failures.setItem(row, 0, path_item)
            self.failures.setItem(row, 1, reason_item)
        if summary.failures:
            listed = len(summary.failures)
            more = f" (the first {listed} are listed)" if summary.failures_total > listed else ""
            where = f" (in {root})" if root is not None else ""
            label = QLabel(f"Files that could not be imported{more}{where}:", self)
            label.setWordWrap(True)
            layout.addWidget(label)
            layout.addWidget(self.failures, 1)
            self.resize(900, 420)
            self.failures.resizeColumnToContents(0)
            self.failures.setColumnWidth(0, min(self.failures.columnWidth(0), 420))
        else:
            self.failures.hide()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        buttons.rejected.connect(self.close)
        buttons.accepted.connect(self.close)
        layout.addWidget(buttons)

    def failure_rows(self) -> list[tuple[str, str]]:
        return [(self.failures.item(r, 0).text(), self.failures.item(r, 1).text())
                for r in range(self.failures.rowCount())]


def _common_folder(paths: list[Path]) -> Path | None:
    """The deepest folder holding all ``paths`` (to show short relative names), or None."""
    if not paths:
        return None
    try:
        common = Path(os.path.commonpath([str(p) for p in paths]))
    except ValueError:  # different drives
        return None
    if len(paths) == 1 or common in paths:
        common = common.parent if common in paths else common
    return common if str(common) not in ("", "/", ".") else None
