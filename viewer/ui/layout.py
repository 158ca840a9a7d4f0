"""Viewport layouts (1x1, 1x2, 2x2), the active viewport, drag-and-drop of series, and linked views.

:class:`ViewportGrid` owns up to :data:`VIEWPORTS_MAX` viewports and shows as many as the layout asks for.  One
of them is *active* (a coloured frame): the toolbar, the menus and the tag browser act on it, and a click or a
focus change in another viewport makes that one active.  A series dragged from the browser (MIME type
:data:`~viewer.ui.series_source.SERIES_MIME_TYPE`) and dropped on a viewport is announced by ``series_dropped``;
the main window opens it there.

Linked views, for series that share a Frame of Reference UID (only then do their patient coordinates mean the
same point):

* **linked scrolling**: when the user moves the active viewport to another slice, every other visible viewport
  whose slices are parallel to it goes to its slice nearest the same place (:func:`viewer.dicom.geometry.
  nearest_slice`, from depths computed once per series); viewports moved this way do not move others in turn.
* **reference lines**: every other visible viewport draws the line where the active viewport's slice cuts its
  own slice (:func:`viewer.dicom.geometry.reference_line`); parallel slices have none.
* **Link here** (:meth:`ViewportGrid.link_here`), for series of *different* frames of reference (a prior): the
  reader brings the same anatomy into view in the active viewport and another one, and links them there.  Each
  other visible viewport showing a parallel series of another frame gets a registration
  (:class:`viewer.dicom.geometry.FrameOffset`, the translation between the two slices' centres); linked
  scrolling and reference lines then follow through it, to every visible series of the two frames.
  :meth:`ViewportGrid.unlink` clears the registrations, and so does a new series in either of the two viewports.
* **crosshair** (:meth:`ViewportGrid.set_crosshair_enabled`): a left click or drag in a viewport picks a patient
  point (:meth:`viewer.dicom.geometry.ImagePlane.to_patient`); every other visible viewport of the same frame, or
  of a frame registered by Link here (through its offset), goes to its slice nearest the point and every viewport
  whose slices reach the point draws a cross where it projects (:meth:`viewer.dicom.geometry.SeriesGeometry.
  locate`), parallel or not.  Crosses are recomputed with the reference lines, so Unlink removes those that
  depended on the offset; switching the crosshair off or a new series in the viewport it was picked in clears it.

The viewports share the session's measurements (:class:`~viewer.reading.annotations.AnnotationStore`, keyed by
SOP Instance UID and frame): an image shows its measurements in whichever viewport shows it.

A viewport that a smaller layout hides releases its series (and its decoded slices), so the decoded memory is
bounded by the visible viewports: at most 4 x the per-series cache of :mod:`viewer.ui.series_source`.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QFrame, QGridLayout, QVBoxLayout, QWidget

from viewer.dicom.geometry import FrameOffset, reference_line
from viewer.reading.annotations import AnnotationStore
from viewer.ui import viewport_model as vm
from viewer.ui.series_source import SERIES_MIME_TYPE, series_uid_from_mime
from viewer.ui.viewport import Viewport
from viewer.ui.viewport_model import Changed

LAYOUTS: dict[str, tuple[int, int]] = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2)}  # name: (rows, columns)
VIEWPORTS_MAX = 4
ACTIVE_FRAME_STYLE = "QFrame#viewport-frame { border: 2px solid rgb(0, 160, 255); background: black; }"
IDLE_FRAME_STYLE = "QFrame#viewport-frame { border: 2px solid rgb(48, 48, 48); background: black; }"


class ViewportFrame(QFrame):
    """A viewport in a thin frame that shows whether it is active and accepts dropped series."""

    dropped = Signal(str)  # a series UID

    def __init__(self, viewport: Viewport, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("viewport-frame")
        self.viewport = viewport
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(viewport)
        self.setAcceptDrops(True)
        self.set_active(False)

    def set_active(self, active: bool) -> None:
        self.setStyleSheet(ACTIVE_FRAME_STYLE if active else IDLE_FRAME_STYLE)

    @staticmethod
    def _offer(event: QDragEnterEvent | QDragMoveEvent) -> None:
        """Accept a drag that carries a series (entering, and moving over the frame); refuse any other."""
        if event.mimeData().hasFormat(SERIES_MIME_TYPE):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        self._offer(event)

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        self._offer(event)

    def dropEvent(self, event: QDropEvent) -> None:
        uid = series_uid_from_mime(event.mimeData())
        if uid is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.dropped.emit(uid)


class ViewportGrid(QWidget):
    """The central area: viewports in a layout, one active, linked by geometry."""

    active_changed = Signal(object)  # the Viewport now active
    series_dropped = Signal(object, str)  # (Viewport, series UID) a series was dropped on
    layout_changed = Signal(str)  # the layout name
    viewport_changed = Signal(object, object)  # (Viewport, Changed): a model change of any viewport

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewports: list[Viewport] = []
        self.frames: list[ViewportFrame] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(0)
        self.annotations = AnnotationStore()  # one for the session: an image shows its measurements in any viewport
        for _ in range(VIEWPORTS_MAX):
            viewport = Viewport(self, annotations=self.annotations)
            viewport.annotations_changed.connect(self._repaint_all)
            viewport.crosshair_picked.connect(lambda row, col, v=viewport: self.pick_crosshair(v, row, col))
            frame = ViewportFrame(viewport, self)
            frame.dropped.connect(lambda uid, v=viewport: self._on_dropped(v, uid))
            viewport.installEventFilter(self)
            viewport.model.changed.connect(lambda event, v=viewport: self._on_model_changed(v, event))
            self.viewports.append(viewport)
            self.frames.append(frame)
        self._active = self.viewports[0]
        self._layout = ""
        self._syncing = False  # linked scrolling in progress: the moves it makes do not propagate
        self.link_scrolling = True
        self.show_reference_lines = True
        self._registrations: list[tuple[FrameOffset, Viewport, Viewport]] = []  # Link here: (offset, the two views)
        self.crosshair_enabled = False
        self._crosshair: tuple[np.ndarray, str, Viewport] | None = None  # (patient point, its frame, picked in)
        self.set_layout("1x1")
        self.frames[0].set_active(True)

    # -- layout and the active viewport --------------------------------------------------------------------

    @property
    def layout_name(self) -> str:
        return self._layout

    @property
    def active(self) -> Viewport:
        return self._active

    def visible_viewports(self) -> list[Viewport]:
        rows, columns = LAYOUTS[self._layout]
        return self.viewports[: rows * columns]

    def set_layout(self, name: str) -> None:
        """Show 1, 2 or 4 viewports.  Hidden viewports release their series; the active one stays active when it
        is still shown, else the first becomes active."""
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}; use one of {', '.join(LAYOUTS)}")
        if name == self._layout:
            return
        rows, columns = LAYOUTS[name]
        shown = rows * columns
        for frame in self.frames:
            self._grid.removeWidget(frame)
        for i, frame in enumerate(self.frames):
            if i < shown:
                self._grid.addWidget(frame, i // columns, i % columns)
                frame.show()
            else:
                frame.hide()
                viewport = self.viewports[i]
                if viewport.model.series is not None:
                    viewport.set_series(None)  # release the decoded slices of a series nobody sees
        for r in range(2):
            self._grid.setRowStretch(r, 1 if r < rows else 0)
        for c in range(2):
            self._grid.setColumnStretch(c, 1 if c < columns else 0)
        self._layout = name
        if self._active not in self.visible_viewports():
            self.set_active(self.viewports[0])
        self.update_links()
        self.layout_changed.emit(name)

    def set_active(self, viewport: Viewport) -> None:
        if viewport is self._active or viewport not in self.viewports:
            return
        self._active = viewport
        for v, frame in zip(self.viewports, self.frames, strict=True):
            frame.set_active(v is viewport)
        self.update_links()
        self.active_changed.emit(viewport)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.FocusIn, QEvent.Type.Wheel) \
                and isinstance(watched, Viewport):
            self.set_active(watched)
        return False

    def _repaint_all(self) -> None:
        for v in self.visible_viewports():
            v.update()

    def _on_dropped(self, viewport: Viewport, uid: str) -> None:
        self.set_active(viewport)
        self.series_dropped.emit(viewport, uid)

    # -- linked views -------------------------------------------------------------------------------------

    def set_link_scrolling(self, enabled: bool) -> None:
        self.link_scrolling = bool(enabled)
        if self.link_scrolling:
            self._follow(self._active)

    def set_reference_lines_visible(self, visible: bool) -> None:
        self.show_reference_lines = bool(visible)
        self.update_links()

    def _on_model_changed(self, viewport: Viewport, event: Changed) -> None:
        if vm.SERIES in event.aspects and self._crosshair is not None and self._crosshair[2] is viewport:
            self._crosshair = None  # the point was picked on the series that went
        if vm.SERIES in event.aspects and any(viewport in r[1:] for r in self._registrations):
            self._registrations = [r for r in self._registrations if viewport not in r[1:]]  # a new series
        if event.aspects & {vm.INDEX, vm.SERIES} and not self._syncing:  # moves made by _follow wait for its end
            if viewport is self._active and self.link_scrolling:
                self._follow(viewport)
            self.update_links()  # once per user step, whatever linking moved
        self.viewport_changed.emit(viewport, event)

    def linked_viewports(self, source: Viewport) -> list[Viewport]:
        """The other visible viewports whose series can scroll with `source`'s (same frame, parallel slices)."""
        geometry = source.series_geometry()
        if geometry is None:
            return []
        out = []
        for v in self.visible_viewports():
            other = v.series_geometry() if v is not source else None
            if other is not None and geometry.parallel_to(other) and self.frame_offset(
                    geometry.frame_of_reference_uid, other.frame_of_reference_uid) is not None:
                out.append(v)
        return out

    def frame_offset(self, source: str, target: str):
        """The translation (mm, numpy) from frame `source` to frame `target`: zero within one frame, the Link
        here registration between two, else None (not linked)."""
        if source == target:
            return np.zeros(3)
        return next((o for o in (r[0].toward(source, target) for r in self._registrations) if o is not None), None)

    @property
    def registrations(self) -> list[FrameOffset]:
        return [r[0] for r in self._registrations]

    def link_here(self) -> int:
        """Register the active viewport's frame of reference with that of each other visible viewport showing a
        parallel series of another frame, by the offset between the slices they show now (the reader aligned
        them).  Replaces an earlier registration of the same two frames.  Returns how many were made."""
        source = self._active
        geometry, plane = source.series_geometry(), source.current_plane()
        if geometry is None or plane is None:
            return 0
        made = 0
        for v in self.visible_viewports():
            other, target = (v.series_geometry(), v.current_plane()) if v is not source else (None, None)
            if other is None or target is None or not geometry.parallel_to(other) \
                    or other.frame_of_reference_uid == geometry.frame_of_reference_uid:
                continue
            frames = {geometry.frame_of_reference_uid, other.frame_of_reference_uid}
            self._registrations = [r for r in self._registrations if {r[0].source, r[0].target} != frames]
            offset = FrameOffset.between(plane, geometry.frame_of_reference_uid, target,
                                         other.frame_of_reference_uid)
            self._registrations.append((offset, source, v))
            made += 1
        self.update_links()
        return made

    def unlink(self) -> bool:
        """Forget every Link here registration; True when there was one."""
        had = bool(self._registrations)
        self._registrations = []
        self.update_links()
        return had

    def _follow(self, source: Viewport) -> None:
        """Move the viewports linked to `source` to their slices nearest `source`'s slice."""
        plane = source.current_plane()
        if plane is None:
            return
        centre = plane.centre
        frame = source.series_geometry().frame_of_reference_uid
        self._syncing = True
        try:
            for v in self.linked_viewports(source):
                geometry = v.series_geometry()
                index = geometry.nearest(centre + self.frame_offset(frame, geometry.frame_of_reference_uid))
                if index is not None and index != v.model.index:
                    v.model.set_index(index)
        finally:
            self._syncing = False

    def update_links(self) -> None:
        """Redraw the reference lines of the active viewport's slice on the other visible viewports, and the
        crosshair's crosses."""
        source = self._active
        plane = source.current_plane() if self.show_reference_lines else None
        frame = source.series_geometry().frame_of_reference_uid if plane is not None else None
        visible = self.visible_viewports()
        for v in self.viewports:
            lines = []
            if plane is not None and v is not source and v in visible:
                geometry = v.series_geometry()
                target = v.current_plane()
                offset = self.frame_offset(frame, geometry.frame_of_reference_uid) if geometry is not None else None
                if offset is not None and target is not None:
                    line = reference_line(plane.translated(offset) if offset.any() else plane, target)
                    if line is not None:
                        lines.append(line)
            v.set_reference_lines(lines)
        self._update_crosses()

    # -- crosshair ----------------------------------------------------------------------------------------

    def set_crosshair_enabled(self, enabled: bool) -> None:
        """Crosshair on: a left click or drag in a viewport picks the point; off: no point and no crosses."""
        self.crosshair_enabled = bool(enabled)
        for v in self.viewports:
            v.set_crosshair_mode(self.crosshair_enabled)
        if not self.crosshair_enabled:
            self._crosshair = None
        self.update_links()

    @property
    def crosshair_point(self) -> tuple[np.ndarray, str] | None:
        """The picked patient point (mm) and its Frame of Reference UID; None when none is picked."""
        return (self._crosshair[0].copy(), self._crosshair[1]) if self._crosshair is not None else None

    def pick_crosshair(self, source: Viewport, row: float, col: float) -> None:
        """Put the crosshair on image (row, col) of `source`'s slice: the other visible viewports of a linked frame
        go to their slice nearest that patient point (when their slices reach it), and the crosses are redrawn."""
        geometry, plane = source.series_geometry(), source.current_plane()
        if not self.crosshair_enabled or geometry is None or plane is None:
            return
        point, frame = plane.to_patient(row, col), geometry.frame_of_reference_uid
        self._crosshair = (point, frame, source)
        self._syncing = True
        try:
            for v in self.visible_viewports():
                other = v.series_geometry() if v is not source else None
                offset = self.frame_offset(frame, other.frame_of_reference_uid) if other is not None else None
                located = other.locate(point + offset) if offset is not None else None
                if located is not None and located.index != v.model.index:
                    v.model.set_index(located.index)
        finally:
            self._syncing = False
        self.update_links()

    def _update_crosses(self) -> None:
        """Each visible viewport's cross: the picked point's projection on its slice, when its series is of a
        linked frame and its slices reach the point; no cross elsewhere."""
        visible = self.visible_viewports()
        for v in self.viewports:
            cross = None
            if self._crosshair is not None and v in visible:
                point, frame, _ = self._crosshair
                geometry, plane = v.series_geometry(), v.current_plane()
                offset = self.frame_offset(frame, geometry.frame_of_reference_uid) if geometry is not None else None
                if offset is not None and plane is not None and geometry.locate(point + offset) is not None:
                    row, col = plane.to_pixel(point + offset)
                    cross = (row, col) if plane.contains_pixel(row, col) else None
            v.set_crosshair(cross)

    def shutdown(self) -> None:
        for v in self.viewports:
            v.shutdown()

