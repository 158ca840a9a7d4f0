"""The main window's "Reading" parts, put in place by :func:`attach_reading`: the
:class:`~viewer.ui.reading_service.ReadingService`, the "Key images" dock, and the "Reading" menu (Key image K,
Save reading now, Send reading to PACS…, the dock's toggle).  The window keeps three hooks: it calls
:func:`attach_reading` once, lets :meth:`ReadingService.open_reading_series` take reading series in its
``open_series``, and calls :meth:`ReadingService.shutdown` first when it closes.

The PACS a reading is sent to is the source chosen in the Studies panel's Source list; with the local library
chosen there, the only configured PACS when there is just one.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget

from viewer.ui.key_images import KeyImagesPanel
from viewer.ui.reading_service import ReadingService
from viewer.ui.window_actions import make_action

STATUS_MS = 10000


class _SendTarget:
    """The PACS source the Studies panel shows (a Node or a ClusterProfile), None for the local library."""

    def __init__(self) -> None:
        self.source = None

    def set(self, source) -> None:
        self.source = source


def send_targets(window) -> list:
    """Where the window can send to: the configured nodes, then the cluster profiles."""
    nodes = list(getattr(window.settings, "nodes", []) or [])
    profiles = [window.retrievals.profile(name) for name in window.retrievals.profile_names()]
    return [*nodes, *profiles]


def send_profile(window, source):
    """The cluster profile a send to `source` (a node or a profile) goes through: a node is a cluster of one."""
    from viewer.pacs.cluster import ClusterProfile

    if getattr(source, "vip", None) is not None:  # already a cluster profile
        return source
    via = getattr(window.settings, "default_via", "get") or "get"
    if via == "move" or (via == "wado" and not getattr(source, "dicomweb_url", None)):
        via = "get"  # sending needs no retrieval method of its own: C-STORE, or STOW-RS for a web-only node
    return ClusterProfile.of_node(source, via)


def attach_reading(window) -> ReadingService:
    """Build the reading service, dock and menu of `window` (a MainWindow) and connect them."""
    service = ReadingService(window.library, window.grid, window, series_of=window._series_uids.get,
                             open_series=window.open_series)
    service.message.connect(lambda text: window.statusBar().showMessage(text, STATUS_MS))
    window.series_opened.connect(service.series_opened)

    panel = KeyImagesPanel(window.library, window.grid.annotations, window)
    service.key_images_changed.connect(panel.refresh)
    panel.jump_requested.connect(service.show_frame)
    dock = QDockWidget("Key images", window)
    dock.setObjectName("key-images")
    dock.setWidget(panel)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
    dock.hide()
    service.key_images_changed.connect(lambda: window.grid.annotations.key_images() and dock.show())
    window.key_images_panel = panel
    window.key_images_dock = dock

    target = _SendTarget()
    window.browser.source_changed.connect(target.set)

    def send() -> None:
        source = target.source
        if source is None:
            sources = send_targets(window)
            if len(sources) != 1:
                window.statusBar().showMessage(
                    "Choose the PACS to send to in the Source list of the Studies panel, then send again."
                    if sources else "No PACS is configured: add one in Settings to send a reading.", STATUS_MS)
                return
            source = sources[0]
        try:
            profile = send_profile(window, source)
        except Exception as exc:  # a node that cannot be a source: its sentence
            from viewer.ui.workers import describe_error

            window.statusBar().showMessage(describe_error(exc), STATUS_MS)
            return
        service.send_reading(lambda: window.retrievals.client(profile), getattr(source, "name", "the PACS"))

    key_action = make_action(window, "Key image", lambda _=False: service.toggle_key_image(), "K",
                             tip="Mark the image on screen as a key image, or unmark it (K)", window_wide=True)
    for viewport in window.grid.viewports:  # K in a viewport (the action's shortcut needs an active window)
        viewport.key_image_requested.connect(service.toggle_key_image)
    save_action = make_action(window, "Save reading now", lambda _=False: service.save_now(),
                              tip="The reading is saved by itself as you work; this saves it at once")
    send_action = make_action(window, "Send reading to PACS", lambda _=False: send(),
                              tip="Send this study's measurements and key images to the PACS chosen in the Studies "
                                  "panel")
    dock_action = dock.toggleViewAction()
    dock_action.setText("Key &images list")

    menu = window.menuBar().addMenu("&Reading")
    help_action = next((a for a in window.menuBar().actions() if a.text() == "&Help"), None)
    if help_action is not None:  # keep Help last
        window.menuBar().insertMenu(help_action, menu)
    for action in (key_action, save_action, send_action):
        menu.addAction(action)
    menu.addSeparator()
    menu.addAction(dock_action)
    window.key_image_action = key_action
    window.save_reading_action = save_action
    window.send_reading_action = send_action
    return service
