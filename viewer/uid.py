"""DICOM UIDs (PS3.5 9.1): the one check every layer uses before a UID names anything."""

from __future__ import annotations

import re

UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
UID_LENGTH_MAX = 64


def is_valid_uid(value: object) -> bool:
    """A UID per PS3.5 9.1: digits and dots, no empty component, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= UID_LENGTH_MAX and bool(UID_RE.match(value))
