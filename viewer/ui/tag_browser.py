"""The tag browser: every element of the current image's header in a filterable table.

Rows come from :func:`viewer.dicom.tags.tag_rows` (bounded, flat, never raising).  Reading a header and building
rows runs in a worker; only the latest request is shown, so scrolling through a series never queues work.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
)
from PySide6.QtWidgets import QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget

from viewer.dicom.tags import TagRow, tag_rows
from viewer.ui.workers import TaskRunner, describe_error

COLUMNS = ("Tag", "Name", "VR", "Value")
FILTER_DELAY_MS = 150


_ROOT = QModelIndex()  # the invalid index: Qt's default 'parent' argument

class TagTableModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[TagRow] = []

    def set_rows(self, rows: list[TagRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def rows(self) -> list[TagRow]:
        return list(self._rows)

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        row = self._rows[index.row()]
        column = index.column()
        if column == 0:
            return ("  " * row.depth) + row.tag
        if column == 1:
            return ("  " * row.depth) + row.keyword
        if column == 2:
            return row.vr
        return row.value

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None


class TagBrowser(QWidget):
    """Filter box + table.  ``show_slice(series, index)`` loads in the background; ``set_rows`` shows rows."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = TagTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setFilterKeyColumn(-1)  # match any column
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit = QLineEdit(self)
        self.filter_edit.setPlaceholderText("Filter: tag, name or value")
        self.filter_edit.setClearButtonEnabled(True)
        self.status = QLabel("", self)
        self.table = QTableView(self)
        self.table.setModel(self.proxy)
        self.table.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.table.setWordWrap(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(20)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.table)
        layout.addWidget(self.status)
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self._apply_filter)
        self.filter_edit.textChanged.connect(self._filter_timer.start)
        self._runner = TaskRunner(self, max_threads=1, name="tag rows")
        self._request = 0
        self._shown_key: tuple | None = None

    def set_rows(self, rows: list[TagRow]) -> None:
        self.model.set_rows(rows)
        self.status.setText(f"{len(rows)} element(s)")

    def clear(self, text: str = "") -> None:
        self._request += 1
        self._shown_key = None
        self.model.set_rows([])
        self.status.setText(text)

    def set_filter(self, text: str) -> None:
        self.filter_edit.setText(text)
        self._apply_filter()

    def _apply_filter(self) -> None:
        self._filter_timer.stop()
        self.proxy.setFilterFixedString(self.filter_edit.text().strip())

    def visible_rows(self) -> list[tuple[str, str, str, str]]:
        """The rows the table shows after filtering (tests, copy)."""
        out = []
        for r in range(self.proxy.rowCount()):
            out.append(tuple(str(self.proxy.index(r, c).data() or "").strip() for c in range(len(COLUMNS))))
        return out

    def show_slice(self, series, index: int) -> None:
        """Show the header of frame ``index`` of ``series`` (read in a worker; the latest request wins)."""
        if series is None or not len(series):
            self.clear()
            return
        key = (id(series), series.frame_ref(index).path)
        if key == self._shown_key:
            return  # another frame of the same instance: same header
        self._request += 1
        request = self._request
        self.status.setText("Reading header…")

        def read(progress, cancel):
            return tag_rows(series.header(index))

        def done(rows) -> None:
            if request == self._request:
                self._shown_key = key
                self.set_rows(rows)

        def failed(exc: BaseException) -> None:
            if request == self._request:
                self.model.set_rows([])
                self.status.setText(describe_error(exc))

        self._runner.submit(read, on_done=done, on_error=failed, name="tag rows")

    def shutdown(self) -> None:
        self._runner.shutdown()
