"""The Export dialog (File > Export…, Ctrl+Shift+E; the Studies panel's context menu): what to export (a study, the
selected series, the series of the active viewport, the key images), where (a folder, a ZIP, patient media with the
viewer copied beside the DICOMDIR), as what (DICOM, PNG, JPEG, an MP4 or animated PNG movie of a multi-frame
series), and with or without the patient's identity (PS3.15 E.1's Basic Profile, its options by their standard
names, a pseudonym).

With de-identification, the series whose images may carry burned-in identity
(:func:`viewer.share.deidentify.burned_in_reason`, read from one header per series in a worker) are listed with
the reason; each is left out (the default) or exported with the regions the user blacks out in the
:class:`~viewer.ui.blackout_editor.BlackoutEditor`.

The export runs in a worker (:func:`viewer.share.export.export`) with a progress bar; Cancel sets its cancel event
(nothing is left at the destination).  The end is one sentence (:attr:`ExportDialog.finished_text`, shown on the
window's status line); an error is a plain sentence without patient data (:attr:`ExportDialog.failed`).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from viewer.errors import MifasError, OperationCancelled
from viewer.share import deidentify
from viewer.ui.share_ui import series_name
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error

CONTAINER_LABELS = {"folder": "Folder", "zip": "ZIP file", "media": "Patient media (DICOMDIR folder to burn)"}
FORM_LABELS = {"dicom": "DICOM", "png": "PNG pictures", "jpeg": "JPEG pictures", "mp4": "MP4 movie (H.264)",
               "apng": "Animated PNG movie"}
MOVIE_FORMS = ("mp4", "apng")
LEAVE_OUT = "Leave out"
BLACK_OUT = "Black out regions…"


def frame_count(library, series_uids) -> int:
    """The most frames of any one series (index reads): a movie needs more than one."""
    best = 0
    for uid in series_uids:
        try:
            best = max(best, sum(max(1, r.number_of_frames) for r in library.instances(uid)))
        except MifasError:
            continue
    return best


def finished_sentence(result) -> str:
    """'Exported 120 images to /x; 1 series left out: Series 2 (US): …'"""
    text = f"Exported {result.written} image{'s' if result.written != 1 else ''} to {result.destination}"
    if result.excluded:
        n = len(result.excluded)
        text += f"; {n} series left out: " + " ".join(result.excluded)
    else:
        text += "."
    return text


class ExportDialog(QDialog):
    """See the module docstring.  `scopes`: :class:`viewer.ui.share_ui.Scope`, the first chosen."""

    finished_text = Signal(str)  # the sentence at the end (done, or cancelled)
    failed = Signal(str, str)  # title, sentence: the window shows them as its other errors
    burned_in_listed = Signal()  # the burned-in list is filled in (tests)
    export_finished = Signal(object)  # the ExportResult, or the exception

    def __init__(self, library, scopes, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export")
        self.library = library
        self.scopes = list(scopes)
        self._runner = TaskRunner(self, max_threads=1, name="export")
        self._task: TaskHandle | None = None
        self._scan: TaskHandle | None = None
        self._reasons: dict[str, str] = {}  # series UID -> why it may carry burned-in identity
        self.blackout: dict[str, list] = {}  # series UID -> Rects
        self.editor = None
        self._deid = deidentify

        self.scope = QComboBox(self)
        for scope in self.scopes:
            self.scope.addItem(scope.label)
        self.container = QComboBox(self)
        for key, label in CONTAINER_LABELS.items():
            self.container.addItem(label, key)
        self.destination = QLineEdit(self)
        self.destination.setPlaceholderText("The folder or ZIP file to create")
        self.browse = QPushButton("Choose…", self)
        self.browse.clicked.connect(self._choose_destination)
        self.copy_viewer = QCheckBox("Copy the viewer onto the disc", self)
        self.copy_viewer.setToolTip("So that the disc opens on a workstation without a viewer")
        self.form = QComboBox(self)
        for key, label in FORM_LABELS.items():
            self.form.addItem(label, key)

        self.deidentify = QCheckBox("De-identify (PS3.15 Basic Application Level Confidentiality Profile)", self)
        self.option_boxes: dict[str, QCheckBox] = {}
        self.options_group = QGroupBox("Options of the profile", self)
        options_layout = QVBoxLayout(self.options_group)
        for slug, name in deidentify.OPTION_NAMES.items():
            box = QCheckBox(name, self.options_group)
            box.setObjectName(slug)
            self.option_boxes[slug] = box
            options_layout.addWidget(box)
        self.pseudonym = QLineEdit(self)
        self.pseudonym.setPlaceholderText("Made for this export, e.g. ANON^1A2B3C4D")
        self.burned_in = QTableWidget(0, 3, self)
        self.burned_in.setHorizontalHeaderLabels(["Series", "May carry burned-in identity because", "Export"])
        self.burned_in.horizontalHeader().setStretchLastSection(True)
        self.burned_in.verticalHeader().setVisible(False)
        self.burned_in_note = QLabel("", self)
        self.burned_in_note.setWordWrap(True)
        deid = QGroupBox("Identity", self)
        deid_layout = QFormLayout(deid)
        deid_layout.addRow(self.deidentify)
        deid_layout.addRow(self.options_group)
        deid_layout.addRow("Pseudonym:", self.pseudonym)
        deid_layout.addRow(self.burned_in_note)
        deid_layout.addRow(self.burned_in)

        self.progress = QProgressBar(self)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel("", self)
        self.status.setWordWrap(True)
        self.export_button = QPushButton("Export", self)
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.clicked.connect(self.cancel)

        where = QHBoxLayout()
        where.addWidget(self.destination, 1)
        where.addWidget(self.browse)
        form = QFormLayout()
        form.addRow("Export:", self.scope)
        form.addRow("To:", self.container)
        form.addRow("Destination:", where)
        form.addRow("", self.copy_viewer)
        form.addRow("As:", self.form)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(deid)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(720, 640)

        self.scope.currentIndexChanged.connect(self._on_scope)
        self.container.currentIndexChanged.connect(self._sync)
        self.form.currentIndexChanged.connect(self._sync)
        self.deidentify.toggled.connect(self._on_deidentify)
        self._on_scope()

    # -- choices -------------------------------------------------------------------------------------------

    @property
    def current_scope(self):
        return self.scopes[max(0, self.scope.currentIndex())]

    def choose(self, *, scope: str | None = None, container: str | None = None, form: str | None = None) -> None:
        """Pick choices by key (what the combo boxes hold), as a user would."""
        if scope is not None:
            self.scope.setCurrentIndex(next(i for i, s in enumerate(self.scopes) if s.key == scope))
        if container is not None:
            self.container.setCurrentIndex(self.container.findData(container))
        if form is not None:
            self.form.setCurrentIndex(self.form.findData(form))

    def _choose_destination(self) -> None:
        if self.container.currentData() == "zip":
            path, _ = QFileDialog.getSaveFileName(self, "Export to a ZIP file", "export.zip", "ZIP file (*.zip)")
        else:
            parent = QFileDialog.getExistingDirectory(self, "The folder to export into")
            path = str(Path(parent) / "MIFAS export") if parent else ""
        if path:
            self.destination.setText(path)

    def _on_scope(self, *_: object) -> None:
        self._movie_possible = frame_count(self.library, self.current_scope.series_uids) > 1
        self._reasons = {}
        self.burned_in.setRowCount(0)
        if self.deidentify.isChecked():
            self._scan_burned_in()
        self._sync()

    def _sync(self, *_: object) -> None:
        media = self.container.currentData() == "media"
        model = self.form.model()
        for row in range(self.form.count()):
            key = self.form.itemData(row)
            allowed = (key == "dicom" or not media) and (key not in MOVIE_FORMS or self._movie_possible)
            model.item(row).setEnabled(allowed)
            model.item(row).setToolTip("" if allowed else "A movie needs a series of more than one frame"
                                       if key in MOVIE_FORMS and not self._movie_possible
                                       else "Patient media hold DICOM images only")
        if not model.item(self.form.currentIndex()).isEnabled():
            self.form.setCurrentIndex(self.form.findData("dicom"))
        self.copy_viewer.setEnabled(media)
        if not media:
            self.copy_viewer.setChecked(False)
        on = self.deidentify.isChecked()
        self.options_group.setEnabled(on)
        self.pseudonym.setEnabled(on)
        self.burned_in.setEnabled(on)

    def _on_deidentify(self, on: bool) -> None:
        if on and not self._reasons and self.burned_in.rowCount() == 0:
            self._scan_burned_in()
        self._sync()

    # -- burned-in identity ----------------------------------------------------------------------------------

    def _scan_burned_in(self) -> None:
        """Read one header per series of the scope in a worker; list those with a burned_in_reason."""
        if self._scan is not None:
            self._scan.cancel()
        library, series_uids, deid = self.library, self.current_scope.series_uids, self._deid
        self.burned_in_note.setText("Looking for images that may carry burned-in identity…")

        def work(progress, cancel):
            import pydicom

            reasons = {}
            for k, uid in enumerate(series_uids):
                if cancel.is_set():
                    raise OperationCancelled("The operation was cancelled.")
                records = library.instances(uid, limit=1)
                if not records:
                    continue
                ds = pydicom.dcmread(library.path_of(records[0].sop_instance_uid), stop_before_pixels=True)
                reason = deid.burned_in_reason(ds)
                if reason:
                    reasons[uid] = reason
                progress(k + 1, len(series_uids))
            return reasons

        def done(reasons: dict[str, str]) -> None:
            self._show_burned_in(reasons)

        def failed(exc: BaseException) -> None:
            if not isinstance(exc, OperationCancelled):
                self.burned_in_note.setText(f"The images could not be checked: {describe_error(exc)}")

        self._scan = self._runner.submit(work, on_done=done, on_error=failed, name="burned-in scan")

    def _show_burned_in(self, reasons: dict[str, str]) -> None:
        self._reasons = dict(reasons)
        self.burned_in.setRowCount(0)
        for uid, reason in reasons.items():
            row = self.burned_in.rowCount()
            self.burned_in.insertRow(row)
            name = QTableWidgetItem(series_name(self.library, uid))
            name.setData(Qt.ItemDataRole.UserRole, uid)
            self.burned_in.setItem(row, 0, name)
            self.burned_in.setItem(row, 1, QTableWidgetItem(reason))
            choice = QComboBox(self.burned_in)
            choice.addItems([LEAVE_OUT, BLACK_OUT])
            choice.activated.connect(lambda index, u=uid, c=choice: self._on_choice(u, c, index))
            self.burned_in.setCellWidget(row, 2, choice)
        self.burned_in.resizeColumnsToContents()
        self.burned_in_note.setText(
            f"{len(reasons)} series may carry burned-in identity: left out unless you black out its text."
            if reasons else "No image of this export is known to carry burned-in identity.")
        self.burned_in_listed.emit()

    def burned_in_rows(self) -> list[tuple[str, str, str]]:
        """(series UID, reason, choice) per listed series (tests and accessibility)."""
        return [(self.burned_in.item(r, 0).data(Qt.ItemDataRole.UserRole), self.burned_in.item(r, 1).text(),
                 self.burned_in.cellWidget(r, 2).currentText()) for r in range(self.burned_in.rowCount())]

    def _on_choice(self, series_uid: str, box: QComboBox, index: int) -> None:
        if box.itemText(index) != BLACK_OUT:
            self.blackout.pop(series_uid, None)
            return
        from viewer.ui.blackout_editor import BlackoutEditor

        editor = BlackoutEditor(self.library, series_uid, series_name(self.library, series_uid),
                                self.blackout.get(series_uid, ()), self)

        def closed(result: int) -> None:
            rects = editor.rects() if result == QDialog.DialogCode.Accepted else self.blackout.get(series_uid, [])
            if rects:
                self.blackout[series_uid] = list(rects)
                box.setItemText(1, f"Black out {len(rects)} region{'s' if len(rects) != 1 else ''}…")
            else:
                self.blackout.pop(series_uid, None)
                box.setCurrentIndex(0)

        editor.finished.connect(closed)
        self.editor = editor
        editor.open()

    # -- the export ----------------------------------------------------------------------------------------

    def options(self):
        """The de-identification Options chosen, or None when the export keeps the identity."""
        if not self.deidentify.isChecked():
            return None
        names = [slug for slug, box in self.option_boxes.items() if box.isChecked()]
        pseudonym = self.pseudonym.text().strip()
        values = {"patient_name": pseudonym, "patient_id": pseudonym} if pseudonym else {}
        return self._deid.Options.from_names(names, **values)

    def request(self):
        from viewer.share.export import ExportRequest

        text = self.destination.text().strip()
        if not text:
            raise ValueError("Choose where to export first.")
        blackout = {uid: tuple(rects) for uid, rects in self.blackout.items() if uid in self._reasons}
        return ExportRequest(instances=tuple(self.current_scope.instances), destination=Path(text).expanduser(),
                             container=self.container.currentData(), form=self.form.currentData(),
                             deidentify=self.options(), blackout=blackout,
                             copy_viewer=self.copy_viewer.isChecked())

    @property
    def running(self) -> bool:
        return self._task is not None

    def start(self) -> TaskHandle | None:
        """Export in a worker with the choices made; None (and a sentence) when it cannot start."""
        if self._task is not None:
            return None
        try:
            request = self.request()
            options = request.deidentify
        except (ValueError, MifasError) as exc:
            self.status.setText(str(exc))
            return None
        if options is not None and self._scan is not None and self._scan.running:
            self.status.setText("Still checking the images for burned-in identity; export again in a moment.")
            return None
        library = self.library

        def work(progress, cancel):
            from viewer.share.export import export

            return export(library, request, progress=progress, cancel=cancel)

        def progress(done: int, total: int) -> None:
            if total > 0:
                self.progress.setRange(0, total)
                self.progress.setValue(min(done, total))
            else:
                self.progress.setRange(0, 0)  # busy: the total is not known yet

        def done(result) -> None:
            text = finished_sentence(result)
            self.status.setText(text)
            self.finished_text.emit(text)
            self.export_finished.emit(result)
            self.accept()

        def failed(exc: BaseException) -> None:
            if isinstance(exc, OperationCancelled):
                text = "The export was cancelled; nothing was written."
                self.status.setText(text)
                self.finished_text.emit(text)
            else:
                self.status.setText(describe_error(exc))
                self.failed.emit("Export failed", describe_error(exc))
            self.export_finished.emit(exc)

        def finished() -> None:
            self._task = None
            self.export_button.setEnabled(True)
            for widget in (self.scope, self.container, self.form, self.destination, self.browse):
                widget.setEnabled(True)

        self.export_button.setEnabled(False)
        for widget in (self.scope, self.container, self.form, self.destination, self.browse):
            widget.setEnabled(False)
        self.progress.setRange(0, max(1, len(request.instances)))
        self.progress.setValue(0)
        self.status.setText("Exporting…")
        self._task = self._runner.submit(work, on_done=done, on_error=failed, on_progress=progress,
                                         on_finished=finished, name="export")
        return self._task

    def cancel(self) -> None:
        """Cancel the running export (the dialog stays, saying so), or close the dialog."""
        if self._task is not None:
            self._task.cancel()
            self.status.setText("Cancelling…")
        else:
            self.reject()

    def reject(self) -> None:
        if self._task is not None:  # Escape while exporting: cancel first
            self._task.cancel()
            return
        super().reject()

    def shutdown(self) -> None:
        self._runner.shutdown()
