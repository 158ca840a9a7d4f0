"""Last line of defence: an exception nobody caught (typically in a Qt slot) is logged and shown as a dialog,
and the application keeps running."""

from __future__ import annotations

import logging
import sys
import traceback
from types import TracebackType

from PySide6.QtWidgets import QApplication, QMessageBox

log = logging.getLogger("viewer.ui")

DIALOGS_OPEN_MAX = 1  # a burst of errors (e.g. in a paint loop) shows one dialog, not hundreds


class ExceptHook:
    def __init__(self) -> None:
        self._open = 0
        self._boxes: list[QMessageBox] = []  # a parentless box needs a Python reference to stay alive
        self._handling = False
        self.count = 0  # exceptions seen (tests)
        self.last_text = ""

    def __call__(self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            QApplication.quit()
            return
        self.count += 1
        # The traceback goes to the log (it names code, not patients); the user gets a sentence.
        log.error("unexpected error:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        from viewer.ui.workers import describe_error

        self.last_text = describe_error(exc)
        if self._handling or self._open >= DIALOGS_OPEN_MAX or QApplication.instance() is None:
            return
        self._handling = True
        try:
            parent = QApplication.activeWindow()
            box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error",
                              f"{self.last_text}\n\nThe viewer keeps running; if something looks wrong, "
                              "restart it.", QMessageBox.StandardButton.Ok, parent)
            self._open += 1
            self._boxes.append(box)
            box.finished.connect(lambda *_: self._closed(box))
            box.open()
        except Exception:  # never raise from the hook itself
            log.exception("could not show the error dialog")
        finally:
            self._handling = False

    def _closed(self, box: QMessageBox) -> None:
        self._open = max(0, self._open - 1)
        if box in self._boxes:
            self._boxes.remove(box)
        box.deleteLater()


def install_excepthook() -> ExceptHook:
    hook = ExceptHook()
    sys.excepthook = hook
    return hook
