"""The main window: browser (left dock), viewports in a layout (centre), tag browser (right dock, hidden),
toolbar and menus.  The toolbar, the menus and the tag browser act on the *active* viewport
(:class:`~viewer.ui.layout.ViewportGrid`); a series opens in the active viewport, or in the one it is dropped on.

Long work (importing, storing the demo study) runs in workers with a non-modal progress dialog and Cancel; its
summary appears when it ends.  Errors reach the user as sentences in message boxes opened without blocking
(``QMessageBox.open``), never as tracebacks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QProgressDialog,
    QVBoxLayout,
    QWidget,
)

import viewer
from viewer import audit
from viewer.dicom.volume import assemble
from viewer.errors import MifasError, OperationCancelled
from viewer.library import ImportSummary, Library, import_paths
from viewer.pacs.cluster import SYSTEM_PROFILE_DIR
from viewer.pacs.node import DEFAULT_STORAGE_PORT
from viewer.settings import VOLUME_MEMORY_MIB_DEFAULT
from viewer.ui import viewport_model as vm
from viewer.ui import window_actions
from viewer.ui.banner import BannerController, FailoverBanner
from viewer.ui.browser import Browser
from viewer.ui.hanging import HangingController
from viewer.ui.health_dock import HealthPanel
from viewer.ui.import_summary import ImportSummaryDialog
from viewer.ui.layout import ViewportGrid
from viewer.ui.priors_panel import attach_priors
from viewer.ui.reading3d import Reading3DWindow
from viewer.ui.reading_ui import attach_reading
from viewer.ui.retrieval_service import HEALTH_INTERVAL_S, JobOutcome, RetrievalService
from viewer.ui.series_source import first_series_uid, open_series
from viewer.ui.share_ui import attach_sharing
from viewer.ui.tag_browser import TagBrowser
from viewer.ui.viewport import Viewport
from viewer.ui.viewport_model import Changed
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error

log = logging.getLogger(__name__)

APP_TITLE = "MIFAS Viewer"
DEMO_SLICES = 120
SERIES_REFRESH_MS = 500  # while a retrieval fills the open series, it is re-read at most this often


def store_demo_study(library: Library, progress=None, cancel=None) -> tuple[str, str]:
    """Store the synthetic demo CT study (idempotent: fixed UIDs).  Returns (study UID, series UID)."""
    from viewer.dicom.demo import demo_datasets

    result = None
    total = DEMO_SLICES
    for done, ds in enumerate(demo_datasets(slices=DEMO_SLICES), start=1):
        if cancel is not None and cancel.is_set():
            break
        result = library.store_dataset(ds)
        if progress is not None:
            progress(done, total)
    if result is None:
        raise MifasError("The demo study could not be created.")
    return result.study_instance_uid, result.series_instance_uid


class MainWindow(QMainWindow):
    series_opened = Signal(str)  # series UID now in the viewport
    study_opened = Signal(str)  # study UID whose series were just laid out (open_study)
    load_failed = Signal(str)  # a load asked for (import, demo, open) failed: the reason in words
    import_finished = Signal(object)  # ImportSummary
    volume_opened = Signal(object)  # the Reading3DWindow just shown

    def __init__(self, library: Library, settings=None, parent: QWidget | None = None, *,
                 settings_path: Path | None = None, cluster_profiles_path: Path | None = None,
                 system_profiles_dir: Path | None = SYSTEM_PROFILE_DIR,
                 health_interval_s: float = HEALTH_INTERVAL_S, resume_jobs: bool = True) -> None:
        """`cluster_profiles_path`: the user's cluster profiles (default: ``clusters.json`` beside the settings
        file, or in the config folder); `system_profiles_dir`: IT's read-only profiles.  With `resume_jobs`,
        retrievals a previous session left unfinished resume in a worker once the window is up."""
        super().__init__(parent)
        self.library = library
        self.settings = settings
        self.settings_path = settings_path  # None: viewer.settings' default location
        self.setWindowTitle(APP_TITLE)
        self.resize(1400, 900)
        if cluster_profiles_path is None and settings_path is not None:
            cluster_profiles_path = Path(settings_path).parent / "clusters.json"
        self.retrievals = RetrievalService(library, self, profiles_path=cluster_profiles_path,
                                       system_dir=system_profiles_dir, health_interval_s=health_interval_s)
        self.grid = ViewportGrid(self)
        self._series_uids: dict[Viewport, str] = {}  # the library series each viewport shows
        self.banner = FailoverBanner(self)
        self.banner_controller = BannerController(self.retrievals, self.banner, self)
        central = QWidget(self)
        central_layout = QVBoxLayout(central)
        central_layout.setContentsMargins(0, 0, 0, 0)
        central_layout.setSpacing(0)
        central_layout.addWidget(self.banner)
        central_layout.addWidget(self.grid, 1)
        self.setCentralWidget(central)
        self.browser = Browser(library, self)
        self.browser.series_activated.connect(self.open_series)
        self.browser.study_activated.connect(self.open_study)
        self.browser.demo_requested.connect(lambda: self.load_demo(open_after=True))
        self.browser_dock = QDockWidget("Studies", self)
        self.browser_dock.setObjectName("studies")
        self.browser_dock.setWidget(self.browser)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.browser_dock)
        self.resizeDocks([self.browser_dock], [460], Qt.Orientation.Horizontal)
        self.tag_browser = TagBrowser(self)
        self.tag_dock = QDockWidget("Tags", self)
        self.tag_dock.setObjectName("tags")
        self.tag_dock.setWidget(self.tag_browser)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.tag_dock)
        self.tag_dock.hide()
        self._tag_dock_sized = False
        self.tag_dock.visibilityChanged.connect(self._on_tag_dock_visibility)
        self.health = HealthPanel(self.retrievals, self)
        self.health_dock = QDockWidget("PACS health", self)
        self.health_dock.setObjectName("pacs-health")
        self.health_dock.setWidget(self.health)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.health_dock)
        self.health_dock.setVisible(bool(self.retrievals.profile_names()))
        self.resizeDocks([self.health_dock], [360], Qt.Orientation.Horizontal)
        self.browser.source_changed.connect(self._on_source_changed)
        self.retrievals.job_progress.connect(self._on_job_progress)
        self.retrievals.job_finished.connect(self._on_job_finished)
        self._series_refresh = QTimer(self)
        self._series_refresh.setSingleShot(True)
        self._series_refresh.setInterval(SERIES_REFRESH_MS)
        self._series_refresh.timeout.connect(self.refresh_open_series)
        self._jobs = TaskRunner(self, max_threads=1, name="library jobs")
        self._job: TaskHandle | None = None
        self.progress_dialog: QProgressDialog | None = None
        self.import_summary_dialog: ImportSummaryDialog | None = None
        self.last_import_summary: ImportSummary | None = None
        self.message_box: QMessageBox | None = None
        self.reading_windows: list[Reading3DWindow] = []
        window_actions.build_actions(self)
        window_actions.build_menus(self)
        window_actions.build_toolbar(self)
        self.hanging = HangingController(self)  # hanging protocols, Link here (viewer/ui/hanging.py)
        self.readings = attach_reading(self)  # autosave, reopen, key images, send (viewer/ui/reading_ui.py)
        self.priors = attach_priors(self)  # the Priors dock and Compare (viewer/ui/priors_panel.py)
        self.sharing = attach_sharing(self)  # Export…, Send to PACS… (viewer/ui/share_ui.py)
        self.grid.viewport_changed.connect(self._on_model_changed)
        self.grid.active_changed.connect(self._on_active_changed)
        self.grid.layout_changed.connect(self._on_layout_changed)
        self.grid.series_dropped.connect(lambda viewport, uid: self.open_series(uid, viewport))
        for viewport in self.grid.viewports:  # only the active viewport speaks to the status bar
            viewport.load_progress.connect(lambda done, total, v=viewport: v is self.viewport
                                           and self._on_load_progress(done, total))
            viewport.message_changed.connect(lambda text, v=viewport: v is self.viewport
                                             and self._on_viewport_message(text))
            viewport.tool_changed.connect(self._on_tool_changed)
        self.statusBar().showMessage("Ready")
        self._configure_pacs()
        if resume_jobs:
            QTimer.singleShot(0, self.resume_pending_jobs)

    @property
    def viewport(self) -> Viewport:
        """The active viewport: what the toolbar, the menus and the tag browser act on."""
        return self.grid.active

    @property
    def current_series_uid(self) -> str | None:
        """The library series shown in the active viewport."""
        return self._series_uids.get(self.viewport)

    def _model(self) -> vm.ViewportModel:
        return self.grid.active.model

    # -- model -> window -----------------------------------------------------------------------------------

    def _sync_actions(self) -> None:
        """Checkable actions show the model's state (the model may refuse, e.g. cine on a single image)."""
        m = self.viewport.model
        self.invert_action.setChecked(m.invert)
        self.cine_action.setChecked(m.playing)
        self.fps_box.blockSignals(True)
        self.fps_box.setValue(round(m.cine_fps))
        self.fps_box.blockSignals(False)
        timing = m.acquisition_timing
        self.fps_box.setToolTip(f"Cine speed: the acquisition's own timing ({timing.source})"
                                if timing is not None and m.plays_acquisition_rate else "Cine speed")

    def _on_model_changed(self, viewport: Viewport, event: Changed) -> None:
        if viewport is not self.viewport:
            return
        m = viewport.model
        if event.aspects & {vm.INVERT, vm.CINE}:
            self._sync_actions()
        if event.aspects & {vm.INDEX, vm.SERIES} and self.tag_dock.isVisible():
            self.tag_browser.show_slice(m.series, m.index)

    def _on_active_changed(self, viewport: Viewport) -> None:
        self._sync_actions()
        if self.tag_dock.isVisible():
            self.tag_browser.show_slice(viewport.model.series, viewport.model.index)

    def _set_overlays_visible(self, visible: bool) -> None:
        for viewport in self.grid.viewports:
            viewport.set_overlays_visible(visible)

    def set_layout(self, name: str) -> None:
        """1x1, 1x2 or 2x2 viewports; a viewport the layout hides closes its series."""
        self.grid.set_layout(name)

    def _on_layout_changed(self, name: str) -> None:
        for viewport in self.grid.viewports:
            if viewport.model.series is None:
                self._series_uids.pop(viewport, None)  # hidden by the layout: its series was closed
        self.layout_actions[name].setChecked(True)

    def _on_tag_dock_visibility(self, visible: bool) -> None:
        if visible and not self._tag_dock_sized:
            self._tag_dock_sized = True
            self.resizeDocks([self.tag_dock], [480], Qt.Orientation.Horizontal)
        if visible:
            self.tag_browser.show_slice(self.viewport.model.series, self.viewport.model.index)

    def _on_load_progress(self, done: int, total: int) -> None:
        if done < total:
            self.statusBar().showMessage(f"Loading series: {done}/{total} slices decoded")
        else:
            self.statusBar().showMessage(f"Series loaded ({total} slices)", 5000)

    def _on_viewport_message(self, text: str) -> None:
        if text and text not in ("Loading…",):
            self.statusBar().showMessage(text, 10000)

    # -- opening series ------------------------------------------------------------------------------------

    def open_series(self, series_uid: str, viewport: Viewport | None = None) -> bool:
        """Show a series of the local library in `viewport` (default: the active one), which becomes active.
        False (and a message) when it cannot.  A reading series (PR, SR, KO) opens the images it is about."""
        if self.readings.open_reading_series(series_uid):
            return True
        try:
            series = open_series(self.library, series_uid)
        except MifasError as exc:
            self.show_error("Cannot open series", str(exc))
            self.load_failed.emit(str(exc))
            return False
        log.info("opening series %s (%d frames)", series_uid, len(series))
        viewport = viewport if viewport is not None else self.viewport
        self.grid.set_active(viewport)
        self._series_uids[viewport] = series_uid
        viewport.set_series(series)
        viewport.setFocus()
        record = self.library.series_record(series_uid)
        description = record.series_description if record and record.series_description else "series"
        self.statusBar().showMessage(f"Opened {description} ({len(series)} images)", 5000)
        if record is not None:  # DICOM Instances Accessed: once per series opened
            audit.emit(audit.messages.instances_accessed, audit.study_ref(self.library, record.study_uid, len(series)))
        self.series_opened.emit(series_uid)
        return True

    def open_study(self, study_uid: str, prior_uid: str | None = None) -> bool:
        """Lay out a study of the local library (and a prior beside it) by the best matching hanging protocol
        (:mod:`viewer.ui.hanging`).  False (and a message) when it has nothing to show."""
        if not self.hanging.open(study_uid, prior_uid):
            return False
        self.study_opened.emit(study_uid)
        return True

    def clear_viewport(self, viewport: Viewport) -> None:
        """Empty a viewport (a hanging protocol's viewport that no series matched)."""
        self._series_uids.pop(viewport, None)
        if viewport.model.series is not None:
            viewport.set_series(None)

    # -- import --------------------------------------------------------------------------------------------

    def choose_import_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Import DICOM files", "", "All files (*)")
        if paths:
            self.import_paths(paths)

    def choose_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import a folder (searched recursively)")
        if folder:
            self.import_paths([folder])

    def import_paths(self, paths: Iterable[str | Path], *, open_first: bool = False) -> TaskHandle | None:
        """Import files and folders in a worker; progress with Cancel; a summary dialog at the end."""
        paths = [Path(p) for p in paths]
        if self._job is not None:
            self.show_error("Busy", "Another import is still running; wait for it or cancel it first.")
            return None
        library = self.library

        def work(progress, cancel):
            return import_paths(library, paths, progress=progress, cancel=cancel)

        def done(summary: ImportSummary) -> None:
            self.last_import_summary = summary
            log.info("import finished: %d added, %d duplicates, %d failed%s", summary.added, summary.duplicates,
                     summary.failures_total, " (cancelled)" if summary.cancelled else "")
            self.browser.refresh(next(iter(sorted(summary.study_uids)), None))
            self.statusBar().showMessage(summary.describe(), 10000)
            self.import_summary_dialog = ImportSummaryDialog(summary, self)
            self.import_summary_dialog.show()  # non-modal: the work is over, reading it blocks nothing
            self.import_finished.emit(summary)
            if open_first:
                series_uid = first_series_uid(self.library, summary.study_uids)
                if series_uid is None:
                    reason = "Nothing that could be shown was imported. " + summary.describe()
                    self.load_failed.emit(reason)
                else:
                    self.open_series(series_uid)

        self._start_job(work, done, "Importing…", "import")
        return self._job

    # -- demo ----------------------------------------------------------------------------------------------

    def load_demo(self, *, open_after: bool = True) -> TaskHandle | None:
        """Store the synthetic demo study in the library (worker), then open its series."""
        if self._job is not None:
            self.show_error("Busy", "Another import is still running; wait for it or cancel it first.")
            return None
        library = self.library

        def work(progress, cancel):
            return store_demo_study(library, progress, cancel)

        def done(result: tuple[str, str]) -> None:
            study_uid, series_uid = result
            self.browser.refresh(study_uid)
            if open_after:
                self.open_series(series_uid)

        self._start_job(work, done, "Creating the demo study…", "demo")
        return self._job

    # -- jobs ----------------------------------------------------------------------------------------------

    def _start_job(self, work, done, label: str, name: str) -> None:
        dialog = QProgressDialog(label, "Cancel", 0, 0, self)
        dialog.setWindowTitle(APP_TITLE)
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.setMinimumDuration(500)  # short jobs never flash a dialog
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        self.progress_dialog = dialog
        self.import_files_action.setEnabled(False)
        self.import_folder_action.setEnabled(False)

        def progress(n: int, total: int) -> None:
            dialog.setMaximum(max(total, 1))
            dialog.setValue(min(n, max(total, 1)))
            dialog.setLabelText(f"{label} {n}/{total}")

        def failed(exc: BaseException) -> None:
            reason = describe_error(exc)
            if isinstance(exc, OperationCancelled):
                self.statusBar().showMessage("Cancelled.", 5000)
            else:
                self.show_error("The operation failed", reason)
            self.load_failed.emit(reason)

        ended = False

        def end() -> None:
            # The job is over as soon as its outcome is known: clear it before the outcome's callbacks run, so
            # that whatever they trigger (a series opening, a signal a caller waits on) sees the window idle.
            nonlocal ended
            if ended:
                return
            ended = True
            self._job = None
            dialog.reset()
            dialog.hide()
            dialog.deleteLater()
            if self.progress_dialog is dialog:
                self.progress_dialog = None
            self.import_files_action.setEnabled(True)
            self.import_folder_action.setEnabled(True)

        def on_done(result) -> None:
            end()
            done(result)

        def on_error(exc: BaseException) -> None:
            end()
            failed(exc)

        self._job = self._jobs.submit(work, on_done=on_done, on_error=on_error, on_progress=progress,
                                      on_finished=end, name=name)
        job = self._job
        dialog.canceled.connect(lambda: (job.cancel(), dialog.setLabelText("Cancelling…")))

    def cancel_job(self) -> None:
        if self._job is not None:
            self._job.cancel()

    @property
    def busy(self) -> bool:
        return self._job is not None

    # -- dialogs -------------------------------------------------------------------------------------------

    def show_error(self, title: str, text: str) -> None:
        """A warning in plain words, opened without blocking the event loop."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.message_box = box
        box.open()

    def show_about(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Information, f"About {APP_TITLE}",
                          f"{APP_TITLE} {viewer.__version__}\n\nA desktop DICOM viewer whose PACS connection "
                          "survives server failover.\n\nNot for primary diagnosis.",
                          QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    # -- settings and PACS (viewer.settings / viewer.pacs are optional until they exist) -------------------

    def _configure_pacs(self) -> None:
        """One browser page per configured node (created when first selected)."""
        try:
            from viewer.ui.pacs_panel import PacsPanel
        except ImportError:  # a build without viewer.pacs: the local library only
            return
        settings = self.settings
        nodes = list(getattr(settings, "nodes", []) or [])
        via = getattr(settings, "default_via", "get")
        move_port = getattr(settings, "storage_port", None)

        self.retrievals.set_nodes(nodes, move_port or DEFAULT_STORAGE_PORT)
        profiles = [self.retrievals.profile(name) for name in self.retrievals.profile_names()]

        def page(source):
            panel = PacsPanel(source, self.library, self.retrievals, via=via, move_port=move_port)
            panel.retrieved.connect(self._on_retrieved)
            return panel

        self.browser.set_pacs_nodes([*nodes, *profiles], page)
        for warning in getattr(settings, "warnings", ()):
            self.statusBar().showMessage(warning, 15000)

    def _on_retrieved(self, study_uid: str) -> None:
        self.browser.refresh(study_uid)
        self.statusBar().showMessage("Images retrieved into the local library (Source: Local library).", 8000)

    # -- PACS clusters: health, jobs, the open series filling in ---------------------------------------------

    def _on_source_changed(self, source) -> None:
        if getattr(source, "vip", None) is not None:  # a cluster profile: watch its health
            self.health.watch(source.name)

    def resume_pending_jobs(self):
        """Resume, in a worker, the retrievals a previous session left unfinished (never blocks the window)."""
        handle = self.retrievals.resume_pending()
        if handle is not None:
            self.statusBar().showMessage("Resuming the retrievals left unfinished last time…", 8000)
        return handle

    def _open_studies(self) -> set[str]:
        """The studies of the series shown in the viewports."""
        studies = set()
        for uid in set(self._series_uids.values()):
            try:
                record = self.library.series_record(uid)
            except MifasError:
                continue
            if record is not None:
                studies.add(record.study_uid)
        return studies

    def _on_job_progress(self, job_id: int, study_uid: str, done: int, total: int) -> None:
        if study_uid in self._open_studies() and not self._series_refresh.isActive():
            self._series_refresh.start()

    def _on_job_finished(self, job_id: int, study_uid: str, outcome: JobOutcome) -> None:
        self.browser.refresh(self.browser.local.selected_study_uid() or study_uid)
        if study_uid in self._open_studies():
            self._series_refresh.stop()
            self.refresh_open_series()
        self.statusBar().showMessage(outcome.text, 10000)

    def refresh_open_series(self) -> bool:
        """Re-read the series of every viewport from the library when images were added to it (a retrieval is
        filling it), keeping the slice shown (same instance and frame), the window, zoom, pan, rotation and
        flips.  True when a viewport changed."""
        changed = False
        for viewport, uid in list(self._series_uids.items()):
            changed = self._refresh_viewport(viewport, uid) or changed
        return changed

    def _refresh_viewport(self, viewport: Viewport, uid: str) -> bool:
        old, m = viewport.model.series, viewport.model
        if old is None:
            return False
        try:
            new = open_series(self.library, uid)
        except MifasError:
            return False
        if len(new) == len(old):
            return False
        shown = old.frame_ref(m.index) if len(old) else None
        index = next((i for i, f in enumerate(new.frames) if shown is not None
                      and (f.sop_instance_uid, f.frame_index) == (shown.sop_instance_uid, shown.frame_index)), 0)
        window, invert, zoom, pan = m.window, m.invert, m.zoom, m.pan
        rotation, flip_h, flip_v, playing = m.rotation, m.flip_h, m.flip_v, m.playing
        viewport.set_series(new, index)
        if window is not None:
            m.set_window(window)
        m.set_invert(invert)
        m.set_zoom(zoom)
        m.pan_by(*pan)
        m.rotate(rotation)
        if flip_h:
            m.flip(horizontal=True)
        if flip_v:
            m.flip(horizontal=False)
        m.set_playing(playing)
        log.info("series %s now has %d frames (was %d)", uid, len(new), len(old))
        return True

    def open_profiles(self) -> None:
        from viewer.ui.profile_dialog import ProfileDialog

        dialog = ProfileDialog(self.retrievals.profiles_path, self.retrievals.system_dir, self)
        dialog.saved.connect(self._on_profiles_saved)
        self.profile_dialog = dialog
        dialog.open()

    def _on_profiles_saved(self, *_: object) -> None:
        self.retrievals.reload_profiles()
        self._configure_pacs()
        if self.retrievals.profile_names():
            self.health_dock.show()

    def open_settings(self) -> None:
        try:
            from viewer.ui.settings_dialog import SettingsDialog
        except ImportError:
            self.show_error("Settings", "PACS settings are not available in this build.")
            return
        dialog = SettingsDialog(self.settings, self, path=self.settings_path)
        dialog.saved.connect(self._on_settings_saved)
        self.settings_dialog = dialog
        dialog.open()

    def _on_settings_saved(self, settings) -> None:
        self.settings = settings
        self._configure_pacs()

    # -- shutdown ------------------------------------------------------------------------------------------

    # -- measurements -------------------------------------------------------------------------------------

    def _on_tool_changed(self, tool: str) -> None:
        """A viewport changed its tool (Escape): every viewport and the actions follow."""
        for viewport in self.grid.viewports:
            if (viewport.tool or "") != tool:
                viewport.set_tool(tool or None)
        for name, action in self.tool_actions.items():
            action.setChecked(name == tool)

    def _choose_tool(self, tool: str, checked: bool) -> None:
        for viewport in self.grid.viewports:  # a tool measures in whichever viewport it is used
            viewport.set_tool(tool if checked else None)
        for name, action in self.tool_actions.items():
            action.setChecked(name == tool and checked)

    def export_view(self, _checked: bool = False, *, identity: bool = True) -> None:
        title = "Export the view" if identity else "Export the view without identity"
        path, _ = QFileDialog.getSaveFileName(self, title, "view.png", "PNG image (*.png)")
        if path:
            self.export_view_to(path, identity=identity)

    def export_view_to(self, path: str | Path, *, identity: bool = True) -> bool:
        """The active view into a PNG at `path`, with its Export audit message; False (and a message) when it
        cannot be written.  Without `identity`, the overlay leaves out the patient's name, ID and study date."""
        if not self.viewport.export_png(path, identity=identity):
            self.show_error("Export failed", f"The view could not be written to {path}.")
            return False
        uid = self.current_series_uid
        record = self.library.series_record(uid) if uid else None
        studies = [audit.study_ref(self.library, record.study_uid)] if record is not None else []
        audit.emit(audit.messages.export, str(path), studies)
        return True

    # -- 3D ------------------------------------------------------------------------------------------------

    def open_3d(self) -> TaskHandle | None:
        """Build the open series' volume in a worker (progress, Cancel, the memory cap of the settings) and show
        it in a 3D reading window.  A series that cannot be a volume says why; the 2D view is untouched."""
        series = self.viewport.model.series
        if series is None or self.current_series_uid is None:
            self.show_error("No series open", "Open a series first, then choose 3D / MPR.")
            return None
        if self.busy:
            self.statusBar().showMessage("Busy: wait for the current operation or cancel it.", 5000)
            return None
        cap_mib = getattr(self.settings, "volume_memory_mib", None) or VOLUME_MEMORY_MIB_DEFAULT
        record = self.library.series_record(self.current_series_uid)
        title = record.series_description if record and record.series_description else self.current_series_uid

        def work(progress, cancel):
            return assemble(series, bytes_max=cap_mib << 20, cancel=cancel, progress=progress)

        def done(volume) -> None:
            window = Reading3DWindow(volume, title)
            self.reading_windows.append(window)
            window.destroyed.connect(lambda *_: self.reading_windows.remove(window)
                                     if window in self.reading_windows else None)
            window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
            window.show()
            if volume.warnings:
                self.statusBar().showMessage(" ".join(volume.warnings), 10000)
            self.volume_opened.emit(window)

        self._start_job(work, done, "Building the volume…", "volume")
        return self._job

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Save the reading, cancel every worker (bounded waits); the library stays open (the caller owns it)."""
        self.readings.shutdown()
        self.priors.shutdown()
        self.sharing.shutdown()
        self._jobs.shutdown()
        for window in list(self.reading_windows):
            window.close()
        self._series_refresh.stop()
        self.retrievals.shutdown()
        self.grid.shutdown()
        self.browser.shutdown()
        self.tag_browser.shutdown()
