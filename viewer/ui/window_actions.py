"""The main window's actions, menus and image toolbar (:class:`viewer.ui.main_window.MainWindow`).

Built once by the window; each action is an attribute of the window (``window.tool_actions["distance"]``,
``window.cine_action``, ...) and acts on the active viewport at the time it is triggered.  :func:`make_action` is
how every part of the window (hanging protocols, the reading) makes its actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QLabel, QSpinBox, QWidget

from viewer.dicom.pixels import PRESETS
from viewer.ui import viewport_model as vm
from viewer.ui.layout import LAYOUTS

if TYPE_CHECKING:
    from viewer.ui.main_window import MainWindow


def make_action(parent: QWidget, text: str, slot, shortcut: str | QKeySequence | None = None,
                checkable: bool = False, tip: str = "", *, window_wide: bool = False) -> QAction:
    """An action calling `slot` (with the checked state), its shortcut, status and tool tip.  `window_wide`: added to
    `parent` so that its shortcut works wherever the focus is in the window, even when no menu shows it."""
    action = QAction(text, parent)
    if shortcut:
        action.setShortcut(QKeySequence(shortcut))
    action.setCheckable(checkable)
    if tip:
        action.setStatusTip(tip)
        action.setToolTip(tip)
    action.triggered.connect(slot)
    if window_wide:
        parent.addAction(action)
    return action


def build_actions(window: MainWindow) -> None:
    """The window's actions, as attributes of the window (`import_files_action`, `tool_actions`, ...)."""
    m = window._model  # called at trigger time: the actions follow the active viewport

    def act(*args, **kwargs) -> QAction:
        return make_action(window, *args, **kwargs)

    window.import_files_action = act("Import &files…", window.choose_import_files, QKeySequence.StandardKey.Open)
    window.import_folder_action = act("Import f&older…", window.choose_import_folder, "Ctrl+Shift+O")
    window.settings_action = act("&Settings…", window.open_settings)
    window.profiles_action = act("&Cluster profiles…", window.open_profiles,
                                        tip="PACS clusters: virtual IP, members, retry budget")
    window.quit_action = act("&Quit", window.close, QKeySequence.StandardKey.Quit)
    window.tags_action = window.tag_dock.toggleViewAction()
    window.tags_action.setText("&Tags")
    window.tags_action.setShortcut(QKeySequence("Ctrl+T"))
    window.overlays_action = act("&Overlays", window._set_overlays_visible, "Ctrl+Shift+V",
                                        checkable=True, tip="Show patient, slice and window text")
    window.overlays_action.setChecked(True)
    window.about_action = act("&About", window.show_about)
    window.preset_actions = {name: act(name.replace("CT ", ""), lambda _=False, n=name: m().apply_preset(n),
                                              tip=f"Window preset {name} (W {PRESETS[name].width:g}, "
                                                  f"L {PRESETS[name].center:g})")
                           for name in PRESETS}
    window.invert_action = act("Invert", lambda checked: (m().set_invert(checked), window._sync_actions()),
                                      checkable=True, tip="Invert grey levels (I)")
    window.rotate_left_action = act("Rotate ⟲", lambda: m().rotate(-90), tip="Rotate 90° counter-clockwise")
    window.rotate_right_action = act("Rotate ⟳", lambda: m().rotate(90), tip="Rotate 90° clockwise")
    window.flip_h_action = act("Flip ↔", lambda: m().flip(horizontal=True), tip="Mirror left-right")
    window.flip_v_action = act("Flip ↕", lambda: m().flip(horizontal=False), tip="Mirror top-bottom")
    window.reset_action = act("Reset", lambda: m().reset(), tip="Back to the file's window and fit (R)")
    window.fit_action = act("Fit", lambda: m().fit(), tip="Zoom to fit (F)")
    window.cine_action = act("Cine", lambda checked: (m().set_playing(checked), window._sync_actions()),
                                    checkable=True, tip="Play the series (Space)")
    window.open_3d_action = act("3D / MPR", window.open_3d, "Ctrl+3",
                                       tip="Open the series in MPR and volume rendering")
    labels = {"distance": "Distance", "angle": "Angle", "rectangle": "Rectangle ROI", "ellipse": "Ellipse ROI",
              "probe": "Probe"}
    window.tool_actions = {tool: act(label, lambda checked, t=tool: window._choose_tool(t, checked),
                                            checkable=True, tip=f"Measure: {label.lower()} (Esc: back to navigating)")
                         for tool, label in labels.items()}
    window.tool_actions["calibrate"] = act(
        "Calibrate", lambda checked: window._choose_tool("calibrate", checked), checkable=True,
        tip="Calibrate: draw a line over an object of known length, then enter its length in mm")
    window.clear_calibration_action = act("Clear calibration", lambda: window.viewport.clear_calibration(),
                                                 tip="Measure this image with its header's scale again")
    window.clear_measurements_action = act("Clear measurements", lambda: window.viewport.clear_measurements(),
                                                  tip="Remove the measurements of this slice (Delete)")
    window.export_view_action = act("Export view…", window.export_view, "Ctrl+E",
                                           tip="Save the view as a PNG image")
    window.export_view_anonymous_action = act(
        "Export view without identity…", lambda _=False: window.export_view(identity=False),
        tip="Save the view as a PNG image without the patient's name, ID and study date in its overlay")
    window.layout_group = QActionGroup(window)
    window.layout_actions = {}
    for name in LAYOUTS:
        action = act(f"Layout {name.replace('x', ' × ')}", lambda _=False, n=name: window.set_layout(n),
                              checkable=True, tip=f"Show {name} viewports (drag series onto them)")
        window.layout_group.addAction(action)
        window.layout_actions[name] = action
    window.layout_actions[window.grid.layout_name].setChecked(True)
    window.link_action = act("Link scrolling", window.grid.set_link_scrolling, checkable=True,
                                    tip="Series of the same frame of reference scroll together")
    window.link_action.setChecked(window.grid.link_scrolling)
    window.reference_lines_action = act("Reference lines", window.grid.set_reference_lines_visible,
                                               checkable=True,
                                               tip="Show where the active viewport's slice cuts the others")
    window.reference_lines_action.setChecked(window.grid.show_reference_lines)
    window.crosshair_action = act("Crosshair", window.grid.set_crosshair_enabled, "X", checkable=True,
                                  tip="Click or drag to point at a place: linked views go there and mark it (X)")
    window.crosshair_action.setChecked(window.grid.crosshair_enabled)

def build_menus(window: MainWindow) -> None:
    file_menu = window.menuBar().addMenu("&File")
    file_menu.addAction(window.import_files_action)
    file_menu.addAction(window.import_folder_action)
    file_menu.addSeparator()
    file_menu.addAction(window.settings_action)
    file_menu.addAction(window.profiles_action)
    file_menu.addSeparator()
    file_menu.addAction(window.quit_action)
    view_menu = window.view_menu = window.menuBar().addMenu("&View")
    view_menu.addAction(window.open_3d_action)
    view_menu.addSeparator()
    for action in window.layout_actions.values():
        view_menu.addAction(action)
    view_menu.addAction(window.link_action)
    view_menu.addAction(window.reference_lines_action)
    view_menu.addAction(window.crosshair_action)
    view_menu.addSeparator()
    measure_menu = window.menuBar().addMenu("&Measure")
    for action in window.tool_actions.values():
        measure_menu.addAction(action)
    measure_menu.addSeparator()
    measure_menu.addAction(window.clear_measurements_action)
    measure_menu.addAction(window.clear_calibration_action)
    file_menu.insertAction(window.settings_action, window.export_view_action)
    file_menu.insertAction(window.settings_action, window.export_view_anonymous_action)
    view_menu.addAction(window.tags_action)
    view_menu.addAction(window.overlays_action)
    view_menu.addAction(window.browser_dock.toggleViewAction())
    window.health_action = window.health_dock.toggleViewAction()
    window.health_action.setText("PACS &health")
    view_menu.addAction(window.health_action)
    help_menu = window.menuBar().addMenu("&Help")
    help_menu.addAction(window.about_action)

def build_toolbar(window: MainWindow) -> None:
    bar = window.addToolBar("Image")
    bar.setObjectName("image-toolbar")
    bar.addWidget(QLabel(" Window: ", bar))
    for action in window.preset_actions.values():
        bar.addAction(action)
    bar.addSeparator()
    for action in (window.invert_action, window.rotate_left_action, window.rotate_right_action, window.flip_h_action,
                   window.flip_v_action, window.fit_action, window.reset_action):
        bar.addAction(action)
    bar.addSeparator()
    bar.addAction(window.cine_action)
    window.fps_box = QSpinBox(bar)
    window.fps_box.setRange(int(vm.CINE_FPS_MIN), int(vm.CINE_FPS_MAX))
    window.fps_box.setValue(int(window.viewport.model.cine_fps))
    window.fps_box.setSuffix(" fps")
    window.fps_box.setToolTip("Cine speed")
    window.fps_box.valueChanged.connect(lambda fps: window._model().set_cine_fps(fps))
    bar.addWidget(window.fps_box)
    bar.addSeparator()
    for action in window.tool_actions.values():
        bar.addAction(action)
    bar.addSeparator()
    for action in window.layout_actions.values():
        bar.addAction(action)
    bar.addAction(window.link_action)
    bar.addAction(window.crosshair_action)
    bar.addSeparator()
    bar.addAction(window.open_3d_action)
