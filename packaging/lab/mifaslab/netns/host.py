"""Host-side plumbing of the cluster lab: short commands with timeouts, processes by /proc, network namespaces.

Every wait here is bounded; every failure is either raised as :class:`ClusterLabError` (with the command and its
stderr) or returned to the caller to report (pids that would not die), never swallowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from viewer.errors import MifasError

COMMAND_TIMEOUT_S = 20.0
EXIT_WAIT_S = 10.0
KILL_ROUNDS_MAX = 5
LOG_TAIL_LINES = 25
CLONE_NEWNET = 0x40000000


class ClusterLabError(MifasError):
    """The lab could not be built, faulted or torn down; the message says what and, when a daemon failed to
    start, ends with the tail of its log."""


def run_command(argv: list[str], *, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True,
                input_text: str | None = None,
                error: type[ClusterLabError] = ClusterLabError) -> subprocess.CompletedProcess[str]:
    """Run a short command (stdin: `input_text`, else nothing); a failure (with check) becomes `error`, naming the
    command and its stderr."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, input=input_text,
                                stdin=None if input_text is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise error(f"'{shlex.join(argv)}' did not finish within {timeout_s:g} s.") from None
    except OSError as exc:
        raise error(f"cannot run '{argv[0]}': {exc.strerror}.") from None
    if check and result.returncode != 0:
        raise error(f"'{shlex.join(argv)}' failed (status {result.returncode}): "
                    f"{(result.stderr or result.stdout).strip()}")
    return result


def process_cmdline(pid: int) -> str:
    """The command line of `pid` with spaces for NULs, or '' when it is gone (or a zombie, which has none)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def process_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie.  Killed orphans can stay zombies for good where the init
    process does not reap (as in the build machines' VMs); a zombie holds no files, ports or locks."""
    return process_state(pid) not in ("", "Z")


def wait_exit(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until every pid has exited; return those still alive after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [pid for pid in pids if process_alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def send_signal(pid: int, signum: int) -> None:
    """Signal `pid`; one that has exited meanwhile is not an error (every caller checks the outcome itself)."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log under a header, for error messages; '' when the log does not exist (yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"\n--- last lines of {path} ---\n" + "\n".join(text) if text else ""


def netns_pids(namespace: str) -> list[int]:
    """The processes whose network namespace is `namespace` (``ip netns pids``); [] when it does not exist."""
    result = run_command(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in result.stdout.split() if word.isdigit()]


def netns_list() -> list[str]:
    """The names of all network namespaces (``ip netns list``)."""
    result = run_command(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def kill_processes(namespace: str) -> list[int]:
    """SIGKILL every process in `namespace` (SIGCONT first, for frozen ones) and wait for their exit.  Repeats
    while new processes appear (Heartbeat may be forking a resource script right then).  Returns the pids that
    would not die (reported, not hidden)."""
    for _ in range(KILL_ROUNDS_MAX):
        pids = [pid for pid in netns_pids(namespace) if process_alive(pid)]
        if not pids:
            return []
        for pid in pids:
            send_signal(pid, signal.SIGCONT)
            send_signal(pid, signal.SIGKILL)
        wait_exit(pids, EXIT_WAIT_S)
    return [pid for pid in netns_pids(namespace) if process_alive(pid)]


def kill_namespace(namespace: str) -> list[int]:
    """Kill every process in `namespace`, then delete it (a process left inside would keep it alive unnamed).
    Returns the pids that would not die; raises ClusterLabError when the namespace cannot be deleted."""
    stuck = kill_processes(namespace)
    if namespace in netns_list():
        result = run_command(["ip", "netns", "del", namespace], check=False)
        if namespace in netns_list():
            raise ClusterLabError(f"cannot delete the network namespace {namespace}: {result.stderr.strip()}")
    return stuck


def kill_namespaces(namespaces: Iterable[str]) -> tuple[dict[str, list[int]], list[str]]:
    """:func:`kill_namespace` for each of `namespaces`, all of them even when one fails: the pids that would
    not die, by namespace, and the errors of those that could not be deleted."""
    stuck: dict[str, list[int]] = {}
    errors: list[str] = []
    for namespace in namespaces:
        try:
            left = kill_namespace(namespace)
        except ClusterLabError as exc:
            errors.append(str(exc))
            continue
        if left:
            stuck[namespace] = left
    return stuck, errors


def down_after_failure(exc: BaseException, down: Callable[[], None], logs: str) -> BaseException:
    """A lab that failed to come up: take it down (never leave half a lab) and return the error to raise, with
    `logs` (the tails that say why) and the cleanup's own failure, if any, appended to a ClusterLabError."""
    try:
        down()
    except ClusterLabError as cleanup:
        logs = f"\n(and the cleanup failed too: {cleanup}){logs}"
    return ClusterLabError(f"{exc}{logs}") if isinstance(exc, ClusterLabError) else exc


def process_state(pid: int) -> str:
    """The one-letter state of `pid` from /proc (R, S, T = stopped/frozen, Z = zombie), or '' when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return ""


@contextlib.contextmanager
def network_namespace(name: str) -> Iterator[None]:
    """Run the calling thread (and every thread it starts meanwhile) inside the network namespace `name`
    (``/run/netns/NAME``): how an in-process test, e.g. a pytest-qt test of the main window, becomes a client
    on the cluster lab's LAN.  setns(2) moves only the calling thread; threads started before keep the host's
    network, which is why the code under test must create its workers inside the block.  Needs root."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"not a network namespace name: {name!r}")
    libc = ctypes.CDLL(None, use_errno=True)
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        finally:
            os.close(target)
        try:
            yield
        finally:
            if libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the host's network failed")
    finally:
        os.close(own)
