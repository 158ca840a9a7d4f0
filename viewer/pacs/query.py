"""Query and retrieve identifiers (PS3.4 C.4.1-C.4.3, Study Root): what a C-FIND asks for and how its answers
read, and the identifiers of a C-GET or C-MOVE.  Shared by the lean transports and pynetdicom's C-MOVE.

An identifier is an :class:`Identifier` (keyword -> text or list of texts), which the lean transports encode
by hand (:meth:`Identifier.encode`, byte for byte what pydicom writes; pydicom itself for what the hand encoder
does not cover) and pynetdicom gets as a pydicom Dataset (:meth:`Identifier.to_dataset`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from viewer.errors import PacsError
from viewer.imports import need
from viewer.pacs.elements import element
from viewer.pacs.node import DEFAULT_RETURN_KEYS, check_level
from viewer.uid import is_valid_uid

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

# SOP Instance UIDs in one IMAGE-level C-GET/C-MOVE identifier (UID list matching, PS3.4 C.2.2.2.2);
# longer lists are sent as several requests on the same association.
SOP_UIDS_PER_REQUEST_MAX = 256


_LEVEL_NAMES = {"patient": "PATIENT", "study": "STUDY", "series": "SERIES", "image": "IMAGE"}

# Elements of a C-FIND response that describe the response rather than the match.
_NOT_RESULTS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


# Values the hand encoder writes as they are (PS3.5 6.2): printable ASCII without a backslash (multiple values
# are lists).  IS values are plain integers (pydicom normalises anything else).  Anything else goes to pydicom.
_PLAIN_TEXT = re.compile(r"[ -\[\]-~]*")
_PLAIN_IS = re.compile(r"[+-]?[0-9]{1,12}")
_PLAIN_UI = re.compile(r"[0-9.]*")  # pydicom strips UID values: only plain ones are written by hand
_HAND_VRS = frozenset({"AE", "CS", "DA", "IS", "LO", "PN", "SH", "TM", "UI"})  # short-length VRs (PS3.5 7.1.2)
_IMPLICIT_HEADER = struct.Struct("<HHL").pack
_EXPLICIT_HEADER = struct.Struct("<HH2sH").pack


class _NotByHand(Exception):
    """An element the hand encoder leaves to pydicom."""


class Identifier(dict):  # type: ignore[type-arg]  # keyword -> str | list[str]
    """A query or retrieve identifier: DICOM keywords and their values (text, or a list of texts for several
    values), readable as attributes like a pydicom Dataset (``identifier.QueryRetrieveLevel``)."""

    def __getattr__(self, keyword: str) -> Any:
        try:
            return self[keyword]
        except KeyError:
            raise AttributeError(keyword) from None

    def to_dataset(self) -> Dataset:
        """The same identifier as a pydicom Dataset (pynetdicom's C-MOVE takes one)."""
        need("pydicom")
        from pydicom.dataset import Dataset

        ds = Dataset()
        for keyword, value in self.items():
            setattr(ds, keyword, value)
        return ds

    def encode(self, implicit: bool) -> bytes:
        """The identifier in Little Endian, Implicit VR when `implicit`, Explicit VR otherwise: byte for byte what
        pydicom writes for :meth:`to_dataset` (tests/pacs/test_elements.py checks), by hand where every value is plain
        ASCII, else by pydicom.  Raises PacsError when pydicom cannot encode it either."""
        try:
            return self._encode_by_hand(implicit)
        except _NotByHand:
            pass
        need("pynetdicom")
        from pynetdicom.dsutils import encode

        try:
            payload = encode(self.to_dataset(), implicit, True)
        except Exception as exc:  # a value pydicom refuses
            raise PacsError(f"The search keys cannot be encoded ({type(exc).__name__}).") from None
        if payload is None:
            raise PacsError("The search keys cannot be encoded.")
        return payload

    def _encode_by_hand(self, implicit: bool) -> bytes:
        elements = []
        for keyword, value in self.items():
            found = element(keyword)
            if found is None or found[1] not in _HAND_VRS:
                raise _NotByHand
            tag, vr = found
            values = value if isinstance(value, list) else [value]
            for item in values:
                if not isinstance(item, str) or not _PLAIN_TEXT.fullmatch(item) or (
                        vr == "IS" and item and not _PLAIN_IS.fullmatch(item)) or (
                        vr == "UI" and not _PLAIN_UI.fullmatch(item)) or (vr == "PN" and "=" in item):
                    raise _NotByHand
            raw = "\\".join(values).encode("ascii")
            if len(raw) % 2:
                raw += b"\0" if vr == "UI" else b" "
            if len(raw) > 0xFFFF:
                raise _NotByHand
            elements.append((tag, vr, raw))
        out = bytearray()
        for tag, vr, raw in sorted(elements):
            if implicit:
                out += _IMPLICIT_HEADER(tag >> 16, tag & 0xFFFF, len(raw))
            else:
                out += _EXPLICIT_HEADER(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(raw))
            out += raw
        return bytes(out)


def query_identifier(level: str, keys: Mapping[str, str]) -> Identifier:
    """A C-FIND identifier: the level's default return keys (universal matching) plus the caller's `keys`
    (DICOM keywords; values use the PS3.4 C.2.2.2 matching rules: ``*``/``?`` wildcards, ``A-B`` ranges,
    backslash-separated UID lists)."""
    ds = Identifier(QueryRetrieveLevel=_LEVEL_NAMES[check_level(level)])
    for keyword in DEFAULT_RETURN_KEYS[level]:
        ds[keyword] = ""
    for keyword, value in keys.items():
        found = element(keyword)
        if found is None:
            raise PacsError(f"'{keyword}' is not a DICOM keyword (write e.g. PatientName=DOE*).")
        if found[1] == "SQ":
            raise PacsError(f"'{keyword}' is a sequence; sequence matching is not supported.")
        if not isinstance(value, str):
            raise PacsError(f"The value for '{keyword}' must be text.")
        ds[keyword] = value.split("\\") if "\\" in value else value  # as pydicom reads a backslash
    return ds


def identifier_to_dict(ds: Dataset | Identifier) -> dict[str, str]:
    """A C-FIND response identifier as ``{keyword: text}``; multiple values are joined with a backslash."""
    if isinstance(ds, Identifier):
        ds = ds.to_dataset()
    result: dict[str, str] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or keyword in _NOT_RESULTS or elem.VR == "SQ":
            continue
        try:
            value = elem.value
        except Exception:  # a value pydicom cannot convert: leave it out rather than fail the whole query
            continue
        if value is None:
            result[keyword] = ""
        elif isinstance(value, (bytes, bytearray)):
            continue
        elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            result[keyword] = "\\".join("" if v is None else str(v) for v in value)
        else:
            result[keyword] = str(value)
    return result


def retrieve_identifiers(
    study_uid: str, series_uid: str | None = None, sop_instance_uids: Sequence[str] | None = None
) -> list[Identifier]:
    """C-GET/C-MOVE identifiers (PS3.4 C.4.2.1.4, Study Root): one STUDY or SERIES level identifier, or IMAGE
    level identifiers listing at most :data:`SOP_UIDS_PER_REQUEST_MAX` SOP Instance UIDs each."""
    for label, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid {label}.")
    if sop_instance_uids is None:
        ds = Identifier(QueryRetrieveLevel="SERIES" if series_uid else "STUDY", StudyInstanceUID=study_uid)
        if series_uid:
            ds["SeriesInstanceUID"] = series_uid
        return [ds]
    if not series_uid:
        raise PacsError("Retrieving single images needs the Series Instance UID of their series.")
    uids = list(dict.fromkeys(sop_instance_uids))
    for uid in uids:
        if not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid SOP Instance UID.")
    identifiers = []
    for start in range(0, len(uids), SOP_UIDS_PER_REQUEST_MAX):
        chunk = uids[start:start + SOP_UIDS_PER_REQUEST_MAX]
        identifiers.append(Identifier(QueryRetrieveLevel="IMAGE", StudyInstanceUID=study_uid,
                                      SeriesInstanceUID=series_uid,
                                      SOPInstanceUID=chunk if len(chunk) > 1 else chunk[0]))
    return identifiers
