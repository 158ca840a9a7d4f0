"""``mifas-pacs``: talk to a PACS from the command line (echo, find, get).

    mifas-pacs echo --node ORTHANC@127.0.0.1:4242
    mifas-pacs find --node ORTHANC@127.0.0.1:4242 --level study -k PatientName='DOE*' -k StudyDate=20240101-
    mifas-pacs get  --node ORTHANC@127.0.0.1:4242 --study 1.2.3 --library ~/mifas-library [--via move --port 11113]

``--node`` is ``AET@HOST:PORT`` or the name of a node saved in the settings.  Results go to stdout (find: one
JSON object per line); progress goes to stderr, only when stderr is a terminal or with ``--progress``.
Exit status: 0 success, 1 the operation failed, 2 the command line is wrong, 130 interrupted; a failure prints
exactly one line, ``mifas-pacs: <reason>``, to stderr.  Logs name UIDs only, never patient data.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import viewer
from viewer import audit
from viewer.audit.transfers import audited_query, transfer_begin, transferred
from viewer.errors import LibraryError, MifasError, NotDicomError, OperationCancelled, StorageFullError
from viewer.imports import need
from viewer.pacs.cluster_cli import add_cluster_arguments
from viewer.pacs.secrets_cli import add_secret_commands, run_secret_command
from viewer.private import PRIVATE_FILE, private_dir
from viewer.share.export_cli import add_export_command
from viewer.share.send_cli import add_send_command
from viewer.uid import is_valid_uid

if TYPE_CHECKING:
    from viewer.pacs.client import PacsClient
    from viewer.pacs.cluster import ClusterProfile
from viewer.limits import FIND_RESULTS_LIMIT_MAX, FIND_RESULTS_MAX
from viewer.pacs.node import QUERY_LEVELS, Node, Timeouts, parse_node, validate_url

# The heavy modules (pydicom, pynetdicom, the library) are imported where a command needs them, so that
# `mifas-pacs --version` and a usage error answer at once.
VIAS: tuple[str, ...] = ("get", "move", "wado")

PROG = "mifas-pacs"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_TRUNCATED = 3  # find: the matches printed are not all the node's (its limit was hit)
PROGRESS_INTERVAL_S = 0.1
KEYS_MAX = 64

log = logging.getLogger("viewer.pacs.cli")


class UsageError(Exception):
    """The command line is wrong (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, not usage + message
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Query and retrieve studies from a DICOM node (PACS).")
    parser.add_argument("--version", action="version", version=f"{PROG} {viewer.__version__}")
    common = _Parser(add_help=False)
    target = common.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", help="AET@HOST:PORT, or the name of a saved node")
    target.add_argument("--cluster", metavar="PROFILE",
                        help="a cluster profile (virtual IP + members): retries and resumes across failovers")
    add_cluster_arguments(common)
    common.add_argument("--calling-ae", help="our AE title (default: from the settings, else MIFAS)")
    common.add_argument("--timeout", type=float, metavar="S", help="connect/association/answer timeout in seconds")
    common.add_argument("--via", choices=VIAS, help="transport: get/move (DIMSE) or wado (DICOMweb)")
    common.add_argument("--dicomweb", metavar="URL", help="DICOMweb base URL of the node (for --via wado)")
    common.add_argument("--tls-ca", metavar="PEM", help="DICOM TLS: the CA file that signed the PACS's certificate "
                        "(any --tls-* option turns TLS on; without --tls-ca, the system's CA store)")
    common.add_argument("--tls-cert", metavar="PEM", help="DICOM TLS: this workstation's certificate")
    common.add_argument("--tls-key", metavar="PEM", help="DICOM TLS: this workstation's private key (unencrypted)")
    common.add_argument("--config", metavar="PATH", help="settings file (default: the user's settings.json)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens (UIDs only) to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    commands.add_parser("echo", parents=[common], help="check that the node answers (C-ECHO)")
    commands.add_parser("login", parents=[common],
                        help="sign in to the node's DICOMweb server as a person (its 'auth' kind 'device')")

    find = commands.add_parser("find", parents=[common], help="query the node; print one JSON object per match")
    find.add_argument("--level", choices=QUERY_LEVELS, default="study")
    find.add_argument("-k", "--key", action="append", default=[], metavar="KEYWORD=VALUE",
                      help="a matching key, e.g. PatientName=DOE* or StudyDate=20240101-20241231")
    find.add_argument("--limit", type=int, default=FIND_RESULTS_MAX, help="stop after this many matches")

    get = commands.add_parser("get", parents=[common], help="retrieve a study or series")
    get.add_argument("--study", required=True, metavar="UID")
    get.add_argument("--series", metavar="UID")
    where = get.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", metavar="DIR", help="write plain DICOM files into DIR")
    where.add_argument("--library", metavar="DIR", help="store into the MIFAS library in DIR")
    get.add_argument("--port", type=int, help="our Storage SCP port for --via move (default: from the settings)")
    get.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    health = commands.add_parser("health", help="probe a cluster's virtual IP and members")
    health.add_argument("--cluster", metavar="PROFILE", required=True)
    add_cluster_arguments(health)
    health.add_argument("--json", action="store_true", help="print the statuses as JSON")
    health.add_argument("--watch", type=float, default=0.0, metavar="S",
                        help="keep probing for S seconds, printing what changes")
    health.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between probes")
    health.add_argument("-v", "--verbose", action="store_true", help="log what happens (UIDs only) to stderr")
    add_secret_commands(commands)  # mifas-pacs secret set|check|delete NAME (viewer.pacs.secrets_cli)
    add_export_command(commands)  # mifas-pacs export (viewer.share.export_cli)
    add_send_command(commands, common)  # mifas-pacs send (viewer.share.send_cli)
    return parser


def _resolve_node(args: argparse.Namespace, settings_nodes: Sequence[Node], calling_ae: str) -> Node:
    timeouts = Timeouts()
    if args.timeout is not None:
        if not 0 < args.timeout <= 3600:
            raise UsageError("--timeout must be between 0 and 3600 seconds")
        timeouts = Timeouts(args.timeout, args.timeout, args.timeout, max(args.timeout, 1.0))
    node = next((n for n in settings_nodes if n.name == args.node), None)
    if node is None:
        if "@" not in args.node:
            raise UsageError(f"--node '{args.node}' is neither AET@HOST:PORT nor the name of a saved node")
        try:
            node = parse_node(args.node, calling_ae=calling_ae)
        except MifasError as exc:
            raise UsageError(str(exc)) from None
    changes: dict[str, object] = {}
    if args.calling_ae:
        changes["calling_ae"] = args.calling_ae
    if args.timeout is not None:
        changes["timeouts"] = timeouts
    try:
        if args.dicomweb:
            changes["dicomweb_url"] = validate_url(args.dicomweb)
        if args.tls_ca or args.tls_cert or args.tls_key:
            from viewer.pacs.tls import TlsSettings

            changes["tls"] = TlsSettings(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
        return dataclasses.replace(node, **changes) if changes else node
    except MifasError as exc:
        raise UsageError(str(exc)) from None


def _parse_keys(pairs: Sequence[str]) -> dict[str, str]:
    need("pydicom")
    from pydicom.datadict import tag_for_keyword

    if len(pairs) > KEYS_MAX:
        raise UsageError(f"at most {KEYS_MAX} keys")
    keys = {}
    for pair in pairs:
        keyword, sep, value = pair.partition("=")
        if not sep or not keyword.strip():
            raise UsageError(f"-k '{pair}' is not KEYWORD=VALUE")
        if tag_for_keyword(keyword.strip()) is None:
            raise UsageError(f"-k '{pair}': '{keyword.strip()}' is not a DICOM keyword (e.g. PatientName)")
        keys[keyword.strip()] = value
    return keys


class _ProgressLine:
    """``received N/M`` on stderr, rewritten in place on a terminal, at most ten times a second."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._tty = sys.stderr.isatty()
        self._last = 0.0
        self._lock = threading.Lock()
        self._shown = False

    def __call__(self, done: int, total: int | None) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        with self._lock:
            if now - self._last < PROGRESS_INTERVAL_S and done != total:
                return
            self._last = now
            text = f"received {done}/{total}" if total is not None else f"received {done}"
            sys.stderr.write(f"\r{text}" if self._tty else f"{text}\n")
            sys.stderr.flush()
            self._shown = True

    def finish(self) -> None:
        if self._enabled and self._tty and self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _FolderSink:
    """Writes each received instance to DIR/<SOP Instance UID>.dcm (a minted name when the UID is not valid),
    atomically (temporary file, then rename)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            private_dir(folder)  # patient data: 0700 when we make it, each file 0600
        except OSError as exc:
            raise MifasError(f"Cannot create the folder {folder} ({exc.strerror}).") from exc

    def path_for(self, sop_instance_uid: str) -> Path | None:
        return self.folder / f"{sop_instance_uid}.dcm" if is_valid_uid(sop_instance_uid) else None

    def held(self, sop_instance_uid: str) -> bool:
        path = self.path_for(sop_instance_uid)
        return path is not None and path.exists()

    def __call__(self, data: bytes) -> None:
        from viewer.pacs.sink import part10_sop_instance_uid

        uid = part10_sop_instance_uid(data)
        if not uid:
            raise NotDicomError("A received instance has no readable file meta header.")
        final = self.path_for(uid) or self.folder / f"{uuid.uuid4().hex}.dcm"
        tmp = self.folder / f".{uuid.uuid4().hex}.part"
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, PRIVATE_FILE), "wb") as fp:
                fp.write(data)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(f"The disk holding {self.folder} is full.") from exc
            raise LibraryError(f"Cannot write into {self.folder} ({exc.strerror}).") from exc


def _echo(client: PacsClient, node: Node) -> int:
    seconds = client.echo()
    print(f"{node.describe()} answered in {seconds * 1000:.1f} ms")
    return EXIT_OK


def _folder_study(sink: _FolderSink, study_uid: str, outcome: object) -> audit.StudyRef:
    """The study and patient of a retrieval into a folder, from the header of one file it wrote."""
    from viewer.library.header import index_row

    uids = getattr(getattr(outcome, "result", None), "sop_instance_uids", ()) or ()
    for uid in uids[:1]:
        path = sink.path_for(uid)
        try:
            row = index_row(path.read_bytes()) if path is not None else None
        except (OSError, MifasError):
            row = None
        if row is not None:
            return audit.StudyRef(study_uid, row.study[2], row.study[1] or None, len(uids))
    return audit.StudyRef(study_uid, instances=len(uids) or None)


def _find(client: PacsClient, args: argparse.Namespace, node: Node) -> int:
    if not 1 <= args.limit <= FIND_RESULTS_LIMIT_MAX:
        raise UsageError(f"--limit must be between 1 and {FIND_RESULTS_LIMIT_MAX}")
    keys = _parse_keys(args.key)
    with audited_query(node, args.level, keys):
        rows = client.find(args.level, keys, limit=args.limit)
    for row in rows:
        print(json.dumps(row, ensure_ascii=False, sort_keys=True))
    if getattr(rows, "truncated", False):
        _warn(f"the node had more than {args.limit} matches; only the first {args.limit} are shown "
              "(narrow the search, or raise --limit)")
        return EXIT_TRUNCATED
    return EXIT_OK


def _get(profile: ClusterProfile, args: argparse.Namespace) -> int:
    """Retrieve with the one engine (:mod:`viewer.pacs.retrieve`), from a node or a cluster alike.  Into a
    library it is a persisted job: if this command is interrupted, running it again fetches only what is
    missing.  Retry events are printed to stderr as they happen."""
    from viewer.library.jobs import JobStore, run_job
    from viewer.library.store import Library
    from viewer.pacs.cluster_cli import printing_event_log
    from viewer.pacs.resume import ResilientClient
    from viewer.pacs.retrieve import retrieve

    for label, uid in (("--study", args.study), ("--series", args.series)):
        if uid is not None and not is_valid_uid(uid):
            raise UsageError(f"{label} '{uid}' is not a valid UID")
    progress = _ProgressLine(args.progress or sys.stderr.isatty())
    events = printing_event_log()
    try:
        if args.library:
            with Library.open(Path(args.library).expanduser()) as library:
                jobs = JobStore(library)
                try:
                    job = jobs.get(jobs.add(args.study, args.series, profile.name))
                    # run_job records Begin Transferring and Instances Transferred in the audit trail
                    outcome = run_job(ResilientClient(profile, library, on_event=events.record), jobs, job,
                                      progress=progress)
                    if outcome is None:  # the job records why; it stays in the library to be resumed
                        reason = jobs.get(job.job_id).last_error or "the retrieval failed"
                        raise MifasError(f"{reason.rstrip('.')}. The images already here are kept; run the same "
                                         "command again to fetch only the missing ones.")
                finally:
                    jobs.close()
        else:
            sink = _FolderSink(Path(args.out).expanduser())
            transfer_begin(profile, audit.StudyRef(args.study))
            try:
                outcome = retrieve(profile, args.study, args.series, sink=sink, held=sink.held, progress=progress,
                                   on_event=events.record)
            except MifasError:
                transferred(profile, audit.StudyRef(args.study), None)
                raise
            transferred(profile, _folder_study(sink, args.study, outcome), outcome)
    finally:
        progress.finish()
    print(outcome.describe())
    return EXIT_OK if outcome.complete else EXIT_FAILED


def _run_cluster(args: argparse.Namespace) -> int:
    """echo, find and health through the retry-and-resume engine, against a cluster profile."""
    from viewer.pacs.cluster_cli import cluster_echo, cluster_find, cluster_health, load_profile

    for option in ("via", "dicomweb", "timeout", "calling_ae", "port"):
        if getattr(args, option, None) is not None:
            raise UsageError(f"--{option.replace('_', '-')} is set by the cluster profile, not with --cluster")
    profile = load_profile(args, _warn)
    if args.command == "health":
        return cluster_health(profile, as_json=args.json, watch_s=args.watch, interval_s=args.interval)
    if args.command == "login":
        return _login(profile.candidates()[0])
    if args.command == "echo":
        return cluster_echo(profile)
    if args.command == "find":
        if not 1 <= args.limit <= FIND_RESULTS_LIMIT_MAX:
            raise UsageError(f"--limit must be between 1 and {FIND_RESULTS_LIMIT_MAX}")
        keys = _parse_keys(args.key)
        with audited_query(profile, args.level, keys):
            return cluster_find(profile, args.level, keys, args.limit)
    return _get(profile, args)


def _login(node: Node) -> int:
    """A person's sign-in (RFC 8628): the instructions on stdout, then wait for the approval."""
    from viewer.pacs.device_login import login

    if node.auth is None or node.auth.kind != "device":
        raise UsageError(f"the node '{node.name}' does not sign in a person: its 'auth' kind is not 'device'")
    login(node.auth, say=lambda text: print(text, flush=True), timeouts=node.timeouts)
    print(f"Signed in to {node.auth.token_url}; the sign-in is kept in the OS keyring as '{node.auth.secret}'.")
    return EXIT_OK


def _configure_logging(verbose: bool) -> None:
    """Our logs to stderr only with --verbose; pynetdicom's only at WARNING, and never its identifiers."""
    from viewer.pacs.dimse import keep_patient_data_out_of_logs

    keep_patient_data_out_of_logs()
    logging.getLogger("pynetdicom").setLevel(logging.WARNING if verbose else logging.CRITICAL + 1)
    ours = logging.getLogger("viewer")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        for name in ("viewer", "pynetdicom"):
            logging.getLogger(name).addHandler(handler)
        ours.setLevel(logging.INFO)
    else:
        ours.addHandler(logging.NullHandler())  # no "last resort" output: failures are our one stderr line


def run(argv: Sequence[str] | None = None) -> int:
    """The command; raises UsageError or MifasError (main() turns them into the exit status)."""
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "secret":  # the OS keyring only: no node, no settings
        return run_secret_command(args)
    audit.start(PROG, warn=_warn)  # Application Start; the messages go out from a background thread
    try:
        return _run_command(args)
    except MifasError as exc:
        audit.authentication_failure(exc, getattr(args, "node", None) or args.cluster, None)
        raise
    finally:
        audit.stop()  # Application Stop; what the repository has not taken yet is sent by the next start


def _run_command(args: argparse.Namespace) -> int:
    if args.command == "send":  # a node or a cluster (viewer.share.send_cli)
        from viewer.share.send_cli import run_send

        return run_send(args, UsageError, _warn)
    if args.command == "export":  # the local library only: no node
        from viewer.share.export_cli import run_export

        return run_export(args, UsageError, _warn)
    if getattr(args, "cluster", None):
        return _run_cluster(args)
    from viewer.settings import load_settings

    settings = load_settings(args.config)
    for warning in settings.warnings:
        _warn(warning)
    node = _resolve_node(args, settings.nodes, settings.calling_ae)
    via = args.via or settings.default_via
    if args.command == "get" and args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError("--port must be between 1 and 65535")
    move_port = getattr(args, "port", None) or settings.storage_port
    if args.command == "get":
        from viewer.pacs.cluster import ClusterProfile

        return _get(ClusterProfile.of_node(node, via, move_port=move_port), args)
    if args.command == "login":
        return _login(node)
    from viewer.pacs.client import open_client

    client = open_client(node, via, move_port=move_port)
    try:
        if args.command == "echo":
            return _echo(client, node)
        return _find(client, args, node)
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except OperationCancelled as exc:
        _fail(str(exc))
        return EXIT_INTERRUPTED
    except MifasError as exc:
        _fail(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        _fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: still one line (the traceback with --verbose)
        log.exception("internal error")
        _fail(f"internal error: {type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _warn(text: str) -> None:
    """A settings or profile file that could not be read in full: always said (IT's mistakes must not be silent),
    one line on stderr, and the command goes on with what could be read.  Not logged as well: with -v the log
    goes to the same stderr, and the line would show twice."""
    sys.stderr.write(f"{PROG}: warning: {' '.join(str(text).split())}\n")
    sys.stderr.flush()


def _fail(reason: str) -> None:
    text = " ".join(str(reason).split())  # exactly one line
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
