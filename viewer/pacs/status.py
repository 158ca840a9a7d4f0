"""DIMSE status codes (PS3.7 Annex C; service-specific meanings from PS3.4 B.2.3 and C.4): their names, their
category and their meaning in plain words.  Every module names a status by :class:`DimseStatus`, never by a bare
number.  No pynetdicom here: the lean transports and the sink use it without loading that library.
"""

from __future__ import annotations

from enum import IntEnum


class DimseStatus(IntEnum):
    """Status codes we act on (PS3.7 Annex C; service-specific meanings from PS3.4 B.2.3 and C.4)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00  # C-FIND/C-GET/C-MOVE: matches or sub-operations are continuing
    PENDING_OPTIONAL_KEYS_UNSUPPORTED = 0xFF01  # C-FIND: some optional keys were not supported
    CANCEL = 0xFE00  # the operation was terminated by a C-CANCEL
    SUB_OPERATIONS_WARNING = 0xB000  # C-GET/C-MOVE: done, one or more sub-operations failed or warned
    OUT_OF_RESOURCES = 0xA700  # C-STORE: refused, out of resources (our answer when the disk is full)
    OUT_OF_RESOURCES_MATCHES = 0xA701  # C-GET/C-MOVE: unable to calculate the number of matches
    OUT_OF_RESOURCES_SUB_OPERATIONS = 0xA702  # C-GET/C-MOVE: unable to perform sub-operations
    MOVE_DESTINATION_UNKNOWN = 0xA801
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    UNABLE_TO_PROCESS = 0xC000  # Q/R: unable to process; C-STORE: cannot understand (C000-CFFF)
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124  # C-STORE: refused (our answer to an instance that was not asked for)
    DUPLICATE_SOP_INSTANCE = 0x0111  # C-STORE: the peer already holds this SOP Instance UID


# Categories (PS3.7 C.1-C.5)
SUCCESS, PENDING, CANCEL, WARNING, FAILURE, UNKNOWN = "success", "pending", "cancel", "warning", "failure", "unknown"
OUT_OF_RESOURCES_STATUSES = frozenset({DimseStatus.OUT_OF_RESOURCES, DimseStatus.OUT_OF_RESOURCES_MATCHES,
                                       DimseStatus.OUT_OF_RESOURCES_SUB_OPERATIONS})
_FAILURES = frozenset({0x0105, 0x0106, 0x0110, 0x0111, 0x0112, 0x0113, 0x0114, 0x0115, 0x0117, 0x0118, 0x0119,
                       0x0120, 0x0121, 0x0122, 0x0123, 0x0124, 0x0210, 0x0211, 0x0212, 0x0213})

_STATUS_WORDS = {
    DimseStatus.CANCEL: "the operation was cancelled",
    DimseStatus.OUT_OF_RESOURCES: "it is out of resources",
    DimseStatus.OUT_OF_RESOURCES_MATCHES: "it is out of resources (cannot count the matches)",
    DimseStatus.OUT_OF_RESOURCES_SUB_OPERATIONS: "it is out of resources (cannot send the images)",
    DimseStatus.MOVE_DESTINATION_UNKNOWN: "it does not know the move destination",
    DimseStatus.IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS: "it did not understand the request",
    DimseStatus.UNABLE_TO_PROCESS: "it was unable to process the request",
    DimseStatus.SOP_CLASS_NOT_SUPPORTED: "it does not support this service",
    DimseStatus.NOT_AUTHORIZED: "it refused the request (not authorised)",
    DimseStatus.DUPLICATE_SOP_INSTANCE: "it already holds this image",
}


def category(code: int) -> str:
    """The category of a status code (PS3.7 Annex C): success, pending, cancel, warning, failure or unknown."""
    if code == DimseStatus.SUCCESS:
        return SUCCESS
    if code in (DimseStatus.PENDING, DimseStatus.PENDING_OPTIONAL_KEYS_UNSUPPORTED):
        return PENDING
    if code == DimseStatus.CANCEL:
        return CANCEL
    if code in _FAILURES or 0xA000 <= code <= 0xAFFF or 0xC000 <= code <= 0xCFFF:
        return FAILURE
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return WARNING
    return UNKNOWN


def describe_status(code: int) -> str:
    """Plain words for a DIMSE status code, with the code in hex for the IT person."""
    words = _STATUS_WORDS.get(code)  # type: ignore[call-overload]
    if words is None:
        words = {FAILURE: "it reported a failure", WARNING: "it reported a warning"}.get(category(code), category(code))
    return f"{words} (status 0x{code:04X})"


def store_succeeded(code: int) -> bool:
    """Whether a C-STORE status means the peer now holds the instance (success, a warning, or duplicate)."""
    return code == DimseStatus.DUPLICATE_SOP_INSTANCE or category(code) in (SUCCESS, WARNING)
