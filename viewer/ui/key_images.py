"""The "Key images" dock: the key images of the session's reading, one row each (series description, image
number) in series and image order; activating a row asks for that image (:attr:`KeyImagesPanel.jump_requested`),
which the reading service shows, opening its series when no viewport shows it.  When the key images belong to
more than one study (a study and its prior), each row starts with its study's date, newest study first.

The rows come from the :class:`~viewer.reading.annotations.AnnotationStore` (frames marked with K) and the
library index (which series an instance belongs to, its instance number): a few small index reads, no file.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from viewer.errors import MifasError
from viewer.library import Library
from viewer.reading.annotations import AnnotationStore, FrameKey
from viewer.ui.formatting import format_date

EMPTY_TEXT = "No key images. Press K on an image to mark it."
ROLE_FRAME = Qt.ItemDataRole.UserRole + 1  # (series UID, SOP Instance UID, frame index)


def key_image_row(library: Library, frame: FrameKey) -> tuple[tuple, str, str, str] | None:
    """(sort key, series UID, '1: Axial — image 12', study UID) for a key image; None when the library no longer
    holds it."""
    sop_uid, frame_index = frame
    try:
        instance = library.instance(sop_uid)
        series = library.series_record(instance.series_uid)
    except MifasError:
        return None
    if series is None:
        return None
    name = series.series_description or series.modality or "Series"
    if series.series_number is not None:
        name = f"{series.series_number}: {name}"
    number = instance.instance_number if instance.instance_number is not None else "?"
    frame_text = f", frame {frame_index + 1}" if instance.number_of_frames > 1 else ""
    order = (series.series_number is None, series.series_number or 0, series.series_uid,
             instance.instance_number is None, instance.instance_number or 0, frame_index)
    return order, instance.series_uid, f"{name} — image {number}{frame_text}", series.study_uid


def _study_date(library: Library, study_uid: str) -> str:
    """'2024-06-01' (or the raw value, or 'undated') for the row prefix of a study."""
    try:
        record = library.study(study_uid)
    except MifasError:
        record = None
    return format_date(record.study_date if record is not None else "") or "undated"


class KeyImagesPanel(QWidget):
    """The list of key images; :meth:`refresh` re-reads it from the store."""

    jump_requested = Signal(str, str, int)  # series UID, SOP Instance UID, frame index

    def __init__(self, library: Library, store: AnnotationStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.library = library
        self.store = store
        self.list = QListWidget(self)
        self.list.itemActivated.connect(self._on_activated)
        self.empty = QLabel(EMPTY_TEXT, self)
        self.empty.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.empty)
        layout.addWidget(self.list, 1)
        self._shown: list[FrameKey] = []
        self.refresh()

    def refresh(self) -> None:
        frames = self.store.key_images()
        if frames == self._shown:
            return
        self._shown = frames
        self.list.clear()
        rows = [(row, frame) for frame in frames if (row := key_image_row(self.library, frame)) is not None]
        studies = {row[3] for row, _ in rows}
        dates = {uid: _study_date(self.library, uid) for uid in studies} if len(studies) > 1 else {}
        # newest study first (dates sort as text), then series and image order
        rows.sort(key=lambda r: r[0][0])
        rows.sort(key=lambda r: dates.get(r[0][3], ""), reverse=True)
        for (_, series_uid, text, study_uid), frame in rows:
            if dates:
                text = f"{dates[study_uid]} · {text}"
            item = QListWidgetItem(text, self.list)
            item.setData(ROLE_FRAME, (series_uid, frame[0], frame[1]))
        self.empty.setVisible(self.list.count() == 0)

    def rows(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def activate_row(self, row: int) -> None:
        """Jump to the key image of `row` (as a double-click or Enter does)."""
        self._on_activated(self.list.item(row))

    def _on_activated(self, item: QListWidgetItem | None) -> None:
        if item is None:
            return
        series_uid, sop_uid, frame_index = item.data(ROLE_FRAME)
        self.jump_requested.emit(series_uid, sop_uid, int(frame_index))
