"""Hanging protocols in the window: lay a study (and its prior) out by the best matching protocol, step through
its display sets, and link a prior's different frame of reference by eye ("Link here").

:class:`HangingController` belongs to the :class:`~viewer.ui.main_window.MainWindow`: ``open_study`` asks it to
:meth:`~HangingController.open` a study.  It reads the protocols (shipped < IT's < the user's, see
:mod:`viewer.reading.protocol_files`) each time a study is opened, so an edited rules file applies to the next
study; gathers the study's facts (:func:`viewer.reading.study_facts.gather`: the library's index and one header
per series); chooses (:func:`viewer.reading.protocols.choose`) and shows a display set: the layout, each series
through the window's ``open_series`` (the one way a series enters a viewport), then the slice, window preset,
invert and flips onto the viewport's model.

Keys (menu View): N / Shift+N next / previous display set; Ctrl+L Link here; Ctrl+Shift+L Unlink.  A permanent
label in the status bar names the protocol and display set: "CT chest with prior - 1/3 Lung".
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QToolBar

from viewer.errors import MifasError
from viewer.reading.protocol_files import USER_FILE_NAME, load_protocols
from viewer.reading.protocols import Hanging, Placement, choose
from viewer.reading.study_facts import gather
from viewer.ui import viewport_model as vm
from viewer.ui.window_actions import make_action

log = logging.getLogger(__name__)

NEXT_KEY, PREVIOUS_KEY = "N", "Shift+N"
LINK_HERE_KEY, UNLINK_KEY = "Ctrl+L", "Ctrl+Shift+L"


def frame_index(series, instance_uid: str | None) -> int:
    """The display index of `instance_uid`'s (first) frame in an open series; 0 for None or not found."""
    if instance_uid is None:
        return 0
    return next((i for i, f in enumerate(series.frames) if f.sop_instance_uid == instance_uid), 0)


class HangingController(QObject):
    """The window's hanging: the chosen protocol, the display set shown, and the actions that step and link."""

    display_set_shown = Signal(str)  # the status text ("CT chest with prior - 1/3 Lung")

    def __init__(self, window, *, user_path: Path | None = None, system_dir: Path | None = None) -> None:
        super().__init__(window)
        self.window = window
        if user_path is None and getattr(window, "settings_path", None) is not None:
            user_path = Path(window.settings_path).parent / USER_FILE_NAME
        self.user_path = user_path  # None: viewer.reading.protocol_files' default (the config folder)
        self.system_dir = system_dir  # None: the system folder's protocols/
        self.hanging: Hanging | None = None
        self.index = 0
        self.warnings: tuple[str, ...] = ()
        self.status_label = QLabel("", window)
        window.statusBar().addPermanentWidget(self.status_label)
        self.next_action = make_action(window, "Next display set", lambda _=False: self.next(), NEXT_KEY,
                                       tip="The hanging protocol's next display set (N)", window_wide=True)
        self.previous_action = make_action(window, "Previous display set", lambda _=False: self.previous(),
                                           PREVIOUS_KEY, tip="The hanging protocol's previous display set (Shift+N)", window_wide=True)
        self.link_here_action = make_action(window, "Link here", lambda _=False: self.link_here(), LINK_HERE_KEY,
                                            tip="The slices shown are the same place: scroll the other frame of "
                                             "reference (a prior) with this one from here (Ctrl+L)", window_wide=True)
        self.unlink_action = make_action(window, "Unlink", lambda _=False: self.unlink(), UNLINK_KEY,
                                         tip="Forget the Link here registration (Ctrl+Shift+L)", window_wide=True)
        menu = getattr(window, "view_menu", None)
        if menu is not None:
            menu.addSeparator()
            for action in (self.next_action, self.previous_action, self.link_here_action, self.unlink_action):
                menu.addAction(action)
        toolbar = window.findChild(QToolBar, "image-toolbar")
        if toolbar is not None:
            toolbar.addAction(self.link_here_action)
            toolbar.addAction(self.unlink_action)
        window.grid.viewport_changed.connect(  # a new series clears a Link here registration: say so
            lambda _viewport, event: vm.SERIES in event.aspects and self._sync())
        self._sync()

    @property
    def status_text(self) -> str:
        return self.status_label.text()

    # -- opening and stepping ---------------------------------------------------------------------------------

    def open(self, study_uid: str, prior_uid: str | None = None) -> bool:
        """Choose the protocol for the study (and prior) and show its first display set.  False (and a message)
        when the study has no image to show."""
        protocols = load_protocols(self.user_path, self.system_dir)
        try:
            study = gather(self.window.library, study_uid)
            prior = gather(self.window.library, prior_uid) if prior_uid and prior_uid != study_uid else None
        except MifasError as exc:
            self.window.show_error("Cannot open study", str(exc))
            return False
        if not study.images:
            self.window.show_error("Cannot open study", "That study has no images in the local library.")
            return False
        if prior is not None and not prior.images:
            prior = None
        self.hanging = choose(protocols.protocols, study, prior)
        log.info("hanging study %s%s with protocol %r", study_uid, f" (prior {prior_uid})" if prior else "",
                 self.hanging.protocol.name)
        shown = self.show(0)
        if protocols.warnings:  # after the series' own messages, so that it stays in view
            self.window.statusBar().showMessage(" ".join(protocols.warnings), 15000)
            if protocols.warnings != self.warnings:
                for warning in protocols.warnings:
                    log.warning("hanging protocols: %s", warning)
        self.warnings = protocols.warnings
        return shown

    def show(self, index: int) -> bool:
        """Show display set `index` of the chosen protocol; False when there is no such display set."""
        if self.hanging is None or not 0 <= index < self.hanging.count:
            return False
        self.index = index
        display_set = self.hanging.protocol.display_sets[index]
        grid = self.window.grid
        grid.unlink()
        grid.set_layout(display_set.layout)
        placements = self.hanging.placements(index)
        for i, viewport in enumerate(grid.visible_viewports()):
            placement = placements[i] if i < len(placements) else None
            if placement is None:
                self.window.clear_viewport(viewport)
            elif self.window.open_series(placement.series_uid, viewport):
                self._apply(viewport, placement)
        grid.set_active(grid.viewports[0])
        self._sync()
        self.display_set_shown.emit(self.status_text)
        return True

    @staticmethod
    def _apply(viewport, placement: Placement) -> None:
        m = viewport.model
        index = frame_index(m.series, placement.instance_uid)
        if index:
            m.set_index(index)
        if placement.preset is not None:
            m.apply_preset(placement.preset)
        elif placement.window is not None:
            m.set_window(placement.window)
        if placement.invert:
            m.set_invert(True)
        if placement.flip_h:
            m.flip(horizontal=True)
        if placement.flip_v:
            m.flip(horizontal=False)

    def next(self) -> bool:
        return self.hanging is not None and self.show((self.index + 1) % self.hanging.count)

    def previous(self) -> bool:
        return self.hanging is not None and self.show((self.index - 1) % self.hanging.count)

    # -- Link here --------------------------------------------------------------------------------------------

    def link_here(self) -> int:
        """Link the active viewport with the parallel series of other frames of reference shown now."""
        made = self.window.grid.link_here()
        if made:
            self.window.grid.set_link_scrolling(True)
            self.window.link_action.setChecked(True)
            text = "Linked here: the other frame of reference now scrolls with this one (Ctrl+Shift+L: unlink)."
        else:
            text = ("Nothing to link here: no other viewport shows parallel slices of another frame of reference "
                    "(series of one frame of reference are linked already).")
        self.window.statusBar().showMessage(text, 8000)
        self._sync()
        return made

    def unlink(self) -> bool:
        had = self.window.grid.unlink()
        self.window.statusBar().showMessage("Unlinked." if had else "Nothing was linked here.", 5000)
        self._sync()
        return had

    def _sync(self) -> None:
        has = self.hanging is not None
        self.next_action.setEnabled(has and self.hanging.count > 1)
        self.previous_action.setEnabled(has and self.hanging.count > 1)
        text = self.hanging.label(self.index) if has else ""
        if has and self.window.grid.registrations:
            text += " (linked here)"
        self.status_label.setText(text)
