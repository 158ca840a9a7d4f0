"""Settings: the PACS nodes (add, edit, remove, test) and the retrieval defaults, saved with
:func:`viewer.settings.save_settings`.

"Test" runs a C-ECHO (and, when a DICOMweb URL is set, a QIDO-RS request) in a worker and shows the result in
words; the dialog never waits on the network.

Nodes IT set for everyone (``/etc/mifas-viewer/settings.json``) are marked "set by IT".  Removing one would not
stick (it comes back at the next start), so Remove is off for them; editing one makes the user's own copy, which
is marked as such and can be reverted to IT's.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import MifasError
from viewer.pacs.client import open_client
from viewer.pacs.node import AE_TITLE_LENGTH_MAX, DEFAULT_CALLING_AE, PORT_MAX, Node, validate_ae_title
from viewer.settings import VIAS, Settings, save_settings
from viewer.ui.pacs_panel import VIA_LABELS
from viewer.ui.workers import TaskRunner, describe_error

log = logging.getLogger(__name__)

ERROR_STYLE = "color: #b00020;"
OK_STYLE = "color: #1b5e20;"
NEW_NODE_PORT = 104  # PS3.8 / IANA: the well-known DICOM port
IT_SUFFIX = "  (set by IT)"
OVERRIDE_SUFFIX = "  (your copy of IT's)"
IT_TIP = ("Set for every user by IT (/etc/mifas-viewer/settings.json). You may edit it: that makes your own copy. "
          "It cannot be removed: it would come back at the next start.")
OVERRIDE_TIP = "Your copy of a node IT set for everyone. Revert to IT's to follow IT's changes again."


class SettingsDialog(QDialog):
    """Edits a copy of ``settings``; ``saved(Settings)`` fires after a successful save."""

    saved = Signal(object)

    def __init__(self, settings: Settings | None, parent: QWidget | None = None, *,
                 path: Path | str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.resize(760, 480)
        base = settings or Settings()
        self.settings = dataclasses.replace(base, nodes=list(base.nodes))
        self.path = path
        self._current = -1
        self._runner = TaskRunner(self, max_threads=1, name="node test")
        self._test_task = None

        self.node_list = QListWidget(self)
        self.node_list.currentRowChanged.connect(self._on_row_changed)
        self.add_button = QPushButton("Add", self)
        self.add_button.clicked.connect(self.add_node)
        self.remove_button = QPushButton("Remove", self)
        self.remove_button.clicked.connect(self.remove_node)
        self.test_button = QPushButton("Test", self)
        self.test_button.setToolTip("C-ECHO (and DICOMweb, if set) to the selected node")
        self.test_button.clicked.connect(self.test_node)

        self.name = QLineEdit(self)
        self.ae_title = QLineEdit(self)
        self.ae_title.setMaxLength(AE_TITLE_LENGTH_MAX)
        self.host = QLineEdit(self)
        self.port = QSpinBox(self)
        self.port.setRange(1, PORT_MAX)
        self.calling_ae = QLineEdit(self)
        self.calling_ae.setMaxLength(AE_TITLE_LENGTH_MAX)
        self.dicomweb_url = QLineEdit(self)
        self.dicomweb_url.setPlaceholderText("optional, e.g. http://pacs:8042/dicom-web")
        node_form = QFormLayout()
        node_form.addRow("Name", self.name)
        node_form.addRow("AE title", self.ae_title)
        node_form.addRow("Host", self.host)
        node_form.addRow("Port", self.port)
        node_form.addRow("Our AE title", self.calling_ae)
        node_form.addRow("DICOMweb URL", self.dicomweb_url)
        self.node_box = QGroupBox("Node", self)
        self.node_box.setLayout(node_form)
        self.test_result = QLabel("", self)
        self.test_result.setWordWrap(True)
        self.test_result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.default_via = QComboBox(self)
        for key in VIAS:
            self.default_via.addItem(VIA_LABELS.get(key, key), key)
        self.default_via.setCurrentIndex(max(0, self.default_via.findData(self.settings.default_via)))
        self.default_calling_ae = QLineEdit(self.settings.calling_ae, self)
        self.default_calling_ae.setMaxLength(AE_TITLE_LENGTH_MAX)
        self.storage_port = QSpinBox(self)
        self.storage_port.setRange(1, PORT_MAX)
        self.storage_port.setValue(self.settings.storage_port)
        general = QFormLayout()
        general.addRow("Retrieve with", self.default_via)
        general.addRow("Our AE title (new nodes)", self.default_calling_ae)
        general.addRow("Our C-MOVE port", self.storage_port)
        general_box = QGroupBox("Retrieval", self)
        general_box.setLayout(general)

        self.error = QLabel("", self)
        self.error.setWordWrap(True)
        self.error.setStyleSheet(ERROR_STYLE)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel,
                                        self)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)

        list_buttons = QHBoxLayout()
        for b in (self.add_button, self.remove_button, self.test_button):
            list_buttons.addWidget(b)
        left = QVBoxLayout()
        left.addWidget(QLabel("PACS nodes", self))
        left.addWidget(self.node_list, 1)
        left.addLayout(list_buttons)
        right = QVBoxLayout()
        right.addWidget(self.node_box)
        right.addWidget(self.test_result)
        right.addWidget(general_box)
        right.addStretch(1)
        columns = QHBoxLayout()
        columns.addLayout(left, 1)
        columns.addLayout(right, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(columns, 1)
        for warning in self.settings.warnings:
            layout.addWidget(QLabel(warning, self))
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)

        for node in self.settings.nodes:
            self.node_list.addItem(node.name)
            self._mark(self.node_list.count() - 1, node)
        if self.settings.nodes:
            self.node_list.setCurrentRow(0)
        self._update_enabled()

    # -- the node form -----------------------------------------------------------------------------------------

    def origin(self, node: Node) -> str:
        """'it' (IT's node as IT set it), 'copy' (the user's copy of an IT node) or 'own'."""
        inherited = self.settings.inherited
        theirs = inherited.node(node.name) if inherited is not None else None
        if theirs is None:
            return "own"
        return "it" if theirs == node else "copy"

    def _mark(self, row: int, node: Node) -> None:
        item = self.node_list.item(row)
        origin = self.origin(node)
        item.setText(node.name + {"it": IT_SUFFIX, "copy": OVERRIDE_SUFFIX}.get(origin, ""))
        item.setToolTip({"it": IT_TIP, "copy": OVERRIDE_TIP}.get(origin, ""))
        font = item.font()
        font.setItalic(origin == "it")
        item.setFont(font)

    def _update_enabled(self) -> None:
        has = self._current >= 0
        self.node_box.setEnabled(has)
        self.test_button.setEnabled(has)
        origin = self.origin(self.settings.nodes[self._current]) if has else "own"
        self.remove_button.setText("Revert to IT's" if origin == "copy" else "Remove")
        self.remove_button.setEnabled(has and origin != "it")
        self.remove_button.setToolTip(IT_TIP if origin == "it" else OVERRIDE_TIP if origin == "copy" else "")

    def _show_node(self, node: Node | None) -> None:
        self.name.setText(node.name if node else "")
        self.ae_title.setText(node.ae_title if node else "")
        self.host.setText(node.host if node else "")
        self.port.setValue(node.port if node else NEW_NODE_PORT)
        self.calling_ae.setText(node.calling_ae if node else "")
        self.dicomweb_url.setText((node.dicomweb_url or "") if node else "")
        self.test_result.setText("")

    def form_node(self) -> Node:
        """The node as the form describes it; raises MifasError (a sentence) when a field is invalid."""
        previous = self.settings.nodes[self._current] if self._current >= 0 else None
        name = self.name.text().strip()
        if not name:
            raise MifasError("Give the node a name.")
        if any(n.name == name for i, n in enumerate(self.settings.nodes) if i != self._current):
            raise MifasError(f"Another node is already called '{name}'.")
        fields = dict(
            name=name,
            ae_title=self.ae_title.text(),
            host=self.host.text(),
            port=self.port.value(),
            calling_ae=self.calling_ae.text() or self.default_calling_ae.text() or DEFAULT_CALLING_AE,
            dicomweb_url=self.dicomweb_url.text().strip() or None,
        )
        # What the form does not show (timeouts, TLS, sign-in) stays as the settings file has it.
        return dataclasses.replace(previous, **fields) if previous is not None else Node(**fields)

    def commit_form(self) -> bool:
        """Store the form into the node being edited; False (and the reason shown) when it is invalid."""
        if self._current < 0:
            return True
        try:
            node = self.form_node()
        except MifasError as exc:
            self.error.setText(f"Node '{self.node_list.item(self._current).text()}': {exc}")
            return False
        self.settings.nodes[self._current] = node
        self._mark(self._current, node)
        self.error.setText("")
        self._update_enabled()
        return True

    def _on_row_changed(self, row: int) -> None:
        if row == self._current:
            return
        if self._current >= 0 and not self.commit_form():
            self.node_list.blockSignals(True)
            self.node_list.setCurrentRow(self._current)  # stay until the form is valid
            self.node_list.blockSignals(False)
            return
        self._current = row
        self._show_node(self.settings.nodes[row] if row >= 0 else None)
        self._update_enabled()

    def add_node(self) -> None:
        if not self.commit_form():
            return
        taken = {n.name for n in self.settings.nodes}
        name = next(f"PACS {k}" for k in range(1, len(taken) + 2) if f"PACS {k}" not in taken)
        calling = self.default_calling_ae.text().strip() or DEFAULT_CALLING_AE
        try:
            calling = validate_ae_title(calling, "calling AE title")
        except MifasError:
            calling = DEFAULT_CALLING_AE
        node = Node(name=name, ae_title="ANY-SCP", host="127.0.0.1", port=NEW_NODE_PORT, calling_ae=calling)
        self.settings.nodes.append(node)
        self.node_list.addItem(node.name)
        self.node_list.setCurrentRow(len(self.settings.nodes) - 1)
        self.name.setFocus()
        self.name.selectAll()

    def remove_node(self) -> None:
        """Remove the node (the user's own), or put IT's back in place of the user's copy; IT's own stay."""
        row = self._current
        if row < 0:
            return
        node = self.settings.nodes[row]  # as last committed: the form's pending edits go either way
        origin = self.origin(node)
        if origin == "it":
            return
        if origin == "copy":
            assert self.settings.inherited is not None
            theirs = self.settings.inherited.node(node.name)
            self.settings.nodes[row] = theirs
            self._mark(row, theirs)
            self._show_node(theirs)
            self._update_enabled()
            return
        self._current = -1  # the form's content goes away with the node
        del self.settings.nodes[row]
        self.node_list.takeItem(row)
        self.error.setText("")
        if self.node_list.currentRow() >= 0:
            self._on_row_changed(self.node_list.currentRow())
        else:
            self._show_node(None)
            self._update_enabled()

    # -- test ------------------------------------------------------------------------------------------------

    def test_node(self):
        """C-ECHO the node in the form (and QIDO-RS its DICOMweb URL); the result appears below the form."""
        try:
            node = self.form_node()
        except MifasError as exc:
            self._test_said(str(exc), ok=False)
            return None
        if self._test_task is not None:
            self._test_task.cancel()

        def echo(progress, cancel):
            lines = []
            client = open_client(node, "get")
            try:
                lines.append(f"C-ECHO answered in {client.echo() * 1000:.0f} ms.")
            finally:
                client.close()
            if node.dicomweb_url and not cancel.is_set():
                web = open_client(node, "wado")
                try:
                    lines.append(f"DICOMweb answered in {web.echo() * 1000:.0f} ms.")
                except MifasError as exc:
                    lines.append(f"DICOMweb: {exc}")
                finally:
                    web.close()
            return " ".join(lines)

        task = None

        def done(text: str) -> None:
            if self._test_task is task:
                self._test_said(f"{node.describe()}: {text}", ok="DICOMweb: " not in text)

        def failed(exc: BaseException) -> None:
            if self._test_task is task:
                self._test_said(describe_error(exc), ok=False)

        self._test_said(f"Testing {node.describe()}…", ok=True)
        task = self._test_task = self._runner.submit(echo, on_done=done, on_error=failed, name="node test")
        return task

    def _test_said(self, text: str, *, ok: bool) -> None:
        self.test_result.setStyleSheet(OK_STYLE if ok else ERROR_STYLE)
        self.test_result.setText(text)

    # -- save ------------------------------------------------------------------------------------------------

    def collect(self) -> Settings:
        """The settings as edited; raises MifasError (a sentence) when something is invalid."""
        if not self.commit_form():
            raise MifasError(self.error.text())
        calling = validate_ae_title(self.default_calling_ae.text(), "calling AE title")
        return dataclasses.replace(self.settings, nodes=list(self.settings.nodes),
                                   default_via=str(self.default_via.currentData()), calling_ae=calling,
                                   storage_port=self.storage_port.value(), warnings=())

    def save(self) -> None:
        try:
            settings = self.collect()
            written = save_settings(settings, self.path)
        except MifasError as exc:
            self.error.setText(str(exc))
            return
        log.info("settings saved (%d node(s))", len(settings.nodes))
        self.settings = settings
        self.saved_path = written
        self.saved.emit(settings)
        self.accept()

    def done(self, result: int) -> None:  # accept/reject/close: stop a running test
        self._runner.shutdown(timeout_ms=0)
        super().done(result)
