"""Cluster profiles: add, edit and remove the user's own (``clusters.json`` in the config folder), written
atomically in the engine's format (:func:`viewer.pacs.cluster.save_profiles`, read back by
:func:`~viewer.pacs.cluster.load_profiles`).  Profiles IT installed in ``/etc/mifas-viewer`` are shown read-only;
a user profile of the same name overrides one of them.

What the form does not show (timeouts, retrieval order, backoff, C-MOVE port) is kept as the profile had it.
Problems are said in the dialog's own status line, never in another dialog.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import MifasError, PacsError
from viewer.pacs.cluster import (
    MEMBERS_MAX,
    PROFILES_MAX,
    ClusterAddress,
    ClusterProfile,
    load_profiles,
    save_profiles,
)
from viewer.pacs.node import AE_TITLE_LENGTH_MAX, PORT_MAX
from viewer.pacs.retry import RetryPolicy

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #b00020;"
MEMBER_COLUMNS = ("Name", "Host", "Port", "AE title (if not the cluster's)", "DICOMweb URL", "REST URL")
NEW_PROFILE_PORT = 104
BUDGET_MAX_S = 86400.0
SYSTEM_SUFFIX = " (system, read-only)"


def new_profile(name: str) -> ClusterProfile:
    return ClusterProfile(name=name, vip=ClusterAddress(host="pacs.example.org", port=NEW_PROFILE_PORT,
                                                        name="virtual IP"))


class ProfileDialog(QDialog):
    """Edits the user's profiles; ``saved(list[ClusterProfile])`` fires after a successful save."""

    saved = Signal(object)

    def __init__(self, user_path: Path | str, system_dir: Path | str | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Cluster profiles")
        self.resize(920, 620)
        self.user_path = Path(user_path)
        self.system_dir = system_dir
        system = load_profiles(None, system_dir)
        user = load_profiles(self.user_path, None)
        self.system: list[ClusterProfile] = [system.profiles[n] for n in sorted(system.profiles)]
        self.user: list[ClusterProfile] = list(user.profiles.values())
        self._current = -1  # row of the list being edited
        self._loading = False

        self.list = QListWidget(self)
        self.list.currentRowChanged.connect(self._on_row_changed)
        self.add_button = QPushButton("Add", self)
        self.add_button.clicked.connect(self.add_profile)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self.remove_profile)

        self.name = QLineEdit(self)
        self.ae_title = QLineEdit(self)
        self.ae_title.setMaxLength(AE_TITLE_LENGTH_MAX)
        self.calling_ae = QLineEdit(self)
        self.calling_ae.setMaxLength(AE_TITLE_LENGTH_MAX)
        self.vip_host = QLineEdit(self)
        self.vip_port = QSpinBox(self)
        self.vip_port.setRange(1, PORT_MAX)
        self.vip_web = QLineEdit(self)
        self.vip_web.setPlaceholderText("optional, e.g. http://192.0.2.10:8042/dicom-web")
        self.vip_rest = QLineEdit(self)
        self.vip_rest.setPlaceholderText("optional: Orthanc's REST root, tells which member serves")
        self.dimse = QCheckBox("DIMSE (C-FIND, C-GET, C-MOVE)", self)
        self.dicomweb = QCheckBox("DICOMweb (QIDO-RS, WADO-RS)", self)
        self.budget = QDoubleSpinBox(self)
        self.budget.setRange(0.0, BUDGET_MAX_S)
        self.budget.setDecimals(1)
        self.budget.setSuffix(" s")
        self.budget.setToolTip("How long to keep retrying after the cluster stops answering, per outage")
        self.members = QTableWidget(0, len(MEMBER_COLUMNS), self)
        self.members.setHorizontalHeaderLabels(MEMBER_COLUMNS)
        self.members.verticalHeader().setVisible(False)
        self.members.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.members.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.members.horizontalHeader().setStretchLastSection(True)
        self.add_member_button = QPushButton("Add member", self)
        self.add_member_button.clicked.connect(self.add_member)
        self.remove_member_button = QPushButton("Remove member", self)
        self.remove_member_button.clicked.connect(self.remove_member)

        form = QFormLayout()
        form.addRow("Name", self.name)
        form.addRow("Cluster AE title", self.ae_title)
        form.addRow("Our calling AE title", self.calling_ae)
        form.addRow("Virtual IP host", self.vip_host)
        form.addRow("Virtual IP port", self.vip_port)
        form.addRow("Virtual IP DICOMweb URL", self.vip_web)
        form.addRow("Virtual IP REST URL", self.vip_rest)
        transports = QHBoxLayout()
        transports.addWidget(self.dimse)
        transports.addWidget(self.dicomweb)
        form.addRow("Transports", transports)
        form.addRow("Retry budget", self.budget)
        member_buttons = QHBoxLayout()
        member_buttons.addWidget(self.add_member_button)
        member_buttons.addWidget(self.remove_member_button)
        member_buttons.addStretch(1)
        self.editor = QGroupBox("Profile", self)
        editor_layout = QVBoxLayout(self.editor)
        editor_layout.addLayout(form)
        editor_layout.addWidget(QLabel("Members (reached directly when the virtual IP does not answer)", self))
        editor_layout.addWidget(self.members, 1)
        editor_layout.addLayout(member_buttons)

        left = QVBoxLayout()
        left.addWidget(self.list, 1)
        list_buttons = QHBoxLayout()
        list_buttons.addWidget(self.add_button)
        list_buttons.addWidget(self.remove_button)
        left.addLayout(list_buttons)
        top = QHBoxLayout()
        top.addLayout(left, 1)
        top.addWidget(self.editor, 3)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(top, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)

        warnings = [*system.warnings, *user.warnings]
        if warnings:
            self._say(" ".join(warnings), error=True)
        self._fill_list(0 if self.user or self.system else -1)

    # -- list ----------------------------------------------------------------------------------------------

    def _is_system(self, row: int) -> bool:
        return row >= len(self.user)

    def _profile_at(self, row: int) -> ClusterProfile:
        return self.user[row] if row < len(self.user) else self.system[row - len(self.user)]

    def _fill_list(self, select: int) -> None:
        self._loading = True
        self.list.clear()
        for profile in self.user:
            self.list.addItem(QListWidgetItem(profile.name))
        for profile in self.system:
            item = QListWidgetItem(profile.name + SYSTEM_SUFFIX)
            item.setForeground(self.palette().placeholderText())
            self.list.addItem(item)
        self._current = -1
        self._loading = False
        if 0 <= select < self.list.count():
            self.list.setCurrentRow(select)
        else:
            self._show(None, read_only=True)

    def profile_names(self) -> list[str]:
        return [self.list.item(i).text() for i in range(self.list.count())]

    def _on_row_changed(self, row: int) -> None:
        if self._loading:
            return
        if self._current >= 0 and not self._is_system(self._current) and row != self._current:
            if not self.commit():
                self._loading = True
                self.list.setCurrentRow(self._current)  # stay on the profile with the mistake
                self._loading = False
                return
            self.list.item(self._current).setText(self.user[self._current].name)
        self._current = row
        if row < 0:
            self._show(None, read_only=True)
        else:
            self._show(self._profile_at(row), read_only=self._is_system(row))

    def add_profile(self) -> None:
        if self._current >= 0 and not self._is_system(self._current) and not self.commit():
            return
        if len(self.user) >= PROFILES_MAX:
            self._say(f"At most {PROFILES_MAX} cluster profiles can be saved.", error=True)
            return
        taken = {p.name for p in self.user}
        name = next(f"New cluster {i}" for i in range(1, PROFILES_MAX + 2) if f"New cluster {i}" not in taken)
        self.user.append(new_profile(name))
        self._fill_list(len(self.user) - 1)

    def remove_profile(self) -> None:
        row = self.list.currentRow()
        if row < 0 or self._is_system(row):
            self._say("A system profile cannot be removed here (IT installed it).", error=True)
            return
        del self.user[row]
        self._fill_list(min(row, len(self.user) - 1))
        self._say("")

    # -- form ----------------------------------------------------------------------------------------------

    def _show(self, profile: ClusterProfile | None, *, read_only: bool) -> None:
        p = profile
        self.name.setText(p.name if p else "")
        self.ae_title.setText(p.ae_title if p else "")
        self.calling_ae.setText(p.calling_ae if p else "")
        self.vip_host.setText(p.vip.host if p else "")
        self.vip_port.setValue(p.vip.port if p else NEW_PROFILE_PORT)
        self.vip_web.setText((p.vip.dicomweb_url or "") if p else "")
        self.vip_rest.setText((p.vip.rest_url or "") if p else "")
        self.dimse.setChecked(bool(p) and "dimse" in p.transports)
        self.dicomweb.setChecked(bool(p) and "dicomweb" in p.transports)
        self.budget.setValue(p.retry.budget_s if p else 0.0)
        self.members.setRowCount(0)
        for member in (p.members if p else ()):
            self._append_member(member)
        self.editor.setEnabled(p is not None)
        for widget in (self.name, self.ae_title, self.calling_ae, self.vip_host, self.vip_web, self.vip_rest):
            widget.setReadOnly(read_only)
        for widget in (self.vip_port, self.budget):
            widget.setReadOnly(read_only)
        for widget in (self.dimse, self.dicomweb, self.add_member_button, self.remove_member_button):
            widget.setEnabled(not read_only)
        self.members.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers if read_only
                                     else QAbstractItemView.EditTrigger.AllEditTriggers)
        self.remove_button.setEnabled(p is not None and not read_only)
        self.editor.setTitle("Profile (read-only: installed by IT)" if p is not None and read_only else "Profile")

    def _append_member(self, member: ClusterAddress | None = None) -> None:
        row = self.members.rowCount()
        self.members.insertRow(row)
        values = ((member.name, member.host, str(member.port), member.ae_title or "", member.dicomweb_url or "",
                   member.rest_url or "") if member else ("", "", str(NEW_PROFILE_PORT), "", "", ""))
        for column, value in enumerate(values):
            self.members.setItem(row, column, QTableWidgetItem(value))

    def add_member(self) -> None:
        if self.members.rowCount() >= MEMBERS_MAX:
            self._say(f"A cluster has at most {MEMBERS_MAX} members.", error=True)
            return
        self._append_member()
        self.members.setCurrentCell(self.members.rowCount() - 1, 0)

    def remove_member(self) -> None:
        rows = sorted({i.row() for i in self.members.selectedIndexes()} or {self.members.currentRow()}, reverse=True)
        for row in rows:
            if row >= 0:
                self.members.removeRow(row)

    def _cell(self, row: int, column: int) -> str:
        item = self.members.item(row, column)
        return item.text().strip() if item is not None else ""

    def form_profile(self, base: ClusterProfile | None = None) -> ClusterProfile:
        """The profile the form describes (raises PacsError naming the problem)."""
        members = []
        for row in range(self.members.rowCount()):
            if not any(self._cell(row, c) for c in range(len(MEMBER_COLUMNS))):
                continue  # an empty row added by mistake
            port_text = self._cell(row, 2)
            try:
                port = int(port_text)
            except ValueError:
                raise PacsError(f"Member {row + 1}: the port '{port_text}' is not a number.") from None
            try:
                members.append(ClusterAddress(host=self._cell(row, 1), port=port, name=self._cell(row, 0),
                                              ae_title=self._cell(row, 3) or None,
                                              dicomweb_url=self._cell(row, 4) or None,
                                              rest_url=self._cell(row, 5) or None))
            except MifasError as exc:
                raise PacsError(f"Member {row + 1}: {exc}") from None
        transports = tuple(t for t, box in (("dimse", self.dimse), ("dicomweb", self.dicomweb)) if box.isChecked())
        vip_name = base.vip.name if base is not None and base.vip.name else "virtual IP"
        vip = ClusterAddress(host=self.vip_host.text().strip(), port=self.vip_port.value(), name=vip_name,
                             dicomweb_url=self.vip_web.text().strip() or None,
                             rest_url=self.vip_rest.text().strip() or None)
        retry = dataclasses.replace(base.retry if base is not None else RetryPolicy(), budget_s=self.budget.value())
        fields = dict(name=self.name.text().strip(), vip=vip, members=tuple(members),
                      ae_title=self.ae_title.text().strip(), calling_ae=self.calling_ae.text().strip(),
                      transports=transports, retry=retry)
        try:
            return dataclasses.replace(base, **fields) if base is not None else ClusterProfile(**fields)
        except (ValueError, TypeError) as exc:
            raise PacsError(str(exc)) from None

    def commit(self) -> bool:
        """Check the form and keep it as the current user profile; False (and the reason said) if invalid."""
        row = self._current
        if row < 0 or self._is_system(row):
            return True
        try:
            profile = self.form_profile(self.user[row])
        except MifasError as exc:
            self._say(str(exc), error=True)
            return False
        if any(p.name == profile.name for i, p in enumerate(self.user) if i != row):
            self._say(f"There is already a profile named '{profile.name}'.", error=True)
            return False
        self.user[row] = profile
        self._say("")
        return True

    # -- save ----------------------------------------------------------------------------------------------

    def save(self) -> bool:
        if not self.commit():
            return False
        try:
            save_profiles(self.user_path, self.user)
        except MifasError as exc:
            self._say(str(exc), error=True)
            return False
        log.info("saved %d cluster profile(s) to %s", len(self.user), self.user_path)
        self.saved.emit(list(self.user))
        self.accept()
        return True

    def _say(self, text: str, *, error: bool = False) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(text)
