"""``mifas-pacs export``: a study or series of the local library to a folder, a ZIP or patient media.

    mifas-pacs export --study UID [--series UID ...] --out PATH [--container folder|zip|media]
                      [--form dicom|png|jpeg|mp4|apng] [--deidentify [--option retain-modified-dates ...]]
                      [--include-burned-in] [--copy-viewer] [--library DIR]

The library is ``--library``, else the settings' ``library_dir``, else the per-user default.  Prints one JSON line
(``destination``, ``written``, ``excluded``); errors are one sentence on stderr, with mifas-pacs' exit statuses
(1 failed, 2 usage, 130 interrupted: Ctrl-C cancels between two files and nothing is left at the destination).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from viewer.errors import MifasError
from viewer.share.interrupt import run_cancellable
from viewer.uid import is_valid_uid

EXPORT_FORMS = ("dicom", "png", "jpeg", "mp4", "apng")  # viewer.share.export.FORMS (not imported: start-up time)
EXPORT_CONTAINERS = ("folder", "zip", "media")


def add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a study or series of the local library "
                                 "(folder, ZIP or patient media; DICOM, pictures or movies; optionally de-identified)")
    export.add_argument("--study", required=True, metavar="UID")
    export.add_argument("--series", action="append", default=[], metavar="UID",
                        help="only this series of the study (repeatable)")
    export.add_argument("--out", required=True, metavar="PATH", help="the folder or .zip file to create")
    export.add_argument("--container", choices=EXPORT_CONTAINERS, default="folder")
    export.add_argument("--form", choices=EXPORT_FORMS, default="dicom")
    export.add_argument("--deidentify", action="store_true",
                        help="remove the patient's identity (PS3.15 Basic Application Level Confidentiality Profile)")
    export.add_argument("--option", action="append", default=[], metavar="NAME",
                        help="a de-identification option, e.g. retain-modified-dates (repeatable)")
    export.add_argument("--include-burned-in", action="store_true",
                        help="with --deidentify: keep images that may carry burned-in identity")
    export.add_argument("--copy-viewer", action="store_true", help="media: copy the viewer onto the media")
    export.add_argument("--library", metavar="DIR", help="the library folder (default: from the settings)")
    export.add_argument("--config", metavar="PATH", help="settings file (default: the user's settings.json)")
    export.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    export.add_argument("-v", "--verbose", action="store_true", help="log what happens (UIDs only) to stderr")
    export.set_defaults(node=None, cluster=None)


def run_export(args: argparse.Namespace, usage_error: type[Exception], warn) -> int:
    """The command; raises ``usage_error`` (exit 2) or MifasError."""
    from viewer.library.store import Library
    from viewer.settings import default_library_dir, load_settings
    from viewer.share.export import ExportRequest

    for label, uid in (("--study", args.study), *(("--series", s) for s in args.series)):
        if not is_valid_uid(uid):
            raise usage_error(f"{label} '{uid}' is not a valid UID")
    if (args.option or args.include_burned_in) and not args.deidentify:
        raise usage_error("--option and --include-burned-in go with --deidentify")
    options = None
    if args.deidentify:
        from viewer.share.deidentify import OPTION_NAMES, Options

        unknown = [name for name in args.option if name not in OPTION_NAMES]
        if unknown:
            raise usage_error(f"unknown --option '{unknown[0]}'; known: {', '.join(sorted(OPTION_NAMES))}")
        options = Options.from_names(args.option)
    folder = args.library
    if folder is None:
        settings = load_settings(args.config)
        for warning in settings.warnings:
            warn(warning)
        folder = settings.library_dir or default_library_dir()
    with Library.open(Path(folder).expanduser()) as library:
        if library.study(args.study) is None:
            raise MifasError("The local library does not hold that study.")
        series = args.series or [s.series_uid for s in library.series(args.study)]
        held = {s.series_uid for s in library.series(args.study)}
        if any(uid not in held for uid in series):
            raise MifasError("The local library does not hold that series in that study.")
        uids = [r.sop_instance_uid for uid in series for r in library.instances(uid)]
        request = ExportRequest(uids, Path(args.out).expanduser(), container=args.container, form=args.form,
                                deidentify=options, include_burned_in=args.include_burned_in,
                                copy_viewer=args.copy_viewer)
        show = args.progress or sys.stderr.isatty()
        result = _run(library, request, show)
    print(json.dumps({"destination": str(result.destination), "written": result.written,
                      "excluded": list(result.excluded)}, ensure_ascii=False))
    return 0


def _run(library, request, show: bool):
    """The export in a worker thread, so that Ctrl-C cancels it between two files (and nothing stays behind)."""
    from viewer.share.export import export

    def progress(done: int, total: int) -> None:
        if show:
            sys.stderr.write(f"exported {done}/{total}\n")

    return run_cancellable(lambda cancel: export(library, request, progress=progress, cancel=cancel), "export")
