"""``mifas-viewer``: the desktop application's entry point.

    mifas-viewer [--library DIR] [--demo | --open PATH] [--screenshot FILE.png] [--version]

``--screenshot`` loads what was asked, waits (bounded) until the first slice is painted, saves the window as a
PNG and exits: 0 on success, 1 with a one-line reason on stderr otherwise.  It works under Xvfb and with
``QT_QPA_PLATFORM=offscreen``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import viewer

log = logging.getLogger("viewer.ui.app")

SCREENSHOT_TIMEOUT_S = 60.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def default_library_dir() -> Path:
    try:
        from viewer.settings import default_library_dir as settings_default
    except ImportError:
        from platformdirs import user_data_dir

        return Path(user_data_dir("mifas-viewer")) / "library"
    return Path(settings_default())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mifas-viewer", description="MIFAS Viewer: a desktop DICOM viewer.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--library", metavar="DIR", type=Path, help="the local library folder "
                        "(default: the per-user data folder)")
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--demo", action="store_true", help="put the synthetic demo study in the library and open it")
    load.add_argument("--open", metavar="PATH", type=Path, help="import a file or folder and open its first series")
    parser.add_argument("--screenshot", metavar="FILE.png", type=Path,
                        help="save the window as PNG once the first slice is painted, then exit")
    parser.add_argument("--screenshot-timeout", metavar="SECONDS", type=float, default=SCREENSHOT_TIMEOUT_S,
                        help=f"give up waiting for the first slice after this long (default {SCREENSHOT_TIMEOUT_S:g})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (no patient data is logged)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:  # before anything imports Qt
        print(f"mifas-viewer {viewer.__version__}")
        return EXIT_OK
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from viewer.pacs import keep_patient_data_out_of_logs

    keep_patient_data_out_of_logs()  # pynetdicom logs identifiers (patient names) at INFO otherwise
    if args.open is not None and not args.open.exists():
        print(f"mifas-viewer: {args.open} does not exist.", file=sys.stderr)
        return EXIT_USAGE
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from PySide6.QtWidgets import QApplication, QMessageBox

    from viewer.errors import MifasError
    from viewer.library import Library
    from viewer.ui.excepthook import install_excepthook
    from viewer.ui.main_window import APP_TITLE, MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "mifas-viewer"])
    app.setApplicationName("mifas-viewer")
    app.setApplicationDisplayName(APP_TITLE)
    app.setApplicationVersion(viewer.__version__)
    install_excepthook()
    settings = _load_settings()
    library_dir = args.library or (Path(settings.library_dir) if getattr(settings, "library_dir", None)
                                   else default_library_dir())
    try:
        library = Library.open(library_dir)
    except MifasError as exc:
        print(f"mifas-viewer: {exc}", file=sys.stderr)
        if args.screenshot is None:
            QMessageBox.critical(None, APP_TITLE, str(exc))
        return EXIT_FAILED
    from viewer import audit

    audit.start("mifas-viewer")  # Application Start; IT's repository (if any) is fed from a background thread
    window = MainWindow(library, settings)
    try:
        window.show()
        if args.demo:
            window.load_demo(open_after=True)
        elif args.open is not None:
            window.import_paths([args.open], open_first=True)
        if args.screenshot is not None:
            return _screenshot(app, window, args.screenshot, expect_slice=args.demo or args.open is not None,
                               timeout_s=args.screenshot_timeout)
        return app.exec()
    finally:
        window.close()
        window.shutdown()
        library.close()
        audit.stop()  # Application Stop; what is still queued goes out at the next start


def _load_settings():
    try:
        from viewer.settings import load_settings
    except ImportError:
        return None
    try:
        return load_settings()
    except Exception as exc:  # unreadable settings must not keep the viewer from starting
        log.warning("settings could not be read (%s); using defaults", type(exc).__name__)
        return None


def _screenshot(app, window, path: Path, *, expect_slice: bool, timeout_s: float) -> int:
    from PySide6.QtCore import QEventLoop, QTimer

    from viewer.ui.viewport import LOADING_TEXT, NO_SERIES_TEXT

    failure: list[str] = []
    if expect_slice:
        loop = QEventLoop()

        def fail(reason: str) -> None:
            failure.append(reason)
            loop.quit()

        def on_message(text: str) -> None:
            if text and text not in (LOADING_TEXT, NO_SERIES_TEXT):
                fail(f"the first image cannot be shown: {text}")

        window.viewport.slice_painted.connect(loop.quit)
        window.load_failed.connect(fail)
        window.viewport.message_changed.connect(on_message)
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(lambda: fail(f"no image was painted within {timeout_s:g} s"))
        timer.start(int(timeout_s * 1000))
        if window.viewport.painted_index < 0 and not failure:
            loop.exec()
        timer.stop()
        if not failure and window.viewport.painted_index < 0:
            failure.append("no image was painted")
    app.processEvents()
    if failure:
        print(f"mifas-viewer: screenshot failed: {failure[0]}", file=sys.stderr)
        return EXIT_FAILED
    pixmap = window.grab()
    if pixmap.isNull() or not pixmap.save(str(path), "PNG"):
        print(f"mifas-viewer: screenshot failed: cannot write {path}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
