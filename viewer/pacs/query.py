"""Query and retrieve identifiers (PS3.4 C.4.1-C.4.3, Study Root): what a C-FIND asks for and how its answers
read, and the identifiers of a C-GET or C-MOVE.  Shared by the pynetdicom path and the lean transports.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from viewer.errors import PacsError
from viewer.library.store import is_valid_uid
from viewer.pacs.node import DEFAULT_RETURN_KEYS, check_level

# SOP Instance UIDs in one IMAGE-level C-GET/C-MOVE identifier (UID list matching, PS3.4 C.2.2.2.2);
# longer lists are sent as several requests on the same association.
SOP_UIDS_PER_REQUEST_MAX = 256


_LEVEL_NAMES = {"patient": "PATIENT", "study": "STUDY", "series": "SERIES", "image": "IMAGE"}

# Elements of a C-FIND response that describe the response rather than the match.
_NOT_RESULTS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


def query_identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    """A C-FIND identifier: the level's default return keys (universal matching) plus the caller's `keys`
    (DICOM keywords; values use the PS3.4 C.2.2.2 matching rules: ``*``/``?`` wildcards, ``A-B`` ranges,
    backslash-separated UID lists)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = _LEVEL_NAMES[check_level(level)]
    for keyword in DEFAULT_RETURN_KEYS[level]:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        if tag_for_keyword(keyword) is None:
            raise PacsError(f"'{keyword}' is not a DICOM keyword (write e.g. PatientName=DOE*).")
        if dictionary_VR(keyword) == "SQ":
            raise PacsError(f"'{keyword}' is a sequence; sequence matching is not supported.")
        if not isinstance(value, str):
            raise PacsError(f"The value for '{keyword}' must be text.")
        setattr(ds, keyword, value)
    return ds


def identifier_to_dict(ds: Dataset) -> dict[str, str]:
    """A C-FIND response identifier as ``{keyword: text}``; multiple values are joined with a backslash."""
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
) -> list[Dataset]:
    """C-GET/C-MOVE identifiers (PS3.4 C.4.2.1.4, Study Root): one STUDY or SERIES level identifier, or IMAGE
    level identifiers listing at most :data:`SOP_UIDS_PER_REQUEST_MAX` SOP Instance UIDs each."""
    for label, uid in (("Study Instance UID", study_uid), ("Series Instance UID", series_uid)):
        if uid is not None and not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid {label}.")
    if sop_instance_uids is None:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES" if series_uid else "STUDY"
        ds.StudyInstanceUID = study_uid
        if series_uid:
            ds.SeriesInstanceUID = series_uid
        return [ds]
    if not series_uid:
        raise PacsError("Retrieving single images needs the Series Instance UID of their series.")
    uids = list(dict.fromkeys(sop_instance_uids))
    for uid in uids:
        if not is_valid_uid(uid):
            raise PacsError(f"'{uid}' is not a valid SOP Instance UID.")
    identifiers = []
    for start in range(0, len(uids), SOP_UIDS_PER_REQUEST_MAX):
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        chunk = uids[start:start + SOP_UIDS_PER_REQUEST_MAX]
        ds.SOPInstanceUID = chunk if len(chunk) > 1 else chunk[0]
        identifiers.append(ds)
    return identifiers
