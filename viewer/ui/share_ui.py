"""Sharing from the window: File > Export… (Ctrl+Shift+E) and File > Send to PACS…, the same two entries in the
Studies panel's context menu, and what each can act on (its *scopes*).

A scope is what the user points at: the study selected in the browser, the series selected there (several rows),
the series of the active viewport, or the key images of the reading.  :func:`export_scopes` lists those that hold
something, from index reads only (no file is opened); the dialogs (:class:`viewer.ui.export_dialog.ExportDialog`,
:class:`viewer.ui.send_dialog.SendDialog`) do the work in workers.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QAbstractItemView

from viewer.errors import MifasError
from viewer.ui.window_actions import make_action

STATUS_MS = 15000


@dataclass(frozen=True)
class Scope:
    """What an export or send acts on: a label for the user, its series, its SOP Instance UIDs."""

    key: str  # "study" | "selection" | "viewport" | "key-images"
    label: str
    series_uids: tuple[str, ...]
    instances: tuple[str, ...]


def series_name(library, series_uid: str) -> str:
    """'Series 3: Axial' (description or modality), from the index: no patient data."""
    record = library.series_record(series_uid)
    if record is None:
        return "A series"
    name = record.series_description or record.modality or "series"
    return f"Series {record.series_number}: {name}" if record.series_number is not None else name


def _instances_of(library, series_uids) -> tuple[str, ...]:
    uids: list[str] = []
    for series_uid in series_uids:
        try:
            uids.extend(sorted(library.instance_uids(series_uid)))
        except MifasError:
            continue
    return tuple(uids)


def export_scopes(window, *, prefer: str = "") -> list[Scope]:
    """The scopes the window offers now, `prefer` (a key) first when it holds something."""
    library = window.library
    scopes: list[Scope] = []
    local = window.browser.local
    study_uid = local.selected_study_uid()
    if study_uid:
        series_uids = tuple(s.series_uid for s in library.series(study_uid))
        record = library.study(study_uid)
        what = (record.study_description if record is not None else "") or "the selected study"
        scopes.append(Scope("study", f"Study: {what} ({len(series_uids)} series)", series_uids,
                            _instances_of(library, series_uids)))
    selected = tuple(local.selected_series_uids())
    if selected:
        label = (f"Selected series: {series_name(library, selected[0])}" if len(selected) == 1
                 else f"Selected series ({len(selected)})")
        scopes.append(Scope("selection", label, selected, _instances_of(library, selected)))
    current = window.current_series_uid
    if current:
        scopes.append(Scope("viewport", f"Series in the active viewport: {series_name(library, current)}",
                            (current,), _instances_of(library, (current,))))
    keys = sorted({sop for sop, _frame in window.grid.annotations.key_images() if library.has_instance(sop)})
    if keys:
        series_uids = tuple(dict.fromkeys(library.instance(sop).series_uid for sop in keys))
        scopes.append(Scope("key-images", f"Key images ({len(keys)})", series_uids, tuple(keys)))
    scopes = [s for s in scopes if s.instances]
    scopes.sort(key=lambda s: s.key != prefer)
    return scopes


class SharingController(QObject):
    """Opens the export and send dialogs of a window; the last one opened is kept for tests
    (``export_dialog``, ``send_dialog``)."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.export_dialog = None
        self.send_dialog = None

    def _replace(self, name: str):
        """The dialog `name` ("export_dialog", "send_dialog") still running, shown again; else None, the old one
        (closed) removed."""
        old = getattr(self, name)
        if old is not None and old.running:
            old.show()
            old.raise_()
            return old
        if old is not None:
            old.shutdown()
            old.deleteLater()
            setattr(self, name, None)
        return None

    def open_export(self, prefer: str = "") -> object | None:
        from viewer.ui.export_dialog import ExportDialog

        running = self._replace("export_dialog")
        if running is not None:
            return running

        scopes = export_scopes(self.window, prefer=prefer)
        if not scopes:
            self.window.statusBar().showMessage(
                "Select a study or series in the Studies panel, or open a series, then choose Export… again.",
                STATUS_MS)
            return None
        dialog = ExportDialog(self.window.library, scopes, self.window)
        dialog.finished_text.connect(lambda text: self.window.statusBar().showMessage(text, STATUS_MS))
        dialog.failed.connect(self.window.show_error)
        self.export_dialog = dialog
        dialog.open()
        return dialog

    def open_send(self, prefer: str = "") -> object | None:
        from viewer.ui.reading_ui import send_targets
        from viewer.ui.send_dialog import SendDialog

        running = self._replace("send_dialog")
        if running is not None:
            return running

        scopes = export_scopes(self.window, prefer=prefer)
        if not scopes:
            self.window.statusBar().showMessage(
                "Select a study or series in the Studies panel, or open a series, then choose Send to PACS… again.",
                STATUS_MS)
            return None
        sources = send_targets(self.window)
        if not sources:
            self.window.statusBar().showMessage("No PACS is configured: add one in Settings to send to it.",
                                                STATUS_MS)
            return None
        dialog = SendDialog(self.window, scopes, sources, self.window)
        dialog.finished_text.connect(lambda text: self.window.statusBar().showMessage(text, STATUS_MS))
        self.send_dialog = dialog
        dialog.open()
        return dialog

    def shutdown(self) -> None:
        for dialog in (self.export_dialog, self.send_dialog):
            if dialog is not None:
                dialog.shutdown()


def attach_sharing(window) -> SharingController:
    """The Export… and Send to PACS… actions of `window` (a MainWindow), in its File menu and in the Studies
    panel's context menu."""
    controller = SharingController(window)
    window.export_action = make_action(window, "&Export…", lambda _=False: controller.open_export("viewport"),
                                       "Ctrl+Shift+E", tip="Export a study, series or the key images: DICOM, "
                                       "pictures or a movie, to a folder, a ZIP or a disc, with or without identity")
    window.send_action = make_action(window, "Send to &PACS…", lambda _=False: controller.open_send("viewport"),
                                     tip="Send a study, series or the key images to a PACS node or cluster")
    file_menu = next((a.menu() for a in window.menuBar().actions() if a.text() == "&File"), None)
    if file_menu is not None:
        file_menu.insertAction(window.export_view_action, window.export_action)
        file_menu.insertAction(window.export_view_action, window.send_action)
    local = window.browser.local
    actions = {}
    for view, prefer in ((local.studies_view, "study"), (local.series_view, "selection")):
        # the study list's menu acts on the study, the series list's on the series selected there
        export = make_action(view, "Export…", lambda _=False, p=prefer: controller.open_export(p))
        send = make_action(view, "Send to PACS…", lambda _=False, p=prefer: controller.open_send(p))
        view.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        view.addAction(export)
        view.addAction(send)
        actions[prefer] = export, send
    local.series_view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    window.browser_export_action, window.browser_send_action = actions["study"]
    window.series_export_action, window.series_send_action = actions["selection"]
    return controller
