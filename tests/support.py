"""Helpers shared by the suites (import as tests.support)."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
from collections.abc import Iterator

import pytest

CLONE_NEWNET = 0x40000000
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """A test that needs something this machine lacks: skip (with the reason shown by -ra) on a developer's
    machine, but fail loudly in CI, where every prerequisite must be installed by packaging/test.sh."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def network_namespace(name: str) -> Iterator[None]:
    """Run the calling thread (and every thread it starts meanwhile) inside the network namespace `name`
    (``/run/netns/NAME``): how an in-process test, e.g. a pytest-qt test of the main window, becomes a client
    on the cluster lab's LAN.  setns(2) moves only the calling thread; threads started before keep the host's
    network, which is why the code under test must create its workers inside the block.  Needs root."""
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


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of the data set of a Part 10 file: the bytes after the File Meta Information group, which a
    PACS or our library may rewrite (implementation UID, source AE) while the data set stays byte for byte."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", "no (0002,0000) group length"
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()
