"""Helpers shared by the suites (import as tests.support)."""

from __future__ import annotations

import hashlib
import os

import pytest

from mifaslab.netns.host import network_namespace  # noqa: F401 - re-exported for the tests

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """A test that needs something this machine lacks: skip (with the reason shown by -ra) on a developer's
    machine, but fail loudly in CI, where every prerequisite must be installed by packaging/test.sh."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of the data set of a Part 10 file: the bytes after the File Meta Information group, which a
    PACS or our library may rewrite (implementation UID, source AE) while the data set stays byte for byte."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00", "no (0002,0000) group length"
    group_length = int.from_bytes(data[140:144], "little")
    return hashlib.sha256(data[144 + group_length:]).hexdigest()
