"""``mifas-pacs send``: a study or series of the local library to a PACS node or cluster profile.

    mifas-pacs send --node ORTHANC@127.0.0.1:4242 --study UID [--series UID ...] [--library DIR] [--via wado]
    mifas-pacs send --cluster PROFILE --study UID

Through :func:`viewer.share.send.send_instances`: C-STORE (STOW-RS with ``--via wado``, or for a profile without
DIMSE), skipping what the PACS already holds, resuming across a failover.  Progress and retry events go to stderr;
one JSON line goes to stdout: ``sent`` and ``already_held`` (SOP Instance UIDs), ``refused`` (UID -> reason),
``error``.  Exit status: 0 everything is on the PACS, 1 something was refused or not sent, 2 the command line is
wrong, 130 interrupted (Ctrl-C cancels between two images; what was acknowledged stays on the PACS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from viewer.errors import MifasError
from viewer.share.interrupt import run_cancellable
from viewer.uid import is_valid_uid


def add_send_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    send = commands.add_parser("send", parents=[common], help="send a study or series of the local library to "
                               "the node or cluster (C-STORE, or STOW-RS with --via wado)")
    send.add_argument("--study", required=True, metavar="UID")
    send.add_argument("--series", action="append", default=[], metavar="UID",
                      help="only this series of the study (repeatable)")
    send.add_argument("--library", metavar="DIR", help="the library folder (default: from the settings)")
    send.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")


def run_send(args: argparse.Namespace, usage_error: type[Exception], warn: Callable[[str], None]) -> int:
    """The command; raises ``usage_error`` (exit 2) or MifasError (exit 1)."""
    from viewer.library.store import Library
    from viewer.pacs.cluster_cli import printing_event_log
    from viewer.pacs.resume import ResilientClient
    from viewer.settings import default_library_dir, load_settings

    for label, uid in (("--study", args.study), *(("--series", s) for s in args.series)):
        if not is_valid_uid(uid):
            raise usage_error(f"{label} '{uid}' is not a valid UID")
    settings = load_settings(args.config)
    for warning in settings.warnings:
        warn(warning)
    profile = _profile(args, settings, usage_error, warn)
    folder = args.library or settings.library_dir or default_library_dir()
    with Library.open(Path(folder).expanduser()) as library:
        if library.study(args.study) is None:
            raise MifasError("The local library does not hold that study.")
        held = [s.series_uid for s in library.series(args.study)]
        if any(uid not in held for uid in args.series):
            raise MifasError("The local library does not hold that series in that study.")
        uids = [r.sop_instance_uid for uid in (args.series or held) for r in library.instances(uid)]
        client = ResilientClient(profile, on_event=printing_event_log().record)
        result = _run(library, client, uids, args.progress or sys.stderr.isatty())
    print(json.dumps({"sent": list(result.sent), "already_held": list(result.already_held),
                      "refused": dict(result.refused), "error": result.error}, ensure_ascii=False))
    if result.error:
        warn(result.error)
    return 0 if result.complete else 1


def _profile(args: argparse.Namespace, settings, usage_error: type[Exception], warn: Callable[[str], None]):
    """The destination as a cluster profile: the one named by --cluster, or --node as a cluster of one."""
    from viewer.pacs.cluster import ClusterProfile

    if args.cluster:
        from viewer.pacs.cluster_cli import load_profile

        for option in ("via", "dicomweb", "timeout", "calling_ae"):
            if getattr(args, option, None) is not None:
                raise usage_error(f"--{option.replace('_', '-')} is set by the cluster profile, not with --cluster")
        return load_profile(args, warn)
    from viewer.pacs.cli import _resolve_node  # the same --node rules as echo/find/get

    node = _resolve_node(args, settings.nodes, settings.calling_ae)
    if args.via in ("get", "move"):
        raise usage_error("--via for send is wado (STOW-RS); without it, send uses C-STORE")
    try:
        profile = ClusterProfile.of_node(node, args.via or "get")
    except MifasError as exc:
        raise usage_error(str(exc)) from None
    return dataclasses.replace(profile, transports=("dicomweb",)) if args.via == "wado" else profile


def _run(library, client, uids: list[str], show: bool):
    """The send in a worker thread, so that Ctrl-C cancels it between two images."""
    from viewer.share.send import send_instances

    def progress(done: int, total: int | None) -> None:
        if show:
            sys.stderr.write(f"sent {done}/{total}\n")
            sys.stderr.flush()

    return run_cancellable(
        lambda cancel: send_instances(library, client, uids, progress=progress, cancel=cancel), "send")
