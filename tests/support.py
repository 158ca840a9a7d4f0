"""Helpers shared by the suites (import as tests.support)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """A test that needs something this machine lacks: skip (with the reason shown by -ra) on a developer's
    machine, but fail loudly in CI, where every prerequisite must be installed by packaging/test.sh."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {reason}")
    pytest.skip(reason)
