"""The "PACS health" dock: one row per address of the watched cluster profile (name, address, state in words,
round trip), refreshed from the health monitor through a queued signal, and below it the event log in plain
sentences (newest last, bounded).

The widget never probes anything itself: :class:`viewer.ui.retrieval_service.RetrievalService` runs the monitor and
emits ``statuses_changed`` / ``event_logged`` on the GUI thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.pacs.health import EVENT_LOG_MAX, STATE_TEXT, NodeStatus
from viewer.ui.retrieval_service import RetrievalService

COLUMNS = ("Name", "Address", "State", "Round trip")
STATE_COLOURS = {"serving": QColor(27, 94, 32), "up": QColor(27, 94, 32), "standby": QColor(120, 90, 0),
                 "down": QColor(176, 0, 32)}
NO_PROFILE_TEXT = "No cluster profile is configured (File > Cluster profiles…)."


def state_text(status: NodeStatus) -> str:
    """The state in words; the virtual IP's row names the member serving it when that can be told."""
    text = STATE_TEXT.get(status.state, status.state)
    if status.is_vip and status.up and status.serving:
        text += f" (served by {status.serving})"
    return text


def rtt_text(status: NodeStatus) -> str:
    return f"{status.rtt_s * 1000:.1f} ms" if status.up and status.rtt_s is not None else ""


class HealthPanel(QWidget):
    """The dock's contents; ``profile`` picks the profile to watch."""

    def __init__(self, service: RetrievalService, parent: QWidget | None = None,
                 *, log_max: int = EVENT_LOG_MAX) -> None:
        super().__init__(parent)
        self.service = service
        self.log_max = log_max
        self.profile = QComboBox(self)
        self.profile.setToolTip("The cluster profile whose addresses are probed")
        self.summary = QLabel("", self)
        self.summary.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS), self)
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)  # the state, in words
        header.setStretchLastSection(False)
        self.log = QListWidget(self)
        self.log.setWordWrap(True)
        self.log.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        top = QHBoxLayout()
        top.addWidget(QLabel("Cluster:", self))
        top.addWidget(self.profile, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)
        layout.addWidget(QLabel("Events", self))
        layout.addWidget(self.log, 1)
        self._statuses: list[NodeStatus] = []
        for entry in service.event_log.entries():
            self.add_event(entry.text)
        service.statuses_changed.connect(self.show_statuses)
        service.event_logged.connect(self.add_event)
        service.profiles_changed.connect(self.set_profiles)
        self.profile.currentIndexChanged.connect(self._on_profile_chosen)
        self.set_profiles(service.profiles)

    # -- profiles ------------------------------------------------------------------------------------------

    def set_profiles(self, profiles=None) -> None:
        names = self.service.profile_names()
        current = self.service.watched or self.profile.currentText()
        self.profile.blockSignals(True)
        self.profile.clear()
        self.profile.addItems(names)
        self.profile.setEnabled(bool(names))
        if current in names:
            self.profile.setCurrentIndex(names.index(current))
        self.profile.blockSignals(False)
        if not names:
            self.summary.setText(NO_PROFILE_TEXT)
            self.table.setRowCount(0)
        self._on_profile_chosen()

    def watch(self, name: str) -> None:
        """Watch profile `name` (e.g. the one just chosen as a PACS source)."""
        index = self.profile.findText(name)
        if index >= 0:
            self.profile.setCurrentIndex(index)

    def _on_profile_chosen(self, *_: object) -> None:
        self.service.watch(self.profile.currentText() or None)  # restarts the monitor only when it changed

    # -- statuses ------------------------------------------------------------------------------------------

    def show_statuses(self, profile: str, statuses: Sequence[NodeStatus]) -> None:
        if profile != self.profile.currentText():
            return
        self._statuses = list(statuses)
        self.table.setRowCount(len(statuses))
        for row, status in enumerate(statuses):
            cells = (status.name, status.address, state_text(status), rtt_text(status))
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(status.error if status.error and not status.up else text)
                if column == 2 and status.state in STATE_COLOURS:
                    item.setForeground(STATE_COLOURS[status.state])
                self.table.setItem(row, column, item)
        up = sum(1 for s in statuses if s.up)
        vip = statuses[0] if statuses else None
        if vip is None or vip.up is None:
            self.summary.setText(f"Checking {profile}…")
        elif vip.up:
            served = f", served by {vip.serving}" if vip.serving else ""
            self.summary.setText(f"{profile}: the virtual IP answers{served}; {up} of {len(statuses)} addresses up.")
        else:
            self.summary.setText(f"{profile}: the virtual IP does not answer; {up} of {len(statuses)} addresses up.")

    def row_texts(self) -> list[tuple[str, ...]]:
        """What the table shows, row by row (for tests and screen readers)."""
        return [tuple(self.table.item(r, c).text() if self.table.item(r, c) else "" for c in range(len(COLUMNS)))
                for r in range(self.table.rowCount())]

    # -- event log -----------------------------------------------------------------------------------------

    def add_event(self, text: str) -> None:
        at_end = self.log.verticalScrollBar().value() >= self.log.verticalScrollBar().maximum() - 2
        self.log.addItem(text)
        while self.log.count() > self.log_max:
            self.log.takeItem(0)
        if at_end:
            self.log.scrollToBottom()

    def event_texts(self) -> list[str]:
        return [self.log.item(i).text() for i in range(self.log.count())]

