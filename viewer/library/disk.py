"""The library folder's files on disk (no Qt): object keys, the temp folders of writers, durable writes.

What :class:`viewer.library.store.Library` rests on to write atomically and durably: random object keys,
the removal of the temp folders left by writers that are gone (crashed), ``fsync`` of folders, ``syncfs(2)`` and
``sync_file_range(2)`` where they work (Linux >= 5.8), and OS errors turned into the library's errors.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path

from viewer.errors import LibraryError, StorageFullError

# Loose files directly in tmp/ (the layout before per-writer folders) older than this are crash leftovers.
LOOSE_TMP_STALE_S = 600


def _remove_dead_writers(tmp_root: Path) -> None:
    """Remove the temp folders of writers that are gone (their lock is free): partial writes of a crash, never
    visible, now deleted.  Folders whose lock is held belong to a live Library, in this or another process."""
    for lock_path in tmp_root.glob("*.lock"):
        try:
            with open(lock_path, "rb") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
                lock_path.unlink(missing_ok=True)
        except BlockingIOError:
            continue  # a live writer
        except FileNotFoundError:
            continue  # its owner closed it meanwhile
    now = time.time()
    for path in tmp_root.iterdir():
        if path.is_dir() and not path.with_suffix(".lock").exists():
            if now - path.stat().st_mtime > LOOSE_TMP_STALE_S:
                shutil.rmtree(path, ignore_errors=True)  # a folder whose lock file was lost, long idle
        elif path.is_file() and path.suffix != ".lock" and now - path.stat().st_mtime > LOOSE_TMP_STALE_S:
            path.unlink(missing_ok=True)  # a loose leftover of the earlier layout


class _Keys:
    """Random 128-bit object keys as 32 hex digits, drawn from the OS in blocks (one getrandom call per
    :data:`KEYS_PER_DRAW` keys instead of one per key).  Thread-safe."""

    KEYS_PER_DRAW = 256

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""

    def next(self) -> str:
        with self._lock:
            if not self._block:
                self._block = os.urandom(16 * self.KEYS_PER_DRAW)
            key, self._block = self._block[:16], self._block[16:]
        return key.hex()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _translate_os_error(exc: OSError, where: Path) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("The disk holding the library is full; nothing was stored and nothing was damaged.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LibraryError(f"No permission to write in {where}.")
    if exc.errno == errno.ENOENT:
        return LibraryError(f"{where} does not exist.")
    return LibraryError(f"Reading or writing {where} failed: {exc.strerror or exc}.")


def _syncfs_works() -> bool:
    """Whether syncfs(2) can stand in for per-file fsync: Linux >= 5.8, where it reports writeback errors
    (earlier kernels returned success even when writing back failed)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        major, minor = (int(p) for p in re.findall(r"\d+", os.uname().release)[:2])
        return (major, minor) >= (5, 8) and hasattr(ctypes.CDLL(None), "syncfs")
    except (ValueError, OSError):
        return False


_SYNCFS_WORKS = _syncfs_works()
_LIBC = ctypes.CDLL(None, use_errno=True) if _SYNCFS_WORKS else None


SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of the dirty pages, do not wait for it


def _start_writeback(fd: int) -> None:
    """Start writing a staged file back now (sync_file_range(2), asynchronous): the disk then works while the
    next instances arrive, and the batch's syncfs finds little left to do.  Durability still comes from that
    syncfs; this call is only a head start, so its failure is ignored."""
    assert _LIBC is not None
    _LIBC.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), SYNC_FILE_RANGE_WRITE)


def _syncfs(folder: Path) -> None:
    """syncfs(2) on the file system holding `folder`: every dirty page and inode of it is written and the
    device cache flushed before it returns, which covers each file of a batch like an fsync would."""
    assert _LIBC is not None
    fd = os.open(folder, os.O_RDONLY)
    try:
        if _LIBC.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)
