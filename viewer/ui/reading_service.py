"""The reading of the open studies, kept in the library as the clinician works (:mod:`viewer.reading.persist`
adapted to Qt): autosave, reopening, key images, sending to a PACS.

- **Autosave**: the grid's :class:`~viewer.reading.annotations.AnnotationStore` grows its ``revision`` with every
  change.  :data:`AUTOSAVE_DELAY_MS` after the last change (and at once when another series opens), a copy of the
  store taken on the GUI thread is saved by a worker (``save_reading`` for each study opened in the session whose
  part of the reading changed, with the window and transformation of each marked series, as shown now or as last
  shown).  A reading loaded and left unchanged is not written again.  One save at a time; a change during a save
  saves again after it.  A failure (disk full, a read-only library) is a sentence on the status line; the marks stay in
  memory and the next change (or the close) tries again.  :meth:`ReadingService.shutdown` (the window's close)
  saves the last change with a bounded wait.
- **Reopening**: when a series opens, a worker looks up its saved readings (``readings_for_series``); one is
  loaded without asking (annotations, calibrations, key images into the store; the window and transformation onto
  the viewport), several open a :class:`~viewer.ui.reading_picker.ReadingPicker`.  A series is looked up once a
  session.  Opening a reading series (PR, SR, KO) opens the image series it is about, with that reading.
- **Key images**: :meth:`toggle_key_image` (K) marks the frame on screen; the viewports draw "KEY" on it and the
  :class:`~viewer.ui.key_images.KeyImagesPanel` lists them; a row jumps to its image.
- **Send**: :meth:`send_reading` sends the active study's reading objects (saved first) to a PACS source through
  :func:`viewer.reading.send.send_reading` and the window's :class:`RetrievalService` client (its retry and
  failover events go to the PACS health log and banner); the outcome is a status-line sentence.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer, Signal

from viewer.dicom.pixels import Window
from viewer.errors import MifasError
from viewer.library import Library
from viewer.reading import persist
from viewer.reading.annotations import AnnotationStore
from viewer.reading.objects import is_reading_modality
from viewer.ui import viewport_model as vm
from viewer.ui.workers import TaskHandle, TaskRunner, describe_error

log = logging.getLogger(__name__)

AUTOSAVE_DELAY_MS = 1500  # a save starts this long after the last change
POLL_MS = 500  # the store is also watched (changes made without a signal: calibrations, loads)
SHUTDOWN_SAVE_WAIT_MS = 5000  # the close waits at most this long for the last save
VIEW_ASPECTS = frozenset({vm.WINDOW, vm.VIEW})  # model changes that a presentation state records


def copy_store(store: AnnotationStore) -> AnnotationStore:
    """A copy of `store` for a worker (the store itself belongs to the GUI thread)."""
    copy = AnnotationStore(store.limit)
    for _, annotation in store.items():
        copy.add(annotation)
    for frame in store.key_images():
        copy.set_key_image(frame, True)
    for sop_uid, spacing in store.calibrations().items():
        copy.set_calibration(sop_uid, spacing)
    return copy


def study_part(library: Library, store: AnnotationStore, display: dict, study_uid: str) -> tuple:
    """What of `store` and `display` belongs to the study (index reads only): a save is needed when it
    changed."""
    series_uids = {s.series_uid for s in library.series(study_uid)}
    sops: set[str] = set()
    for uid in series_uids:
        sops |= library.instance_uids(uid)
    marks = sorted((a.kind, a.frame, a.points) for _, a in store.items() if a.frame[0] in sops)
    keys = sorted(k for k in store.key_images() if k[0] in sops)
    calibrations = sorted((u, sp) for u, sp in store.calibrations().items() if u in sops)
    views = sorted((u, d.window, d.rotation, d.flip_h, d.flip_v) for u, d in display.items() if u in series_uids)
    return tuple(marks), tuple(keys), tuple(calibrations), tuple(views)


def merge_store(target: AnnotationStore, loaded: AnnotationStore) -> int:
    """Add what `loaded` holds and `target` does not; the number of marks added."""
    added = 0
    present = {(a.kind, a.frame, a.points) for _, a in target.items()}
    for _, annotation in loaded.items():
        if (annotation.kind, annotation.frame, annotation.points) not in present:
            target.add(annotation)
            added += 1
    for frame in loaded.key_images():
        if not target.is_key_image(frame):
            target.set_key_image(frame, True)
            added += 1
    for sop_uid, spacing in loaded.calibrations().items():
        if target.calibration(sop_uid) is None:
            target.set_calibration(sop_uid, spacing)
    return added


class ReadingService(QObject):
    """See the module docstring.  `series_of(viewport)`: the library series a viewport shows;
    `open_series(uid)`: the window's way to open a series in the active viewport (True when it did)."""

    message = Signal(str)  # a sentence for the status line
    saved = Signal(object)  # list[SavedObjects] of a save that succeeded
    save_failed = Signal(str)  # the sentence of a save that failed
    loaded = Signal(str, str)  # image series UID, GSPS UID put into the store
    picker_opened = Signal(object)  # the ReadingPicker now shown
    key_images_changed = Signal()
    lookup_finished = Signal(str)  # series UID opened whose saved readings were looked up (and loaded or offered)
    send_finished = Signal(object)  # SendResult, or the exception of a send that could not start

    def __init__(self, library: Library, grid, parent: QObject | None = None, *,
                 series_of: Callable[[object], str | None], open_series: Callable[[str], bool],
                 delay_ms: int = AUTOSAVE_DELAY_MS) -> None:
        super().__init__(parent)
        self.library = library
        self.grid = grid
        self.store: AnnotationStore = grid.annotations
        self._series_of = series_of
        self._open_series = open_series
        self._runner = TaskRunner(self, max_threads=1, name="reading")
        self._studies: set[str] = set()  # studies opened this session: each save covers them all
        self._looked_up: set[str] = set()  # series whose saved readings were looked up this session
        self._preferred: dict[str, str] = {}  # image series UID -> GSPS to load (a reading series was opened)
        self._seen_revision = self.store.revision
        self._saved_revision = self.store.revision
        self._saved_display: dict[str, persist.DisplayState] = {}  # as last saved (or loaded)
        self._views: dict[str, persist.DisplayState] = {}  # series UID -> as last shown with marks (or loaded)
        self._seen_display: dict[str, persist.DisplayState] = {}
        self._key_images = self.store.key_images()
        self._save_task: TaskHandle | None = None
        self._saved_parts: dict[str, tuple] = {}  # study UID -> study_part last saved (the worker's only)
        self._save_again = False
        self._closed = False
        self.last_error = ""
        self.picker = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(delay_ms)
        self._debounce.timeout.connect(self.save_now)
        self._poll = QTimer(self)
        self._poll.setInterval(POLL_MS)
        self._poll.timeout.connect(self.note_change)
        self._poll.start()
        for viewport in grid.viewports:
            viewport.annotations_changed.connect(self.note_change)
        # the view of a series is remembered as it changes: it still counts once another series replaces it
        grid.viewport_changed.connect(lambda _v, event: event.aspects & VIEW_ASPECTS and self._display_states())

    # -- autosave ------------------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Changes not yet saved: marks, or the window or transformation of a series with marks."""
        return self.store.revision != self._saved_revision or self._display_states() != self._saved_display

    @property
    def saving(self) -> bool:
        return self._save_task is not None

    def note_change(self) -> None:
        """The store may have changed: (re)start the autosave delay; tell the key images list."""
        if self._closed:
            return
        keys = self.store.key_images()
        if keys != self._key_images:
            self._key_images = keys
            for viewport in self.grid.viewports:
                viewport.update()
            self.key_images_changed.emit()
        display = self._display_states()
        if self.store.revision != self._seen_revision or display != self._seen_display:
            self._seen_revision, self._seen_display = self.store.revision, display
            if self.dirty:
                self._debounce.start()

    def _display_states(self) -> dict[str, persist.DisplayState]:
        """The window and transformation of each series with marks: as shown now, or as last shown (or loaded)
        for a series no viewport shows any more.  A series without marks gets no presentation state of its own
        for being looked at."""
        marked = {a.frame[0] for _, a in self.store.items()} | {f[0] for f in self.store.key_images()}
        marked |= set(self.store.calibrations())
        states = self._views
        for viewport in self.grid.viewports:
            uid = self._series_of(viewport)
            m = viewport.model
            if uid is None or m.series is None or not marked:
                continue
            if not any(m.series.frame_ref(i).sop_instance_uid in marked for i in range(len(m.series))):
                continue
            window = (m.window.center, m.window.width) if m.window is not None else None
            states[uid] = persist.DisplayState(window, m.rotation, m.flip_h, m.flip_v)
        return dict(states)

    def _study_of(self, series_uid: str) -> str | None:
        try:
            record = self.library.series_record(series_uid)
        except MifasError:
            return None
        return record.study_uid if record is not None else None

    def save_now(self) -> TaskHandle | None:
        """Save the changes now, in the worker (after the running save, when one runs)."""
        self._debounce.stop()
        if self._save_task is not None:
            self._save_again = True
            return self._save_task
        if not self.dirty or not self._studies:
            return None
        revision = self.store.revision
        snapshot = copy_store(self.store)
        display = self._display_states()
        studies = sorted(self._studies)

        def work(progress, cancel):
            return self._save_studies(snapshot, display, studies)

        def done(results) -> None:
            self._saved_revision, self._saved_display = revision, display
            if self.last_error:
                self.last_error = ""
                self.message.emit("The reading is saved.")
            self.saved.emit(results)

        def failed(exc: BaseException) -> None:
            self.last_error = (f"The reading could not be saved: {describe_error(exc)} The marks are kept on "
                               "screen; the next change tries again.")
            log.warning("saving the reading failed (%s)", type(exc).__name__)
            self.message.emit(self.last_error)
            self.save_failed.emit(self.last_error)

        def finished() -> None:
            self._save_task = None
            if self._save_again and not self._closed:
                self._save_again = False
                if self.dirty:
                    self._debounce.start()

        self._save_task = self._runner.submit(work, on_done=done, on_error=failed, on_finished=finished,
                                              name="save reading")
        return self._save_task

    def _save_studies(self, snapshot: AnnotationStore, display: dict, studies: list[str]) -> list:
        """In the worker: save each study whose part of the reading changed since its last save."""
        results = []
        for study in studies:
            part = study_part(self.library, snapshot, display, study)
            if self._saved_parts.get(study) == part:
                continue
            results.append(persist.save_reading(self.library, snapshot, study, display))
            self._saved_parts[study] = part
        return results

    def shutdown(self, timeout_ms: int = SHUTDOWN_SAVE_WAIT_MS) -> None:
        """Save the last change (bounded wait), then stop the worker."""
        if self._closed:
            return
        self.note_change()
        self._debounce.stop()
        self._poll.stop()
        if self._save_task is not None:
            self._runner.wait(timeout_ms)
            self._save_task = None  # its callbacks will not be delivered any more: the save is over
        if self.dirty and self._studies:
            self.save_now()
            self._runner.wait(timeout_ms)
        self._closed = True
        self._runner.shutdown(timeout_ms)
        if self.picker is not None:
            self.picker.close()

    # -- reopening -----------------------------------------------------------------------------------------

    def series_opened(self, series_uid: str) -> None:
        """A series opened in the active viewport: note its study, save what is pending, look up its readings."""
        study = self._study_of(series_uid)
        if study is not None:
            self._studies.add(study)
        if self.dirty:
            self.save_now()
        preferred = self._preferred.pop(series_uid, None)
        if preferred is None and series_uid in self._looked_up:
            self.lookup_finished.emit(series_uid)  # its reading is in the store already
            return
        self._looked_up.add(series_uid)
        viewport = self.grid.active
        library = self.library

        def work(progress, cancel):
            return persist.readings_for_series(library, series_uid)

        def done(readings) -> None:
            readings = list(readings)
            if preferred is not None:
                readings = [r for r in readings if r.sop_instance_uid == preferred] or readings[:0]
            if len(readings) == 1:
                self.load(readings[0], viewport, series_uid)
            elif len(readings) > 1:
                self._offer(readings, viewport, series_uid)
            self.lookup_finished.emit(series_uid)

        def failed(exc: BaseException) -> None:
            self.message.emit(f"The saved readings of this series could not be read: {describe_error(exc)}")
            self.lookup_finished.emit(series_uid)

        self._runner.submit(work, on_done=done, on_error=failed, name="find readings")

    def _offer(self, readings, viewport, series_uid: str) -> None:
        from viewer.ui.reading_picker import ReadingPicker

        record = self.library.series_record(series_uid)
        text = (record.series_description or "this series") if record is not None else "this series"
        picker = ReadingPicker(readings, text, self.grid.window())
        picker.chosen.connect(lambda reading: reading is not None and self.load(reading, viewport, series_uid))
        if self.picker is not None:
            self.picker.close()
        self.picker = picker
        picker.open()
        self.picker_opened.emit(picker)

    def load(self, reading, viewport, series_uid: str) -> TaskHandle:
        """Load `reading` (a SavedReading) in the worker, then put it into the store and onto `viewport` when it
        still shows `series_uid`."""
        library = self.library
        gsps_uid = reading.sop_instance_uid

        def work(progress, cancel):
            loaded = AnnotationStore()
            state = persist.load_reading(library, gsps_uid, loaded)
            return loaded, state

        def done(result) -> None:
            loaded, state = result
            was_saved = not self.dirty
            added = merge_store(self.store, loaded)
            if state is not None:
                self._views[series_uid] = state
                if self._series_of(viewport) == series_uid:
                    apply_display_state(viewport.model, state)
            if was_saved:  # what was loaded is saved already: no save until the reader changes something
                self._saved_revision = self._seen_revision = self.store.revision
                self._saved_display = self._seen_display = self._display_states()
                self._note_saved(series_uid)
            self.note_change()
            for v in self.grid.viewports:
                v.update()
            self.message.emit(f"Saved reading \u201c{reading.label or 'Untitled'}\u201d shown"
                              f" ({added} mark{'s' if added != 1 else ''}).")
            self.loaded.emit(series_uid, gsps_uid)

        def failed(exc: BaseException) -> None:
            self.message.emit(f"The saved reading could not be shown: {describe_error(exc)}")

        return self._runner.submit(work, on_done=done, on_error=failed, name="load reading")

    def _note_saved(self, series_uid: str) -> None:
        """Record (in the worker, after what runs there) the study's part of the store as saved."""
        study = self._study_of(series_uid)
        if study is None:
            return
        snapshot, display = copy_store(self.store), self._display_states()

        def work(progress, cancel):
            self._saved_parts[study] = study_part(self.library, snapshot, display, study)

        self._runner.submit(work, name="reading baseline")

    def open_reading_series(self, series_uid: str) -> bool:
        """When `series_uid` is a reading series (PR, SR, KO), open the image series it is about with that reading
        (a worker finds it) and return True; False for an image series (the caller opens it)."""
        try:
            record = self.library.series_record(series_uid)
        except MifasError:
            return False
        if record is None or not is_reading_modality(record.modality):
            return False
        library = self.library

        def work(progress, cancel):
            from viewer.reading.targets import reading_target

            return reading_target(library, series_uid)

        def done(target) -> None:
            if target is None:
                self.message.emit("That reading refers to no images held in the local library.")
                return
            if target.gsps_uid is not None:
                self._preferred[target.image_series_uid] = target.gsps_uid
            self._open_series(target.image_series_uid)

        def failed(exc: BaseException) -> None:
            self.message.emit(f"That reading could not be opened: {describe_error(exc)}")

        self.message.emit("Opening the images of that reading…")
        self._runner.submit(work, on_done=done, on_error=failed, name="open reading series")
        return True

    # -- key images ----------------------------------------------------------------------------------------

    def toggle_key_image(self) -> bool | None:
        """Mark (or unmark) the frame on screen in the active viewport as a key image; the new state, or None
        when no image is shown."""
        key = self.grid.active.current_frame_key()
        if key is None:
            self.message.emit("Open an image first, then press K to mark it as a key image.")
            return None
        marked = not self.store.is_key_image(key)
        self.store.set_key_image(key, marked)
        self.note_change()
        self.message.emit("Marked as a key image." if marked else "No longer a key image.")
        return marked

    def show_frame(self, series_uid: str, sop_uid: str, frame_index: int) -> bool:
        """Show that frame: in the viewport that shows its series, else open the series in the active one."""
        viewport = next((v for v in self.grid.viewports if v.isVisible() and self._series_of(v) == series_uid),
                        None)
        if viewport is None:
            if not self._open_series(series_uid):
                return False
            viewport = self.grid.active
        series = viewport.model.series
        index = next((i for i in range(len(series)) if (series.frame_ref(i).sop_instance_uid,
                                                        series.frame_ref(i).frame_index) == (sop_uid, frame_index)),
                     None) if series is not None else None
        if index is None:
            self.message.emit("That key image is not in the series any more.")
            return False
        self.grid.set_active(viewport)
        viewport.model.set_index(index)
        viewport.setFocus()
        return True

    # -- send ----------------------------------------------------------------------------------------------

    def active_study(self) -> str | None:
        uid = self._series_of(self.grid.active)
        return self._study_of(uid) if uid is not None else None

    def send_reading(self, client_for: Callable[[], object], source_name: str) -> TaskHandle | None:
        """Save pending changes, then send the active study's reading objects through the client
        `client_for()` makes (in the worker); the outcome is a status-line sentence."""
        study = self.active_study()
        if study is None:
            self.message.emit("Open a study first: its reading is what is sent.")
            return None
        self._debounce.stop()
        revision, display = self.store.revision, self._display_states()
        snapshot = copy_store(self.store) if self.dirty else None  # the last change goes too
        studies = sorted(self._studies)
        library = self.library

        def work(progress, cancel):
            from viewer.reading.send import send_reading

            if snapshot is not None:
                self._save_studies(snapshot, display, studies)
            client = client_for()
            return send_reading(library, client, study, progress=progress, cancel=cancel)

        def done(result) -> None:
            if snapshot is not None:
                self._saved_revision, self._saved_display = revision, display
            self.message.emit(describe_send(result, source_name))
            self.send_finished.emit(result)

        def failed(exc: BaseException) -> None:
            self.message.emit(f"The reading was not sent to {source_name}: {describe_error(exc)}")
            self.send_finished.emit(exc)

        self.message.emit(f"Sending the reading to {source_name}…")
        return self._runner.submit(work, on_done=done, on_error=failed, name="send reading")


def describe_send(result, source_name: str) -> str:
    """One sentence for a SendResult."""
    sent = len(result.sent)
    objects = f"{sent} reading object{'s' if sent != 1 else ''}"
    if result.complete:
        if not sent:
            return f"There was no reading to send to {source_name}: it is all there already, or nothing is marked."
        return f"The reading was sent to {source_name} ({objects})."
    parts = [f"{objects} sent to {source_name}"]
    if result.refused:
        parts.append(f"{len(result.refused)} refused")
    text = "; ".join(parts) + "."
    return f"{text} {result.error}".strip() if result.error else text


def apply_display_state(model, state) -> None:
    """Put a saved window and transformation onto a viewport model."""
    if state.window is not None:
        center, width = state.window
        model.set_window(Window(float(center), float(width)))
    if state.rotation % 360 != model.rotation:
        model.rotate((state.rotation - model.rotation) % 360)
    if bool(state.flip_h) != model.flip_h:
        model.flip(horizontal=True)
    if bool(state.flip_v) != model.flip_v:
        model.flip(horizontal=False)
