"""The study browser: a source selector (the local library, or a configured PACS node), search fields, the
studies found, and the series of the selected study with thumbnails.

Local queries are SQLite look-ups on the GUI thread (milliseconds); thumbnails are rendered in workers and
cached; PACS pages (``viewer.ui.pacs_panel``) do their own network work in workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QItemSelection,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListView,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from viewer.library import Library, SeriesRecord, StudyQuery, StudyRecord
from viewer.reading.objects import is_reading_modality
from viewer.ui.formatting import format_date, format_name
from viewer.ui.search_fields import SearchFields
from viewer.ui.series_source import SERIES_MIME_TYPE, series_mime_data
from viewer.ui.table_model import ROOT_INDEX, RowTableModel
from viewer.ui.thumbnails import THUMBNAIL_PX, ThumbnailCache, render_thumbnail
from viewer.ui.workers import TaskRunner, describe_error

log = logging.getLogger(__name__)

LOCAL_SOURCE = "Local library"
STUDIES_SHOWN_MAX = 5000  # rows shown for one local search; the status line says when more matched



class StudyTableModel(RowTableModel[StudyRecord]):
    COLUMNS = ("Patient", "Patient ID", "Date", "Description", "Modalities", "Accession", "Series", "Images")

    def record(self, row: int) -> StudyRecord:
        return self._rows[row]

    def records(self) -> list[StudyRecord]:
        return list(self._rows)

    def cell(self, s: StudyRecord, column: int) -> str:
        return (format_name(s.patient_name), s.patient_id, format_date(s.study_date), s.study_description,
                ", ".join(s.modalities), s.accession_number, str(s.series_count), str(s.instance_count))[column]


READING_KINDS = {"PR": "GSPS", "SR": "report", "KO": "key images"}  # series of a saved reading, as listed


class SeriesListModel(QAbstractListModel):
    def __init__(self, icon_for: Callable[[str], QIcon], parent=None) -> None:
        super().__init__(parent)
        self._rows: list[SeriesRecord] = []
        self._icon_for = icon_for

    def set_rows(self, rows: Sequence[SeriesRecord]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self.endResetModel()

    def record(self, row: int) -> SeriesRecord:
        return self._rows[row]

    def records(self) -> list[SeriesRecord]:
        return list(self._rows)

    def icon_changed(self, series_uid: str) -> None:
        for row, s in enumerate(self._rows):
            if s.series_uid == series_uid:
                index = self.index(row)
                self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = ROOT_INDEX) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        s = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            number = f"{s.series_number}: " if s.series_number is not None else ""
            if is_reading_modality(s.modality):  # opening it opens its images with it (viewer.ui.reading_service)
                kind = READING_KINDS.get(s.modality.strip().upper(), s.modality)
                return f"Reading ({kind})\n{s.series_description or 'saved reading'} · {s.instance_count} object(s)"
            return f"{number}{s.series_description or s.modality or 'Series'}\n{s.modality} · {s.instance_count} image(s)"
        if role == Qt.ItemDataRole.DecorationRole:
            return self._icon_for(s.series_uid)
        if role == Qt.ItemDataRole.ToolTipRole:
            return (f"{s.series_description}\n{s.body_part}".strip()
                    + "\nDouble-click to open, or drag onto a viewport").strip()
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        flags = super().flags(index)
        return flags | Qt.ItemFlag.ItemIsDragEnabled if index.isValid() else flags

    def mimeTypes(self) -> list[str]:
        return [SERIES_MIME_TYPE]

    def mimeData(self, indexes) -> QMimeData | None:
        rows = [i.row() for i in indexes if i.isValid()]
        return series_mime_data(self._rows[rows[0]].series_uid) if rows else None

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction


class LocalBrowser(QWidget):
    """Search the local library; double-click (or Enter on) a study or a series to open it."""

    series_activated = Signal(str)
    study_activated = Signal(str)
    demo_requested = Signal()

    def __init__(self, library: Library, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.search = SearchFields(self)
        self.search.search_requested.connect(self.refresh)
        self.studies = StudyTableModel(self)
        self.studies_view = QTableView(self)
        self.studies_view.setModel(self.studies)
        self.studies_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.studies_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.studies_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.studies_view.verticalHeader().setVisible(False)
        self.studies_view.verticalHeader().setDefaultSectionSize(22)
        self.studies_view.setWordWrap(False)
        self.studies_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.studies_view.horizontalHeader().setStretchLastSection(True)
        self.studies_view.selectionModel().selectionChanged.connect(self._on_study_selection)
        self.studies_view.activated.connect(self._on_study_activated)
        self._thumbnails = ThumbnailCache()
        self._placeholder = _filled_icon(QColor(40, 40, 40))
        self._broken = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning)
        self.series = SeriesListModel(self._icon_for, self)
        self.series_view = QListView(self)
        self.series_view.setModel(self.series)
        self.series_view.setViewMode(QListView.ViewMode.IconMode)
        self.series_view.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        self.series_view.setGridSize(QSize(THUMBNAIL_PX + 48, THUMBNAIL_PX + 48))
        self.series_view.setResizeMode(QListView.ResizeMode.Adjust)
        self.series_view.setMovement(QListView.Movement.Static)
        self.series_view.setWordWrap(True)
        self.series_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.series_view.setDragEnabled(True)  # drag a series onto a viewport of the layout
        self.series_view.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.series_view.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.series_view.activated.connect(self._on_series_activated)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.empty_label = QLabel("The local library is empty. Import files or folders (File menu), "
                                  "retrieve from a PACS, or load the demo study.", self)
        self.empty_label.setWordWrap(True)
        self.demo_button = QPushButton("Load demo study", self)
        self.demo_button.clicked.connect(self.demo_requested)
        splitter = QSplitter(Qt.Orientation.Vertical, self)
        splitter.addWidget(self.studies_view)
        splitter.addWidget(self.series_view)
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search)
        layout.addWidget(self.empty_label)
        layout.addWidget(self.demo_button)
        layout.addWidget(splitter, 1)
        layout.addWidget(self.status)
        self._runner = TaskRunner(self, max_threads=2, name="thumbnails")
        self._thumb_tasks: list = []
        self.refresh()

    # -- studies -------------------------------------------------------------------------------------------

    def refresh(self, select_study: str | None = None) -> None:
        """Run the search again (after an import or retrieve); keep or set the selected study."""
        current = select_study or self.selected_study_uid()
        query = self.search.query()
        try:
            rows = self.library.studies(query)
            empty_library = not rows and (query == StudyQuery() or not self.library.studies())
        except Exception as exc:  # the index is damaged or locked: say so, keep the window usable
            log.warning("library query failed: %s", type(exc).__name__)
            self.status.setText(describe_error(exc))
            return
        shown = rows[:STUDIES_SHOWN_MAX]
        self.studies.set_rows(shown)
        self.empty_label.setVisible(empty_library)
        self.demo_button.setVisible(empty_library)
        more = f" (showing the first {len(shown)})" if len(rows) > len(shown) else ""
        self.status.setText(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} found{more}.")
        self.studies_view.resizeColumnsToContents()
        target = next((r for r, s in enumerate(shown) if s.study_uid == current), 0 if shown else None)
        if target is not None:
            self.studies_view.selectRow(target)
        else:
            self._show_series(None)

    def selected_study_uid(self) -> str | None:
        rows = self.studies_view.selectionModel().selectedRows()
        return self.studies.record(rows[0].row()).study_uid if rows else None

    def selected_series_uids(self) -> list[str]:
        """The series selected in the series list (several rows with Ctrl/Shift), in list order."""
        rows = sorted(index.row() for index in self.series_view.selectionModel().selectedIndexes())
        return [self.series.record(row).series_uid for row in rows]

    def select_study(self, study_uid: str) -> bool:
        for row, s in enumerate(self.studies.records()):
            if s.study_uid == study_uid:
                self.studies_view.selectRow(row)
                return True
        return False

    def _on_study_selection(self, selected: QItemSelection, deselected: QItemSelection) -> None:
        self._show_series(self.selected_study_uid())

    def _on_study_activated(self, index: QModelIndex) -> None:
        self.study_activated.emit(self.studies.record(index.row()).study_uid)

    # -- series and thumbnails -------------------------------------------------------------------------------

    def _show_series(self, study_uid: str | None) -> None:
        for task in self._thumb_tasks:
            task.cancel()
        self._thumb_tasks = []
        rows = self.library.series(study_uid) if study_uid else []
        self.series.set_rows(rows)
        for s in rows:
            if s.series_uid not in self._thumbnails and not is_reading_modality(s.modality):  # no pixels
                self._thumb_tasks.append(self._request_thumbnail(s.series_uid))

    def _request_thumbnail(self, series_uid: str):
        library = self.library

        def render(progress, cancel):
            if cancel.is_set():
                return None
            return render_thumbnail(library, series_uid)

        def done(image) -> None:
            if image is not None:
                self._thumbnails.put(series_uid, QIcon(QPixmap.fromImage(image)))
                self.series.icon_changed(series_uid)

        def failed(exc: BaseException) -> None:
            self._thumbnails.put(series_uid, self._broken)  # remembered: not retried on every selection
            self.series.icon_changed(series_uid)

        return self._runner.submit(render, on_done=done, on_error=failed, name="thumbnail")

    def _icon_for(self, series_uid: str) -> QIcon:
        return self._thumbnails.get(series_uid) or self._placeholder

    def has_thumbnail(self, series_uid: str) -> bool:
        return series_uid in self._thumbnails

    def _on_series_activated(self, index: QModelIndex) -> None:
        self.series_activated.emit(self.series.record(index.row()).series_uid)

    def shutdown(self) -> None:
        self._runner.shutdown()


def _filled_icon(colour: QColor) -> QIcon:
    pixmap = QPixmap(THUMBNAIL_PX, THUMBNAIL_PX)
    pixmap.fill(colour)
    return QIcon(pixmap)


class Browser(QWidget):
    """Source selector over a stack of pages: the local library, then one page per PACS node.

    ``set_pacs_nodes(nodes, page_factory)`` adds the PACS pages; ``page_factory(node)`` builds a page (a
    :class:`viewer.ui.pacs_panel.PacsPanel`), created when first selected.
    """

    series_activated = Signal(str)
    study_activated = Signal(str)
    demo_requested = Signal()
    source_changed = Signal(object)  # the node or cluster profile now chosen; None: the local library

    def __init__(self, library: Library, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.local = LocalBrowser(library, self)
        self.local.series_activated.connect(self.series_activated)
        self.local.study_activated.connect(self.study_activated)
        self.local.demo_requested.connect(self.demo_requested)
        self.source = QComboBox(self)
        self.source.addItem(LOCAL_SOURCE)
        self.pages = QStackedWidget(self)
        self.pages.addWidget(self.local)
        self._nodes: list[Any] = []
        self._page_factory: Callable[[Any], QWidget] | None = None
        self._pacs_pages: dict[int, QWidget] = {}
        self.source.currentIndexChanged.connect(self._on_source_changed)
        top = QHBoxLayout()
        top.addWidget(QLabel("Source:", self))
        top.addWidget(self.source, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.pages, 1)

    def set_pacs_nodes(self, nodes: Sequence[Any], page_factory: Callable[[Any], QWidget]) -> None:
        self.source.blockSignals(True)
        self.source.setCurrentIndex(0)
        while self.source.count() > 1:
            self.source.removeItem(1)
        for page in self._pacs_pages.values():
            self.pages.removeWidget(page)
            shutdown = getattr(page, "shutdown", None)
            if shutdown:
                shutdown()
            page.deleteLater()
        self._pacs_pages = {}
        self._nodes = list(nodes)
        self._page_factory = page_factory
        for node in self._nodes:
            kind = "PACS cluster" if getattr(node, "vip", None) is not None else "PACS"  # a ClusterProfile
            self.source.addItem(f"{kind}: {getattr(node, 'name', node)}")
        self.source.blockSignals(False)
        self.pages.setCurrentWidget(self.local)

    def _on_source_changed(self, index: int) -> None:
        if index <= 0 or self._page_factory is None:
            self.pages.setCurrentWidget(self.local)
            self.source_changed.emit(None)
            return
        self.source_changed.emit(self._nodes[index - 1])
        page = self._pacs_pages.get(index)
        if page is None:
            page = self._page_factory(self._nodes[index - 1])
            self._pacs_pages[index] = page
            self.pages.addWidget(page)
        self.pages.setCurrentWidget(page)

    def current_page(self) -> QWidget:
        return self.pages.currentWidget()

    def refresh(self, select_study: str | None = None) -> None:
        self.local.refresh(select_study)

    def shutdown(self) -> None:
        self.local.shutdown()
        for page in self._pacs_pages.values():
            shutdown = getattr(page, "shutdown", None)
            if shutdown:
                shutdown()
